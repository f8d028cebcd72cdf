"""Every route and status code of the HTTP trigger, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from chunkq import core

from .helpers import AUTH, TOKEN, job_body

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

SUMMARY_KEYS = {"chunks", "entities", "errors", "retried", "discarded", "jobs_completed", "elapsed",
                "stopped_by"}


def recorder(seen: list[str]) -> core.Processor:
    def record(entity_id: str, job: core.Job) -> None:
        seen.append(entity_id)
        if entity_id.startswith("bad"):
            raise ValueError(f"cannot enrich {entity_id}")

    return core.Processor(on_process=record)


def all_jobs(client: Any) -> list[dict[str, Any]]:
    r = client.get("/jobs", params={"limit": 1000}, headers=AUTH)
    assert r.status_code == 200
    return r.json()["jobs"]


# --------------------------------------------------------------------------- health and auth


def test_health_needs_no_token_and_reports_the_database(make_client: Any) -> None:
    client = make_client()
    r = client.get("/health")
    assert r.status_code == 200
    doc = r.json()
    assert isinstance(doc.pop("hung_callbacks"), int)  # the process's: other tests' calls may still be ending
    assert doc == {"status": "ok", "database": "reachable", "processor": False}


def test_health_is_503_once_hung_callbacks_pile_up(make_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from chunkq import core

    client = make_client()
    monkeypatch.setattr(core, "abandoned_callbacks", lambda: core.ABANDONED_THREADS_MAX)
    assert client.get("/health").json()["status"] == "ok"  # at the tolerance, still serving
    monkeypatch.setattr(core, "abandoned_callbacks", lambda: core.ABANDONED_THREADS_MAX + 1)
    r = client.get("/health")
    assert (r.status_code, r.json()["status"], r.json()["hung_callbacks"]) == (503, "wedged", 17)
    assert "restart this server" in r.json()["error"]


def test_health_reports_processor_configured(make_client: Any) -> None:
    assert make_client(recorder([])).get("/health").json()["processor"] is True


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/jobs/process"), ("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/jobs/1"),
     ("GET", "/jobs/1/errors")],
)
def test_every_route_but_health_needs_the_token(make_client: Any, method: str, path: str) -> None:
    seen: list[str] = []
    client = make_client(recorder(seen))
    # a pending job, so an unauthenticated process call would have something to do
    assert client.post("/jobs", json=job_body(["a", "b"]), headers=AUTH).status_code == 201
    before = all_jobs(client)
    wrong_last_char = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")
    for headers, why in [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {wrong_last_char}"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "invalid bearer token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "invalid bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <token>'"),
    ]:
        r = client.request(method, path, headers=headers, json=job_body(["z"]))
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert why in r.json()["error"]
    assert seen == []
    assert all_jobs(client) == before


def test_the_right_token_in_any_scheme_case_is_accepted(make_client: Any) -> None:
    client = make_client()
    assert client.get("/jobs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_a_non_ascii_token_is_compared_as_utf8_bytes(make_client: Any) -> None:
    client = make_client(token="pässwörd-✓")
    assert client.get("/jobs", headers={"Authorization": "Bearer pässwörd-✓".encode()}).status_code == 200
    assert client.get("/jobs", headers={"Authorization": "Bearer pässwörd-x".encode()}).status_code == 401


def test_without_a_token_configured_no_auth_is_asked(make_client: Any) -> None:
    client = make_client(token=None)
    assert client.get("/jobs").status_code == 200
    assert client.post("/jobs", json=job_body(["a"])).status_code == 201


def test_a_blank_token_is_refused_by_create_app(db_url: str) -> None:
    from chunkq.tui.http import create_app

    with pytest.raises(ValueError, match="blank"):
        create_app(db_url, None, token="  ")


# --------------------------------------------------------------------------- POST /jobs


def test_post_jobs_creates_a_job_with_every_field(make_client: Any) -> None:
    client = make_client()
    body = job_body([" a ", "b", "b", "c"], chunk_size=2, priority=5, name="Fortune 5", dedupe=True,
                    max_workers=2, max_attempts=4, params={"tier": "gold"})
    r = client.post("/jobs", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "pending"
    assert job["total_count"] == 3  # deduped and stripped
    assert (job["chunk_size"], job["priority"], job["name"], job["max_workers"], job["max_attempts"]) == (
        2, 5, "Fortune 5", 2, 4)
    assert job["params"] == {"tier": "gold"}
    assert job["entity_type"] == "company" and job["provider"] == "clearbit"
    assert client.get(f"/jobs/{job['id']}", headers=AUTH).json() == job


def test_post_jobs_explicit_nulls_mean_defaults(make_client: Any) -> None:
    client = make_client()
    r = client.post("/jobs", json=job_body(["a"], chunk_size=None, name=None, max_errors=None), headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["chunk_size"] == 50 and r.json()["max_errors"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (job_body([]), "no entity IDs"),
        (job_body(["a", "  "]), "entity ID #2 is blank"),
        (job_body(["a"], chunk_size=0), "chunk_size must be between"),
        ({"entity_type": "company", "provider": "p"}, "entity_ids is required"),
        (job_body(["a"], provider=""), "provider is required"),
        (job_body(["a"], colour="red"), "unknown field 'colour'"),
        (job_body("abc"), "entity_ids must be a JSON array"),
        (job_body(["a"], dedupe="yes"), "dedupe must be true or false"),
        (job_body(["a"], params=[1]), "params must be a JSON object"),
    ],
)
def test_post_jobs_bad_input_is_422_and_creates_nothing(make_client: Any, body: Any, message: str) -> None:
    client = make_client()
    r = client.post("/jobs", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert set(r.json()) == {"error"}
    assert all_jobs(client) == []


# --------------------------------------------------------------------------- body size


def test_body_over_the_limit_by_content_length_is_413(make_client: Any) -> None:
    client = make_client(max_body_bytes=1000)
    ids = [f"id-{i:05d}" for i in range(200)]  # ~2.6 KB of JSON
    r = client.post("/jobs", json=job_body(ids), headers=AUTH)
    assert r.status_code == 413
    assert "larger than the limit of 1,000 bytes" in r.json()["error"]
    assert all_jobs(client) == []
    # just under the limit is fine
    assert client.post("/jobs", json=job_body(ids[:20]), headers=AUTH).status_code == 201


def test_chunked_body_over_the_limit_is_413_while_streaming(make_client: Any) -> None:
    client = make_client(max_body_bytes=1000)
    sent: list[int] = []

    def body() -> Any:
        yield b'{"entity_type": "company", "provider": "p", "entity_ids": ["a"'
        for i in range(100):
            sent.append(i)
            yield b', "' + b"x" * 50 + b'"'
        yield b"]}"

    r = client.post("/jobs", content=body(), headers=AUTH)
    assert "content-length" not in r.request.headers  # really chunked
    assert r.status_code == 413
    assert all_jobs(client) == []


def test_default_limit_is_ten_megabytes(make_client: Any) -> None:
    client = make_client()
    r = client.post("/jobs", content=b"x" * (10 * 1024 * 1024 + 1), headers=AUTH)
    assert r.status_code == 413
    assert "10,485,760 bytes" in r.json()["error"]


def test_413_is_answered_before_auth_only_for_authorised_callers(make_client: Any) -> None:
    # an unauthenticated caller learns nothing about limits: 401 comes first
    client = make_client(max_body_bytes=10)
    r = client.post("/jobs", content=b"x" * 100)
    assert r.status_code == 401


# --------------------------------------------------------------------------- POST /jobs/process


def test_process_with_nothing_pending_is_200_with_zero_chunks(make_client: Any) -> None:
    client = make_client(recorder([]))
    r = client.post("/jobs/process", headers=AUTH)
    assert r.status_code == 200
    doc = r.json()
    assert set(doc) == SUMMARY_KEYS
    assert doc["chunks"] == 0 and doc["entities"] == 0 and doc["stopped_by"] == "empty"


def test_process_runs_one_chunk_by_default(make_client: Any) -> None:
    seen: list[str] = []
    client = make_client(recorder(seen))
    body = job_body(["a", "b", "bad-c", "d", "e"], chunk_size=3)
    job = client.post("/jobs", json=body, headers=AUTH).json()
    r = client.post("/jobs/process", headers=AUTH)
    assert r.status_code == 200
    doc = r.json()
    assert set(doc) == SUMMARY_KEYS
    assert (doc["chunks"], doc["entities"], doc["errors"], doc["stopped_by"]) == (1, 3, 1, "max_chunks")
    assert doc["jobs_completed"] == []
    assert seen == ["a", "b", "bad-c"]
    after = client.get(f"/jobs/{job['id']}", headers=AUTH).json()
    assert after["processed_count"] == 3 and after["status"] in ("pending", "running")


def test_process_with_max_seconds_runs_until_nothing_is_left(make_client: Any) -> None:
    seen: list[str] = []
    client = make_client(recorder(seen))
    ids = [f"e{i}" for i in range(10)]
    job = client.post("/jobs", json=job_body(ids, chunk_size=3), headers=AUTH).json()
    doc = client.post("/jobs/process", params={"max_seconds": "60"}, headers=AUTH).json()
    assert (doc["chunks"], doc["entities"], doc["errors"], doc["stopped_by"]) == (4, 10, 0, "empty")
    assert doc["jobs_completed"] == [job["id"]]
    assert sorted(seen) == sorted(ids)
    assert client.get(f"/jobs/{job['id']}", headers=AUTH).json()["status"] == "complete"


def test_process_stops_when_max_seconds_runs_out(make_client: Any) -> None:
    import time

    def slow(entity_id: str, job: core.Job) -> None:
        time.sleep(0.05)

    client = make_client(core.Processor(on_process=slow))
    client.post("/jobs", json=job_body([f"e{i}" for i in range(200)], chunk_size=2), headers=AUTH)
    doc = client.post("/jobs/process", params={"max_seconds": "0.3"}, headers=AUTH).json()
    assert doc["stopped_by"] == "max_seconds"
    assert 1 <= doc["chunks"] < 100


def test_process_without_a_processor_is_422(make_client: Any) -> None:
    client = make_client(None)
    client.post("/jobs", json=job_body(["a"]), headers=AUTH)
    before = all_jobs(client)
    r = client.post("/jobs/process", headers=AUTH)
    assert r.status_code == 422
    assert "no processor is configured" in r.json()["error"]
    assert all_jobs(client) == before


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("max_seconds=abc", "max_seconds must be a number"),
        ("max_seconds=0", "more than 0"),
        ("max_seconds=-5", "more than 0"),
        ("max_seconds=nan", "more than 0"),
        ("max_seconds=inf", "more than 0"),
        ("max_seconds=99999", "at most 3600"),
        ("max_second=5", "unknown query parameter 'max_second'"),
    ],
)
def test_process_bad_query_is_422(make_client: Any, query: str, message: str) -> None:
    seen: list[str] = []
    client = make_client(recorder(seen))
    client.post("/jobs", json=job_body(["a"]), headers=AUTH)
    r = client.post(f"/jobs/process?{query}", headers=AUTH)
    assert r.status_code == 422
    assert message in r.json()["error"]
    assert seen == []


# --------------------------------------------------------------------------- reads


def test_get_jobs_filters_and_pages(make_client: Any) -> None:
    client = make_client(recorder([]))
    ids = [client.post("/jobs", json=job_body(["a"], name=f"j{i}"), headers=AUTH).json()["id"]
           for i in range(5)]
    client.post("/jobs/process", headers=AUTH)  # completes the highest-priority (oldest) job
    doc = client.get("/jobs", headers=AUTH).json()
    assert doc["total"] == 5 and doc["limit"] == 100 and doc["offset"] == 0
    assert sorted(j["id"] for j in doc["jobs"]) == ids
    complete = client.get("/jobs", params={"status": "complete"}, headers=AUTH).json()
    assert [j["id"] for j in complete["jobs"]] == [ids[0]] and complete["total"] == 1
    pending = client.get("/jobs?status=pending&status=complete", headers=AUTH).json()
    assert pending["total"] == 5
    assert client.get("/jobs?status=pending,complete", headers=AUTH).json()["total"] == 5
    page = client.get("/jobs", params={"limit": 2, "offset": 1}, headers=AUTH).json()
    assert len(page["jobs"]) == 2 and page["total"] == 5
    assert page["jobs"] == doc["jobs"][1:3]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "unknown status 'bogus'"),
        ("limit=-1", "limit must be between"),
        ("limit=1001", "limit must be between 0 and 1,000"),
        ("limit=ten", "limit must be a whole number"),
        ("offset=-3", "offset must be between"),
        ("sort=id", "unknown query parameter 'sort'"),
    ],
)
def test_get_jobs_bad_query_is_422(make_client: Any, query: str, message: str) -> None:
    r = make_client().get(f"/jobs?{query}", headers=AUTH)
    assert r.status_code == 422
    assert message in r.json()["error"]


def test_get_job_unknown_is_404_and_malformed_is_422(make_client: Any) -> None:
    client = make_client()
    r = client.get("/jobs/424242", headers=AUTH)
    assert r.status_code == 404
    assert r.json() == {"error": "no job with id 424242"}
    for bad in ("abc", "-1", "0", "1.5", str(2**70)):
        r = client.get(f"/jobs/{bad}", headers=AUTH)
        assert r.status_code == 422, bad
        assert "job id must be a positive whole number" in r.json()["error"]


def test_get_job_errors_lists_and_pages(make_client: Any) -> None:
    client = make_client(recorder([]))
    job = client.post("/jobs", json=job_body(["bad-1", "ok", "bad-2", "bad-3"], chunk_size=10),
                      headers=AUTH).json()
    client.post("/jobs/process", headers=AUTH)
    doc = client.get(f"/jobs/{job['id']}/errors", headers=AUTH).json()
    assert doc["job_id"] == job["id"] and doc["limit"] == 100 and doc["offset"] == 0
    assert [e["entity_id"] for e in doc["errors"]] == ["bad-1", "bad-2", "bad-3"]
    first = doc["errors"][0]
    assert first["error_type"] == "ValueError" and first["message"] == "cannot enrich bad-1"
    assert "Traceback" in first["traceback"] and first["final"] is True
    page = client.get(f"/jobs/{job['id']}/errors?limit=1&offset=1", headers=AUTH).json()
    assert [e["entity_id"] for e in page["errors"]] == ["bad-2"]


def test_get_job_errors_unknown_job_is_404(make_client: Any) -> None:
    client = make_client()
    r = client.get("/jobs/777/errors", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"error": "no job with id 777"}
    r = client.get("/jobs/1/errors?limit=5000", headers=AUTH)
    assert r.status_code == 422


def test_unknown_route_and_wrong_method_answer_json(make_client: Any) -> None:
    client = make_client()
    r = client.get("/nope", headers=AUTH)
    assert r.status_code == 404 and r.json() == {"error": "Not Found"}
    r = client.delete("/jobs", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()
    assert "GET" in r.headers["allow"]


@pytest.mark.slow
def test_health_is_503_when_the_database_goes_away(pg_url: str) -> None:
    """A real fault: the server's PostgreSQL database is dropped under it."""
    import asyncio
    import secrets

    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    from tests.conftest import PG_SERVER, _pg_admin

    name = f"chunkq_http_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        with TestClient(create_app(f"{PG_SERVER.rstrip('/')}/{name}", None, token=TOKEN)) as client:
            assert client.get("/health").status_code == 200
            asyncio.run(_pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
            r = client.get("/health")
            assert r.status_code == 503
            # unauthenticated: says that (and since when), not where or why
            body = r.json()
            assert body.pop("since").endswith("Z"), body
            assert body == {"status": "unavailable", "database": "unreachable",
                            "error": "the database is unreachable"}
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
