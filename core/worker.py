"""The processing loop shared by `chunkq process`, `chunkq worker`, auto-run and HTTP.

Longer than 500 lines: the sliding window's state machine is one loop, read best in one place.

A worker runs a sliding window of chunks (see ``Worker``), not one chunk at a time.
Stopping is two-staged, like every well-behaved worker: a graceful stop finishes
and commits the chunks in flight; an abort gives them up at once (their leases are
released so another worker redoes them). ``stop_on_signals`` maps SIGINT/SIGTERM
onto the two stages.

"Run until empty" can mean two things: until nothing is claimable this second,
or also waiting for entity retries that are scheduled but not yet due
(``wait_for_retries``), so a job is not left at 99% because one entity's
back-off had a second to go. Either way a chunk a live worker holds is that
worker's to finish; with ``wait_for_retries`` a chunk leased by a worker that is
gone (killed, its host lost) is waited for until its lease expires and redone
(``orphans.py`` says what "empty" means with several workers). Both live here,
once, for every front end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import bounds, chunk, error_groups, threads
from .adaptive import limit_for, nominal
from .callbacks import is_async
from .claims import check_order
from .db import deadline as db_deadline
from .errors import DatabaseUnavailable, InvalidInput
from .lease import Claim
from .models import ChunkResult, EntityResult
from .orphans import OrphanedLease, describe, held_back, orphaned_leases
from .processor import Processor, ProcessorLike
from .queue import Queue
from .registry import DEFAULT_INTERVAL, Registration
from .signals import SignalHook, SignalStop
from .status import ACTIVE_STATUSES, COMPLETE
from .threads import ABANDONED_THREADS_MAX

#: the shortest wait for a retry: a retry that is due but not claimable (its job's worker
#: slots are all leased) is polled for, not spun on
RETRY_POLL_SECONDS = 0.25

#: how long past an orphaned lease's expiry a run looks again (clocks of two processes, a claim's round trip)
ORPHAN_MARGIN_SECONDS = 0.1
#: how often a run polls for an expired orphaned chunk it could not take (its job's slots are all held)
ORPHAN_POLL_SECONDS = 1.0

#: a run that has stopped claiming says once that it still waits for its chunks in flight, this long after
#: (``Worker``'s ``grace``): the one sign an operator gets of a callback that hangs without a ``timeout``
OVERRUN_WARN_SECONDS = 60.0

#: chunks a worker may hold beyond its concurrency limit (``Worker``'s window)
WINDOW_SLACK = 2

#: what "new" means to the breakpoint (``Worker(new_error_scope=...)``): never logged by the chunk's job, or by
#: any job of that job's processor (``chunkq_jobs.processor``; the jobs without one count as one processor)
NEW_ERROR_SCOPES = ("job", "processor")


def check_new_error_scope(scope: object) -> str:
    """``scope`` if it is one of ``NEW_ERROR_SCOPES``, else ``InvalidInput`` naming them."""
    if scope not in NEW_ERROR_SCOPES:
        raise InvalidInput(f"the breakpoint's scope must be one of {', '.join(NEW_ERROR_SCOPES)}, got {scope!r}"[:200],
                           field="new_error_scope")
    return str(scope)

log = logging.getLogger("chunkq.worker")


@dataclass(eq=False)
class _Held:
    """A chunk of the window: its claim, and how many of its entities are not done yet."""

    claim: Claim
    remaining: int
    committing: bool = False
    #: a suspect chunk (``Claim.suspect``) waits for this before it starts: the rest of the window is done
    alone: asyncio.Event | None = None
    #: its task began to run: from then on ``chunk.run_claimed`` releases the lease if cancelled. A task
    #: cancelled before its first step never runs a line of it, so the window releases that one itself.
    started: bool = False


def _runs_as_one_loop(processor: Processor) -> bool:
    """The runner's cheap path (``ChunkRunner.run``): a plain sync callback, one at a time, looped in
    one thread. It reports entities only if asked (each report is a thread hop): the window counts
    such a chunk as done when its loop ends."""
    fn = processor.on_process
    return (processor.on_chunk is None and fn is not None and not is_async(fn) and processor.concurrency == 1
            and processor.timeout is None)


@dataclass
class RunSummary:
    chunks: int = 0
    entities: int = 0
    errors: int = 0
    retried: int = 0
    discarded: int = 0
    jobs_completed: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    #: empty | max_chunks | max_seconds | signal | requested (an operator's "stop after the chunk" through
    #: the database: ``Registration``) | aborted | retry_later (the next retry is due
    #: after ``max_retry_wait``: see ``next_retry_at``) | wedged (too many callback threads are
    #: still running past their timeout: a supervisor should start a fresh process; see ``Worker``) |
    #: new_error (``stop_on_new_error``: a chunk logged a kind of error its job, or with ``new_error_scope``
    #: "processor" any job of its processor, never had; see ``new_error``) |
    #: orphaned (``wait_for_retries``: chunks leased by a worker that is gone would expire only past
    #: ``max_seconds`` or ``max_retry_wait``: work is left; see ``orphaned``) |
    #: overran (chunks still ran ``grace`` seconds after the run stopped claiming: given up, their leases
    #: released for another worker to redo them; see ``overran``)
    stopped_by: str = "empty"
    #: with stopped_by "retry_later": when the next retry is due (epoch seconds, the queue's clock)
    next_retry_at: float | None = None
    #: with stopped_by "new_error" (``Worker(stop_on_new_error=True)``): the first fingerprint the job (or its
    #: processor) had never logged before (an ``ErrorGroup.fingerprint``: ``queue.list_errors(job, fingerprint=...)``)
    new_error: str | None = None
    #: with stopped_by "new_error": the job it was logged in
    new_error_job: int | None = None
    #: with stopped_by "orphaned": what is left, in a phrase (``orphans.describe``)
    orphaned: str | None = None
    #: with stopped_by "orphaned": seconds from the stop until the last of those leases expires
    orphaned_expire_in: float | None = None
    #: with stopped_by "overran": the chunks given up, as (job_id, chunk_index)
    overran: list[tuple[int, int]] = field(default_factory=list)
    #: with stopped_by "empty": work is left that other workers hold at its jobs' ``max_workers``, in a
    #: phrase (``orphans.held_back``): why this run had nothing to do
    held_back: str | None = None

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
            # only when it stopped for one: the keys stay those of earlier releases otherwise
            **({"new_error": self.new_error, "new_error_job": self.new_error_job} if self.new_error else {}),
            **({"orphaned": self.orphaned, "orphaned_expire_in": round(self.orphaned_expire_in or 0.0, 3)}
               if self.orphaned else {}),
            **({"held_back": self.held_back} if self.held_back else {}),
            **({"overran": [{"job_id": j, "chunk": c} for j, c in self.overran]} if self.overran else {}),
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
    With ``wait_for_retries`` a run also waits for chunks leased by a worker that is
    gone (``orphans.py``: dead on this host, not alive in the workers registry)
    until their leases expire, and redoes them; it says so once (a warning) per
    set of such chunks. When the wait would end past ``max_seconds`` (or
    ``max_retry_wait``) it stops at once with ``stopped_by="orphaned"``: work is
    left that no live worker will do, and a front end should exit non-zero.

    **The window** (issue 14). A worker has one set of slots (``limiter``: its
    concurrency, a number or ``auto``) shared by every chunk it holds, and claims
    the next chunk as soon as fewer claimed entities wait for a slot than there are
    slots - so while a chunk's stragglers run, the next chunk's entities fill the
    free slots; each chunk is committed when its own entities are done. A window
    holds at most ``window`` chunks (default: the limit + ``WINDOW_SLACK``: every
    chunk beyond the first two holds a running call, so a heavy tail cannot pile
    up more), and a crash redoes at most those. It claims nothing while one of its
    commits runs where rows are locked (PostgreSQL: its claim would pass that
    job by). A plain sync callback at concurrency 1 (the runner's one-thread
    loop) is run a chunk at a time: there is no waiting to overlap. ``max_workers``
    counts workers, not chunks: a claim for more of a job this worker already holds
    passes ``mine`` (``claims.Claims.claim``). ``in_flight`` lists the window.
    ``stop()`` finishes and commits the whole window; ``abort()`` releases it;
    ``max_chunks`` counts chunks claimed, ``max_seconds`` starts no claim past it
    and bounds the database's silence: past it a transaction that has waited
    ``db.STALL_SECONDS`` is given up (``db.deadline``), and ``run`` raises
    ``DatabaseStalled`` with the window released as far as a silent database allows.
    ``order`` (``fair``, ``fifo``; None: the queue's) picks which job each claim
    serves (``claims.ClaimStatements``): with the fair default a window may hold
    chunks of several jobs.

    A *suspect* chunk (one that lost a lease before: ``claims.Claims``, issue 24)
    runs alone: it waits, its lease renewed, until the rest of the window is
    committed, and nothing else is claimed until it is, so that a death while it
    runs is blamed on it and on nothing else.

    A sync callback that outlives the processor's ``timeout`` is abandoned: its
    thread runs on (Python cannot stop a thread). Once more than
    ``max_abandoned`` are still running (default: 16, or twice the concurrency
    if that is more) while there is work to claim, the worker says so in one
    line and stops with ``stopped_by="wedged"``: the process should exit
    non-zero so its supervisor starts a clean one. Work already done is never
    a reason: a run with nothing left to claim ends as usual. Without a
    ``timeout`` a hung sync callback cannot be abandoned, only aborted with its
    chunk (the second signal), or given up after ``grace``.

    ``grace`` bounds the end of a run. Once it claims nothing more (a stop, ``max_seconds``,
    ``max_chunks``, wedged), the chunks in flight get ``grace`` seconds to finish; those still
    running then are given up as by ``abort()`` (their leases released, their work redone
    elsewhere) and the run ends with ``stopped_by="overran"`` (``summary.overran`` names them). A
    chunk that hangs would otherwise hold its worker - and a caller waiting for it, such as an HTTP
    request - for as long as it hangs, its lease renewed all along. None (the default) waits however
    long they take: a slow chunk is not a hung one, and only its owner can tell; the run then says
    once, ``OVERRUN_WARN_SECONDS`` after it stopped claiming, which chunks it still waits for.

    ``stop_on_new_error=True`` is a breakpoint for a developer watching a run:
    once a committed chunk logs a kind of error (a fingerprint,
    ``ChunkResult.new_fingerprints``) its job had never logged, the worker
    claims nothing more, lets the chunks it holds commit, and stops with
    ``stopped_by="new_error"`` and ``summary.new_error`` (the group's key), so a
    broken callback does not burn through the rest of a job and the provider's credits.
    ``new_error_scope="processor"`` stops only at a kind no other job of that
    job's processor logged either (``error_groups.known_to_processor``: the same
    family, a template it fits): a fresh job run past a bug known from
    yesterday's job, and stopped at the one nobody has seen. Both attributes
    may change while it runs (on its loop): the dashboard's ``b`` and ``B``.
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
        on_wait: Callable[[float | None], object] | None = None,
        on_chunk: Callable[[ChunkResult], None] | None = None,
        on_entity: Callable[[EntityResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_abandoned: int | None = None,
        stop_on_new_error: bool = False,
        new_error_scope: str = "job",
        window: int | None = None,
        order: str | None = None,
        grace: float | None = None,
    ) -> None:
        self.queue = queue
        #: seconds the chunks in flight may run once the run claims no more; None: as long as they take
        self.grace = bounds.GRACE.check_optional(grace)
        #: which job its claims serve next: ``fair`` or ``fifo`` (``claims.ClaimStatements``); None: the queue's
        self.order = None if order is None else check_order(order)
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
        self.max_abandoned = (max(ABANDONED_THREADS_MAX, 2 * nominal(self.processor.concurrency))
                              if max_abandoned is None else max_abandoned)
        #: a breakpoint: stop (gracefully) after a committed chunk logs a fingerprint its job never had
        self.stop_on_new_error = stop_on_new_error
        #: what "never had" means to it: "job", or "processor" (no job of the job's processor had it)
        self.new_error_scope = check_new_error_scope(new_error_scope)
        self._stop = asyncio.Event()
        self._resume = asyncio.Event()  # set: claims may go on (``pause``/``resume``)
        self._resume.set()
        self._task: asyncio.Task[Any] | None = None
        self._idle = False
        self.summary = RunSummary()
        #: the worker's slots, shared by every chunk of its window (a number, or ``auto``: ``adaptive.py``)
        self.limiter = limit_for(self.processor)
        #: the most chunks held at once; None: the limit plus ``WINDOW_SLACK``
        self.window = window
        self._one_loop = _runs_as_one_loop(self.processor)
        self._flight: dict[asyncio.Task[ChunkResult], _Held] = {}
        self._backlog = 0  # entities of the chunks in flight not done yet
        self._committing = 0  # chunks of the window whose commit is running
        self._exhausted = False  # the last claim found nothing: wait for a chunk to finish before asking again
        self._wake: asyncio.Future[None] | None = None
        self._may_claim = True  # nothing (a stop, a limit) keeps the window from growing
        self._orphan_expiry: dict[tuple[int, int, int], float] = {}  # an orphaned lease's expiry when first seen
        self._renewed: set[tuple[int, int, int]] = set()  # leases seen renewed: their owner lives after all
        self._orphans_said: frozenset[tuple[int, int, int]] = frozenset()
        self._solo: _Held | None = None  # the suspect chunk of the window, run alone (``_start``)
        self._ending_since: float | None = None  # monotonic: when the run stopped claiming with chunks in flight
        self._overrun_said = False
        self._real_deadline: float | None = None  # ``max_seconds`` on the monotonic clock (``_wake_at``)
        self._deadline_seen = False  # the window's wait found ``max_seconds`` passed
        #: what an idle ``forever`` worker said last about jobs it may not join (``_say_held_back``);
        #: "" once it looked and found nothing to say; None: it has claimed since
        self._held_said: str | None = None

    @property
    def concurrency_limit(self) -> int:
        """How many calls may run at once right now: the processor's number, or what ``auto`` has
        found so far (``adaptive.py``) - the CLI's progress line and the workers registry show it."""
        return self.limiter.limit

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Graceful: finish and commit the chunks in flight (the whole window), claim no other."""
        self._stop.set()
        wake = self._wake  # the window looks again: its ``grace`` starts now
        if wake is not None and not wake.done():
            wake.set_result(None)

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def pause(self) -> None:
        """Claim nothing new until ``resume()``; the chunks in flight still run and commit, and then the
        run waits instead of ending. For a question whose answer decides whether more work is wanted (the
        dashboard's quit dialog): no chunk is claimed only to be released. ``stop``/``abort`` still end it."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def abort(self) -> None:
        """Give up the chunks in flight now; their leases are released for another worker."""
        self._stop.set()
        self.summary.stopped_by = "aborted"
        if self._task is not None:
            self._task.cancel()

    def registered(self, *, kind: str, processor_name: str | None = None, interval: float = DEFAULT_INTERVAL,
                   worker_id: str | None = None) -> Registration:
        """``async with worker.registered(kind="worker"): await worker.run()`` - in the workers registry
        while the block runs (``registry.py``): listed by ``chunkq workers``, stoppable by an operator on
        any host. ``processor_name``: what the registry shows (default: the processor's name)."""
        return Registration(self.queue, self, kind=kind, processor_name=processor_name or self.processor.name,
                            interval=interval, worker_id=worker_id)

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
        s = self.summary
        s.next_retry_at = None
        s.orphaned = s.orphaned_expire_in = s.held_back = None
        s.overran = []
        self._real_deadline = None if self.max_seconds is None else time.monotonic() + self.max_seconds
        self._deadline_seen = False
        self._ending_since, self._overrun_said = None, False
        try:
            # past the deadline no transaction waits for a silent database for long (``db.deadline``):
            # given up, it raises ``DatabaseStalled`` and the run ends instead of hanging
            with db_deadline(deadline if self._clock is time.monotonic else None):
                self._task = asyncio.ensure_future(self._window(deadline))
            try:
                await self._task
            except asyncio.CancelledError:
                if s.stopped_by != "aborted":
                    raise
            finally:
                self._task = None
        finally:
            s.elapsed = self._clock() - start
        return s

    # ------------------------------------------------------------------ the window

    @property
    def in_flight(self) -> list[tuple[int, int]]:
        """The chunks this worker holds right now, as (job_id, chunk_index), oldest claim first."""
        return [(h.claim.job.id, h.claim.chunk_index) for h in self._flight.values()]

    @property
    def window_cap(self) -> int:
        """The most chunks this worker holds at once (see the class docstring)."""
        if self.window is not None:
            return self.window
        return self.limiter.limit + WINDOW_SLACK

    def _wants_chunk(self) -> bool:
        """One more chunk would keep the slots busy: fewer entities wait for a slot than there are slots.

        A chunk run as one loop (``_runs_as_one_loop``: plain sync calls, one at a time) is never
        joined by another: there is no waiting to fill, and a claim running beside the loop only
        competes with it for the GIL (measured: 20-25% slower with no-op callbacks).
        """
        if self._exhausted or len(self._flight) >= self.window_cap or self._solo is not None or self.paused:
            return False
        if not self._flight:
            return True
        if self._committing and self.queue.backend.row_locks:
            return False  # see ``_ran``
        if self._one_loop:
            return False
        return self._backlog - self.limiter.inflight < self.limiter.limit

    def _why_no_claims(self) -> str | None:
        """Why this worker claims nothing more (what ``stopped_by`` will say once its window is empty)."""
        s = self.summary
        if self._stop.is_set():
            return s.stopped_by if s.stopped_by in ("aborted", "new_error") else "signal"
        if self.max_chunks is not None and s.chunks + len(self._flight) >= self.max_chunks:
            return "max_chunks"
        return None

    async def _window(self, deadline: float | None) -> None:
        s = self.summary
        db_backoff = 0.5
        self._exhausted = False
        try:
            while True:
                why = self._why_no_claims()
                if why is None and self._wants_chunk():
                    # the clock is read once per claim (and only then): a deadline starts no chunk
                    if deadline is not None and self._clock() >= deadline:
                        why = "max_seconds"
                    elif threads.abandoned() > self.max_abandoned and (self._flight or await self._wedged()):
                        # with chunks in flight, claim none: whether (and how badly) the worker is wedged
                        # is decided, and said once, when they are committed and the window is empty
                        why = "wedged"
                if why is None and self._wants_chunk():
                    try:
                        claim = await self._claim_next()
                        db_backoff = 0.5
                    except DatabaseUnavailable as exc:
                        db_backoff = await self._database_down(exc, db_backoff, deadline)
                        continue
                    if not self._flight:
                        self._idle = claim is None
                    if claim is not None:
                        self._held_said = None
                        self._start(claim)
                        continue
                    self._exhausted = True
                if self._flight:
                    if why is None and self._deadline_seen:
                        why = "max_seconds"
                    self._may_claim = why is None
                    if why is None:
                        self._ending_since = None
                    elif self._ending_since is None:
                        self._ending_since = time.monotonic()  # claims ended: the grace starts
                    finished = await self._wait_flight(self._wake_at())
                    if finished is None:  # woken by the time, not by a chunk
                        if why is None:
                            # max_seconds, as the window's wait timed it: a chunk that never ends must
                            # not keep the deadline (and so the grace) unseen; the run's clock decides
                            if deadline is not None and self._clock() >= deadline:
                                self._deadline_seen = True
                            else:
                                self._real_deadline = None  # an injected clock: it alone says when
                        elif self._overran():
                            s.stopped_by = "overran"
                            return  # the ``finally`` gives the window back
                        continue
                    for task in finished:
                        held = self._flight.pop(task)
                        self._leaves(held)
                        self._backlog -= held.remaining
                        self._committing -= held.committing
                        self._exhausted = False
                        try:
                            result = task.result()
                        except DatabaseUnavailable as exc:
                            # its lease expires and another worker (or this one) redoes the chunk
                            db_backoff = await self._database_down(exc, db_backoff, deadline)
                            continue
                        self._record(result, await self._breaks_at(result))
                    continue
                if why is not None:
                    if why != "aborted":
                        s.stopped_by = why
                    return
                if self.paused:  # nothing in flight: wait to be resumed (or stopped), never end the run here
                    await self._until_resumed()
                    continue
                # Nothing in flight and nothing claimable.
                self._exhausted = False
                if self.forever:
                    await self._say_held_back()
                    await self._sleep(self.poll_interval * (0.75 + random.random() / 2), deadline)
                    continue
                if self.wait_for_retries and await self._wait_for_retry(deadline):
                    continue
                if self.wait_for_retries and s.next_retry_at is None and await self._wait_for_orphans(deadline):
                    continue
                s.stopped_by = ("orphaned" if s.orphaned is not None else
                                "empty" if s.next_retry_at is None else "retry_later")
                if s.stopped_by == "empty":
                    s.held_back = await self._held_back()
                return
        finally:
            if self._flight:
                # Aborted or failed: give every chunk in flight back (``chunk.run_claimed`` releases its lease).
                tasks = list(self._flight)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for held in self._flight.values():
                    if not held.started:  # claimed, cancelled before it ran: nobody else gives it back
                        try:
                            await asyncio.shield(self.queue.claims.release(held.claim))
                        except Exception as exc:  # its lease expires on its own
                            log.warning("could not release chunk %s of job %s: %s",
                                        held.claim.chunk_index, held.claim.job.id, exc)
                self._flight.clear()
                self._backlog = self._committing = 0
                self._solo = None

    async def _claim_next(self) -> Claim | None:
        """The window's next chunk, through the one claim (``claims.Claims.claim``): only jobs routed to
        this processor or to none, ``job_id``'s if given, in this worker's ``order``."""
        route = self.processor.name
        if self._idle and not self._flight and not await self.queue.has_claimable(route=route):
            # An idle worker polls with a cheap read: on SQLite, taking the write lock
            # every second in each of N idle workers would slow the busy ones.
            return None
        if self.job_id is not None and not self._flight:
            job = await self.queue.get_job(self.job_id)
            if job.status not in ACTIVE_STATUSES:
                return None
        return await self.queue.claims.claim(self.job_id, route=route, mine=self._mine(), order=self.order)

    def _mine(self) -> int | None:
        """The job of the window's latest chunk: one more of it may be claimed past ``max_workers``."""
        return next(reversed(self._flight.values())).claim.job.id if self._flight else None

    def _start(self, claim: Claim) -> None:
        held = _Held(claim, len(claim.items))
        if claim.suspect:
            held.alone = asyncio.Event()
            if not self._flight:
                held.alone.set()
            self._solo = held
        self._backlog += held.remaining
        per_entity = self.on_entity is not None or not self._one_loop

        async def run() -> ChunkResult:
            held.started = True
            return await chunk.run_claimed(
                self.queue, claim, self.processor, (lambda r: self._entity_done(held, r)) if per_entity else None,
                limiter=self.limiter, on_ran=lambda: self._ran(held),
                alone=None if held.alone is None else held.alone.wait)

        self._flight[asyncio.ensure_future(run())] = held

    def _leaves(self, held: _Held) -> None:
        """A chunk left the window: a suspect waiting for the rest of it may start once it is alone."""
        solo = self._solo
        if solo is held:
            self._solo = None
        elif solo is not None and solo.alone is not None and len(self._flight) == 1:
            solo.alone.set()

    def _entity_done(self, held: _Held, result: EntityResult) -> None:
        if held.remaining > 0:
            held.remaining -= 1
            self._backlog -= 1
        if self.on_entity is not None:
            self.on_entity(result)
        self._maybe_wake()

    def _ran(self, held: _Held) -> None:
        """A chunk's entities are all done and its commit starts. Where rows are locked (PostgreSQL)
        no claim overlaps one's own commit: it would pass over (SKIP LOCKED) the job whose row that
        commit holds, for a worse one."""
        self._backlog -= held.remaining
        held.remaining = 0
        held.committing = True
        self._committing += 1

    def _maybe_wake(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done() and self._may_claim and self._wants_chunk():
            wake.set_result(None)

    async def _wait_flight(self, within: float | None = None) -> set[asyncio.Task[ChunkResult]] | None:
        """Until a chunk of the window is committed, or one more chunk is wanted; the finished ones.
        None: ``within`` seconds went by first (see ``_wake_at``)."""
        if self._may_claim and self._wants_chunk():
            return set()
        self._wake = asyncio.get_running_loop().create_future()
        try:
            waits: list[asyncio.Future[Any]] = [*self._flight, self._wake]
            done, _pending = await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake.cancel()
            self._wake = None
        if not done:
            return None
        return {t for t in self._flight if t in done}

    def _wake_at(self) -> float | None:
        """Seconds the window may wait for its chunks before the run must look again: at ``max_seconds``
        (the end of claims starts the grace), at the warning, at the end of the grace. None: no limit.
        Timed on the monotonic clock, not the run's (which is read once per claim, and may be a test's)."""
        now = time.monotonic()
        if self._ending_since is None:
            return None if self._real_deadline is None else max(0.0, self._real_deadline - now)
        ends = [] if self._overrun_said else [self._ending_since + OVERRUN_WARN_SECONDS]
        if self.grace is not None:
            ends.append(self._ending_since + self.grace)
        return max(0.0, min(ends) - now) if ends else None

    def _overran(self) -> bool:
        """The run has waited for its chunks as long as it may: True when ``grace`` is up (they are to be
        given up), after saying so; else says once, at ``OVERRUN_WARN_SECONDS``, what it still waits for."""
        assert self._ending_since is not None
        waited = time.monotonic() - self._ending_since
        chunks = ", ".join(f"chunk {c} of job {j}" for j, c in self.in_flight)
        if self.grace is not None and waited >= self.grace:
            self.summary.overran = self.in_flight
            log.error("gave up %s: still running %g s after this run stopped claiming (its grace); the "
                      "lease%s released for another worker to redo. A callback that hangs holds its chunk "
                      "until it returns: a processor timeout bounds each entity",
                      chunks, round(waited, 1), "s are" if len(self._flight) > 1 else " is")
            return True
        if not self._overrun_said and waited >= OVERRUN_WARN_SECONDS:
            self._overrun_said = True
            log.warning("still waiting for %s, %g s after this run stopped claiming: a callback that hangs "
                        "holds its chunk until it returns (a processor timeout bounds each entity; a grace "
                        "gives such chunks up)", chunks, round(waited, 1))
        return False

    async def _database_down(self, exc: DatabaseUnavailable, backoff: float, deadline: float | None) -> float:
        """A one-shot run gives up (its caller says so); a long-running worker waits and tries again,
        backing off up to 30 s, so a database restart costs a pause, not the process."""
        if not self.forever:
            raise exc
        log.error("database unavailable: %s; retrying in %.1fs", exc, backoff)
        await self._sleep(backoff, deadline)
        return min(backoff * 2, 30.0)

    async def _wedged(self) -> bool:
        """Too many abandoned callback threads, and work this worker would otherwise claim."""
        stuck = threads.abandoned()
        if stuck <= self.max_abandoned or not (
                self.forever or await self.queue.has_claimable(mine=self._mine(), route=self.processor.name)):
            return False
        log.error("%d callback threads are still running after their timeout (more than %d): this worker "
                  "claims no more chunks and stops, so that its supervisor can start a fresh process",
                  stuck, self.max_abandoned)
        return True

    async def _held_back(self) -> str | None:
        """Jobs with work left that other workers hold at their ``max_workers`` (``orphans.held_back``):
        a front end says why this worker sat idle. Advisory: a database error is not the run's."""
        try:
            return await held_back(self.queue, self.job_id, route=self.processor.name)
        except DatabaseUnavailable:
            return None

    async def _say_held_back(self) -> None:
        """A ``forever`` worker that found nothing says once why, when a limit is the reason: looked up
        when it turns idle, not on every poll."""
        if self._held_said is not None:
            return
        said = self._held_said = await self._held_back() or ""
        if said:
            log.warning("idle: %s (another worker may join a job only below its max_workers)", said)

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

    async def _wait_for_orphans(self, deadline: float | None) -> bool:
        """Sleep until the next lease of a worker that is gone expires (``orphans.py``); False when
        none is left to wait for, or (``summary.orphaned`` set) when it expires too late for this run."""
        found: list[OrphanedLease] = []
        # the jobs its claims may take, as ``_claim_next``
        leases = await orphaned_leases(self.queue, self.job_id, route=self.processor.name)
        for lease in leases:
            first = self._orphan_expiry.setdefault(lease.key, lease.expires_at)
            if lease.expires_at > first:  # renewed since we first saw it: its owner is alive after all
                self._renewed.add(lease.key)
            if lease.key not in self._renewed:
                found.append(lease)
        if not found:
            return False
        now = self.queue.now()
        soonest = min(lease.expires_at for lease in found)
        wait = soonest - now + ORPHAN_MARGIN_SECONDS if soonest > now else ORPHAN_POLL_SECONDS
        last = max(lease.expires_at for lease in found) - now
        too_late = (deadline is not None and self._clock() + wait > deadline) or (
            self.max_retry_wait is not None and wait > self.max_retry_wait)
        if too_late:
            self.summary.orphaned, self.summary.orphaned_expire_in = describe(found), max(last, 0.0)
            return False
        said = frozenset(lease.key for lease in found)
        if said != self._orphans_said:
            self._orphans_said = said
            log.warning("waiting up to %.0fs for %s: once %s this run redoes %s", max(last, wait), describe(found),
                        *(("its lease expires", "it") if len(found) == 1 else ("their leases expire", "them")))
        await self._sleep(wait, deadline)
        return True

    async def _breaks_at(self, result: ChunkResult) -> tuple[str, ...]:
        """The kinds of error a committed chunk logged that the breakpoint stops at, first logged first.

        New to the job is what the commit said (``new_fingerprints``); new to
        the processor is looked up after it, in the groups of the processor's
        other jobs (an index walk, the same cost at any number of errors). A
        lookup that fails counts as new: a breakpoint stops rather than miss a bug.
        """
        if not (self.stop_on_new_error and result.committed and result.new_fingerprints) or self.summary.new_error:
            return ()
        if self.new_error_scope != "processor":
            return result.new_fingerprints
        try:
            known = await self.queue.backend.read(
                lambda conn: error_groups.known_to_processor(conn, result.job_id, result.new_fingerprints),
                "looking up whether the processor's other jobs logged this kind of error")
        except DatabaseUnavailable as exc:
            log.warning("could not tell whether job %s's new kind of error is new to its processor (%s): "
                        "stopping at it", result.job_id, exc)
            return result.new_fingerprints
        return tuple(key for key in result.new_fingerprints if key not in known)

    def _record(self, result: ChunkResult, breaks_at: tuple[str, ...]) -> None:
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
            if self.stop_on_new_error and breaks_at and s.new_error is None:
                # the breakpoint: chunks in flight still commit, no other is claimed
                s.new_error, s.new_error_job = breaks_at[0], result.job_id
                if s.stopped_by != "aborted":
                    s.stopped_by = "new_error"
                self._stop.set()
        if self.on_chunk is not None:
            self.on_chunk(result)

    async def _until_resumed(self) -> None:
        waits = [asyncio.ensure_future(self._resume.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _sleep(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None:
            seconds = max(0.0, min(seconds, deadline - self._clock()))
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass
