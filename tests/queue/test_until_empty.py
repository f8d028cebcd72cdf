"""Running until every active job is done, including retries not yet due; the two-stage stop."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from chunkq.core import COMPLETE, PENDING, Processor, Queue, Retry, SignalStop, Worker, stop_message
from sqlalchemy import insert

from .test_leases import FakeClock, enqueue


def _retry_once(after: float) -> Any:
    seen: set[str] = set()

    def cb(entity_id: str, _job: Any) -> None:
        if entity_id.startswith("r") and entity_id not in seen:
            seen.add(entity_id)
            raise Retry("429 Too Many Requests", after=after)

    return cb


# --------------------------------------------------------------------------- next_retry_due


async def test_next_retry_due_finds_a_retry_on_the_1500th_active_job(db_url: str) -> None:
    """The dashboard looked at the first 1,000 active jobs only, and said "nothing left"."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        waiting = await q.enqueue_job(["r0"], entity_type="company", provider="p")
        await q.process_next_chunk(_retry_once(after=30))
        assert (await q.get_job(waiting.id)).waiting_count == 1
        await _many_pending_jobs(q, 1_499)
        first_page = await q.list_jobs(["pending", "running"], limit=1000)
        assert waiting.id not in {j.id for j in first_page}, "the waiting job must lie beyond the first 1,000"
        assert await q.count_jobs(["pending", "running"]) == 1_500
        assert await q.next_retry_due() == pytest.approx(clock.t + 30)
        assert await q.next_retry_due(waiting.id) == pytest.approx(clock.t + 30)
        assert await q.next_retry_due(waiting.id + 1) is None  # a job with nothing waiting
        await q.pause(waiting.id)
        assert await q.next_retry_due() is None, "a paused job's retries do not keep a run going"


async def _many_pending_jobs(q: Queue, n: int) -> None:
    """Pending jobs of one entity each, written in one transaction (enqueueing 1,499 would take long)."""
    from chunkq.core import schema as s
    from chunkq.core.enqueue import new_job_row

    def tx(conn: Any) -> None:
        now = q.now()
        ids = conn.execute(insert(s.jobs).returning(s.jobs.c.id), [
            new_job_row(now, entity_type="company", provider="p", chunk_size=50, priority=0, max_workers=1,
                        max_attempts=3, total_count=1, params={}) for _ in range(n)
        ]).scalars().all()
        conn.execute(insert(s.entities), [{"job_id": i, "pos": 0, "entity_id": f"x{i}"} for i in ids])

    await q.backend.write(tx, "test jobs")


async def test_next_retry_due_is_none_when_nothing_waits(queue: Queue) -> None:
    assert await queue.next_retry_due() is None
    await enqueue(queue, 3)
    assert await queue.next_retry_due() is None


# --------------------------------------------------------------------------- Worker(wait_for_retries=True)


async def test_wait_for_retries_runs_until_every_active_job_is_done(queue: Queue) -> None:
    job = await queue.enqueue_job(["a", "r1", "b"], entity_type="company", provider="p")
    waits: list[float | None] = []
    t0 = time.monotonic()
    summary = await asyncio.wait_for(
        Worker(queue, _retry_once(after=0.4), wait_for_retries=True, on_wait=waits.append).run(), 20)
    assert time.monotonic() - t0 >= 0.3
    assert (summary.stopped_by, summary.chunks, summary.entities, summary.retried) == ("empty", 2, 3, 1)
    assert summary.jobs_completed == [job.id]
    assert (await queue.get_job(job.id)).status == COMPLETE
    assert len(waits) == 2 and waits[0] is not None and waits[1] is None


async def test_without_wait_for_retries_empty_means_nothing_claimable_now(queue: Queue) -> None:
    job = await queue.enqueue_job(["r1"], entity_type="company", provider="p")
    summary = await Worker(queue, _retry_once(after=30)).run()
    assert summary.stopped_by == "empty"
    assert (await queue.get_job(job.id)).status == PENDING


