"""A worker's sliding window (issue 14): no barrier between chunks.

While the stragglers of one chunk run, the worker already runs the next chunk's
entities, holding several leases at once and committing each chunk when its own
entities are done. ``max_workers`` counts workers, not the chunks they hold.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from chunkq.core import COMPLETE, Processor, Queue, Worker
from chunkq.core.outcomes import Outcomes

from .test_leases import enqueue


async def test_a_window_overlaps_chunks(queue: Queue) -> None:
    """Chunk 0's first entity waits for an event only an entity of chunk 1 sets: a worker
    that waited for chunk 0 to finish before claiming chunk 1 would never finish."""
    job = await enqueue(queue, 4, chunk_size=2)
    chunk1_ran = asyncio.Event()
    seen_flight: list[list[tuple[int, int]]] = []
    worker: Worker

    async def cb(entity_id: str, _job: object) -> None:
        seen_flight.append(worker.in_flight)
        if entity_id == "e0":
            await chunk1_ran.wait()
        elif entity_id in ("e2", "e3"):
            chunk1_ran.set()

    worker = Worker(queue, Processor(on_process=cb, concurrency=3))
    summary = await asyncio.wait_for(worker.run(), 30)
    assert (summary.chunks, summary.entities, summary.stopped_by) == (2, 4, "empty")
    assert (await queue.get_job(job.id)).status == COMPLETE
    assert [(job.id, 0), (job.id, 1)] in seen_flight  # both leases held at once
    assert worker.in_flight == []


async def test_every_entity_runs_once_across_windows(queue: Queue) -> None:
    ids = [f"e{i}" for i in range(120)]
    job = await queue.enqueue_job(ids, entity_type="company", provider="p", chunk_size=3)
    other = await queue.enqueue_job([f"x{i}" for i in range(20)], entity_type="company", provider="p", chunk_size=4)
    rng = random.Random(14)
    delays = {e: rng.choice([0, 0, 0.001, 0.003, 0.02]) for e in [*ids, *(f"x{i}" for i in range(20))]}
    ran: Counter[str] = Counter()
    widest = 0
    worker: Worker

    async def cb(entity_id: str, _job: object) -> None:
        nonlocal widest
        widest = max(widest, len(worker.in_flight))
        await asyncio.sleep(delays[entity_id])
        if entity_id.endswith("7"):
            raise ValueError("provider said no")
        ran[entity_id] += 1

    chunks: list[tuple[int, int]] = []
    worker = Worker(queue, Processor(on_process=cb, concurrency=7),
                    on_chunk=lambda r: chunks.append((r.job_id, r.chunk_index)))
    summary = await asyncio.wait_for(worker.run(), 60)
    assert summary.stopped_by == "empty"
    assert summary.entities == 140 and summary.chunks == 40 + 5
    assert set(ran) == {e for e in delays if not e.endswith("7")} and set(ran.values()) == {1}
    assert len(set(chunks)) == len(chunks) == 45
    assert 2 <= widest <= worker.window_cap
    for j in (job, other):
        done = await queue.get_job(j.id)
        assert (done.status, done.processed_count, done.leased_chunks) == (COMPLETE, j.total_count, 0)


async def test_max_workers_counts_workers_not_the_chunks_they_hold(db_url: str) -> None:
    async with Queue(db_url, owner="a:1:a") as a, Queue(db_url, owner="b:2:b") as b, \
            Queue(db_url, owner="c:3:c") as c:
        one = await enqueue(a, 100, chunk_size=10, max_workers=1)
        first = await a.claims.claim()
        assert first is not None and first.job.id == one.id
        assert await b.claims.claim() is None  # max_workers=1: another worker may not join
        # only *other* workers count against max_workers: the holder may take more, saying so or not
        second = await a.claims.claim()
        assert second is not None and second.chunk_index == 1
        third_of_one = await a.claims.claim(mine=one.id)
        assert third_of_one is not None and third_of_one.chunk_index == 2
        assert await b.claims.claim(mine=None) is None

        two = await enqueue(a, 100, chunk_size=10, max_workers=2, priority=5)
        held = [await a.claims.claim(), await a.claims.claim(mine=two.id), await a.claims.claim(mine=two.id)]
        assert [h.job.id for h in held if h is not None] == [two.id] * 3
        joined = await b.claims.claim()  # three chunks leased, but by one worker of two
        assert joined is not None and joined.job.id == two.id
        third = await c.claims.claim()
        assert third is None or third.job.id != two.id  # two workers hold it: a third may not join
        for claim in [*held, joined]:
            assert claim is not None
            await (a if claim.owner == a.owner else b).committer.commit(claim, Outcomes(), 0.0, None)
        for claim in (first, second, third_of_one):
            await a.committer.commit(claim, Outcomes(), 0.0, None)


async def test_abort_releases_every_chunk_of_the_window(db_url: str) -> None:
    async with Queue(db_url, owner="w:1:a") as q, Queue(db_url, owner="n:2:b") as nxt:
        job = await enqueue(q, 12, chunk_size=2)
        started: set[str] = set()
        worker: Worker

        async def cb(entity_id: str, _job: object) -> None:
            started.add(entity_id)
            if len(worker.in_flight) >= 3:
                worker.abort()
            await asyncio.Event().wait()  # never returns on its own

        worker = Worker(q, Processor(on_process=cb, concurrency=5))
        summary = await asyncio.wait_for(worker.run(), 30)
        assert summary.stopped_by == "aborted" and summary.chunks == 0
        # Every lease was given back: another worker takes all of them over at once (into its window).
        taken = [await nxt.claims.claim(job.id)] + [await nxt.claims.claim(job.id, mine=job.id) for _ in range(2)]
        assert all(t is not None and t.attempt == 2 for t in taken), taken
        assert sorted(t.chunk_index for t in taken if t is not None) == [0, 1, 2]


async def test_graceful_stop_commits_the_whole_window(queue: Queue) -> None:
    job = await enqueue(queue, 30, chunk_size=2)
    held = asyncio.Event()

    async def cb(entity_id: str, _job: object) -> None:
        await held.wait()  # every call waits until the window holds three chunks (however slow the claims)
        await asyncio.sleep(0.005)

    worker = Worker(queue, Processor(on_process=cb, concurrency=5), forever=True)
    run = asyncio.ensure_future(worker.run())
    for _ in range(3000):
        if len(worker.in_flight) >= 3 or run.done():
            break
        await asyncio.sleep(0.01)
    assert len(worker.in_flight) >= 3, worker.in_flight
    worker.stop()
    held.set()
    summary = await asyncio.wait_for(run, 30)
    assert summary.stopped_by == "signal" and summary.chunks >= 3
    done = await queue.get_job(job.id)
    assert done.leased_chunks == 0 and done.processed_count == summary.entities == 2 * summary.chunks


async def test_counting_a_jobs_workers_reads_the_lease_index_not_every_chunk(sqlite_url: str) -> None:
    """The distinct-workers count runs inside claims: it must cost the same for a job of a million
    chunks as for one of ten (SQLite's plan, deterministic; PostgreSQL plans by its statistics)."""
    from chunkq.core import schema as s
    from chunkq.core.sql import claimable
    from sqlalchemy import select

    async with Queue(sqlite_url) as q:
        await enqueue(q, 10, chunk_size=2)
        for team in (None, "h:1:t"):  # counting every holder, or the others than a team
            stmt = select(s.jobs.c.id).where(claimable(0.0, 1, team=team)).limit(1)
            sql = str(stmt.compile(dialect=q.engine.dialect, compile_kwargs={"literal_binds": True}))
            plan = await q.backend.read(lambda conn, sql=sql: conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql).all(),
                                        "plan")
            chunk_reads = [row[3] for row in plan if "chunkq_chunks" in row[3]]
            assert chunk_reads and all("ix_chunkq_chunks_lease" in r for r in chunk_reads), plan
