"""The HTTP trigger through a real uvicorn on a loopback port, in real processes.

Work sharing is checked from a record the processor keeps outside the database
(one line per entity it ran, with its process id), like an operator would.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from chunkq import core

from .helpers import TOKEN, http_client, job_body, read_log, run_serve

pytestmark = pytest.mark.slow

PROCESSOR = "httpproc:record"


async def _jobs(db_url: str) -> list[core.Job]:
    async with core.Queue(db_url) as q:
        return await q.list_jobs(limit=1000)


def db_jobs(db_url: str) -> list[core.Job]:
    return asyncio.run(_jobs(db_url))


# --------------------------------------------------------------------------- starting


@pytest.mark.parametrize("via_cli", [True, False], ids=["chunkq-serve", "python-m-tui.http"])
def test_refuses_to_start_without_a_token(processor_env: dict[str, str], tmp_path: Path, via_cli: bool) -> None:
    db = str(tmp_path / "q.db")
    env = {**processor_env, "CHUNKQ_DB": db}
    for token in (None, "", "   "):
        e = dict(env)
        if token is not None:
            e["CHUNKQ_TOKEN"] = token
        r = run_serve(db if via_cli else None, ["--port", "0", "--processor", PROCESSOR], e, tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "refusing to start without a token" in r.stderr
        assert "CHUNKQ_TOKEN" in r.stderr and "--insecure-no-auth" in r.stderr
        assert "Traceback" not in r.stderr and "Uvicorn running" not in r.stderr
        assert r.stderr.count("\n") == 1
        assert not (tmp_path / "q.db").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--processor", "no_such_module:f"], "no module named 'no_such_module'"),
        (["--processor", "httpproc:missing"], "has no attribute 'missing'"),
        (["--concurrency", "4"], "--concurrency needs --processor"),
        (["--processor", PROCESSOR, "--rate", "clearbit=fast"], "expected PROVIDER=N/s"),
        (["--port", "70000"], "70000"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(processor_env: dict[str, str], tmp_path: Path,
                                                args: list[str], message: str) -> None:
    env = {**processor_env, "CHUNKQ_TOKEN": TOKEN}
    r = run_serve(str(tmp_path / "q.db"), ["--port", "0", *args], env, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_database_exits_2(processor_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**processor_env, "CHUNKQ_TOKEN": TOKEN}
    r = run_serve(f"postgresql://postgres@127.0.0.1:{port}/x", ["--port", "0"], env, tmp_path, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Connect call failed" in r.stderr or "refused" in r.stderr.lower()
    assert "Traceback" not in r.stderr


def test_a_busy_port_exits_2(processor_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**processor_env, "CHUNKQ_TOKEN": TOKEN}
        r = run_serve(str(tmp_path / "q.db"), ["--port", str(port)], env, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_insecure_no_auth_serves_without_a_token(start_server: Any, sqlite_url: str) -> None:
    # also the command alone (`python -m chunkq.tui.http`), its database from CHUNKQ_DB
    server = start_server(sqlite_url, "--insecure-no-auth", token=None, via_cli=False)
    assert server.url.startswith("http://127.0.0.1:")  # loopback by default
    with http_client(server.url, token=None) as c:
        assert c.get("/jobs").status_code == 200
        assert c.post("/jobs", json=job_body(["a"])).status_code == 201


# --------------------------------------------------------------------------- every route, for real


def test_every_route_through_uvicorn(start_server: Any, db_url: str, tmp_path: Path) -> None:
    server = start_server(db_url, "--processor", PROCESSOR)
    with http_client(server.url) as c, http_client(server.url, token=None) as anon:
        assert anon.get("/health").json() == {"status": "ok", "database": "reachable", "processor": True,
                                               "hung_callbacks": 0}
        r = c.post("/jobs/process")
        assert r.status_code == 200 and r.json()["chunks"] == 0

        r = c.post("/jobs", json=job_body(["a", "bad-b", "c"], chunk_size=2, name="real"))
        assert r.status_code == 201, r.text
        job = r.json()
        assert c.post("/jobs", json=job_body([])).status_code == 422

        doc = c.post("/jobs/process").json()
        assert (doc["chunks"], doc["entities"], doc["errors"]) == (1, 2, 1)
        doc = c.post("/jobs/process", params={"max_seconds": 30}).json()
        assert (doc["chunks"], doc["entities"], doc["jobs_completed"]) == (1, 1, [job["id"]])

        listed = c.get("/jobs", params={"status": "complete"}).json()
        assert [j["id"] for j in listed["jobs"]] == [job["id"]]
        shown = c.get(f"/jobs/{job['id']}").json()
        assert shown["status"] == "complete" and shown["processed_count"] == 3 and shown["error_count"] == 1
        errors = c.get(f"/jobs/{job['id']}/errors").json()["errors"]
        assert [(e["entity_id"], e["message"]) for e in errors] == [("bad-b", "cannot enrich bad-b")]
        assert c.get("/jobs/999").status_code == 404
        assert c.get("/jobs/999/errors").status_code == 404
        assert c.get("/jobs/x").status_code == 422
    assert sorted(e for _, e in read_log(tmp_path / "processed.log")) == ["a", "bad-b", "c"]


def test_tokens_through_uvicorn(start_server: Any, sqlite_url: str, tmp_path: Path) -> None:
    server = start_server(sqlite_url, "--processor", PROCESSOR)
    with http_client(server.url) as c:
        c.post("/jobs", json=job_body(["a", "b"]))
    last_char = TOKEN[:-1] + chr(ord(TOKEN[-1]) + 1)
    for token in (None, "wrong", last_char, TOKEN + "0"):
        with http_client(server.url, token=token) as c:
            for method, path in [("POST", "/jobs/process"), ("POST", "/jobs"), ("GET", "/jobs"),
                                 ("GET", "/jobs/1"), ("GET", "/jobs/1/errors")]:
                r = c.request(method, path, json=job_body(["z"]))
                assert r.status_code == 401, (token, method, path)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert "error" in r.json()
            assert c.get("/health").status_code == 200
    assert read_log(tmp_path / "processed.log") == []
    assert [j.total_count for j in db_jobs(sqlite_url)] == [2]


# --------------------------------------------------------------------------- body limits, for real


def _raw_request(url: str, head: str, chunks: list[bytes], *, chunked: bool) -> tuple[int, bytes]:
    """Send a request by hand: uvicorn must answer 413 without the client sending everything."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode("latin-1"))
        for chunk in chunks:
            s.sendall((f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") if chunked else chunk)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            if time.monotonic() > deadline:
                break
            part = s.recv(65536)
            if not part:
                break
            data += part
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_body_limits_through_uvicorn(start_server: Any, sqlite_url: str) -> None:
    server = start_server(sqlite_url, "--max-body-bytes", "1000")
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    # a declared length over the limit: refused from the headers alone, no body sent at all
    head = f"POST /jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 5000000\r\n\r\n"
    status, body = _raw_request(server.url, head, [], chunked=False)
    assert status == 413 and b"limit of 1,000 bytes" in body
    # a chunked body (no declared length) over the limit: refused while it streams in
    head = f"POST /jobs HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    prefix = b'{"entity_type": "company", "provider": "p", "entity_ids": ["a"'
    chunks = [prefix] + [b', "' + b"x" * 96 + b'"'] * 10 + [b"]}"]
    status, body = _raw_request(server.url, head, chunks, chunked=True)
    assert status == 413 and b"limit of 1,000 bytes" in body
    # the same body under the limit is accepted
    small = [prefix, b', "b"]}']
    status, body = _raw_request(server.url, head, small, chunked=True)
    assert status == 201, body
    assert [j.total_count for j in db_jobs(sqlite_url)] == [2]


# --------------------------------------------------------------------------- concurrency


def _enqueue_shared_work(client: httpx.Client) -> list[str]:
    ids = [f"j1-{i:03d}" for i in range(12)] + ["bad-0"] + [f"j2-{i:03d}" for i in range(12)]
    for part in (ids[:13], ids[13:]):
        r = client.post("/jobs", json=job_body(part, chunk_size=3, max_workers=2))
        assert r.status_code == 201, r.text
    return ids


def _check_shared(db_url: str, log: Path, ids: list[str],
                  docs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    seen = read_log(log)
    counts = Counter(entity for _, entity in seen)
    assert sorted(counts) == sorted(ids)
    assert set(counts.values()) == {1}, [e for e, n in counts.items() if n > 1]  # exactly once
    assert sum(d["entities"] for d in docs) == len(ids)
    assert sum(d["errors"] for d in docs) == 1
    assert sum(d["chunks"] for d in docs) == 9  # 13 -> 5 chunks of 3, 12 -> 4
    assert all(d["chunks"] >= 1 for d in docs), docs  # the work really was shared
    assert sorted(j for d in docs for j in d["jobs_completed"]) == sorted(j.id for j in db_jobs(db_url))
    for job in db_jobs(db_url):
        assert job.status == "complete" and job.processed_count == job.total_count
    return seen


def test_two_concurrent_process_calls_share_the_work(start_server: Any, processor_env: dict[str, str],
                                                     db_url: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**processor_env, "HTTP_TEST_GATE": str(gate)}
    server = start_server(db_url, "--processor", PROCESSOR, env=env)
    with http_client(server.url) as c:
        ids = _enqueue_shared_work(c)

    def call(_: int) -> dict[str, Any]:
        with http_client(server.url) as c:
            r = c.post("/jobs/process", params={"max_seconds": 60})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(2) as pool:
        docs = list(pool.map(call, range(2)))
    _check_shared(db_url, tmp_path / "processed.log", ids, docs)


def test_two_servers_share_the_work(start_server: Any, processor_env: dict[str, str], db_url: str,
                                    tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {**processor_env, "HTTP_TEST_GATE": str(gate)}
    servers = [start_server(db_url, "--processor", PROCESSOR, env=env) for _ in range(2)]
    with http_client(servers[0].url) as c:
        ids = _enqueue_shared_work(c)

    def call(url: str) -> dict[str, Any]:
        with http_client(url) as c:
            r = c.post("/jobs/process", params={"max_seconds": 60})
            assert r.status_code == 200, r.text
            return r.json()

    with ThreadPoolExecutor(2) as pool:
        docs = list(pool.map(call, [s.url for s in servers]))
    seen = _check_shared(db_url, tmp_path / "processed.log", ids, docs)
    assert {pid for pid, _ in seen} == {s.proc.pid for s in servers}


def test_sigterm_lets_a_running_process_call_finish_its_chunk(
    start_server: Any, processor_env: dict[str, str], sqlite_url: str, tmp_path: Path
) -> None:
    env = {**processor_env, "HTTP_TEST_SLEEP": "0.05"}
    server = start_server(sqlite_url, "--processor", PROCESSOR, env=env)
    log = tmp_path / "processed.log"
    with http_client(server.url) as c:
        c.post("/jobs", json=job_body([f"e{i:03d}" for i in range(200)], chunk_size=10))

    with ThreadPoolExecutor(1) as pool, http_client(server.url) as c:
        pending = pool.submit(c.post, "/jobs/process", params={"max_seconds": 60})
        deadline = time.monotonic() + 20
        while not read_log(log) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_log(log), "processing never started"
        server.proc.terminate()
        r = pending.result(timeout=30)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["stopped_by"] == "signal"
    assert 1 <= doc["chunks"] < 20
    # uvicorn re-raises the signal once shut down, so a supervisor sees "stopped by SIGTERM"
    assert server.proc.wait(timeout=30) == -signal.SIGTERM
    # the chunk in flight was finished and committed: nothing processed is unrecorded
    (job,) = db_jobs(sqlite_url)
    assert job.processed_count == doc["entities"] == len(read_log(log)) == doc["chunks"] * 10
    assert job.leased_chunks == 0


def test_a_hung_callback_cannot_hold_a_process_call_past_its_grace(
    start_server: Any, processor_env: dict[str, str], sqlite_url: str, tmp_path: Path
) -> None:
    # no --timeout, and a callback that sleeps for ten minutes: the request used to wait as long
    env = {**processor_env, "HTTP_TEST_SLEEP": "600"}
    server = start_server(sqlite_url, "--processor", PROCESSOR, "--grace", "0.5", env=env)
    with http_client(server.url) as c:
        c.post("/jobs", json=job_body(["a", "b"], chunk_size=2))
        one = c.post("/jobs/process")  # one chunk: its grace runs from its claim
        timed = c.post("/jobs/process", params={"max_seconds": 0.2})  # past max_seconds
        health = c.get("/health")
    for r in (one, timed):
        assert r.status_code == 200, r.text
        assert (r.json()["stopped_by"], r.json()["overran"]) == ("overran", [{"job_id": 1, "chunk": 0}])
    # each request gave the chunk back (released, not left to its 30 s lease): the second one took it at once
    assert [e for _pid, e in read_log(tmp_path / "processed.log")] == ["a", "a"]
    assert (health.status_code, health.json()["status"], health.json()["hung_callbacks"]) == (200, "ok", 2)
    (job,) = db_jobs(sqlite_url)
    assert (job.processed_count, job.is_released) == (0, True)  # given back, for any worker to take now


def test_process_answers_the_same_document_as_the_cli(start_server: Any, processor_env: dict[str, str],
                                                      sqlite_url: str, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    server = start_server(sqlite_url, "--processor", PROCESSOR)
    with http_client(server.url) as c:
        c.post("/jobs", json=job_body(["a", "b", "bad-c", "d"], chunk_size=3))
        over_http = c.post("/jobs/process").json()
    cli = subprocess.run(
        [sys.executable, "-m", "chunkq.tui.cli", "--db", sqlite_url, "process", "--json", "--processor", PROCESSOR],
        env=processor_env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    assert set(from_cli) == set(over_http)
    for doc in (over_http, from_cli):
        doc.pop("elapsed")
    assert over_http == {"chunks": 1, "entities": 3, "errors": 1, "retried": 0, "discarded": 0,
                         "jobs_completed": [], "stopped_by": "max_chunks"}
    assert from_cli == {**over_http, "entities": 1, "errors": 0, "jobs_completed": [1]}


def test_serve_never_imports_textual(python_env: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from chunkq.tui.cli import main; sys.argv = ['chunkq', 'serve', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "import chunkq.tui.http\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'textual'))")
    r = subprocess.run([sys.executable, "-c", code], env=python_env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--insecure-no-auth" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "[]"
