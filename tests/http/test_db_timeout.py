"""`chunkq serve --db-timeout S`: how long a request waits for the database before it is answered 503.

The database is held by the test itself - SQLite: a connection holding the write
lock; PostgreSQL: a transaction holding ``chunkq_jobs`` in ACCESS EXCLUSIVE mode -
so a request that claims a chunk (or, on PostgreSQL, reads a job) waits for it;
the 503's message says how long it waited, which cannot be less than the bound
applied (the default is 5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import TOKEN, http_client, job_body, run_serve

pytestmark = pytest.mark.slow

DEFAULT = 5.0  # tui/http/app.py REQUEST_DB_SECONDS: what the server would wait without the option
WAITED = re.compile(r"the database did not answer for (\d+\.\d) s")


@contextlib.contextmanager
def database_held(db_url: str) -> Iterator[None]:
    """While inside, nobody else may write a job (SQLite: nor any row)."""
    if db_url.startswith("sqlite:///"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    held, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    async def hold() -> None:
        import asyncpg

        conn = await asyncpg.connect(db_url.replace("+asyncpg", ""), timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE chunkq_jobs IN ACCESS EXCLUSIVE MODE")
                held.set()
                await asyncio.to_thread(release.wait, 120)
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failed.append(exc)
            held.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(30) and not failed, failed
    try:
        yield
    finally:
        release.set()
        thread.join(30)


def test_db_timeout_bounds_a_request_waiting_for_the_database(start_server: Any, db_url: str) -> None:
    server = start_server(db_url, "--db-timeout", "1", "--processor", "httpproc:record")
    with http_client(server.url) as client:
        assert client.post("/jobs", json=job_body(["a", "b"])).status_code == 201
        # POST /jobs/process: the bound past its run's end; GET /jobs: a request's whole bound (SQLite's
        # readers take no lock, so there only the first waits)
        routes = [("POST", "/jobs/process")] + ([] if db_url.startswith("sqlite") else [("GET", "/jobs")])
        with database_held(db_url):
            for method, path in routes:
                r = client.request(method, path)
                assert r.status_code == 503, (path, r.text)
                waited = WAITED.search(r.json()["error"])
                assert waited is not None, r.text
                # given up at the deadline it was given: not before 1 s, and never at the default's 5 s
                assert 1.0 <= float(waited.group(1)) < DEFAULT, (path, r.text)
        # the database free again, the same server answers at once
        assert client.post("/jobs/process").json()["entities"] == 2
        assert client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "601", "soon"])
def test_bad_db_timeout_exits_2_with_one_line(processor_env: dict[str, str], tmp_path: Path, bad: str) -> None:
    env = {**processor_env, "CHUNKQ_TOKEN": TOKEN}
    r = run_serve(str(tmp_path / "q.db"), ["--port", "0", "--db-timeout", bad], env, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Invalid value for '--db-timeout'" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "Uvicorn running" not in r.stderr


def test_create_app_refuses_a_bad_db_timeout(sqlite_url: str) -> None:
    from chunkq.core import InvalidInput
    from chunkq.tui.http import create_app

    for bad in (0.0, -1.0, float("nan"), float("inf"), 601.0):
        with pytest.raises(InvalidInput, match="db_timeout must be a positive number of seconds"):
            create_app(sqlite_url, None, token=TOKEN, db_timeout=bad)
