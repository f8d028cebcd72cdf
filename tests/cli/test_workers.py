"""`chunkq workers`, liveness and routing with real worker processes, on both backends.

Three `chunkq worker` processes on one database register and appear in `chunkq workers`;
one killed with SIGKILL reads "lost" (two missed heartbeats) while its job reads stale
before its lease has run out; one asked to stop through the database (`chunkq workers
stop ID`, as an operator on another host would) finishes its chunk and exits 0; a worker
for processor A never runs a job routed to processor B.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .helpers import create_db, popen_chunkq, run_async, run_chunkq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEARTBEAT = 0.3
LEASE = 6.0  # renewed every 2 s: stale after 4 s of silence, expired after 6 s

PROC = """
import os, time

def _log(tag, entity_id):
    fd = os.open(os.environ["WORKERS_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag} {os.getpid()} {entity_id}\\n".encode())
    finally:
        os.close(fd)

def slow(entity_id, job):
    if os.path.exists(os.path.join(os.path.dirname(os.environ["WORKERS_TEST_LOG"]), f"hold-{os.getpid()}")):
        _log("held", job.id)  # inside a chunk, its lease held: the test kills this process now
        time.sleep(60)
    time.sleep(0.1)
    _log("slow", entity_id)

def a(entity_id, job):
    _log("a", entity_id)

def b(entity_id, job):
    _log("b", entity_id)
"""


@pytest.fixture
def wenv(python_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "wproc.py").write_text(PROC)
    env = dict(python_env)
    env["WORKERS_TEST_LOG"] = str(tmp_path / "calls.log")
    return env


async def _enqueue(url: str, n: int, count: int, **kw: Any) -> list[int]:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return [(await q.enqueue_job([f"j{k}-{i}" for i in range(n)], entity_type="c", provider="p",
                                     chunk_size=2, **kw)).id for k in range(count)]


async def _workers(url: str) -> list[Any]:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return await q.list_workers(include_stopped=True)


async def _jobs(url: str, job_ids: list[int]) -> Any:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return [await q.get_job(j) for j in job_ids], q.now()


async def _until_stale(url: str, job_id: int, within: float) -> tuple[Any, datetime] | None:
    """The job once it reads stale, and when: polled on one open queue, as often as a read allows (the
    window between stale and expired is a third of the lease)."""
    from chunkq.core import Queue

    async with Queue(url) as q:
        end = time.monotonic() + within
        while time.monotonic() < end:
            at = datetime.fromtimestamp(q.now(), UTC)
            job = await q.get_job(job_id)
            if job.lease_is_stale(at):
                return job, at
            await asyncio.sleep(0.02)
    return None


def _calls(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "calls.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _until(what: str, check: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:g}s")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.communicate(timeout=30)


def test_three_workers_one_killed_reads_lost_and_stale_one_stopped_through_the_database(
    db_url: str, wenv: dict[str, str], tmp_path: Path,
) -> None:
    create_db(db_url)
    jobs = run_async(_enqueue(db_url, 400, 3))
    args = ["--db", db_url, "worker", "--processor", "wproc:slow", "--heartbeat", str(HEARTBEAT),
            "--lease-seconds", str(LEASE), "--poll-interval", "0.2"]
    procs = [popen_chunkq(args, wenv, tmp_path) for _ in range(3)]
    try:
        pids = {p.pid for p in procs}
        rows = _until("three busy workers registered", lambda: (
            r if len(r := [w for w in run_async(_workers(db_url)) if w.pid in pids and w.state == "busy"]) == 3
            else None))
        assert {w.kind for w in rows} == {"worker"} and {w.processor for w in rows} == {"wproc:slow"}

        listed = run_chunkq(["--db", db_url, "--json", "workers"], wenv, tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert {w["pid"] for w in json.loads(listed.stdout)["workers"]} >= pids
        table = run_chunkq(["--db", db_url, "workers"], wenv, tmp_path)  # a pipe: tab-separated
        assert table.returncode == 0 and all(f":{pid}\t" in table.stdout for pid in pids)

        # kill -9 one inside a chunk (a worker killed between chunks holds no lease, and no job of its
        # reads stale): its row reads lost after two missed heartbeats, its job stale before the lease ends
        victim = procs[0]
        row = next(w for w in rows if w.pid == victim.pid)
        assert row.job_id in jobs
        (tmp_path / f"hold-{victim.pid}").touch()
        held = _until("the victim inside a chunk", lambda: next(
            (int(job) for tag, pid, job in _calls(tmp_path) if tag == "held" and pid == str(victim.pid)), None))
        assert held in jobs
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        lost = _until("the killed worker reads lost", lambda: next(
            (w for w in run_async(_workers(db_url)) if w.id == row.id and w.state == "lost"), None))
        assert not lost.alive

        found = run_async(_until_stale(db_url, held, within=LEASE * 3))
        assert found is not None, "its job never read stale"
        job, at = found
        # the point: stale from the missed heartbeats (2 x LEASE/3 = 4 s), while the lease itself still ran
        assert job.heartbeat_at is not None and (at - job.heartbeat_at).total_seconds() > 2 * LEASE / 3
        assert job.lease_expires_at is not None and job.lease_expires_at > at

        # stop another through the database: it finishes its chunk and exits 0
        target = procs[1]
        target_row = next(w for w in rows if w.pid == target.pid)
        asked = run_chunkq(["--db", db_url, "workers", "stop", target_row.id], wenv, tmp_path)
        assert asked.returncode == 0, asked.stderr
        assert "after its chunk" in asked.stdout
        _, err = target.communicate(timeout=60)
        assert target.returncode == 0, err.decode()
        assert "asked through the database to stop" in err.decode()
        gone = next(w for w in run_async(_workers(db_url)) if w.id == target_row.id)
        assert (gone.state, gone.stop_request) == ("stopped", "finish")
        assert gone.done > 0 and gone.done % 2 == 0  # whole chunks of 2, none given up half-way

        unknown = run_chunkq(["--db", db_url, "workers", "stop", "no-such-worker"], wenv, tmp_path)
        assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "no worker" in unknown.stderr
    finally:
        _stop_all(procs)


def test_a_worker_for_processor_a_never_claims_a_job_for_b(db_url: str, wenv: dict[str, str], tmp_path: Path) -> None:
    create_db(db_url)
    (for_b,) = run_async(_enqueue(db_url, 20, 1, processor="wproc:b", priority=5))
    (for_a,) = run_async(_enqueue(db_url, 20, 1, processor="wproc:a"))
    (anyone,) = run_async(_enqueue(db_url, 6, 1))
    enq = run_chunkq(["--db", db_url, "--json", "enqueue", "-", "-t", "c", "-p", "p", "--processor", "wproc:a"],
                     wenv, tmp_path, input=b"x1\nx2\n")
    assert enq.returncode == 0, enq.stderr
    cli_job = json.loads(enq.stdout)["id"]
    # two A workers at once, both draining: neither touches B's job
    args = ["--db", db_url, "process", "--until-empty", "--processor", "wproc:a", "--heartbeat", "0.2"]
    procs = [popen_chunkq(args, wenv, tmp_path) for _ in range(2)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
    finally:
        _stop_all(procs)
    calls = (tmp_path / "calls.log").read_text().split()
    tags = {calls[i] for i in range(0, len(calls), 3)}
    assert tags == {"a"}
    found, _ = run_async(_jobs(db_url, [for_a, for_b, anyone, cli_job]))
    done = {job.id: job for job in found}
    assert done[for_b].processed_count == 0 and done[for_b].status == "pending"
    assert all(done[j].status == "complete" for j in (for_a, anyone, cli_job))
    shown = run_chunkq(["--db", db_url, "show", str(for_b)], wenv, tmp_path)
    assert "wproc:b" in shown.stdout
    listing = run_chunkq(["--db", db_url, "--json", "jobs"], wenv, tmp_path)
    assert {j["id"]: j["processor"] for j in json.loads(listing.stdout)["jobs"]}[for_b] == "wproc:b"
    # then a B worker runs it
    b = run_chunkq(["--db", db_url, "process", "--until-empty", "--processor", "wproc:b"], wenv, tmp_path,
                   timeout=120)
    assert b.returncode == 0, b.stderr
    assert run_async(_jobs(db_url, [for_b]))[0][0].status == "complete"


def test_history_command_json_and_tsv(db_url: str, wenv: dict[str, str], tmp_path: Path) -> None:
    create_db(db_url)
    (job,) = run_async(_enqueue(db_url, 6, 1))
    ran = run_chunkq(["--db", db_url, "process", "--until-empty", "--processor", "wproc:a"], wenv, tmp_path)
    assert ran.returncode == 0, ran.stderr
    got = run_chunkq(["--db", db_url, "--json", "history", str(job)], wenv, tmp_path)
    assert got.returncode == 0, got.stderr
    buckets = json.loads(got.stdout)["buckets"]
    assert sum(b["processed"] for b in buckets) == 6 and sum(b["chunks"] for b in buckets) == 3
    tsv = run_chunkq(["--db", db_url, "history"], wenv, tmp_path)
    assert tsv.stdout.splitlines()[0] == "start\tseconds\tprocessed\tfailed\tchunks"
    missing = run_chunkq(["--db", db_url, "history", "999"], wenv, tmp_path)
    assert missing.returncode == 2 and "no job" in missing.stderr
