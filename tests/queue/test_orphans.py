"""What "until empty" waits for (``core/orphans.py``): chunks leased by a worker that is gone.

In-process, on a real SQLite file and the real PostgreSQL; the real processes
(kill -9, ``--processes``) are in ``tests/reliability/test_orphaned_work.py``.
Leases are a second or less, so the waits are short; each run is bounded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from chunkq.core import COMPLETE, Queue, Worker
from chunkq.core.orphans import describe, orphaned_leases, owner_host_pid, pid_exists, short_owner


def _dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


async def _enqueue(q: Queue, n: int, **kw: Any) -> Any:
    return await q.enqueue_job([f"e{i}" for i in range(n)], entity_type="company", provider="p", **kw)


def test_owner_parsing_and_pid_liveness() -> None:
    assert owner_host_pid("web-1:4242:0badcafe") == ("web-1", 4242)
    assert owner_host_pid("[::1]:12:ab") == ("[::1]", 12)
    assert owner_host_pid("someone") == ("someone", None)
    assert [short_owner(o) for o in ("web-1:4242:0badcafe", "[::1]:12:ab", "someone")] == [
        "web-1:4242", "[::1]:12", "someone"]
    assert pid_exists(os.getpid()) and not pid_exists(_dead_pid()) and not pid_exists(0)


async def test_a_lease_is_orphaned_unless_its_owner_is_known_alive(db_url: str) -> None:
    host = socket.gethostname()
    dead_pid = _dead_pid()
    async with Queue(db_url, lease_seconds=30) as me, \
            Queue(db_url, lease_seconds=30, owner=f"{host}:{dead_pid}:a") as dead, \
            Queue(db_url, lease_seconds=30, owner="elsewhere:77:b") as remote, \
            Queue(db_url, lease_seconds=30, owner=f"{host}:{os.getpid()}:c") as sibling:
        job = await _enqueue(me, 40, chunk_size=10, max_workers=4)
        for q in (dead, remote, sibling):
            assert await q.claims.claim() is not None
        found = await orphaned_leases(me)
        # this host: by pid (the sibling is this very process, alive); another host: not registered
        assert [(o.chunk_index, o.holder) for o in found] == [(0, f"{host}:{dead_pid}"), (1, "elsewhere:77")]
        holders = ", ".join(sorted(["elsewhere:77", f"{host}:{dead_pid}"]))
        assert describe(found) == f"2 chunks of job {job.id} leased by 2 workers that stopped ({holders})"

        # a registered, heartbeating process on the other host is alive: its chunk is its own
        now = me.now()
        await me.registry.register({
            "id": "r1", "host": "elsewhere", "pid": 77, "kind": "worker", "processor": None, "version": "t",
            "started_at": now, "heartbeat_at": now, "heartbeat_interval": 5.0, "state": "busy", "chunks": 1,
            "done": 0, "failed": 0})
        assert [o.chunk_index for o in await orphaned_leases(me)] == [0]
        assert await orphaned_leases(me, job.id + 1) == [], "another job's orphans are not this run's"


@pytest.mark.slow
async def test_until_empty_waits_out_a_dead_owners_lease_and_redoes_the_chunk(db_url: str) -> None:
    async with Queue(db_url, lease_seconds=1.0, owner=f"{socket.gethostname()}:{_dead_pid()}:a") as dead, \
            Queue(db_url) as q:
        job = await _enqueue(q, 20, chunk_size=10, max_workers=2)
        assert (await dead.claims.claim()) is not None  # ... and its worker dies
        seen: list[str] = []
        summary = await asyncio.wait_for(
            Worker(q, lambda e, _j: seen.append(e), wait_for_retries=True).run(), 30)
        assert summary.stopped_by == "empty" and summary.chunks == 2
        assert sorted(seen) == sorted(f"e{i}" for i in range(20))
        assert (await q.get_job(job.id)).status == COMPLETE

        # the same with a deadline before the lease ends: it stops at once, saying what is left
        again = await _enqueue(q, 10, chunk_size=10)
        async with Queue(db_url, lease_seconds=60, owner=dead.owner) as dead60:
            assert (await dead60.claims.claim()) is not None
        summary = await asyncio.wait_for(
            Worker(q, lambda e, _j: None, wait_for_retries=True, max_seconds=5).run(), 30)
        assert summary.stopped_by == "orphaned" and summary.chunks == 0
        assert summary.orphaned is not None and f"1 chunk of job {again.id} " in summary.orphaned
        assert 50 < (summary.orphaned_expire_in or 0) <= 60
        assert summary.to_dict()["stopped_by"] == "orphaned" and "orphaned" in summary.to_dict()


async def test_a_lease_renewed_while_waiting_belongs_to_a_live_worker(db_url: str) -> None:
    """An owner not known alive (not registered, another host) that renews its lease is waited for
    once, at most one lease, then left alone: the run ends without taking the chunk."""
    # a 3 s lease renewed every 0.2 s: it never runs out, even when this loop, shared with the worker, lags
    # (a 1 s one did on a loaded machine, and the worker rightly took the chunk over)
    async with Queue(db_url, lease_seconds=3.0, owner="elsewhere:9:z") as other, Queue(db_url) as q:
        job = await _enqueue(q, 20, chunk_size=10, max_workers=2)
        claim = await other.claims.claim()
        assert claim is not None

        async def keep_renewing() -> None:
            while True:
                assert await other.claims.renew(claim)
                await asyncio.sleep(0.2)

        renewer = asyncio.ensure_future(keep_renewing())
        try:
            summary = await asyncio.wait_for(Worker(q, lambda e, _j: None, wait_for_retries=True).run(), 30)
        finally:
            renewer.cancel()
        assert (summary.stopped_by, summary.chunks) == ("empty", 1)
        held = [c for c in await q.list_chunks(job.id) if c.state == "leased"]
        assert [(c.chunk_index, c.worker) for c in held] == [(0, "elsewhere:9:z")]
