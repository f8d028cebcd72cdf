"""Poison chunks, step by step on an injected clock (issue 13; real processes: tests/reliability/test_poison.py).

A take-over of an *expired* lease counts as a death on the chunk row; a lease
given back on purpose does not. The third death splits the chunk into one-entity
chunks; a one-entity chunk that dies three times is failed for good as
``WorkerLost`` without feeding the circuit breaker. Issue 24: after a chunk's
first death (a *suspect* now) only deaths while it ran alone count, so the other
chunks of a dead worker's window are redone, not blamed.
"""

from __future__ import annotations

import asyncio

from chunkq.core import Processor, Queue, Retry, Worker
from chunkq.core import schema as s
from chunkq.core.chunk import run_claimed
from chunkq.core.poison import ISOLATE_AFTER
from sqlalchemy import select

from .test_leases import FakeClock, enqueue

LEASE = 30.0
NOOP = Processor(on_process=lambda e, _j: None)


async def _die(q: Queue, clock: FakeClock) -> None:
    """A worker claims, starts the chunk (alone, if it is a suspect, as a worker does), then dies."""
    claim = await q.claims.claim()
    assert claim is not None
    if claim.suspect:
        assert await q.claims.run_alone(claim)
    clock.advance(LEASE + 1)


async def _blame(q: Queue, job_id: int) -> list[tuple[int, int, bool]]:
    """(chunk, lost_leases, solo_at set) of each chunk: not in core's read API."""
    c = s.chunks.c
    query = select(c.chunk_index, c.lost_leases, c.solo_at.is_not(None)).where(c.job_id == job_id)
    return await q.backend.read(lambda conn: sorted(tuple(r) for r in conn.execute(query)), "reading chunks")


async def test_released_leases_are_not_deaths_and_expired_ones_isolate_the_chunk(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=LEASE, clock=clock, owner="a:1:x", breaker_chunks=1) as q, \
            Queue(db_url, lease_seconds=LEASE, clock=clock, owner="b:2:y") as other:
        job = await enqueue(q, 4, chunk_size=4)
        for _ in range(5):  # graceful aborts: the lease given back at once, no death
            claim = await q.claims.claim()
            assert claim is not None
            await q.claims.release(claim)
        [chunk] = await q.list_chunks(job.id)
        assert (chunk.state, chunk.attempt) == ("leased", 5)

        for _ in range(ISOLATE_AFTER):  # claimed, then ISOLATE_AFTER - 1 take-overs, each worker dying
            await _die(q, clock)
        # The next take-over is the third of an expired lease: the chunk is split, and the first of its
        # one-entity chunks handed out instead.
        claim = await q.claims.claim()
        assert claim is not None and [i.entity_id for i in claim.items] == ["e0"] and claim.isolated
        chunks = await q.list_chunks(job.id)
        assert [(c.chunk_index, c.state, c.size) for c in chunks] == [
            (0, "split", 4), (1, "leased", 1), (2, "leased", 1), (3, "leased", 1), (4, "leased", 1)]
        # max_workers 1: the other one-entity chunks wait while one is live
        assert await other.claims.claim() is None

        clock.advance(LEASE + 1)  # e0's worker died once alone; twice more, then it is given up
        for _ in range(ISOLATE_AFTER - 1):
            await _die(q, clock)
        claim = await q.claims.claim()
        assert claim is not None and [i.entity_id for i in claim.items] == ["e1"]
        [error] = await q.list_errors(job.id)
        assert (error.entity_id, error.error_type, error.final) == ("e0", "WorkerLost", True)
        assert error.message == f"the worker died or lost its lease while processing this entity, {ISOLATE_AFTER} times"

        r = await run_claimed(q, claim, NOOP, None)
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
        claim = await q.claims.claim()
        assert claim is not None and claim.kind == "retry" and claim.isolated
        assert [(i.entity_id, i.attempt) for i in claim.items] == [("e0", 2)]
        seen: list[str] = []
        r = await run_claimed(q, claim, NOOP, None)
        assert r.committed
        while (r := await q.process_next_chunk(lambda e, _j: seen.append(e))) is not None:
            pass
        assert sorted(seen) == ["e1", "e2"]
        j = await q.get_job(job.id)
        assert (j.status, j.succeeded_count, j.waiting_count) == ("complete", 3, 0)


