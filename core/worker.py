"""The processing loop shared by `chunkq process`, `chunkq worker`, auto-run and HTTP.

Stopping is two-staged, like every well-behaved worker: a graceful stop finishes
and commits the chunk in flight; an abort gives it up at once (its lease is
released so another worker redoes it). ``stop_on_signals`` maps SIGINT/SIGTERM
onto the two stages.

"Run until empty" can mean two things: until nothing is claimable this second,
or also waiting for entity retries that are scheduled but not yet due
(``wait_for_retries``), so a job is not left at 99% because one entity's
back-off had a second to go. Either way a chunk another worker holds is that
worker's to finish. Both live here, once, for every front end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import threads
from .errors import DatabaseUnavailable
from .models import ChunkResult, EntityResult
from .queue import Queue
from .runner import Processor, ProcessorLike
from .signals import SignalHook, SignalStop
from .status import ACTIVE_STATUSES, COMPLETE
from .threads import ABANDONED_THREADS_MAX

#: the shortest wait for a retry: a retry that is due but not claimable (its job's worker
#: slots are all leased) is polled for, not spun on
RETRY_POLL_SECONDS = 0.25

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
    #: empty | max_chunks | max_seconds | signal | aborted | retry_later (the next retry is due
    #: after ``max_retry_wait``: see ``next_retry_at``) | wedged (too many callback threads are
    #: still running past their timeout: a supervisor should start a fresh process; see ``Worker``)
    stopped_by: str = "empty"
    #: with stopped_by "retry_later": when the next retry is due (epoch seconds, the queue's clock)
    next_retry_at: float | None = None

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
    ``wait_for_retries=True`` (``process --until-empty``, the dashboard's auto-run): when
    nothing is claimable but an active job (``job_id``'s, if given) has entities waiting
    for a retry, sleep until the next is due and go on; stop once none waits. A stop or
    ``max_seconds`` cuts the wait short; ``max_retry_wait`` stops instead of waiting
    longer than that (``stopped_by="retry_later"``). ``on_wait(due)`` is told when a wait
    starts (epoch seconds, the queue's clock) and ``on_wait(None)`` when it ends.
    ``forever=True`` (``chunkq worker``): poll, with jitter, until stopped.

    A sync callback that outlives the processor's ``timeout`` is abandoned: its
    thread runs on (Python cannot stop a thread). Once more than
    ``max_abandoned`` are still running (default: 16, or twice the concurrency
    if that is more) while there is work to claim, the worker says so in one
    line and stops with ``stopped_by="wedged"``: the process should exit
    non-zero so its supervisor starts a clean one. Work already done is never
    a reason: a run with nothing left to claim ends as usual. Without a
    ``timeout`` a hung sync callback cannot be abandoned, only aborted with its
    chunk (the second signal).
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
        wait_for_retries: bool = False,
        max_retry_wait: float | None = None,
        on_wait: Callable[[float | None], None] | None = None,
        on_chunk: Callable[[ChunkResult], None] | None = None,
        on_entity: Callable[[EntityResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_abandoned: int | None = None,
    ) -> None:
        self.queue = queue
        self.processor = Processor.coerce(processor)
        self.job_id = job_id
        self.max_chunks = max_chunks
        self.max_seconds = max_seconds
        self.forever = forever
        self.poll_interval = poll_interval
        self.wait_for_retries = wait_for_retries
        self.max_retry_wait = max_retry_wait
        self.on_wait = on_wait
        self.on_chunk = on_chunk
        self.on_entity = on_entity
        self._clock = clock
        self.max_abandoned = (max(ABANDONED_THREADS_MAX, 2 * self.processor.concurrency)
                              if max_abandoned is None else max_abandoned)
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

    def stop_on_signals(
        self, on_signal: SignalHook | None = None, *, hard_exit_after: float | None = None
    ) -> SignalStop:
        """``with worker.stop_on_signals(): await worker.run()`` - first SIGINT/SIGTERM stops
        gracefully, the second aborts; ``on_signal(sig, count)`` is the front end's cue to say so.
        ``hard_exit_after``: see ``signals.py`` (a command line's guarantee that the process ends)."""
        return SignalStop(self, on_signal=on_signal, hard_exit_after=hard_exit_after)

    async def run(self) -> RunSummary:
        start = self._clock()
        deadline = start + self.max_seconds if self.max_seconds is not None else None
        db_backoff = 0.5
        s = self.summary
        s.next_retry_at = None
        try:
            while not self._stop.is_set():
                if self.max_chunks is not None and s.chunks >= self.max_chunks:
                    s.stopped_by = "max_chunks"
                    break
                if deadline is not None and self._clock() >= deadline:
                    s.stopped_by = "max_seconds"
                    break
                if await self._wedged():
                    s.stopped_by = "wedged"
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
                    if self.forever:
                        await self._sleep(self.poll_interval * (0.75 + random.random() / 2), deadline)
                        continue
                    if self.wait_for_retries and await self._wait_for_retry(deadline):
                        continue
                    s.stopped_by = "empty" if s.next_retry_at is None else "retry_later"
                    break
                self._record(result)
            else:
                if s.stopped_by not in ("aborted",):
                    s.stopped_by = "signal"
        finally:
            s.elapsed = self._clock() - start
        return s

    async def _wedged(self) -> bool:
        """Too many abandoned callback threads, and work this worker would otherwise claim."""
        stuck = threads.abandoned()
        if stuck <= self.max_abandoned or not (self.forever or await self.queue.has_claimable()):
            return False
        log.error("%d callback threads are still running after their timeout (more than %d): this worker "
                  "claims no more chunks and stops, so that its supervisor can start a fresh process",
                  stuck, self.max_abandoned)
        return True

    async def _one(self) -> ChunkResult | None:
        if self._idle and not await self.queue.has_claimable():
            # An idle worker polls with a cheap read: on SQLite, taking the write lock
            # every second in each of N idle workers would slow the busy ones.
            return None
        if self.job_id is not None:
            job = await self.queue.get_job(self.job_id)
            if job.status not in ACTIVE_STATUSES:
                return None
            return await self.queue.process_chunk(self.job_id, self.processor, on_entity=self.on_entity)
        return await self.queue.process_next_chunk(self.processor, on_entity=self.on_entity)

    async def _wait_for_retry(self, deadline: float | None) -> bool:
        """Sleep until the next entity retry is due; False when none waits (or it is too far off)."""
        due = await self.queue.next_retry_due(self.job_id)
        if due is None:
            return False
        wait = max(due - self.queue.now(), RETRY_POLL_SECONDS)
        if self.max_retry_wait is not None and wait > self.max_retry_wait:
            self.summary.next_retry_at = due
            return False
        log.debug("waiting %.1fs for entity retries that are not yet due", wait)
        if self.on_wait is not None:
            self.on_wait(due)
        try:
            await self._sleep(wait, deadline)
        finally:
            if self.on_wait is not None:
                self.on_wait(None)
        return True

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
