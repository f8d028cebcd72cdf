"""Bad input at the HTTP entry point (issue 6): every case is a 4xx with a clear one-line
message, and the database is exactly as it was, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from chunkq import core

from .helpers import AUTH, job_body

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

TEN_KB = "x" * 10_240

# (id, body as Python (sent as JSON) or bytes (sent as is), status, words the message must contain)
BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("empty-list", job_body([]), 422, "no entity IDs"),
    ("blank-id", job_body(["a", ""]), 422, "entity ID #2 is blank"),
    ("whitespace-id", job_body(["a", " \t\n "]), 422, "entity ID #2 is blank"),
    ("all-whitespace", job_body(["  ", "   "]), 422, "entity ID #1 is blank"),
    ("int-id", job_body(["a", 42]), 422, "entity ID #2 is int"),
    ("null-id", job_body([None]), 422, "entity ID #1 is NoneType"),
    ("bool-id", job_body([True]), 422, "not a string"),
    ("object-id", job_body([{"id": "a"}]), 422, "not a string"),
    ("list-id", job_body([["a"]]), 422, "not a string"),
    ("float-id", job_body([1.5]), 422, "not a string"),
    ("10kb-id", job_body(["a", TEN_KB]), 422, "entity ID #2 is 10,240 characters long"),
    ("nul-id", job_body(["a\x00b"]), 422, "contains a NUL byte"),
    ("lone-surrogate-id", b'{"entity_type": "c", "provider": "p", "entity_ids": ["\\ud800"]}', 422,
     "not valid UTF-8"),
    ("bad-id-at-the-end", job_body([f"id-{i}" for i in range(20_000)] + [""]), 422, "entity ID #20001 is blank"),
    ("ids-string", job_body("a,b,c"), 422, "entity_ids must be a JSON array"),
    ("ids-object", job_body({"a": 1}), 422, "entity_ids must be a JSON array"),
    ("ids-number", job_body(7), 422, "entity_ids must be a JSON array"),
    ("ids-missing", {"entity_type": "c", "provider": "p"}, 422, "entity_ids is required"),
    ("chunk-size-0", job_body(["a"], chunk_size=0), 422, "chunk_size must be between 1 and 10,000, got 0"),
    ("chunk-size-negative", job_body(["a"], chunk_size=-1), 422, "chunk_size must be between"),
    ("chunk-size-huge", job_body(["a"], chunk_size=10**30), 422, "chunk_size must be between"),
    ("chunk-size-float", job_body(["a"], chunk_size=2.5), 422, "chunk_size must be a whole number"),
    ("chunk-size-string", job_body(["a"], chunk_size="50"), 422, "chunk_size must be a whole number"),
    ("chunk-size-bool", job_body(["a"], chunk_size=True), 422, "chunk_size must be a whole number"),
    ("priority-huge", job_body(["a"], priority=10**12), 422, "priority must be between"),
    ("max-workers-0", job_body(["a"], max_workers=0), 422, "max_workers must be between"),
    ("max-attempts-0", job_body(["a"], max_attempts=0), 422, "max_attempts must be between"),
    ("error-ratio-2", job_body(["a"], max_error_ratio=2), 422, "max_error_ratio must be a fraction"),
    ("entity-type-blank", job_body(["a"], entity_type="  "), 422, "entity_type is required"),
    ("entity-type-number", job_body(["a"], entity_type=3), 422, "entity_type is required"),
    ("provider-missing", {"entity_ids": ["a"], "entity_type": "c"}, 422, "provider is required"),
    ("provider-too-long", job_body(["a"], provider="p" * 201), 422, "provider must be at most 200"),
    ("name-nul", job_body(["a"], name="x\x00y"), 422, "name contains a NUL byte"),
    ("name-number", job_body(["a"], name=5), 422, "name must be a string"),
    ("dedupe-string", job_body(["a"], dedupe="true"), 422, "dedupe must be true or false"),
    ("params-list", job_body(["a"], params=["x"]), 422, "params must be a JSON object"),
    ("unknown-field", job_body(["a"], chunksize=5), 422, "unknown field 'chunksize'"),
    # bodies that are not a JSON object at all
    ("empty-body", b"", 400, "request body is empty"),
    ("whitespace-body", b"  \n ", 400, "request body is empty"),
    ("plain-text", b"company-1\ncompany-2\n", 400, "not valid JSON"),
    ("truncated-json", b'{"entity_ids": ["a", "b"', 400, "not valid JSON"),
    ("form-encoded", b"entity_ids=a&entity_type=c&provider=p", 400, "not valid JSON"),
    ("json-array", b'["a", "b"]', 400, "must be a JSON object, got an array"),
    ("json-string", b'"a"', 400, "must be a JSON object, got a string"),
    ("json-null", b"null", 400, "must be a JSON object, got null"),
    ("json-nan", b'{"entity_ids": ["a"], "entity_type": "c", "provider": "p", "max_error_ratio": NaN}', 400,
     "NaN is not valid JSON"),
    ("invalid-utf8", b'{"entity_ids": ["\xff\xfe"], "entity_type": "c", "provider": "p"}', 400,
     "not UTF-8 text"),
    ("deeply-nested", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
]


def _snapshot(client: Any) -> list[dict[str, Any]]:
    r = client.get("/jobs", params={"limit": 1000}, headers=AUTH)
    assert r.status_code == 200
    return r.json()["jobs"]


def _assert_clear(r: Any, status: int, words: str) -> None:
    assert r.status_code == status, r.text[:300]
    doc = r.json()
    assert set(doc) == {"error"}
    message = doc["error"]
    assert words in message, message
    assert "\n" not in message and "Traceback" not in message and len(message) < 300, message


@pytest.fixture
def client(make_client: Any) -> Any:
    """A server with one job already in it: bad input must leave it (and everything else) alone."""
    c = make_client(core.Processor(on_process=lambda entity_id, job: None))
    assert c.post("/jobs", json=job_body(["w1", "w2"], name="witness"), headers=AUTH).status_code == 201
    return c


@pytest.mark.slow
@pytest.mark.parametrize(("body", "status", "words"), [case[1:] for case in BAD_BODIES],
                         ids=[case[0] for case in BAD_BODIES])
def test_bad_job_bodies_change_nothing(client: Any, body: Any, status: int, words: str) -> None:
    before = _snapshot(client)
    if isinstance(body, bytes):
        r = client.post("/jobs", content=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = client.post("/jobs", content=json.dumps(body).encode(), headers=AUTH)
    _assert_clear(r, status, words)
    assert _snapshot(client) == before


@pytest.mark.slow
def test_a_million_ids_over_the_body_limit_is_413_and_creates_nothing(client: Any) -> None:
    before = _snapshot(client)
    body = json.dumps(job_body([f"company-{i:07d}" for i in range(1_000_000)])).encode()
    assert len(body) > 10 * 1024 * 1024
    _assert_clear(client.post("/jobs", content=body, headers=AUTH), 413, "larger than the limit")
    assert _snapshot(client) == before


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/jobs/999999", 404, "no job with id 999999"),
        ("/jobs/999999/errors", 404, "no job with id 999999"),
        ("/jobs/0", 422, "job id must be a positive whole number, got '0'"),
        ("/jobs/-1", 422, "job id must be a positive whole number"),
        ("/jobs/abc/errors", 422, "job id must be a positive whole number, got 'abc'"),
        ("/jobs/1e3", 422, "job id must be a positive whole number"),
        ("/jobs/%20", 422, "job id must be a positive whole number"),
        (f"/jobs/{2**63}", 422, "job id must be a positive whole number"),
        ("/jobs/" + "9" * 5000, 422, "job id must be a positive whole number"),
        ("/jobs/%00", 422, "job id must be a positive whole number"),
        ("/jobs/1/errors?limit=-1", 422, "limit must be between"),
        ("/jobs/1/errors?offset=x", 422, "offset must be a whole number"),
        ("/jobs?status=", 200, ""),
        ("/jobs?status=%00", 422, "unknown status"),
        ("/jobs?limit=" + "9" * 5000, 422, "limit must be a whole number"),
    ],
)
def test_bad_ids_and_queries_on_reads(client: Any, path: str, status: int, words: str) -> None:
    before = _snapshot(client)
    r = client.get(path, headers=AUTH)
    if status == 200:
        assert r.status_code == 200
    else:
        _assert_clear(r, status, words)
    assert _snapshot(client) == before


@pytest.mark.parametrize(
    ("query", "words"),
    [("max_seconds=", "max_seconds must be a number"), ("max_seconds=1e999", "more than 0"),
     ("max_seconds=-0", "more than 0"), ("max_seconds=%00", "max_seconds must be a number"),
     ("job=1", "unknown query parameter 'job'")],
)
def test_bad_process_queries_process_nothing(client: Any, query: str, words: str) -> None:
    before = _snapshot(client)
    _assert_clear(client.post(f"/jobs/process?{query}", headers=AUTH), 422, words)
    assert _snapshot(client) == before