async def test_per_job_mode_waits_only_for_that_jobs_retries(queue: Queue) -> None:
    a = await queue.enqueue_job(["r1"], entity_type="company", provider="p")
    b = await queue.enqueue_job(["x"], entity_type="company", provider="p")
    cb = _retry_once(after=30)
    await queue.process_chunk(a.id, cb)  # a now waits 30 s for a retry
    summary = await asyncio.wait_for(Worker(queue, cb, job_id=b.id, wait_for_retries=True).run(), 10)
    assert (summary.stopped_by, summary.entities) == ("empty", 1), "b is done: a's retry is not b's business"


async def test_a_retry_further_off_than_max_retry_wait_stops_with_its_due_time(queue: Queue) -> None:
    await queue.enqueue_job(["r1"], entity_type="company", provider="p")
    summary = await asyncio.wait_for(
        Worker(queue, _retry_once(after=60), wait_for_retries=True, max_retry_wait=5).run(), 10)
    assert summary.stopped_by == "retry_later"
    assert summary.next_retry_at == pytest.approx(queue.now() + 60, abs=5)


async def test_a_stop_or_the_deadline_cuts_a_retry_wait_short(queue: Queue) -> None:
    await queue.enqueue_job(["r1", "r2"], entity_type="company", provider="p")
    worker: Worker

    def on_wait(due: float | None) -> None:
        if due is not None:
            worker.stop()

    worker = Worker(queue, _retry_once(after=60), wait_for_retries=True, on_wait=on_wait)
    summary = await asyncio.wait_for(worker.run(), 10)
    assert summary.stopped_by == "signal"
    t0 = time.monotonic()
    summary = await asyncio.wait_for(Worker(queue, wait_for_retries=True, max_seconds=0.3).run(), 10)
    assert summary.stopped_by == "max_seconds" and time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- the two-stage stop


class _Worker:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop(self) -> None:
        self.calls.append("stop")

    def abort(self) -> None:
        self.calls.append("abort")


def test_first_signal_stops_gracefully_the_second_aborts_and_the_front_end_is_told() -> None:
    heard: list[tuple[signal.Signals, int]] = []
    worker = _Worker()
    stopper = SignalStop(worker, on_signal=lambda sig, n: heard.append((sig, n)))  # type: ignore[arg-type]
    stopper.handle(signal.SIGTERM)
    assert (worker.calls, stopper.count, stopper.aborted_by, stopper.event.is_set()) == (["stop"], 1, None, True)
    stopper.handle(signal.SIGINT)
    assert worker.calls == ["stop", "abort"] and stopper.aborted_by == int(signal.SIGINT)
    assert heard == [(signal.SIGTERM, 1), (signal.SIGINT, 2)]
    later = _Worker()
    stopper.worker = later  # type: ignore[assignment]
    assert later.calls == ["abort"], "a worker started after the signals is stopped the same way"


def test_stop_messages() -> None:
    assert stop_message(signal.SIGTERM, 1) == (
        "SIGTERM: finishing the chunk in flight, then stopping (send it again to give it up now)")
    assert stop_message(signal.SIGINT, 2).startswith("SIGINT again: giving up the chunk in flight")


async def test_real_signals_stop_a_worker_in_two_stages(queue: Queue) -> None:
    job = await enqueue(queue, 20, chunk_size=10)
    heard: list[int] = []

    async def graceful(entity_id: str, _job: Any) -> None:
        if entity_id == "e3":
            signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0)

    worker = Worker(queue, graceful, wait_for_retries=True)
    with worker.stop_on_signals(lambda sig, n: heard.append(n)):
        summary = await asyncio.wait_for(worker.run(), 10)
    assert heard == [1] and (summary.stopped_by, summary.chunks, summary.entities) == ("signal", 1, 10)
    assert (await queue.get_job(job.id)).processed_count == 10

    async def stuck(entity_id: str, _job: Any) -> None:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(30)

    worker = Worker(queue, Processor(on_process=stuck))
    with worker.stop_on_signals() as stopper:
        summary = await asyncio.wait_for(worker.run(), 10)
    assert (summary.stopped_by, stopper.aborted_by) == ("aborted", int(signal.SIGTERM))
    r = await queue.process_next_chunk()  # released at once: claimable again by anyone
    assert r is not None and r.chunk_index == 1 and r.processed == 10
