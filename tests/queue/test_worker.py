"""The processing loop shared by the CLI, the dashboard's auto-run and HTTP."""

from __future__ import annotations

import asyncio

from chunkq.core import COMPLETE, Queue, Worker

from .test_leases import enqueue


async def test_until_empty_and_limits(queue: Queue) -> None:
    a = await enqueue(queue, 30, chunk_size=10)
    b = await enqueue(queue, 5, chunk_size=10)
    summary = await Worker(queue, max_chunks=2).run()
    # the fair order: a's first chunk, then b's (its only one), not a's second
    assert (summary.chunks, summary.entities, summary.stopped_by) == (2, 15, "max_chunks")
    assert summary.jobs_completed == [b.id]
    summary = await Worker(queue, lambda e, j: None).run()
    assert (summary.chunks, summary.entities, summary.stopped_by) == (2, 20, "empty")
    assert summary.jobs_completed == [a.id]
    assert (await queue.get_job(a.id)).status == COMPLETE


async def test_max_seconds_starts_no_chunk_past_the_deadline(queue: Queue) -> None:
    await enqueue(queue, 100, chunk_size=10)
    ticks = iter(range(1000))
    summary = await Worker(queue, max_seconds=3, clock=lambda: float(next(ticks))).run()
    # clock: start=0, then one reading per loop turn: 1, 2 run a chunk, 3 hits the deadline
    assert (summary.chunks, summary.stopped_by) == (2, "max_seconds")


async def test_graceful_stop_commits_the_chunk_in_flight(queue: Queue) -> None:
    job = await enqueue(queue, 20, chunk_size=10)
    worker: Worker

    async def cb(eid: str, _j: object) -> None:
        if eid == "e3":
            worker.stop()
        await asyncio.sleep(0)

    worker = Worker(queue, cb, forever=True, poll_interval=0.05)
    summary = await asyncio.wait_for(worker.run(), 10)
    assert (summary.chunks, summary.entities, summary.stopped_by) == (1, 10, "signal")
    assert (await queue.get_job(job.id)).processed_count == 10


async def test_abort_releases_the_chunk_in_flight(queue: Queue) -> None:
    job = await enqueue(queue, 10, chunk_size=10)
    started = asyncio.Event()

    async def cb(eid: str, _j: object) -> None:
        started.set()
        await asyncio.sleep(30)

    worker = Worker(queue, cb, forever=True)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.abort()
    summary = await asyncio.wait_for(task, 10)
    assert (summary.chunks, summary.stopped_by) == (0, "aborted")
    j = await queue.get_job(job.id)
    assert j.processed_count == 0
    # Released: claimable again at once, by anyone.
    r = await queue.process_next_chunk()
    assert r is not None and r.chunk_index == 0 and r.processed == 10


async def test_abort_right_after_a_claim_releases_the_chunk_that_never_started(queue: Queue) -> None:
    """Aborted between the claim's commit and its chunk's first step (the dashboard closing during
    auto-run): the chunk's task is cancelled before it runs a line, so the window gives the lease back."""
    job = await enqueue(queue, 10, chunk_size=10)
    ran: list[str] = []
    worker = Worker(queue, lambda eid, _j: ran.append(eid), forever=True)
    claim = queue.claims.claim

    async def claim_then_abort(*args: object, **kwargs: object) -> object:
        got = await claim(*args, **kwargs)  # type: ignore[arg-type]
        if got is not None:
            worker.abort()  # the window's task is cancelled at its next await: the chunk's task never runs
        return got

    queue.claims.claim = claim_then_abort  # type: ignore[method-assign]
    summary = await asyncio.wait_for(worker.run(), 10)
    queue.claims.claim = claim  # type: ignore[method-assign]
    assert (summary.chunks, summary.stopped_by, ran) == (0, "aborted", [])
    r = await queue.process_next_chunk()  # released: claimable again at once, not after the lease
    assert r is not None and r.chunk_index == 0 and r.processed == 10
    assert (await queue.get_job(job.id)).processed_count == 10


async def test_forever_worker_picks_up_new_work(queue: Queue) -> None:
    seen: list[str] = []
    worker = Worker(queue, lambda e, j: seen.append(e), forever=True, poll_interval=0.05)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    await enqueue(queue, 3)
    for _ in range(200):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.02)
    worker.stop()
    summary = await asyncio.wait_for(task, 10)
    assert seen == ["e0", "e1", "e2"] and summary.entities == 3
