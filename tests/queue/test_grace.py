"""A run's end is bounded: a chunk that hangs past ``Worker(grace=...)`` is given up, not waited for.

A callback that hangs without a ``timeout`` used to hold its worker (and an HTTP request
waiting for it) for as long as it hung, its lease renewed all along, so no other worker
could redo the chunk either. Every case runs on SQLite and PostgreSQL; the hung calls are
released at the end of each test so that no thread outlives it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from chunkq.core import InvalidInput, Processor, Queue, Worker
from chunkq.core import worker as worker_module

from .test_leases import enqueue

#: bounds every run: far past any grace used here, so a run that waits for a hung chunk fails, not hangs
BOUND = 20.0


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def hang_on(release: threading.Event, *, hung: str = "e0", started: threading.Event | None = None) -> Processor:
    """A sync callback, no timeout: ``hung`` waits until the test ends (``started`` set when it begins),
    the others return at once."""

    def call(entity_id: str, _job: Any) -> None:
        if entity_id == hung:
            if started is not None:
                started.set()
            release.wait(60)

    return Processor(on_process=call)


async def test_a_hung_chunk_is_given_up_after_the_grace_and_redone_at_once(queue: Queue, release) -> None:
    job = await enqueue(queue, 3, chunk_size=3)
    worker = Worker(queue, hang_on(release), max_chunks=1, grace=0.3)
    summary = await asyncio.wait_for(worker.run(), BOUND)
    assert (summary.stopped_by, summary.overran, summary.chunks) == ("overran", [(job.id, 0)], 0)
    assert summary.to_dict()["overran"] == [{"job_id": job.id, "chunk": 0}]
    # its lease was released, not left to expire (30 s): another worker takes the chunk now
    result = await asyncio.wait_for(queue.process_next_chunk(Processor(on_process=lambda _e, _j: None)), BOUND)
    assert result is not None and (result.job_id, result.processed) == (job.id, 3)
    assert (await queue.get_job(job.id)).status == "complete"


async def test_an_async_callback_that_never_returns_is_given_up_past_max_seconds(queue: Queue) -> None:
    async def forever(_entity_id: str, _job: Any) -> None:
        await asyncio.Event().wait()

    job = await enqueue(queue, 2, chunk_size=2)
    summary = await asyncio.wait_for(Worker(queue, Processor(on_process=forever), max_seconds=0.2,
                                            grace=0.2).run(), BOUND)
    assert (summary.stopped_by, summary.overran) == ("overran", [(job.id, 0)])
    result = await asyncio.wait_for(queue.process_next_chunk(Processor(on_process=lambda _e, _j: None)), BOUND)
    assert result is not None and (result.job_id, result.processed) == (job.id, 2)


async def test_a_stop_starts_the_grace_of_a_worker_waiting_on_its_window(queue: Queue, release) -> None:
    job = await enqueue(queue, 2, chunk_size=2)
    started = threading.Event()
    worker = Worker(queue, hang_on(release, started=started), forever=True, poll_interval=0.05, grace=0.2)
    run = asyncio.ensure_future(worker.run())
    assert await asyncio.to_thread(started.wait, BOUND)
    worker.stop()  # the window is waiting for a chunk that never ends: the stop must wake it
    summary = await asyncio.wait_for(run, BOUND)
    assert (summary.stopped_by, summary.overran) == ("overran", [(job.id, 0)])


async def test_chunks_that_end_within_the_grace_commit_as_always(queue: Queue, release) -> None:
    job = await enqueue(queue, 3, chunk_size=3)
    started = threading.Event()
    worker = Worker(queue, hang_on(release, started=started), max_chunks=1, grace=BOUND)
    run = asyncio.ensure_future(worker.run())
    assert await asyncio.to_thread(started.wait, BOUND)
    await asyncio.sleep(0.1)
    release.set()  # the slow call returns well within its grace
    summary = await asyncio.wait_for(run, BOUND)
    assert (summary.stopped_by, summary.overran, summary.chunks, summary.entities) == ("max_chunks", [], 1, 3)
    assert "overran" not in summary.to_dict()
    assert (await queue.get_job(job.id)).status == "complete"


async def test_without_a_grace_the_run_waits_and_says_once_what_for(
    queue: Queue, release, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker_module, "OVERRUN_WARN_SECONDS", 0.2)
    job = await enqueue(queue, 2, chunk_size=2)
    worker = Worker(queue, hang_on(release), max_chunks=1)
    run = asyncio.ensure_future(worker.run())
    with caplog.at_level(logging.WARNING, logger="chunkq"):
        while "still waiting" not in caplog.text:
            assert not run.done()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # said once, not on every look
        release.set()
        summary = await asyncio.wait_for(run, BOUND)
    said = [r.getMessage() for r in caplog.records if "still waiting" in r.getMessage()]
    assert len(said) == 1 and f"chunk 0 of job {job.id}" in said[0]
    assert (summary.stopped_by, summary.chunks) == ("max_chunks", 1)


@pytest.mark.parametrize("grace", [-1, float("nan"), float("inf"), "soon", 86_401])
async def test_a_bad_grace_is_refused_by_name(queue: Queue, grace: object) -> None:
    with pytest.raises(InvalidInput, match="grace"):
        Worker(queue, Processor(on_process=lambda _e, _j: None), grace=grace)  # type: ignore[arg-type]
