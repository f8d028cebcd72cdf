"""``POST /prune`` and `serve`'s background pruning, both backends (issue 26)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from chunkq.core import RetentionPolicy

from ..cli.test_prune import job_ids, old_jobs
from .helpers import AUTH

pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_post_prune(make_client: Any, db_url: str) -> None:
    ids = old_jobs(db_url, (4, 40, "complete"), (4, 20, "cancelled"), (4, 1, "complete"))
    client = make_client()
    dry = client.post("/prune", json={"dry_run": True}, headers=AUTH)
    assert dry.status_code == 200 and dry.json()["jobs"] == 2 and dry.json()["done"]
    assert job_ids(db_url) == ids
    only = client.post("/prune", json={"status": "cancelled"}, headers=AUTH)
    assert only.json()["job_ids"] == [ids[1]] and only.json()["done"]
    rest = client.post("/prune", json={}, headers=AUTH)
    assert rest.json()["job_ids"] == [ids[0]]
    assert client.post("/prune", json={"older_than": "0s"}, headers=AUTH).json()["job_ids"] == [ids[2]]
    assert client.post("/prune", json={}).status_code == 401


@pytest.mark.parametrize("body, field", [
    ({"older_than": "-1d"}, "older_than"),
    ({"older_than": "soon"}, "older_than"),
    ('{"older_than": 1e400}', "older_than"),
    ({"status": "running"}, "running jobs are never pruned"),
    ({"status": ["complete", 3]}, "status"),
    ({"dry_run": "yes"}, "dry_run"),
    ({"max_seconds": 0}, "max_seconds"),
    ({"archive": "/tmp"}, "archive"),
])
def test_bad_prune_requests_are_422_and_delete_nothing(make_client: Any, db_url: str, body: Any,
                                                       field: str) -> None:
    ids = old_jobs(db_url, (3, 40, "complete"))
    client = make_client()
    r = (client.post("/prune", content=body, headers={**AUTH, "Content-Type": "application/json"})
         if isinstance(body, str) else client.post("/prune", json=body, headers=AUTH))
    assert r.status_code == 422, r.text
    assert field in r.text
    assert job_ids(db_url) == ids


@pytest.mark.slow
def test_serve_prunes_in_the_background(make_client: Any, db_url: str) -> None:
    old, recent = old_jobs(db_url, (3, 40, "complete"), (3, 3, "complete"))
    make_client(retention=RetentionPolicy(), prune_every=1.0)
    deadline = time.monotonic() + 60
    while old in job_ids(db_url) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert job_ids(db_url) == [recent]
