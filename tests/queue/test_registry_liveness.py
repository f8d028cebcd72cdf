"""Workers registry, routing, honest liveness, reasons and history, in process, on both backends.

The real-process halves (kill -9, a stop through the database, routing across processes)
are in tests/cli/test_workers.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from chunkq.core import (
    InvalidInput,
    InvalidTransition,
    Processor,
    Queue,
    Registration,
    Worker,
    WorkerNotFound,
)
from chunkq.core.models import Job

pytestmark = pytest.mark.timeout(60)


async def _wait(predicate) -> None:  # type: ignore[no-untyped-def]
    """Poll the database (it has no event to wait on) until ``predicate()`` holds, for at most 10 s."""
    async with asyncio.timeout(10):
        while True:
            if await predicate():
                return
            await asyncio.sleep(0.02)


async def test_registration_lists_beats_and_marks_stopped(db_url: str) -> None:
    async with Queue(db_url) as q:
        await q.enqueue_job([f"e{i}" for i in range(30)], entity_type="c", provider="p", chunk_size=5)
        gate = asyncio.Event()

        async def slow(entity_id: str, job: Job) -> None:
            await gate.wait()

        w = Worker(q, Processor(on_process=slow, name="m:slow"))
        async with Registration(q, w, kind="worker", processor_name="m:slow", interval=0.25) as reg:
            task = asyncio.ensure_future(w.run())

            async def busy() -> bool:
                found = [x for x in await q.list_workers() if x.id == reg.id]
                return bool(found) and found[0].state == "busy" and found[0].job_id is not None

            await _wait(busy)
            (info,) = [x for x in await q.list_workers() if x.id == reg.id]
            assert (info.kind, info.processor, info.alive) == ("worker", "m:slow", True) and info.chunks >= 1
            gate.set()
            await task
            await _wait(lambda: _done_is(q, reg.id, 30))
        assert [x.id for x in await q.list_workers()] == []  # stopped rows are left out by default
        (gone,) = await q.list_workers(include_stopped=True)
        assert (gone.state, gone.done, gone.failed, gone.stopped_at is not None) == ("stopped", 30, 0, True)
        with pytest.raises(InvalidInput, match="stopped"):
            await q.request_worker_stop(gone.id)
        with pytest.raises(WorkerNotFound):
            await q.request_worker_stop("nope")


async def _done_is(q: Queue, worker_id: str, n: int) -> bool:
    return any(x.id == worker_id and x.done == n for x in await q.list_workers())


async def test_stop_request_through_the_database_finishes_the_chunk(db_url: str) -> None:
    async with Queue(db_url) as q, Queue(db_url) as operator:
        job = await q.enqueue_job([f"e{i}" for i in range(40)], entity_type="c", provider="p", chunk_size=5)
        started = asyncio.Event()
        release = asyncio.Event()

        async def slow(entity_id: str, job: Job) -> None:
            started.set()
            await release.wait()

        w = Worker(q, slow, forever=True, poll_interval=0.05)
        async with Registration(q, w, kind="worker", interval=0.25) as reg:
            task = asyncio.ensure_future(w.run())
            await started.wait()
            asked = await operator.request_worker_stop(reg.id)
            assert asked.stop_request == "finish"
            await _wait(lambda: _stopping(operator, reg.id))
            release.set()
            summary = await asyncio.wait_for(task, 10)
        # finished the chunk(s) it held (a worker's window may hold more than one), started no other
        assert summary.chunks >= 1 and summary.stopped_by == "requested", "the database's stop, not a signal"
        after = await q.get_job(job.id)
        assert (after.processed_count, after.leased_chunks) == (5 * summary.chunks, 0) and after.processed_count < 40


async def _stopping(q: Queue, worker_id: str) -> bool:
    return any(x.id == worker_id and x.state == "stopping" for x in await q.list_workers())


async def test_stop_now_releases_the_chunk_and_says_who(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(10)], entity_type="c", provider="p", chunk_size=5)
        started = asyncio.Event()

        async def hang(entity_id: str, job: Job) -> None:
            started.set()
            await asyncio.sleep(30)

        w = Worker(q, hang, forever=True, poll_interval=0.05)
        async with Registration(q, w, kind="worker", interval=0.25) as reg:
            task = asyncio.ensure_future(w.run())
            await started.wait()
            await q.request_worker_stop(reg.id, now=True)
            summary = await asyncio.wait_for(task, 10)
        assert summary.stopped_by == "aborted"
        released = await q.get_job(job.id)
        assert released.is_released and released.released_by and released.released_by.count(":") == 1
        assert released.released_at is not None and released.released_at.year > 2000
        assert released.lease_expires_at is None  # never an epoch date
        assert not released.lease_is_stale()  # a release is not a silent worker
        stats = await q.stats()
        assert stats.stale_jobs == 0


async def test_lost_is_computed_on_read_and_old_rows_are_forgotten(db_url: str) -> None:
    clock = [1_000_000.0]
    async with Queue(db_url, clock=lambda: clock[0]) as q:
        w = Worker(q, None)
        reg = Registration(q, w, kind="process", interval=10.0)
        await reg.__aenter__()
        try:
            assert [x.state for x in await q.list_workers()] == ["idle"]
            clock[0] += 19.0  # under two intervals: alive
            assert [x.state for x in await q.list_workers()] == ["idle"]
            assert (await q.stats()).workers_alive == 1
            clock[0] += 2.0  # over two intervals without a heartbeat
            assert [x.state for x in await q.list_workers()] == ["lost"]
            assert (await q.stats()).workers_alive == 0
            with pytest.raises(InvalidInput, match="lost"):
                await q.request_worker_stop(reg.id)
            clock[0] += 3700.0  # gone for over an hour: deleted by the next list
            assert await q.list_workers(include_stopped=True) == []
        finally:
            reg._registered = False  # its row is already gone
            await reg.__aexit__(None, None, None)


async def test_a_worker_registers_itself_under_its_processors_name(db_url: str) -> None:
    """``worker.registered``: the row says who it is (kind, processor, its concurrency), and says it
    stopped, with what it did, when the block ends."""
    async with Queue(db_url) as q:
        await q.enqueue_job(["a1", "a2"], entity_type="c", provider="p", processor="mod:a")
        seen: list[str] = []

        async def record(entity_id: str, job: Job) -> None:
            seen.append(entity_id)

        w = Worker(q, Processor(on_process=record, concurrency=3, name="mod:a"))
        async with w.registered(kind="dashboard", interval=3600) as reg:
            [row] = [x for x in await q.list_workers() if x.id == reg.id]
            assert (row.kind, row.processor, row.concurrency, row.state) == ("dashboard", "mod:a", 3, "idle")
            summary = await w.run()
        assert sorted(seen) == ["a1", "a2"] and summary.stopped_by == "empty"
        [row] = [x for x in await q.list_workers(include_stopped=True) if x.id == reg.id]
        assert (row.state, row.done) == ("stopped", 2)


async def test_routing_a_worker_claims_only_its_own_and_unrouted_jobs(db_url: str) -> None:
    async with Queue(db_url) as q:
        for_a = await q.enqueue_job(["a1", "a2"], entity_type="c", provider="p", processor="mod:a")
        for_b = await q.enqueue_job(["b1", "b2"], entity_type="c", provider="p", processor="mod:b", priority=9)
        anyone = await q.enqueue_job(["n1"], entity_type="c", provider="p")
        seen: list[str] = []

        async def record(entity_id: str, job: Job) -> None:
            seen.append(entity_id)

        summary = await Worker(q, Processor(on_process=record, name="mod:a")).run()
        assert sorted(seen) == ["a1", "a2", "n1"] and summary.stopped_by == "empty"
        assert (await q.get_job(for_b.id)).processed_count == 0
        assert (await q.get_job(for_a.id)).processor == "mod:a" and (await q.get_job(anyone.id)).processor is None
        # an unnamed processor runs only jobs routed to no one
        assert await q.process_next_chunk(record) is None
        with pytest.raises(InvalidTransition, match="routed to processor 'mod:b'"):
            await q.process_chunk(for_b.id, Processor(on_process=record, name="mod:a"))
        with pytest.raises(InvalidInput):
            await q.enqueue_job(["x"], entity_type="c", provider="p", processor="bad\x00name")
        await Worker(q, Processor(on_process=record, name="mod:b")).run()
        assert (await q.get_job(for_b.id)).status == "complete"


async def test_an_idle_job_has_no_rate(db_url: str) -> None:
    clock = [2_000_000.0]
    async with Queue(db_url, clock=lambda: clock[0]) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(20)], entity_type="c", provider="p", chunk_size=5)
        await q.process_next_chunk()
        await q.process_next_chunk()
        clock[0] += 1.0
        rates = await q.job_rates([job.id])
        assert rates[job.id] == pytest.approx(10 / 1.0, rel=0.2)  # measured up to now
        assert (await q.stats()).entities_per_second == pytest.approx(rates[job.id])
        clock[0] += 20.0  # nothing finished for 20 s: idle, not "still 10/s"
        assert await q.job_rates([job.id]) == {}
        assert await q.rate(job.id) == 0.0
        assert (await q.get_job(job.id)).eta_seconds(None) is None
        assert (await q.stats()).entities_per_second == 0.0, "the header agrees with the rows: idle, no queue-wide rate"


async def test_stale_within_two_heartbeat_intervals_not_the_whole_lease() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = dict(id=1, name=None, entity_type="c", provider="p", status="running", chunk_size=5, priority=0,
                total_count=10, processed_count=0, error_count=0, created_at=now, updated_at=now, started_at=now,
                finished_at=None, lease_owner="h:1:x", fail_reason=None, parent_id=None, leased_chunks=1)
    beat = now - timedelta(seconds=25)
    job = Job(**base, heartbeat_at=beat, lease_expires_at=beat + timedelta(seconds=30))  # type: ignore[arg-type]
    assert job.heartbeat_interval == 10.0
    assert job.lease_is_stale(now)  # 25 s silent > 2 x 10 s, though the lease runs 5 s more
    assert not job.lease_is_stale(beat + timedelta(seconds=19))
    released = Job(**base, heartbeat_at=beat, lease_expires_at=None, released_by="h:1",  # type: ignore[arg-type]
                   released_at=now)
    assert released.is_released and not released.lease_is_stale(now)


async def test_stats_count_stale_jobs_like_the_rows(db_url: str) -> None:
    clock = [3_000_000.0]
    async with Queue(db_url, clock=lambda: clock[0], lease_seconds=30) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(10)], entity_type="c", provider="p", chunk_size=5)
        claim = await q.claims.claim()
        assert claim is not None
        assert (await q.stats()).stale_jobs == 0
        clock[0] += 21.0  # two heartbeat intervals (10 s each) without a renewal; the lease runs to +30
        row = await q.get_job(job.id)
        stats = await q.stats()
        assert row.lease_is_stale(datetime.fromtimestamp(clock[0], UTC)) and stats.stale_jobs == 1
        assert stats.jobs_by_status["running"] - stats.stale_jobs == 0


async def test_breaker_pause_points_at_the_error_and_says_why(db_url: str) -> None:
    async with Queue(db_url, breaker_chunks=2) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(30)], entity_type="c", provider="p", chunk_size=5,
                                  max_attempts=1)

        def boom(entity_id: str, job: Job) -> None:
            raise RuntimeError(f"provider down for {entity_id}")

        await Worker(q, boom).run()
        paused = await q.get_job(job.id)
        assert paused.status == "paused" and paused.reason and paused.reason.startswith("circuit breaker")
        assert paused.failed_count == 10 and paused.error_count == 10
        err = await q.get_error(paused.reason_error_id)  # type: ignore[arg-type]
        assert err.job_id == job.id and err.error_type == "RuntimeError" and err.traceback
        resumed = await q.resume(job.id)
        assert resumed.reason is None and resumed.reason_error_id is None
        stats = await q.stats()
        assert stats.failed_entities == 10


async def test_history_buckets_count_what_finished_and_when(db_url: str) -> None:
    clock = [4_000_020.0]
    async with Queue(db_url, clock=lambda: clock[0]) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(20)], entity_type="c", provider="p", chunk_size=5,
                                  max_attempts=1)

        def half(entity_id: str, job: Job) -> None:
            if int(entity_id[1:]) % 2:
                raise ValueError("odd")

        await q.process_next_chunk(half)  # at t0
        clock[0] += 600.0  # ten minutes later: in the coarse part
        clock[0] += 0.0
        h_then = await q.history(job.id, minutes=60, bucket_seconds=60, recent_minutes=5, recent_bucket_seconds=10)
        assert sum(b.processed for b in h_then) == 5 and sum(b.failed for b in h_then) == 2
        assert sum(b.chunks for b in h_then) == 1
        coarse = [b for b in h_then if b.seconds == 60]
        fine = [b for b in h_then if b.seconds == 10]
        assert len(fine) >= 30 and coarse and [b.start for b in h_then] == sorted(b.start for b in h_then)
        await q.process_next_chunk(half)  # now: in the fine part
        h_now = await q.history(job.id)
        assert sum(b.processed for b in h_now) == 10
        assert h_now[-1].processed == 5 or h_now[-2].processed == 5
        assert sum(b.processed for b in await q.history()) == 10  # the whole queue
        with pytest.raises(InvalidInput):
            await q.history(minutes=60, bucket_seconds=1, recent_minutes=0)


async def test_jobfailed_logs_the_entity_that_raised_it_and_the_job_points_at_it(db_url: str) -> None:
    from chunkq.core import JobFailed

    async with Queue(db_url) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(10)], entity_type="c", provider="p", chunk_size=5)

        def revoke(entity_id: str, job: Job) -> None:
            if entity_id == "e3":
                raise JobFailed("API key revoked")

        await Worker(q, revoke).run()
        failed = await q.get_job(job.id)
        assert failed.status == "failed" and failed.reason == "JobFailed: API key revoked"
        assert failed.error_count == 1  # not "0 errors logged"
        err = await q.get_error(failed.reason_error_id)  # type: ignore[arg-type]
        assert (err.entity_id, err.error_type, err.final) == ("e3", "JobFailed", True)
        assert "revoke" in err.traceback and "API key revoked" in err.traceback
        assert failed.to_dict()["reason"] == "JobFailed: API key revoked"
