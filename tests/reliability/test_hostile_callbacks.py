"""Hostile callbacks in real `chunkq` processes (issue 13): broken exceptions, coroutines nobody
awaited, sync callbacks that never return, and the signals that must still end a worker.

Each test runs the installed command on a real SQLite file or the real
PostgreSQL, with a processor module written into ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue

from .. import forkserver
from ._support import backend

_SCRIPT = Path(sys.executable).parent / "chunkq"
CHUNKQ = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkq.tui.cli"]

PROCESSORS = '''
import asyncio, ctypes, functools, os, threading, time

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.log")


def record(line):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)


class Unprintable(RuntimeError):
    def __str__(self):
        raise RuntimeError("no")


def hostile(entity_id, job):
    if entity_id == "unprintable":
        raise Unprintable()
    if entity_id == "surrogate":
        raise ValueError("bad byte: " + b"\\xff".decode("utf-8", "surrogateescape"))
    if entity_id == "nul":
        raise ValueError("a NUL \\x00 from the provider")


def sync_wrapper(fn):
    """A decorator that knows nothing of coroutines (and whose own sync part can hang)."""
    @functools.wraps(fn)
    def wrapper(entity_id, job):
        record("start " + entity_id)
        if "!hang" in entity_id:
            threading.Event().wait()
        return fn(entity_id, job)
    return wrapper


@sync_wrapper
async def mixed(entity_id, job):
    await asyncio.sleep(0)
    if entity_id == "cancels":
        raise asyncio.CancelledError("the client library cancelled itself")
    hostile(entity_id, job)
    record("ran " + entity_id)


def hangs(entity_id, job):
    record("start " + entity_id)
    if "!hang" in entity_id:
        threading.Event().wait()


async def hangs_in_own_thread(entity_id, job):
    record("start " + entity_id)
    if "!hang" in entity_id:
        await asyncio.to_thread(threading.Event().wait)  # asyncio's default pool: joined at exit
'''


@pytest.fixture
def proc_env(tmp_path: Path, python_env: dict[str, str]) -> dict[str, str]:
    (tmp_path / "hostile_procs.py").write_text(textwrap.dedent(PROCESSORS))
    env = dict(python_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _calls(tmp: Path) -> list[str]:
    log = tmp / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _chunkq(
    url: str, env: dict[str, str], tmp: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    try:
        p = forkserver.run([*CHUNKQ, "--db", url, *args], env=env, cwd=tmp, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`chunkq {' '.join(args)}` did not exit within {timeout}s; stderr:\n"
                             f"{(exc.stderr or b'').decode()}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


async def _enqueue(url: str, ids: list[str], chunk_size: int) -> int:
    async with Queue(url) as q:
        return (await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=chunk_size)).id


async def _state(url: str, job_id: int) -> tuple[Any, dict[str, Any], list[Any]]:
    async with Queue(url) as q:
        errors = {e.entity_id: e for e in await q.list_errors(job_id)}
        return await q.get_job(job_id), errors, await q.list_chunks(job_id)


@pytest.mark.slow
def test_hung_and_broken_callbacks_in_real_workers(db_url: str, tmp_path: Path, proc_env: dict[str, str]) -> None:
    """One job, two runs of `chunkq process --until-empty --timeout 0.1` (a supervisor's restart between):

    1. chunk 0 holds 20 sync calls that never return: each is recorded as a timeout and abandoned;
       20 abandoned threads are more than the bound (16), so the worker claims no more, says so in
       one line and exits 3. Before: asyncio's shared pool (6 threads) filled, the chunk could never
       commit, and the process ignored SIGTERM.
    2. a fresh process runs the rest: 3 more hung calls, exceptions whose ``__str__`` raises or whose
       text neither database stores as is, a ``CancelledError`` the callback raised itself, and a sync
       decorator around the async callback whose coroutine must be awaited. It exits 0: work done.
       Before: every wrapped entity "succeeded" without running, and the run never exited.
    """
    hung = [f"h{i:02d}!hang" for i in range(20)]
    rest = ["ok1", "x1!hang", "unprintable", "surrogate", "x2!hang", "nul", "cancels", "x3!hang", "ok2", "ok3"]
    job_id = asyncio.run(_enqueue(db_url, hung + rest, 20))
    run = ["process", "--until-empty", "--timeout", "0.1", "--processor", "hostile_procs:mixed"]

    r = _chunkq(db_url, proc_env, tmp_path, *run, timeout=40)
    assert r.returncode == 3, (r.returncode, r.stderr)
    said = [line for line in r.stderr.splitlines() if "callback threads are still running" in line]
    assert len(said) == 1, r.stderr
    assert "20 callback threads" in said[0] and "more than 16" in said[0]
    job, errors, _chunks = asyncio.run(_state(db_url, job_id))
    assert (job.processed_count, len(errors)) == (20, 20), "the hung chunk was committed, the next not started"
    assert {x.error_type for x in errors.values()} == {"TimeoutError"}
    assert not any(line.endswith(tuple(rest)) for line in _calls(tmp_path)), "nothing of chunk 1 ran"

    t0 = time.monotonic()
    r = _chunkq(db_url, proc_env, tmp_path, *run, timeout=40)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    job, errors, _chunks = asyncio.run(_state(db_url, job_id))
    assert (job.status, job.succeeded_count, job.failed_count) == ("complete", 3, 27)
    assert sorted(c for c in _calls(tmp_path) if c.startswith("ran ")) == ["ran ok1", "ran ok2", "ran ok3"]
    assert {e for e, x in errors.items() if x.error_type == "TimeoutError"} == {e for e in hung + rest if "!hang" in e}
    assert errors["unprintable"].message == "<unprintable Unprintable>"
    assert errors["surrogate"].message == "bad byte: \\xff"
    assert errors["nul"].message == "a NUL \\x00 from the provider"
    assert errors["cancels"].error_type == "asyncio.exceptions.CancelledError"
    print(f"\n[hostile {backend(db_url)}] 20 abandoned threads > 16: exit 3, one line; the restart: 3 hung, "
          f"4 broken exceptions recorded, wrapped coroutines awaited, exit 0 in {took:.1f}s")


@pytest.mark.slow
def test_two_sigterms_end_a_worker_stuck_in_a_callback_and_release_its_lease(
    db_url: str, tmp_path: Path, proc_env: dict[str, str]
) -> None:
    """No --timeout: the hung callback cannot be abandoned, but the second SIGTERM must still end the
    process. SQLite: a sync callback; PostgreSQL: an async one stuck in its own asyncio.to_thread
    (asyncio's default pool, which the interpreter joins at exit: only the hard exit ends it)."""
    fn = "hangs" if backend(db_url) == "sqlite" else "hangs_in_own_thread"
    job_id = asyncio.run(_enqueue(db_url, ["e0", "e1!hang", "e2"], 3))
    p = forkserver.popen([*CHUNKQ, "--db", db_url, "worker", "--lease-seconds", "300",
                          "--processor", f"hostile_procs:{fn}"],
                         env=proc_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while "start e1!hang" not in _calls(tmp_path):
            assert time.monotonic() < end and p.poll() is None, "the worker never reached the hung entity"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert p.poll() is None, "one SIGTERM finishes the chunk in flight, which cannot finish"
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        try:
            _out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker ignored the second SIGTERM") from None
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 128 + signal.SIGTERM, (p.returncode, err.decode())
    _job, _errors, chunks = asyncio.run(_state(db_url, job_id))
    [chunk] = chunks
    assert chunk.state == "leased" and chunk.lease_expires_at is not None
    assert chunk.lease_expires_at.timestamp() < time.time(), "the 300 s lease was not released"
    print(f"\n[sigterm {backend(db_url)}] stuck in {fn}: second SIGTERM ended the worker in {took:.1f}s "
          f"(exit {p.returncode}), lease released")



@pytest.mark.slow
@pytest.mark.parametrize("command", ["process", "worker"])
def test_grace_ends_a_run_stuck_in_a_callback_and_releases_its_lease(
    db_url: str, tmp_path: Path, proc_env: dict[str, str], command: str
) -> None:
    """No --timeout: `process --max-seconds` (cron) and a SIGTERMed `worker` used to wait for a hung
    callback for ever, renewing its 300 s lease all along. With --grace one stop is enough: the chunk is
    given up, its lease released, and the run exits 4 (work left) saying which chunk and why."""
    job_id = asyncio.run(_enqueue(db_url, ["e0", "e1!hang", "e2"], 3))
    args = [*CHUNKQ, "--db", db_url, command, "--lease-seconds", "300", "--grace", "0.5",
            "--processor", "hostile_procs:hangs"]
    if command == "process":
        args += ["--max-seconds", "0.5"]
    p = forkserver.popen(args, env=proc_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if command == "worker":
            end = time.monotonic() + 30
            while "start e1!hang" not in _calls(tmp_path):
                assert time.monotonic() < end and p.poll() is None, "the worker never reached the hung entity"
                time.sleep(0.05)
            p.send_signal(signal.SIGTERM)  # one signal: a graceful stop, bounded by --grace
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`chunkq {command} --grace 0.5` waited for the hung callback") from None
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    said = err.decode()
    assert p.returncode == 4, (p.returncode, said)
    assert f"gave up chunk 0 of job {job_id}" in said
    assert "given up, their leases released (exit 4" in out.decode()  # the run's summary line
    _job, _errors, chunks = asyncio.run(_state(db_url, job_id))
    [chunk] = chunks
    assert chunk.lease_expires_at is not None and chunk.lease_expires_at.timestamp() < time.time(), \
        "the 300 s lease was not released"
