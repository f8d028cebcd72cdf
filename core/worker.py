"""The processing loop shared by `chunkq process`, `chunkq worker`, auto-run and HTTP.

Stopping is two-staged, like every well-behaved worker: a graceful stop finishes
and commits the chunk in flight; an abort gives it up at once (its lease is
released so another worker redoes it).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .models import COMPLETE, ChunkResult, DatabaseUnavailable, EntityResult
from .queue import ProcessorLike, Queue
from .runner import Processor

log = logging.getLogger("chunkq.worker")


@dataclass
class RunSummary:
    chunks: int = 0
    entities: int = 0
    errors: int = 0
    retried: int = 0
    discarded: int = 0
    jobs_completed: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    stopped_by: str = "empty"  # empty | max_chunks | max_seconds | signal | aborted | idle

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "entities": self.entities,
            "errors": self.errors,
            "retried": self.retried,
            "discarded": self.discarded,
            "jobs_completed": self.jobs_completed,
            "elapsed": round(self.elapsed, 3),
            "stopped_by": self.stopped_by,
        }


class Worker:
    """Claims and runs chunks until told to stop or a limit is reached.

    ``forever=False`` (cron, HTTP): stop when nothing is claimable.
    ``forever=True`` (``chunkq worker``): poll, with jitter, until stopped.
    """

    def __init__(
        self,
        queue: Queue,
        processor: ProcessorLike = None,
        *,
        job_id: int | None = None,
        max_chunks: int | None = None,
        max_seconds: float | None = None,
        forever: bool = False,
        poll_interval: float = 1.0,
        on_chunk: Callable[[ChunkResult], None] | None = None,
        on_entity: Callable[[EntityResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.processor = Processor.coerce(processor)
        self.job_id = job_id
        self.max_chunks = max_chunks
        self.max_seconds = max_seconds
        self.forever = forever
        self.poll_interval = poll_interval
        self.on_chunk = on_chunk
        self.on_entity = on_entity
        self._clock = clock
        self._stop = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._idle = False
        self.summary = RunSummary()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Graceful: finish and commit the chunk in flight, start no other."""
        self._stop.set()

    def abort(self) -> None:
        """Give up the chunk in flight now; its lease is released for another worker."""
        self._stop.set()
        self.summary.stopped_by = "aborted"
        if self._task is not None:
            self._task.cancel()

    async def run(self) -> RunSummary:
        start = self._clock()
        deadline = start + self.max_seconds if self.max_seconds is not None else None
        db_backoff = 0.5
        s = self.summary
        try:
            while not self._stop.is_set():
                if self.max_chunks is not None and s.chunks >= self.max_chunks:
                    s.stopped_by = "max_chunks"
                    break
                if deadline is not None and self._clock() >= deadline:
                    s.stopped_by = "max_seconds"
                    break
                try:
                    self._task = asyncio.ensure_future(self._one())
                    result = await self._task
                    db_backoff = 0.5
                except asyncio.CancelledError:
                    if s.stopped_by == "aborted":
                        break
                    raise
                except DatabaseUnavailable as exc:
                    if not self.forever:
                        raise
                    log.error("database unavailable: %s; retrying in %.1fs", exc, db_backoff)
                    await self._sleep(db_backoff, deadline)
                    db_backoff = min(db_backoff * 2, 30.0)
                    continue
                finally:
                    self._task = None
                self._idle = result is None
                if result is None:
                    if not self.forever:
                        s.stopped_by = "empty"
                        break
                    await self._sleep(self.poll_interval * (0.75 + random.random() / 2), deadline)
                    continue
                self._record(result)
            else:
                if s.stopped_by not in ("aborted",):
                    s.stopped_by = "signal"
        finally:
            s.elapsed = self._clock() - start
        return s

    async def _one(self) -> ChunkResult | None:
        if self._idle and not await self.queue.has_claimable():
            # An idle worker polls with a cheap read: on SQLite, taking the write lock
            # every second in each of N idle workers would slow the busy ones.
            return None
        if self.job_id is not None:
            job = await self.queue.get_job(self.job_id)
            if job.status not in ("pending", "running"):
                return None
            return await self.queue.process_chunk(self.job_id, self.processor, on_entity=self.on_entity)
        return await self.queue.process_next_chunk(self.processor, on_entity=self.on_entity)

    def _record(self, result: ChunkResult) -> None:
        s = self.summary
        if not result.committed:
            s.discarded += 1
        else:
            s.chunks += 1
            s.entities += result.processed
            s.errors += result.errors
            s.retried += result.retried
            if result.status == COMPLETE and result.job_id not in s.jobs_completed:
                s.jobs_completed.append(result.job_id)
        if self.on_chunk is not None:
            self.on_chunk(result)

    async def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline - self._clock()))
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
