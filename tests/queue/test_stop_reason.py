"""A worker stopped through the database says so (issue 28): not "stopped by a signal".

Real databases (SQLite file and PostgreSQL), a real ``Registration`` heartbeating:
an operator's ``request_worker_stop`` reaches the worker on its next beat.
"""

from __future__ import annotations

import asyncio

from chunkq.core import Processor, Queue, Worker
from chunkq.tui.cli.output import summary_sentence


async def _slow(entity_id: str, job: object) -> None:
    await asyncio.sleep(0.01)


async def test_a_stop_asked_through_the_database_is_the_reason_given(db_url: str) -> None:
    async with Queue(db_url) as q:
        await q.enqueue_job([f"e-{i}" for i in range(400)], entity_type="company", provider="p", chunk_size=2)
        worker = Worker(q, Processor(on_process=_slow), forever=True, poll_interval=0.05)
        # heartbeats every 0.5 s: read as lost (and so not stoppable) only after a second of silence,
        # which a loaded machine can give a 0.05 s interval
        async with worker.registered(kind="worker", interval=0.5) as registration:
            run = asyncio.ensure_future(worker.run())
            for _ in range(400):
                if worker.summary.chunks:
                    break
                await asyncio.sleep(0.01)
            await q.request_worker_stop(registration.id)
            summary = await asyncio.wait_for(run, 60)
        assert registration.stop_request == "finish"
        assert summary.stopped_by == "requested"
        said = summary_sentence(summary)
        assert "as an operator asked" in said and "signal" not in said


async def test_a_signal_still_reads_as_a_signal(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        await q.enqueue_job([f"e-{i}" for i in range(400)], entity_type="company", provider="p", chunk_size=2)
        worker = Worker(q, Processor(on_process=_slow), forever=True, poll_interval=0.05)
        async with worker.registered(kind="worker", interval=0.05):
            run = asyncio.ensure_future(worker.run())
            for _ in range(400):
                if worker.summary.chunks:
                    break
                await asyncio.sleep(0.01)
            worker.stop()  # what the first SIGINT/SIGTERM does (core/signals.py)
            summary = await asyncio.wait_for(run, 60)
        assert summary.stopped_by == "signal"


async def test_a_paused_worker_claims_nothing_until_resumed_and_stops_while_paused(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await q.enqueue_job([f"e-{i}" for i in range(6)], entity_type="company", provider="p", chunk_size=2)
        worker = Worker(q, Processor(on_process=_slow), wait_for_retries=True)
        worker.pause()
        run = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0.5)
        assert not run.done(), "paused with nothing in flight: it waits, it does not end as if empty"
        assert (await q.get_job(job.id)).processed_count == 0
        worker.resume()
        summary = await asyncio.wait_for(run, 60)
        assert summary.stopped_by == "empty" and summary.entities == 6

        await q.enqueue_job(["late"], entity_type="company", provider="p")
        paused = Worker(q, Processor(on_process=_slow), wait_for_retries=True)
        paused.pause()
        run = asyncio.ensure_future(paused.run())
        await asyncio.sleep(0.2)
        paused.stop()
        summary = await asyncio.wait_for(run, 10)
        assert (summary.stopped_by, summary.entities) == ("signal", 0)
