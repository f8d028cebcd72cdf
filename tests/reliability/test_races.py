"""Interleavings found by the many-workers suite, replayed deterministically.

Two workers share a job (``max_workers=2``). Worker A's chunk fails transiently
and its commit (which schedules the retry) is held open just before COMMIT;
meanwhile worker B commits a retry chunk of the same job, so B's update of the
job row waits for A's. On PostgreSQL (READ COMMITTED) a value B computes inside
that waiting statement comes from a snapshot taken before A committed: the
job's ``next_retry_at`` was overwritten with NULL and A's retry was never run,
so the job stayed pending forever. Found as a hung worker in
``test_many_workers`` on PostgreSQL; this test pins the interleaving.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chunkq.core import COMPLETE, Processor, Queue, Retry
from chunkq.core.chunk import run_claimed


def flaky(entity_id: str, _job: Any) -> None:
    if entity_id.startswith("r"):
        raise Retry("429 Too Many Requests", after=0)


async def test_retry_scheduled_by_a_concurrent_commit_is_not_lost(db_url: str) -> None:
    async with Queue(db_url, owner="A:1:a") as a, Queue(db_url, owner="B:2:b") as b:
        job = await a.enqueue_job(["r0", "r1", "x2", "x3"], entity_type="company", provider="p",
                                  chunk_size=1, max_workers=2)
        await a.process_next_chunk(flaky)  # r0 waits for a retry
        cb = await b.claims.claim()
        ca = await a.claims.claim()
        assert cb is not None and cb.kind == "retry" and [i.entity_id for i in cb.items] == ["r0"]
        assert ca is not None and ca.kind == "range" and [i.entity_id for i in ca.items] == ["r1"]

        # Hold A's commit transaction open after all its statements, before COMMIT.
        reached, go = asyncio.Event(), asyncio.Event()
        original = a.backend.write

        async def held(fn: Any, what: str, **kw: Any) -> Any:
            if not what.startswith("committing chunk"):
                return await original(fn, what, **kw)
            async with a.backend.write_connection() as conn:
                result = await conn.run_sync(fn)
                reached.set()
                await go.wait()
            return result

        a.backend.write = held  # type: ignore[method-assign]
        ta = asyncio.create_task(run_claimed(a, ca, Processor(on_process=flaky), None))
        await asyncio.wait_for(reached.wait(), 10)
        tb = asyncio.create_task(run_claimed(b, cb, Processor(on_process=lambda e, j: None), None))
        await asyncio.sleep(0.5)  # B is now waiting for A's lock on the job row
        go.set()
        ra, rb = await asyncio.wait_for(asyncio.gather(ta, tb), 30)
        assert ra.committed and ra.retried == 1
        assert rb.committed and rb.processed == 1

        j = await a.get_job(job.id)
        assert j.waiting_count == 1
        assert j.next_retry_at is not None, "r1 waits for a retry that is never scheduled"
        seen: list[str] = []
        for _ in range(10):
            if await a.process_next_chunk(lambda e, _j: seen.append(e)) is None:
                break
        j = await a.get_job(job.id)
        assert "r1" in seen
        assert (j.status, j.processed_count, j.waiting_count) == (COMPLETE, 4, 0)