async def test_a_dead_window_counts_once_against_each_chunk_then_only_runs_alone(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=LEASE, clock=clock, owner="a:1:x") as q:
        job = await enqueue(q, 6, chunk_size=2)
        # A worker's window: chunks 0 and 1 held at once; it dies.
        a = await q.claims.claim()
        b = await q.claims.claim(mine=job.id)
        assert (a.chunk_index, b.chunk_index, a.suspect, b.suspect) == (0, 1, False, False)  # type: ignore[union-attr]
        assert await _blame(q, job.id) == [(0, 0, False), (1, 0, False)]  # a fresh claim writes no solo_at
        clock.advance(LEASE + 1)

        # Taken over: the first loss counts against each; both are suspects now.
        c0 = await q.claims.claim()
        assert c0 is not None and (c0.chunk_index, c0.suspect) == (0, True)
        c1 = await q.claims.claim(job.id, mine=job.id)  # (a job's claim looks for expired leases first)
        assert c1 is not None and (c1.chunk_index, c1.suspect) == (1, True)
        assert await _blame(q, job.id) == [(0, 1, False), (1, 1, False)]
        # Its worker runs chunk 0 alone and dies of it; chunk 1 waited, never started.
        assert await q.claims.run_alone(c0)
        assert await _blame(q, job.id) == [(0, 1, True), (1, 1, False)]
        clock.advance(LEASE + 1)

        c0 = await q.claims.claim()
        c1 = await q.claims.claim(job.id, mine=job.id)
        assert (c0.chunk_index, c1.chunk_index) == (0, 1)  # type: ignore[union-attr]
        # chunk 0 died alone: counted; chunk 1 was only held: not counted again. solo_at reset by the take-over.
        assert await _blame(q, job.id) == [(0, 2, False), (1, 1, False)]
        # A suspect given back on purpose is no death either.
        await q.claims.release(c1)  # type: ignore[arg-type]
        # Chunk 1 runs alone to its commit: done, nothing more against it.
        clock.advance(1)
        c1 = await q.claims.claim(job.id, mine=job.id)
        assert c1 is not None and (c1.chunk_index, c1.suspect) == (1, True)
        r = await run_claimed(q, c1, NOOP, None)
        assert r.committed
        assert await _blame(q, job.id) == [(0, 2, False), (1, 1, True)]
        # A stale holder cannot mark a chunk it lost.
        assert not await q.claims.run_alone(a)  # type: ignore[arg-type]
        # Chunk 0 (poison) dies alone once more: the third count splits it.
        assert await q.claims.run_alone(c0)  # type: ignore[arg-type]
        clock.advance(LEASE + 1)
        claim = await q.claims.claim()
        assert claim is not None and claim.isolated and not claim.suspect
        chunks = await q.list_chunks(job.id)
        assert [(c.chunk_index, c.state) for c in chunks][:2] == [(0, "split"), (1, "done")]
        assert (await _blame(q, job.id))[0] == (0, ISOLATE_AFTER, False)


async def test_a_worker_runs_a_suspect_chunk_alone(db_url: str) -> None:
    """The window (``worker.py``): a suspect claimed while other chunks are in flight waits, its lease renewed,
    until they are committed; nothing else is claimed while it runs; its start is written on its row."""
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=LEASE, clock=clock, owner="a:1:x") as q:
        job = await enqueue(q, 25, chunk_size=5, max_workers=2)
        dead = await q.claims.claim()  # chunk 0 (e0-e4): its worker dies
        assert dead is not None
        clock.advance(LEASE + 1)
        suspect = await q.claims.claim()  # taken over: a suspect; that worker dies before starting it
        assert suspect is not None and suspect.chunk_index == 0 and suspect.suspect
        clock.advance(LEASE + 1)
        # the live worker looks for expired leases only when nothing fresh is left: chunks 1-4 first
        q.claims._next_stale_check = clock() + 3600

        running: set[str] = set()
        overlaps: list[tuple[str, set[str]]] = []
        flight_at_suspect: list[int] = []
        worker: Worker

        async def cb(entity_id: str, _job: object) -> None:
            chunk = int(entity_id[1:]) // 5
            if chunk == 0 and not flight_at_suspect:
                flight_at_suspect.append(-1)
            others = {e for e in running if (int(e[1:]) // 5 == 0) != (chunk == 0)}
            if others:
                overlaps.append((entity_id, others))
            running.add(entity_id)
            await asyncio.sleep(0.02)
            running.discard(entity_id)

        orig = q.claims.claim

        async def claim(*a: object, **kw: object) -> object:
            got = await orig(*a, **kw)  # type: ignore[arg-type]
            if got is not None and got.suspect:
                flight_at_suspect.append(len(worker.in_flight))
            return got

        q.claims.claim = claim  # type: ignore[method-assign]
        worker = Worker(q, Processor(on_process=cb, concurrency=4))
        summary = await asyncio.wait_for(worker.run(), 60)
        assert summary.stopped_by == "empty" and summary.entities == 25
        assert flight_at_suspect and flight_at_suspect[0] > 0, flight_at_suspect  # claimed beside others
        assert overlaps == [], overlaps  # yet run alone: no entity of another chunk ran beside it
        assert await _blame(q, job.id) == [(0, 1, True)] + [(i, 0, False) for i in range(1, 5)]
        j = await q.get_job(job.id)
        assert (j.status, j.succeeded_count) == ("complete", 25)
