"""Poison chunks, step by step on an injected clock (issue 13; real processes: tests/reliability/test_poison.py).

A take-over of an *expired* lease counts as a death on the chunk row; a lease
given back on purpose does not. The third death splits the chunk into one-entity
chunks; a one-entity chunk that dies three times is failed for good as
``WorkerLost`` without feeding the circuit breaker.
"""

from __future__ import annotations

from chunkq.core import Processor, Queue, Retry
from chunkq.core.poison import ISOLATE_AFTER

from .test_leases import FakeClock, enqueue

LEASE = 30.0
NOOP = Processor(on_process=lambda e, _j: None)


async def _die(q: Queue, clock: FakeClock) -> None:
    """A worker claims, then dies: its lease runs out."""
    claim = await q._claim()
    assert claim is not None
    clock.advance(LEASE + 1)


async def test_released_leases_are_not_deaths_and_expired_ones_isolate_the_chunk(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=LEASE, clock=clock, owner="a:1:x", breaker_chunks=1) as q, \
            Queue(db_url, lease_seconds=LEASE, clock=clock, owner="b:2:y") as other:
        job = await enqueue(q, 4, chunk_size=4)
        for _ in range(5):  # graceful aborts: the lease given back at once, no death
            claim = await q._claim()
            assert claim is not None
            await q.claims.release(claim)
        [chunk] = await q.list_chunks(job.id)
        assert (chunk.state, chunk.attempt) == ("leased", 5)

        for _ in range(ISOLATE_AFTER):  # claimed, then ISOLATE_AFTER - 1 take-overs, each worker dying
            await _die(q, clock)
        # The next take-over is the third of an expired lease: the chunk is split, and the first of its
        # one-entity chunks handed out instead.
        claim = await q._claim()
        assert claim is not None and [i.entity_id for i in claim.items] == ["e0"] and claim.isolated
        chunks = await q.list_chunks(job.id)
        assert [(c.chunk_index, c.state, c.size) for c in chunks] == [
            (0, "split", 4), (1, "leased", 1), (2, "leased", 1), (3, "leased", 1), (4, "leased", 1)]
        # max_workers 1: the other one-entity chunks wait while one is live
        assert await other._claim() is None

        clock.advance(LEASE + 1)  # e0's worker died once alone; twice more, then it is given up
        for _ in range(ISOLATE_AFTER - 1):
            await _die(q, clock)
        claim = await q._claim()
        assert claim is not None and [i.entity_id for i in claim.items] == ["e1"]
        [error] = await q.list_errors(job.id)
        assert (error.entity_id, error.error_type, error.final) == ("e0", "WorkerLost", True)
        assert error.message == f"the worker died or lost its lease while processing this entity, {ISOLATE_AFTER} times"

        r = await q._run_claim(claim, NOOP, None)
        assert r.committed
        while await q.process_next_chunk(NOOP) is not None:
            pass
        j = await q.get_job(job.id)
        # breaker_chunks=1: a WorkerLost (or a failed one-entity chunk) feeding the breaker would pause the job
        assert (j.status, j.succeeded_count, j.failed_count, j.leased_chunks) == ("complete", 3, 1, 0)
        chunks = await q.list_chunks(job.id)
        assert [c.state for c in chunks] == ["split", "done", "done", "done", "done"]
        assert sum(c.ok for c in chunks) == 3


async def test_a_retry_chunk_is_isolated_into_its_retry_rows(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=LEASE, clock=clock, owner="a:1:x") as q:
        job = await enqueue(q, 3, chunk_size=3, max_attempts=5)

        def transient(_e: str, _j: object) -> None:
            raise Retry("429", after=0)

        r = await q.process_next_chunk(transient)
        assert r is not None and r.retried == 3
        clock.advance(1)
        for _ in range(ISOLATE_AFTER):
            await _die(q, clock)
        claim = await q._claim()
        assert claim is not None and claim.kind == "retry" and claim.isolated
        assert [(i.entity_id, i.attempt) for i in claim.items] == [("e0", 2)]
        seen: list[str] = []
        r = await q._run_claim(claim, NOOP, None)
        assert r.committed
        while (r := await q.process_next_chunk(lambda e, _j: seen.append(e))) is not None:
            pass
        assert sorted(seen) == ["e1", "e2"]
        j = await q.get_job(job.id)
        assert (j.status, j.succeeded_count, j.waiting_count) == ("complete", 3, 0)
