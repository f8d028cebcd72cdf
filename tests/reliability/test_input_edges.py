"""Input at the edges: secrets in URLs, servers that never answer, noisy callbacks, huge lines, slow bodies.

Each case was once reproduced against a real `chunkq` process: a database password
printed back, every command hung for three minutes by a server that accepts TCP
and never answers, ``--json`` output broken by a callback's ``print()``, a 300 MB
line read whole into memory, ``/dev/zero`` ending in ``MemoryError``, ``GET
/jobs/process`` answered as a job id, a disconnecting client leaving a traceback,
and a declared body that never comes holding its connection forever. Every
process here is bounded by a timeout: a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue

from tests import forkserver
from tests.cli.helpers import CHUNKQ, run_chunkq
from tests.http.helpers import AUTH, TOKEN, job_body

SECRET = "S3CRET-pw"


async def _create(url: str, ids: list[str] | None = None) -> int | None:
    async with Queue(url) as q:
        if ids:
            return (await q.enqueue_job(ids, entity_type="company", provider="p")).id
    return None


def _with_password(pg_url: str) -> str:
    """The test database's URL with a password in it (trust authentication ignores it)."""
    scheme, rest = pg_url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET}@{host}"


# ---------------------------------------------------------------------- passwords never printed


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["jobs"],
    ["tui"],
    ["serve", "--insecure-no-auth", "--port", "0"],
    ["--json", "process", "--processor", "chunkq.core.demo:enrich"],
])
def test_an_unparseable_url_is_reported_without_its_password(argv: list[str], python_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:abc/x"
    r = run_chunkq(["--db", url, *argv], python_env, tmp_path, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "is not a valid URL" in r.stderr, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert "postgres:***@127.0.0.1:abc" in r.stderr


@pytest.mark.slow
def test_demo_json_masks_the_database_it_reports(pg_url: str, python_env: dict[str, str], tmp_path: Path) -> None:
    url = _with_password(pg_url)
    r = run_chunkq(["--db", url, "--json", "demo", "--no-ui"], python_env, tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert SECRET not in r.stdout + r.stderr
    assert ":***@" in doc["db"] and ":***@" in doc["url"]
    r = run_chunkq(["--db", url, "demo", "--no-ui"], python_env, tmp_path, timeout=120)  # already seeded
    assert r.returncode == 0 and SECRET not in r.stdout + r.stderr, r.stderr


# ---------------------------------------------------------------------- a server that never answers


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.mark.slow
def test_connecting_is_bounded_and_configurable(silent_server: int, python_env: dict[str, str],
                                                tmp_path: Path) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{silent_server}/x"
    env = {**python_env, "CHUNKQ_CONNECT_TIMEOUT": "1"}
    r = run_chunkq(["--db", url, "jobs"], env, tmp_path, timeout=45)  # asyncpg's own: 3 x 60 s
    assert r.returncode == 2, r.stderr
    assert "did not answer in time" in r.stderr and SECRET not in r.stderr, r.stderr
    assert "failed after 3 tries: " in r.stderr, r.stderr  # the whole wait (3 x 1 s), said
    r = run_chunkq(["--db", url + "?connect_timeout=1", "jobs"], python_env, tmp_path, timeout=45)
    assert r.returncode == 2 and "did not answer in time" in r.stderr, r.stderr
    r = run_chunkq(["--db", url + "?connect_timeout=soon", "jobs"], python_env, tmp_path, timeout=45)
    assert r.returncode == 2 and "connect_timeout" in r.stderr and "soon" in r.stderr, r.stderr


@pytest.mark.slow
def test_max_seconds_bounds_the_whole_run_including_opening(silent_server: int, python_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_server}/x"  # the default connect timeout: 10 s, 3 tries
    started = time.monotonic()
    r = run_chunkq(["--db", url, "process", "--processor", "chunkq.core.demo:enrich", "--max-seconds", "2"],
                   python_env, tmp_path, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "did not answer within --max-seconds 2" in r.stderr, r.stderr
    print(f"\n[connect] process --max-seconds 2 against a silent server ended after "
          f"{time.monotonic() - started:.1f}s (was ~180s)")


# ---------------------------------------------------------------------- --json stays one document


NOISY = '''
import os, sys
print("imported, and saying so on stdout")

def process(entity_id, job):
    print("processing", entity_id)
    sys.stdout.write("more noise\\n")
    os.write(1, b"straight to file descriptor 1\\n")
'''


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_callbacks_printing_cannot_break_json_output(backend: str, python_env: dict[str, str], tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    asyncio.run(_create(url, ["a", "b", "c"]))
    (tmp_path / "noisy.py").write_text(NOISY)
    r = run_chunkq(["--db", url, "--json", "process", "--until-empty", "--processor", "noisy:process"],
                   python_env, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # one JSON document and nothing else
    assert doc["entities"] == 3
    assert r.stderr.count("straight to file descriptor 1") == 3 and "imported, and saying so" in r.stderr


# ---------------------------------------------------------------------- reading IDs: bounded


def _peak_rss_mb(argv: list[str], env: dict[str, str], cwd: Path, stdin: Any) -> tuple[int, float, str]:
    """Run ``argv`` from a fresh helper process, so RUSAGE_CHILDREN is that one child's peak alone."""
    helper = ("import resource, subprocess, sys\n"
              "r = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE)\n"
              "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
              "sys.stderr.write(r.stderr.decode())\n")
    r = subprocess.run([sys.executable, "-c", helper, *argv], env=env, cwd=cwd, stdin=stdin,
                       capture_output=True, timeout=120)
    code, kb = r.stdout.decode().split()
    return int(code), int(kb) / 1024, r.stderr.decode()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_an_over_long_line_is_refused_as_it_is_read(how: str, sqlite_url: str, python_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    big = tmp_path / "one-line.txt"
    with big.open("wb") as f:  # 256 MiB of zero bytes after a good line, sparse: no disk is used
        f.write(b"fine-1\n")
        f.truncate(256 << 20)
    source = str(big) if how == "file" else "-"
    with big.open("rb") as stdin:
        code, peak, err = _peak_rss_mb([*CHUNKQ, "--db", sqlite_url, "enqueue", source, "-t", "x", "-p", "y"],
                                       python_env, tmp_path, stdin)
    assert code == 2, err
    assert "line 2: longer than 1,048,576 characters" in err, err
    assert peak < 200, f"reading a 256 MiB line took {peak:.0f} MB"  # it took 2.2x the line before
    assert asyncio.run(_count(sqlite_url)) == 0
    print(f"\n[enqueue] a 256 MiB line from {how}: refused at line 2, peak RSS {peak:.0f} MB")


@pytest.mark.slow
def test_dev_zero_on_stdin_is_refused_quickly(sqlite_url: str, python_env: dict[str, str], tmp_path: Path) -> None:
    with open("/dev/zero", "rb") as zero:
        r = forkserver.run([*CHUNKQ, "--db", sqlite_url, "enqueue", "-", "-t", "x", "-p", "y"], env=python_env,
                           cwd=tmp_path, stdin=zero, capture_output=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert b"stdin, line 1: longer than" in r.stderr


@pytest.mark.slow
def test_the_stdin_spool_is_capped(sqlite_url: str, python_env: dict[str, str], tmp_path: Path) -> None:
    data = b"".join(b"id-%d\n" % i for i in range(1000))
    env = {**python_env, "CHUNKQ_STDIN_MAX_BYTES": "4000"}
    r = run_chunkq(["--db", sqlite_url, "enqueue", "-", "-t", "x", "-p", "y"], env, tmp_path, input=data)
    assert r.returncode == 2 and "stdin holds more than 4,000 bytes" in r.stderr, r.stderr
    r = run_chunkq(["--db", sqlite_url, "enqueue", "-", "-t", "x", "-p", "y"], python_env, tmp_path, input=data)
    assert r.returncode == 0, r.stderr


async def _count(url: str) -> int:
    async with Queue(url) as q:
        return await q.count_jobs()


# ---------------------------------------------------------------------- HTTP


@pytest.fixture
def client(sqlite_url: str) -> Iterator[Any]:
    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    with TestClient(create_app(sqlite_url, None, token=TOKEN), headers=AUTH) as c:
        yield c


def test_get_on_the_process_route_is_405_not_a_job_id(client: Any) -> None:
    r = client.get("/jobs/process")
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST" and "error" in r.json()
    r = client.post("/jobs/process")  # still the route for POST (this app has no processor)
    assert r.status_code == 422 and "no processor" in r.json()["error"], r.text


@pytest.mark.parametrize("field", ["max_error_ratio", "max_errors", "chunk_size", "priority", "max_workers",
                                   "max_attempts"])
def test_booleans_are_not_numbers(client: Any, field: str) -> None:
    r = client.post("/jobs", json=job_body(["a"], **{field: True}))
    assert r.status_code == 422 and field in r.json()["error"], r.text
    assert client.get("/jobs").json()["total"] == 0


def _raw_request(port: int, head: bytes, body: bytes = b"", *, close: bool = False) -> bytes:
    """Send raw bytes; return what the server answers (empty when it just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body)
        if close:
            return b""
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _head(port: int, length: int) -> bytes:
    return (f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


@pytest.mark.slow
def test_a_body_that_never_comes_gets_408(sqlite_url: str, start_server: Any) -> None:
    asyncio.run(_create(sqlite_url))
    server = start_server(sqlite_url, "--body-timeout", "1")
    port = int(server.url.rsplit(":", 1)[1])
    answer = _raw_request(port, _head(port, 100), b'{"entity_ids"')  # 13 of the 100 bytes, then silence
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 1 s" in answer


@pytest.mark.slow
def test_a_client_leaving_mid_body_is_one_quiet_line(sqlite_url: str, start_server: Any) -> None:
    asyncio.run(_create(sqlite_url))
    server = start_server(sqlite_url)
    port = int(server.url.rsplit(":", 1)[1])
    _raw_request(port, _head(port, 1000), b'{"entity_ids": ["a"', close=True)
    deadline = time.monotonic() + 15
    while "disconnected before sending the whole body" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = server.output()
    assert "disconnected before sending the whole body" in out, out
    assert "Traceback" not in out, out
    assert asyncio.run(_count(sqlite_url)) == 0


@pytest.fixture
def start_server(python_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    from tests.http.helpers import ServerProcess, serve_command

    started: list[ServerProcess] = []

    def start(db_url: str, *args: str) -> ServerProcess:
        server = ServerProcess(serve_command(db_url, ["--port", "0", *args]),
                               {**python_env, "CHUNKQ_TOKEN": TOKEN}, tmp_path)
        started.append(server)
        server.wait_started()
        return server

    yield start
    for server in started:
        server.stop()

