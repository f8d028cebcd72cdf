"""GET /jobs/{id}/error-groups and GET /jobs/{id}/errors?group=&search= (issue 16)."""

from __future__ import annotations

from typing import Any

import pytest
from chunkq import core

from .helpers import AUTH, job_body

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")


def provider() -> core.Processor:
    def call(entity_id: str, _job: object) -> None:
        if entity_id.startswith("bad"):
            raise ValueError(f"cannot enrich {entity_id}: https://api.example.com/v1/{entity_id}")
        if entity_id.startswith("gone"):
            raise KeyError("email")

    return core.Processor(on_process=call)


@pytest.mark.slow
def test_error_groups_and_filtered_errors(make_client: Any) -> None:
    client = make_client(provider())
    ids = ["bad-1", "ok-1", "bad-2", "gone-1", "bad-3"]
    job = client.post("/jobs", json=job_body(ids, chunk_size=10), headers=AUTH).json()
    assert client.post("/jobs/process", headers=AUTH).status_code == 200
    doc = client.get(f"/jobs/{job['id']}/error-groups", headers=AUTH).json()
    assert doc["job_id"] == job["id"]
    first, second = doc["groups"]
    assert (first["error_type"], first["message"], first["count"], first["entities"]) == (
        "ValueError", "cannot enrich <id>: https://api.example.com/v1/<id>", 3, 3)
    assert first["samples"][0] == "cannot enrich bad-1: https://api.example.com/v1/bad-1"
    assert (second["error_type"], second["count"]) == ("KeyError", 1)
    listed = client.get(f"/jobs/{job['id']}/errors", params={"group": first["fingerprint"]}, headers=AUTH).json()
    assert [e["entity_id"] for e in listed["errors"]] == ["bad-1", "bad-2", "bad-3"]
    assert {e["fingerprint"] for e in listed["errors"]} == {first["fingerprint"]}
    found = client.get(f"/jobs/{job['id']}/errors", params={"search": "BAD-2"}, headers=AUTH).json()
    assert [e["entity_id"] for e in found["errors"]] == ["bad-2"]
    searched = client.get(f"/jobs/{job['id']}/error-groups", params={"search": "gone"}, headers=AUTH).json()
    assert [g["error_type"] for g in searched["groups"]] == ["KeyError"]
    # issue 27: the total and the page, never a silent cap
    assert (doc["total"], doc["offset"]) == (2, 0)
    paged = client.get(f"/jobs/{job['id']}/error-groups", params={"limit": 1, "offset": 1}, headers=AUTH).json()
    assert (paged["total"], paged["limit"], paged["offset"]) == (2, 1, 1)
    assert [g["error_type"] for g in paged["groups"]] == ["KeyError"]


def test_error_groups_bad_input(make_client: Any) -> None:
    client = make_client(provider())
    job = client.post("/jobs", json=job_body(["bad-1"]), headers=AUTH).json()
    r = client.get("/jobs/777/error-groups", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"error": "no job with id 777"}
    r = client.get(f"/jobs/{job['id']}/error-groups?grup=x", headers=AUTH)
    assert r.status_code == 422 and "unknown query parameter 'grup'" in r.json()["error"]
    r = client.get(f"/jobs/{job['id']}/errors", params={"group": "x" * 100}, headers=AUTH)
    assert r.status_code == 422 and "group" in r.json()["error"]
    r = client.get(f"/jobs/{job['id']}/errors", params={"group": "0123456789abcdef"}, headers=AUTH)
    assert (r.status_code, r.json()) == (422, {"error": f"job {job['id']} has no error group 0123456789abcdef"})
    assert client.get(f"/jobs/{job['id']}/error-groups").status_code == 401


def test_merge_and_unmerge_error_groups(make_client: Any) -> None:
    """Issue 27: POST /jobs/{id}/error-groups/merge, both ways, and its bad input (422, nothing changed)."""
    client = make_client(provider())
    job = client.post("/jobs", json=job_body(["bad-1", "gone-1", "bad-2"], chunk_size=10), headers=AUTH).json()
    assert client.post("/jobs/process", headers=AUTH).status_code == 200
    url = f"/jobs/{job['id']}/error-groups"
    first, second = client.get(url, headers=AUTH).json()["groups"]
    a, b = first["fingerprint"], second["fingerprint"]
    r = client.post(f"{url}/merge", json={"groups": [b], "into": a}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"job_id": job["id"], "merged": [b], "into": a}
    doc = client.get(url, headers=AUTH).json()
    assert doc["total"] == 1 and (doc["groups"][0]["count"], doc["groups"][0]["merged"]) == (3, [b])
    for bad in ({"groups": [], "into": a}, {"groups": [b], "into": 5}, {"groups": [b]}, {"grups": [b], "into": a},
                {"groups": [b], "into": a, "unmerge": b}, {"unmerge": ["x"]}, {"groups": ["f" * 16], "into": a}):
        r = client.post(f"{url}/merge", json=bad, headers=AUTH)
        assert r.status_code == 422, bad
    assert client.get(url, headers=AUTH).json()["total"] == 1
    r = client.post(f"{url}/merge", json={"unmerge": b}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"job_id": job["id"], "unmerged": [b], "from": a}
    assert client.get(url, headers=AUTH).json()["total"] == 2
    assert client.post(f"{url}/merge", json={"unmerge": b}).status_code == 401
    assert client.post("/jobs/777/error-groups/merge", json={"unmerge": b}, headers=AUTH).status_code == 404
