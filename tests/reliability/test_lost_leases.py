"""Leases lost while a callback runs (issue 13): a frozen worker, and an event loop blocked past the lease.

* A worker frozen past its lease (SIGSTOP) and woken (SIGCONT) while another
  worker holds its chunk used to go on calling the provider for every entity
  left in that chunk (17 calls in the report) before its commit was refused.
  Now it asks before each entity whether the lease is still its own, and starts
  none once it is not.
* An async callback that blocks the event loop for longer than the lease
  (``time.sleep`` inside ``async def``) made two workers take one chunk from
  each other forever. On SQLite the lease is now renewed from a thread of its
  own, so nothing is taken over; on PostgreSQL (async driver only) the worker
  says so in one line, and the poison bound ends the ping-pong: the job finishes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from chunkq.core import Queue
from chunkq.core.poison import ISOLATE_AFTER

from ._support import Driver, backend, finish, read_records, spawn


async def _enqueue(url: str, ids: list[str], chunk_size: int, max_workers: int = 1) -> int:
    async with Queue(url) as q:
        job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=chunk_size,
                                  max_workers=max_workers)
    return job.id


async def _state(url: str, job_id: int) -> tuple[object, list[object], list[object]]:
    async with Queue(url) as q:
        return await q.get_job(job_id), await q.list_errors(job_id), await q.list_chunks(job_id, limit=1000)


def _calls_by(tmp: Path, pid: int) -> int:
    record = tmp / "record.tsv"
    lines = record.read_text().splitlines() if record.exists() else []
    return sum(1 for line in lines if line.split("\t")[1] == str(pid))


def _wait(cond: object, what: str, timeout: float, *drivers: Driver) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, f"timed out waiting for {what}"
        for d in drivers:
            assert d.proc.poll() is None, f"driver {d.pid} exited early: {finish(d)}"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_worker_that_lost_its_lease_starts_no_more_entities_of_that_chunk(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    lease = 1.0
    ids = [f"e{i:02d}" for i in range(12)]
    job_id = asyncio.run(_enqueue(db_url, ids, 12))
    args = ["--lease", str(lease), "--work-ms", "50"]
    frozen = spawn(python_env, db_url, tmp_path, *args)
    taker: Driver | None = None
    try:
        _wait(lambda: _calls_by(tmp_path, frozen.pid) >= 3, "the first worker's first calls", 30, frozen)
        os.kill(frozen.pid, signal.SIGSTOP)
        at_stop = _calls_by(tmp_path, frozen.pid)
        # Its lease runs out while it cannot renew it; the second worker takes the chunk over then.
        taker = spawn(python_env, db_url, tmp_path, *args)
        _wait(lambda: _calls_by(tmp_path, taker.pid) >= 1, "the take-over", 30, taker)  # type: ignore[union-attr]
        os.kill(frozen.pid, signal.SIGCONT)
        f_status, _out, f_err = finish(frozen, timeout=30)
        t_status, _out, t_err = finish(taker, timeout=30)
    finally:
        for d in (frozen, taker):
            if d is not None and d.proc.poll() is None:
                os.kill(d.pid, signal.SIGCONT)
                d.proc.kill()
                d.proc.wait()
    assert (f_status, t_status) == (0, 0), (f_err, t_err)
    after_wake = _calls_by(tmp_path, frozen.pid) - at_stop
    # At most the one entity that was in flight when it froze; before the fix it ran on through the chunk.
    assert after_wake <= 1, f"the woken worker made {after_wake} more calls for a chunk it no longer held"
    assert "lost the lease on chunk 0" in f_err and "results discarded" in f_err, f_err
    job, errors, chunks = asyncio.run(_state(db_url, job_id))
    assert (job.status, job.succeeded_count, errors) == ("complete", 12, [])
    assert [c.attempt for c in chunks] == [2]
    print(f"\n[lost lease {backend(db_url)}] frozen after {at_stop} calls; after waking: {after_wake} "
          f"(the one in flight), then stopped")


@pytest.mark.slow
def test_a_callback_blocking_the_event_loop_past_the_lease_does_not_livelock(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    lease, block = 1.0, 1.6
    ids = [f"e{i:02d}" + ("!block" if i == 2 else "") for i in range(6)]
    job_id = asyncio.run(_enqueue(db_url, ids, 6))
    args = ["--async", "--lease", str(lease), "--block-ms", str(block * 1000), "--work-ms", "2", "--deadline", "60"]
    t0 = time.monotonic()
    workers = [spawn(python_env, db_url, tmp_path, *args) for _ in range(2)]
    results = [finish(d, timeout=90) for d in workers]
    took = time.monotonic() - t0
    assert [r[0] for r in results] == [0, 0], [r[2] for r in results]
    stderr = "\n".join(r[2] for r in results)
    job, errors, chunks = asyncio.run(_state(db_url, job_id))
    calls = Counter({eid: len(pids) for eid, pids in read_records(tmp_path).processed.items()})
    assert job.status == "complete" and job.processed_count == len(ids)
    if backend(db_url) == "sqlite":
        # The heartbeat thread kept the lease through every block: no take-over, each entity once.
        assert (job.succeeded_count, errors) == (6, [])
        assert [c.attempt for c in chunks] == [1] and set(calls.values()) == {1}, calls
        assert "lost the lease" not in stderr and "blocked" not in stderr, stderr
        print(f"\n[blocked loop sqlite] {block:g} s blocks under a {lease:g} s lease: no take-over, every entity "
              f"once, {took:.1f}s")
        return
    # PostgreSQL: told once per worker that saw it, then the poison bound ended the ping-pong.
    said = [line for line in stderr.splitlines() if "the event loop was blocked for" in line]
    assert said and all(f"longer than the {lease:g} s lease" in line for line in said), stderr
    good = [e for e in ids if "!block" not in e]
    assert max(calls[e] for e in good) <= ISOLATE_AFTER + 1, calls
    if errors:  # the usual course: the other worker took the chunk over during every block
        assert [e.entity_id for e in errors] == ["e02!block"] and errors[0].error_type == "WorkerLost"
        assert job.succeeded_count == 5 and [c.state for c in chunks].count("split") == 1
        how = "ended by isolation: the blocking entity WorkerLost, the 5 others complete"
    else:  # a loaded machine: the other worker missed one expiry, so the blocked one renewed in time
        assert job.succeeded_count == 6
        how = "ended when a blocked worker renewed in time"
    print(f"\n[blocked loop postgres] ping-pong {how} in {took:.1f}s (calls per good entity: max "
          f"{max(calls[e] for e in good)}); warned: {said[0].split(': ', 1)[1][:90]}…")
