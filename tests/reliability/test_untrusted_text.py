"""Untrusted text stored and read back, through every entry point, on both backends.

Job names, entity types, providers, ``params`` and entity IDs come from people and
their files. Generated text full of what breaks things (lone surrogates, NUL,
C0/C1 controls, escape sequences, markup brackets, emoji ZWJ sequences,
right-to-left text) goes in through core, HTTP, the CLI (real processes) and the
dashboard's enqueue form. Valid text must come back exactly; invalid text must be
refused with a message naming the field, and nothing stored. A row holding bad
text from before these checks must still read back, so one bad job cannot break
every listing for everyone.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import InvalidInput, Queue
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import forkserver
from tests.cli.helpers import CHUNKQ, invoke_chunkq, run_chunkq
from tests.http.helpers import job_body

from ._support import SOAK

# ---------------------------------------------------------------------- what "valid" means, said independently

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def label_ok(text: str, *, required: bool = True) -> bool:
    s = text.strip()
    if not s:
        return not required
    return len(s) <= 200 and not _CONTROL.search(s) and not _SURROGATE.search(s)


def id_ok(text: str) -> bool:
    s = text.strip()
    return bool(s) and len(s) <= 2048 and not _CONTROL.search(s) and not _SURROGATE.search(s)


def param_ok(text: str) -> bool:
    return "\x00" not in text and not _SURROGATE.search(text)


#: pieces that have broken a queue, a terminal or a JSON encoder somewhere
PIECES = [
    "[/x]", "[b]", "[/v2/companies/acme.com]", "[link=http://x]", "\x1b[31m", "\x1b]2;pwned\x07", "\x9b",
    "\x85", "\u202e", "\u2066", "\u200d", "👩\u200d👩\u200d👧", "🏳️\u200d🌈", "مرحبا", "שלום", "\ud800", "\udcff",
    "\x00", "\t", "\n", "\r", "\x7f", "é", "e\u0301", " ", "\\", "'", '"', "%", "_", "\ufeff", "𝔘𝔫𝔦",
]
nasty = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4)), min_size=1, max_size=6).map("".join)
#: which input carries the nasty text (the others stay plain)
FIELDS = ("name", "entity_type", "provider", "param_key", "param_value", "entity_id")


def request_for(field: str, text: str) -> tuple[list[str], dict[str, Any], bool, str]:
    """(ids, enqueue keywords, valid?, what the refusal must name)."""
    ids = ["plain-1", "plain-2"]
    kw: dict[str, Any] = {"entity_type": "company", "provider": "clearbit", "name": "plain",
                          "params": {"k": "v"}}
    if field in ("name", "entity_type", "provider"):
        kw[field] = text
        return ids, kw, label_ok(text, required=field != "name"), field
    if field == "param_key":
        kw["params"] = {text: 1}
        return ids, kw, param_ok(text), "params"
    if field == "param_value":
        kw["params"] = {"k": [1, {"deep": text}]}
        return ids, kw, param_ok(text), "params"
    return [ids[0], text], kw, id_ok(text), "entity ID #2"


def expected_back(field: str, text: str) -> Any:
    """What reading the job (or its second ID) gives back for valid ``text``."""
    if field == "name":
        return text.strip() or None
    if field in ("entity_type", "provider", "entity_id"):
        return text.strip()
    return text


def read_back(job: Any, ids: list[str], field: str) -> Any:
    if field in ("name", "entity_type", "provider"):
        return getattr(job, field) if not isinstance(job, dict) else job[field]
    params = job.params if not isinstance(job, dict) else job["params"]
    if field == "param_key":
        return next(iter(params))
    if field == "param_value":
        return params["k"][1]["deep"]
    return ids[1]


EXAMPLES = 25 * SOAK
HYPOTHESIS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------- core


@pytest.mark.slow
@pytest.mark.parametrize("field", FIELDS)
@HYPOTHESIS
@given(text=nasty)
def test_core_keeps_valid_text_exactly_and_refuses_the_rest(db_url: str, field: str, text: str) -> None:
    ids, kw, valid, names = request_for(field, text)
    event(f"{field}: {'valid' if valid else 'refused'}")

    async def go() -> None:
        async with Queue(db_url) as q:
            before = await q.count_jobs()
            try:
                job = await q.enqueue_job(ids, **kw)
            except InvalidInput as exc:
                assert not valid, f"{field}={text!r} refused: {exc}"
                assert names in str(exc), str(exc)
                assert "\n" not in str(exc)
                str(exc).encode("utf-8")  # a refusal must itself be printable as UTF-8
                assert await q.count_jobs() == before, "a refused job left rows behind"
                return
            assert valid, f"{field}={text!r} was stored"
            back = read_back(await q.get_job(job.id), await q.entity_ids(job.id), field)
            assert back == expected_back(field, text)
            await q.list_jobs(limit=1000)  # every listing still reads

    asyncio.run(go())


# ---------------------------------------------------------------------- HTTP


def _post(client: Any, body: dict[str, Any]) -> Any:
    # ensure_ascii: a lone surrogate travels as a \ud800 escape, as any JSON client may send it
    return client.post("/jobs", content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


@pytest.mark.slow
@pytest.mark.parametrize("field", FIELDS)
@HYPOTHESIS
@given(text=nasty)
def test_http_keeps_valid_text_exactly_and_answers_422_for_the_rest(
    db_url: str, client: Any, field: str, text: str,
) -> None:
    ids, kw, valid, names = request_for(field, text)
    event(f"{field}: {'valid' if valid else 'refused'}")
    before = client.get("/jobs").json()["total"]
    r = _post(client, job_body(ids, **{k: v for k, v in kw.items() if k != "entity_ids"}))
    if not valid:
        assert r.status_code == 422, (field, text, r.status_code, r.text)
        assert names in r.json()["error"], r.json()
    else:
        assert r.status_code == 201, (field, text, r.status_code, r.text)
        job = client.get(f"/jobs/{r.json()['id']}").json()
        stored = asyncio.run(_entity_ids(db_url, job["id"]))
        assert read_back(job, stored, field) == expected_back(field, text)
    listing = client.get("/jobs")
    assert listing.status_code == 200, listing.text
    assert listing.json()["total"] == before + (1 if valid else 0)


async def _entity_ids(url: str, job_id: int) -> list[str]:
    async with Queue(url) as q:
        return await q.entity_ids(job_id)


# ---------------------------------------------------------------------- CLI, real processes

# (label, extra argv (str, or bytes for what a terminal could send undecodable), IDs file bytes, valid?, names)
CLI_CASES: list[tuple[str, list[str | bytes], bytes, bool, str]] = [
    ("markup name", ["--name", "[/x] weekly import"], b"acme.com\n", True, ""),
    ("emoji and RTL", ["--name", "👩\u200d👩\u200d👧 مرحبا", "-p", "prov[b]"], "é-1\nשלום\n".encode(), True, ""),
    ("bidi override (kept, shown escaped)", ["--name", "evil\u202etxt.exe"], b"x\n", True, ""),
    ("escape sequence in name", ["--name", "\x1b]2;pwned\x07"], b"x\n", False, "name contains a control"),
    ("C1 in provider", ["-p", "p\x9bq"], b"x\n", False, "provider contains a control"),
    ("undecodable argv byte", [b"--name", b"caf\xe9"], b"x\n", False, "name is not valid UTF-8"),
    ("escape sequence in an ID", [], b"ok\nbad\x1b[31m\n", False, "line 2: the ID contains a control"),
    ("CR-only line endings", [], b"m1\rm2\rm3", True, ""),
]


@pytest.mark.slow
@pytest.mark.parametrize(("label", "extra", "ids", "valid", "names"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_enqueue_keeps_valid_text_and_refuses_the_rest(
    db_url: str, python_env: dict[str, str], tmp_path: Path,
    label: str, extra: list[str | bytes], ids: bytes, valid: bool, names: str,
) -> None:
    (tmp_path / "ids.txt").write_bytes(ids)
    args: list[str | bytes] = ["--db", db_url, "--json", "enqueue", "ids.txt", "-t", "company", "-p", "clearbit",
                               *extra]
    proc = forkserver.run([*CHUNKQ, *args], env=python_env, cwd=tmp_path, capture_output=True, timeout=60)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    # what the database holds afterwards is read in-process: only the enqueue is about the process's argv
    listing = invoke_chunkq(["--db", db_url, "--json", "jobs"], tmp_path)
    if not valid:
        assert proc.returncode == 2, (label, proc.returncode, out, err)
        assert names in err and len(err.strip().splitlines()) == 1, err
        assert "\x1b" not in err and "\x9b" not in err
        if listing.returncode == 2:  # a refused setting is caught before any database is created
            assert ("no chunkq database" in listing.stderr or "has no chunkq tables" in listing.stderr), \
                listing.stderr
        else:  # the IDs are checked as they stream in: the database exists, the job does not
            assert listing.returncode == 0, listing.stderr
            assert json.loads(listing.stdout)["jobs"] == []
        return
    assert listing.returncode == 0, listing.stderr
    jobs = json.loads(listing.stdout)["jobs"]
    assert proc.returncode == 0, err
    job = json.loads(out)
    wanted: dict[str, str] = {}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        wanted[{"--name": "name", "-p": "provider"}[str(flag)]] = str(value)
    assert {k: job[k] for k in wanted} == wanted
    assert [j["id"] for j in jobs] == [job["id"]]
    shown = invoke_chunkq(["--db", db_url, "--json", "show", str(job["id"])], tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["job"]["name"] == job["name"]
    expected_ids = [line.strip() for line in re.split(r"\r\n|\r|\n", ids.decode()) if line.strip()]
    assert asyncio.run(_entity_ids(db_url, job["id"])) == expected_ids


# ---------------------------------------------------------------------- old rows holding bad text


@pytest.mark.slow
def test_a_stored_lone_surrogate_no_longer_breaks_reading(sqlite_url: str, python_env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """Before the checks, one HTTP request stored params with a lone surrogate and broke
    ``GET /jobs``, ``GET /jobs/1`` and ``chunkq --json jobs`` for everyone. Such a row (written
    here directly, as that request did) must read back, the bad character replaced."""
    job_id = asyncio.run(_enqueue_plain(sqlite_url))
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:  # the JSON text SQLAlchemy wrote for {"k": "\ud800"}, escape and all
        db.execute("UPDATE chunkq_jobs SET params = ? WHERE id = ?", ('{"k": "a\\ud800b"}', job_id))
    with _client(sqlite_url) as client:
        for url in ("/jobs", f"/jobs/{job_id}"):
            r = client.get(url)
            assert r.status_code == 200, (url, r.text)
        assert client.get(f"/jobs/{job_id}").json()["params"] == {"k": "a\ufffdb"}
    for args in (["--json", "jobs"], ["jobs"], ["--json", "show", str(job_id)], ["show", str(job_id)]):
        r = run_chunkq(["--db", sqlite_url, *args], python_env, tmp_path)
        assert r.returncode == 0, (args, r.stderr)


async def _enqueue_plain(url: str) -> int:
    async with Queue(url) as q:
        return (await q.enqueue_job(["a", "b"], entity_type="company", provider="p")).id


def _client(url: str) -> Any:
    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    from tests.http.helpers import TOKEN

    return TestClient(create_app(url, None, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def client(db_url: str) -> Any:
    """One app for every example of a test (hypothesis runs the examples inside one fixture scope)."""
    with _client(db_url) as c:
        yield c
