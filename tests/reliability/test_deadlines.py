"""Deadlines that hold through a stalled database (issue 24, findings 4 and 5), in real processes.

* **`process --max-seconds` through a stall.** A run whose database stops
  answering mid-run: SQLite, another process takes the write lock and is frozen
  (SIGSTOP) while holding it; PostgreSQL, the worker's ``FaultProxy`` stops
  forwarding (no reset). The run logs the stall while it waits, gives the
  waiting transaction up at the deadline, and exits 4 (work left) with one line
  naming what waited. Once the fault is gone a plain run finishes the job: nothing lost.
  Before: SQLite waited for the lock holder (60 s busy timeout, retried 8 times),
  PostgreSQL for as long as the freeze lasted, saying nothing.
* **`serve` answers in bounded time.** PostgreSQL frozen: ``/health`` answers 503
  "not answering" within ``HEALTH_DB_SECONDS`` (1.5 s), ``/jobs`` 503 within the
  request bound (``--db-timeout``, 5 s by default, 2 s here); both answer 200 again
  once the network does. SQLite with a frozen lock holder: reads need no lock (WAL),
  so ``/health`` stays 200; a ``POST /jobs/process`` (a write) answers 503 within
  the bound. Before: no answer after 100 s.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from chunkq.core import DatabaseStalled, Queue, deadline, upgrade_schema
from sqlalchemy.engine import make_url

from .. import forkserver
from ..http.helpers import TOKEN, ServerProcess, serve_command
from ._support import backend
from .proxy import FaultProxy

_SCRIPT = Path(sys.executable).parent / "chunkq"
CHUNKQ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkq.tui.cli"]

PROCESSOR = '''
import os, time

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log")


def slow(entity_id, job):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (entity_id + "\\n").encode())
    finally:
        os.close(fd)
    time.sleep(0.05)
'''

#: takes SQLite's write lock and keeps it; the test then freezes it (SIGSTOP), as a stuck process would
LOCK_HOLDER = '''
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
time.sleep(600)
'''

#: the stall starts 2.5-3 s into the run here (start-up, a chunk and a half) on a loaded machine, so its warning
#: (5 s into it) is due 2 s or more before the deadline even on one 1.5x slower (the check below needs that)
MAX_SECONDS = 12
ENTITIES, CHUNK = 30, 5
#: what a run may take past --max-seconds in the worst case: the waiting transaction's grace
#: (db.STALL_SECONDS, 5 s), one more for what is released after it, closing (2 s); plus a loaded machine
OVERRUN_BOUND = 20.0


def _calls(tmp: Path) -> list[str]:
    path = tmp / "calls.log"
    return path.read_text().split() if path.exists() else []


def _wait_for(cond: object, what: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


async def _enqueue(url: str) -> int:
    async with Queue(url) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(ENTITIES)], entity_type="company", provider="p",
                                  chunk_size=CHUNK)
        return job.id


async def _job(url: str, job_id: int) -> tuple[str, int, int]:
    async with Queue(url) as q:
        job = await q.get_job(job_id)
        return str(job.status), job.processed_count, job.total_count


class _Lines:
    """A process's stderr, each line with the time it arrived (a log line said *while* it happened)."""

    def __init__(self, stream: object) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self) -> str:
        self._thread.join(10)
        return "\n".join(line for _t, line in self.lines)


class _SqliteFault:
    """Another process holding SQLite's write lock, frozen while it holds it."""

    def __init__(self, path: str, tmp: Path) -> None:
        self.path, self.tmp = path, tmp
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, self.path], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"
        self.proc.send_signal(signal.SIGSTOP)

    def end(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


def _worker_url_and_fault(db_url: str, tmp: Path, stack: list[object]) -> tuple[str, object, object]:
    """The URL the run uses, and (start, end) of its fault."""
    if backend(db_url) == "sqlite":
        fault = _SqliteFault(str(make_url(db_url).database), tmp)
        stack.append(fault.end)
        return db_url, fault.start, fault.end
    proxy = FaultProxy().start()
    stack.append(proxy.stop)
    stack.append(proxy.thaw)
    return proxy.url(db_url), proxy.freeze, proxy.thaw


@pytest.mark.slow
def test_max_seconds_holds_through_a_database_that_stops_answering(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    (tmp_path / "deadproc.py").write_text(PROCESSOR)
    job_id = asyncio.run(_enqueue(db_url))
    cleanup: list[object] = []
    try:
        url, start_fault, end_fault = _worker_url_and_fault(db_url, tmp_path, cleanup)
        t0 = time.monotonic()
        run = forkserver.popen(
            [*CHUNKQ, "--db", url, "process", "--until-empty", "--max-seconds", str(MAX_SECONDS),
             "--lease-seconds", "2", "--processor", "deadproc:slow"],
            env=python_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = _Lines(run.stderr)
        # mid-run: a chunk committed, the next one running
        _wait_for(lambda: len(_calls(tmp_path)) >= CHUNK + 3 or run.poll() is not None, "the run to start", 60)
        assert run.poll() is None, err.text()
        start_fault()  # type: ignore[operator]
        faulted = time.monotonic() - t0
        try:
            rc = run.wait(MAX_SECONDS + OVERRUN_BOUND + 10)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(10)
            pytest.fail(f"the run was still going {MAX_SECONDS + OVERRUN_BOUND + 10:g} s after it started "
                        f"(--max-seconds {MAX_SECONDS}):\n{err.text()}")
        took = time.monotonic() - t0
        ended = time.monotonic()
        stderr = err.text()
        end_fault()  # type: ignore[operator]
    finally:
        for undo in reversed(cleanup):
            undo()  # type: ignore[operator]
    print(f"\n[{backend(db_url)}] fault at {faulted:.1f} s, exit {rc} at {took:.1f} s "
          f"(--max-seconds {MAX_SECONDS}); stderr:\n{stderr}")

    assert rc == 4, stderr  # work left at --max-seconds, as for a dead worker's chunks (supervisor.EXIT_WORK_LEFT)
    assert MAX_SECONDS <= took <= MAX_SECONDS + OVERRUN_BOUND, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors == stderr.splitlines()[-1:], stderr
    assert errors[0].startswith(f"Error: stopped at --max-seconds {MAX_SECONDS}: the database did not answer for ")
    assert errors[0].endswith(")"), errors[0]  # "(committing chunk 2 of job 1)": what waited
    # the stall was said while it happened, before the run gave it up
    warned = [t for t, line in err.lines if "the database has not answered for" in line]
    assert warned, stderr
    if faulted + 5 < MAX_SECONDS - 2:  # the warning (5 s into the stall) came well before the deadline
        assert warned[0] < ended - 1.0, stderr
    assert any("was given up after" in line for line in stderr.splitlines()), stderr

    # the fault gone, a plain run finishes the job: nothing was lost, nothing applied twice
    done = forkserver.run([*CHUNKQ, "--db", db_url, "process", "--until-empty", "--processor", "deadproc:slow"],
                          env=python_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    status, processed, total = asyncio.run(_job(db_url, job_id))
    assert (status, processed) == ("complete", total), (status, processed, total)
    calls = Counter(_calls(tmp_path))
    assert set(calls) == {f"e{i}" for i in range(ENTITIES)}
    assert sum(n - 1 for n in calls.values()) <= CHUNK, calls  # at most the stalled chunk was redone


@pytest.mark.slow
def test_processes_stop_at_max_seconds_through_a_held_lock(tmp_path: Path, python_env: dict[str, str]) -> None:
    """``--processes 2``: each child gives its stalled transaction up at the deadline and exits 4; the
    supervisor restarts neither (a restart would run past the budget) and exits 4. SQLite: the lock is
    held by another process from before the run starts."""
    (tmp_path / "deadproc.py").write_text(PROCESSOR)
    db = str(tmp_path / "q.db")
    asyncio.run(_enqueue(db))
    fault = _SqliteFault(db, tmp_path)
    try:
        fault.start()
        t0 = time.monotonic()
        try:
            run = subprocess.run(
                [*CHUNKQ, "--db", db, "process", "--until-empty", "--processes", "2", "--max-seconds", "6",
                 "--processor", "deadproc:slow"],
                env=python_env, cwd=tmp_path, capture_output=True, text=True, timeout=6 + OVERRUN_BOUND + 10)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"--processes 2 --max-seconds 6 still running after {exc.timeout:g} s:\n{exc.stderr!r}")
        took = time.monotonic() - t0
    finally:
        fault.end()
    print(f"\n[sqlite] --processes 2: exit {run.returncode} at {took:.1f} s (--max-seconds 6)\n{run.stderr}")
    assert run.returncode == 4, run.stderr
    assert took <= 6 + OVERRUN_BOUND, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.count("Error: stopped at the run's --max-seconds: the database did not answer for ") == 2, \
        run.stderr
    assert run.stderr.count("not restarting it") == 2 and "restarting it in" not in run.stderr, run.stderr
    assert not _calls(tmp_path)  # nothing was claimed: the lock was never free


# --------------------------------------------------------------------------- one transaction


async def _given_up_at_once(url: str, job_id: int, fault: object, end_fault: object) -> tuple[float, str, str]:
    """Pause the job under a 1 s deadline while ``fault`` stalls it; then, the fault gone, read the job."""
    async with Queue(url) as q:
        await q.get_job(job_id)  # connected, the pool warm
        fault()  # type: ignore[operator]
        t = time.monotonic()
        with pytest.raises(DatabaseStalled) as stalled, deadline(time.monotonic() + 1.0, grace=0.0):
            await q.pause(job_id)
        took = time.monotonic() - t
        end_fault()  # type: ignore[operator]
        job = await asyncio.wait_for(q.get_job(job_id), 30)  # the pool (SQLite: the writer threads) not wedged
        return took, str(stalled.value), str(job.status)


def test_a_transaction_given_up_lets_go_of_its_connection_at_once(db_url: str, tmp_path: Path) -> None:
    """SQLite: the writer thread waits for the lock in slices, so it is free within one (it waited out the
    60 s busy timeout); PostgreSQL: the socket is closed at once, mid-statement, holding the job row (SQLAlchemy
    first waited 2 s for the silent server to answer a goodbye). Nothing the transaction did is applied."""
    job_id = asyncio.run(_enqueue(db_url))
    if backend(db_url) == "sqlite":
        holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(make_url(db_url).database)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None

            def fault() -> None:
                assert holder.stdout is not None and holder.stdout.readline().strip() == "held"

            took, message, status = asyncio.run(_given_up_at_once(db_url, job_id, fault, holder.kill))
        finally:
            holder.kill()
            holder.wait(10)
    else:
        with FaultProxy() as proxy:
            took, message, status = asyncio.run(_given_up_at_once(
                proxy.url(db_url), job_id, lambda: proxy.freeze_after("UPDATE chunkq_jobs"), proxy.thaw))
    print(f"\n[{backend(db_url)}] given up after {took:.2f} s (deadline 1 s): {message}")
    assert re.fullmatch(r"the database did not answer for 1\.\d s \(pause job \d+\)", message), message
    assert took < 1.0 + 0.9, took
    assert status != "paused"


# --------------------------------------------------------------------------- serve


#: serve's request bound (``--db-timeout``): above ``HEALTH_DB_SECONDS``, so /health keeps its own 1.5 s
DB_TIMEOUT = 2.0


def _timed(client: httpx.Client, method: str, path: str) -> tuple[httpx.Response, float]:
    t = time.monotonic()
    r = client.request(method, path)
    return r, time.monotonic() - t


@pytest.mark.slow
def test_health_answers_in_bounded_time_when_the_database_is_silent(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    (tmp_path / "deadproc.py").write_text(PROCESSOR)
    asyncio.run(upgrade_schema(db_url))
    asyncio.run(_enqueue(db_url))
    env = {**python_env, "CHUNKQ_TOKEN": TOKEN}
    cleanup: list[object] = []
    server: ServerProcess | None = None
    try:
        url, start_fault, end_fault = _worker_url_and_fault(db_url, tmp_path, cleanup)
        command = serve_command(url, ["--port", "0", "--db-timeout", str(DB_TIMEOUT), "--processor", "deadproc:slow"])
        server = ServerProcess(command, env, tmp_path)
        base = server.wait_started()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60.0) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/jobs").status_code == 200
            start_fault()  # type: ignore[operator]
            if backend(db_url) == "postgres":
                time.sleep(1.5)  # the pooled connections go idle: the next checkout pings them
            health, t_health = _timed(client, "GET", "/health")
            if backend(db_url) == "postgres":
                jobs, t_jobs = _timed(client, "GET", "/jobs")
                print(f"\n[postgres] frozen: /health {health.status_code} in {t_health:.2f} s "
                      f"{health.json()}; /jobs {jobs.status_code} in {t_jobs:.2f} s {jobs.json()}")
                assert health.status_code == 503, health.text
                body = health.json()
                assert body["status"] == "unavailable" and body["database"] == "not answering", body
                assert body["error"] == "the database did not answer within 1.5 s" and body["since"], body
                assert t_health < 3.0, t_health
                assert jobs.status_code == 503 and "did not answer" in jobs.json()["error"], jobs.text
                assert t_jobs < DB_TIMEOUT + 5, t_jobs
                again, t_again = _timed(client, "GET", "/health")  # a wedged pool would not answer now
                assert again.status_code == 503 and again.json()["since"] == body["since"] and t_again < 5
            else:
                # WAL: reads take no lock, so the frozen lock holder stalls writes only
                process, t_process = _timed(client, "POST", "/jobs/process")
                print(f"\n[sqlite] lock holder frozen: /health {health.status_code} in {t_health:.2f} s; "
                      f"POST /jobs/process {process.status_code} in {t_process:.2f} s {process.json()}")
                assert health.status_code == 200 and t_health < 5, health.text
                assert process.status_code == 503 and "did not answer" in process.json()["error"], process.text
                assert t_process < DB_TIMEOUT + 5, t_process
            end_fault()  # type: ignore[operator]
            _wait_for(lambda: client.get("/health").status_code == 200, "/health to answer 200 again", 30)
            assert client.get("/jobs").status_code == 200
    finally:
        for undo in reversed(cleanup):
            undo()  # type: ignore[operator]
        if server is not None:
            server.stop()
    if backend(db_url) == "postgres":
        assert "the database answers again" in server.output()
