"""Running the processor from the dashboard: a step, auto-run, a dry run, a reload.

``ProcessingApp`` is the part of the app that owns the queue, the clock and the
processing, so every screen can start it (through ``protocol.Dashboard``) and the
quit dialog can see what is in flight. Results go out as messages
(``messages.py``) as they happen; ``ChunkqApp`` hands them to the screens.

A chunk in flight is never cancelled halfway through its commit: auto-run is
stopped with ``Worker.stop()``/``abort()``, and a step runs in a task of its own
that core releases cleanly when cancelled.

Auto-run runs off the interface's loop (``background.py``): on a thread of its
own, with a ``Queue`` of its own, reporting through thread-safe messages in
batches. Steps and dry runs (one chunk each) stay on the interface's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from chunkq import core
from chunkq.core import WORKER_HEARTBEAT_SECONDS
from chunkq.tui import humanize
from chunkq.tui.dashboard.background import EntityBatcher, LoopThread
from chunkq.tui.dashboard.commands import PROCESSOR_HINT
from chunkq.tui.dashboard.messages import ActivityNote, BreakpointHit, ChunkDone, EntityDone, ProcessingChanged
from textual import work
from textual.app import App
from textual.worker import Worker, WorkerState

#: auto-run waits at most this long for a retry to fall due before it stops
AUTO_RUN_MAX_WAIT = 120.0
#: how long an interface going away waits for auto-run to release its chunk
ABANDON_GRACE = 10.0
#: seconds between header updates for auto-run's chunks (``sub_title_due``)
SUB_TITLE_EVERY = 1.0
#: how long quitting waits for the reads in flight (``ProcessingApp.shielded``) to end before it closes the queue
READ_GRACE = 5.0

T = TypeVar("T")


def arm_breakpoint(worker: core.Worker, on: bool, scope: str) -> None:
    """Set a running worker's breakpoint; on the worker's own loop (``LoopThread.call``), between commits."""
    worker.stop_on_new_error = on
    worker.new_error_scope = scope


class ProcessingApp(App[None]):
    """The queue, the clock and the processor, and whatever of it is in flight."""

    def __init__(
        self,
        db_url: str,
        *,
        processor: str | None = None,
        options: core.ProcessorOptions | None = None,
        clock: Callable[[], datetime] | None = None,
        refresh_interval: float = 0.5,
    ) -> None:
        super().__init__()
        self.db_url = db_url
        self.processor_path = processor
        #: the command line's overrides (``chunkq tui --rate …``), applied by core's one rule
        self.options = options or core.ProcessorOptions()
        #: show tracebacks' local variables only when the person asked for them (they may hold secrets)
        self.capture_locals = self.options.capture_locals is True
        self.refresh_interval = refresh_interval
        #: seconds between the auto-run's heartbeats in the workers registry
        self.heartbeat_interval = WORKER_HEARTBEAT_SECONDS
        self._clock = clock
        # One clock for the display and the queue's stamps, so a frozen clock freezes both.
        self._queue_clock = (lambda: clock().timestamp()) if clock is not None else None
        self.queue = core.Queue(db_url, clock=self._queue_clock)
        self.processor_handle: core.ProcessorHandle | None = None
        if processor:
            # Raises ProcessorError before any screen exists: the CLI reports it as a usage error.
            self.processor_handle = core.ProcessorHandle(processor, overrides=self.options)
        self.auto_worker: core.Worker | None = None
        self.stepping: int | None = None  # job id (0: next in line) of the step in flight
        self._step_task: asyncio.Task[None] | None = None
        #: epoch seconds auto-run sleeps until (a retry falls due), for the header
        self.auto_waiting_until: float | None = None
        self._auto_task: asyncio.Future[core.RunSummary] | None = None
        #: auto-run's thread and loop (``background.py``), while it runs
        self._auto_thread: LoopThread[core.RunSummary] | None = None
        #: ``stop_auto_run`` was asked: the worker's own flag is set on its loop, a moment later
        self._auto_stop_asked = False
        self._sub_title_at = 0.0  # time.monotonic() of the header's last update
        #: auto-run stops at the first new kind of error (``b``): a fingerprint its job never logged before
        self.breakpoint = False
        #: what "new" means to the breakpoint (``B``): "job", or "processor" (no job of the job's processor
        #: logged it: core's ``Worker(new_error_scope=...)``)
        self.breakpoint_scope = "job"
        #: the last dry run: job id, its results, when (``D`` opens them)
        self.last_dry_run: tuple[int, tuple[core.EntityResult, ...], datetime] | None = None
        #: (job id, fingerprint) of the new kind of error the last auto-run stopped at
        self.breakpoint_hit: tuple[int, str] | None = None
        #: what an operator asked of the last auto-run through the workers registry ("finish", "release")
        self.stop_requested: str | None = None
        self._quitting = False
        #: the reads of the queue in flight on this loop (``shielded``), and whether quitting has begun to end them
        self._reads: set[asyncio.Task[Any]] = set()
        self._reads_ended = False

    def now(self) -> datetime:
        """The dashboard's clock (UTC-aware); tests freeze it through ``clock=``."""
        return self._clock() if self._clock is not None else datetime.now(UTC)

    # ------------------------------------------------------------------ reads that quitting never cuts in half

    async def shielded(self, call: Coroutine[Any, Any, T]) -> T:
        """``await call`` (a read of the queue) in a task of its own, which cancelling the caller never reaches.

        Textual cancels a screen's workers when the screen closes, and every worker
        again when the app stops: a live view's read in flight at quit was cancelled
        twice inside SQLAlchemy. The first cancellation has SQLAlchemy close the
        connection in a task of its own; the second, while it waits for that close,
        stops aiosqlite's thread at once. The event loop's end (``asyncio.run``,
        pytest's teardown) then cancels the close, whose clean-up waits on the
        stopped thread for ever, and so does the loop's end: the dashboard hung on
        quit. Here the read runs to its end, unseen if its caller is gone, and
        ``_end_reads`` gives it time to finish before the queue closes.
        """
        if self._reads_ended:  # quitting: nothing more is read, as if the caller had been cancelled
            call.close()
            raise asyncio.CancelledError("the dashboard is closing its queue")
        task = asyncio.ensure_future(call)
        self._reads.add(task)
        task.add_done_callback(self._read_done)
        return await asyncio.shield(task)

    def _read_done(self, task: asyncio.Task[Any]) -> None:
        self._reads.discard(task)
        if not task.cancelled():
            task.exception()  # its caller may be gone: the error was the caller's to see, never "never retrieved"

    async def _end_reads(self) -> None:
        """No read starts after this; the ones in flight get ``READ_GRACE`` seconds to end, then quitting goes on.

        One still running then is left alone, never cancelled here: a second
        cancellation inside SQLAlchemy is what hung. The event loop's end cancels
        it once, which SQLAlchemy handles (it closes the connection in a task that
        the loop's end waits for without cancelling).
        """
        self._reads_ended = True
        pending = {task for task in self._reads if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=READ_GRACE)

    def require_processor(self) -> core.Processor | None:
        if self.processor_handle is None:
            self.notify(PROCESSOR_HINT, title="No processor", severity="warning")
            return None
        return self.processor_handle.processor

    @property
    def db_label(self) -> str:
        """Where the queue lives, short enough for a header (and free of passwords)."""
        url = self.queue.display_url
        if url.startswith("sqlite"):
            return Path(url.split("///", 1)[-1]).name or url
        return url

    @property
    def processing(self) -> bool:
        """A chunk may be in flight: a step, or auto-run."""
        return self.stepping is not None or self.auto_worker is not None

    def sub_title_due(self) -> bool:
        """Whether auto-run's counts may go to the header now: at most every ``SUB_TITLE_EVERY``
        seconds, as a new header text re-lays out the whole screen (hundreds of milliseconds on a
        loaded machine, when chunks commit several times a second)."""
        now = time.monotonic()
        if now - self._sub_title_at < SUB_TITLE_EVERY:
            return False
        self._sub_title_at = now
        return True

    def update_sub_title(self) -> None:
        # what is happening now first, then where: at 80 columns the header cuts its end, and the
        # database's path may go before auto-run's state or the breakpoint does
        parts: list[str] = []
        if self.auto_worker is not None:
            s = self.auto_worker.summary
            if self.auto_worker.stopping or self._auto_stop_asked:
                state = "stopping"
            elif self.auto_waiting_until is not None:
                state = "waiting for retries"
            else:
                state = "running"
            parts.append(f"▶ auto-run {state}: {humanize.plural(s.chunks, 'chunk')}, "
                         f"{humanize.plural(s.entities, 'entity', 'entities')}")
        elif self.stepping is not None:
            parts.append("▶ stepping")
        if self.breakpoint:
            parts.append(f"⏸ breakpoint: new for {self.breakpoint_scope}")
        parts.append(self.db_label)
        if self.processor_handle is not None:
            parts.append(f"processor {self.processor_handle.path}")
        else:
            parts.append("watching (no --processor)")
        self.sub_title = " · ".join(parts)

    # ------------------------------------------------------------------ processing

    def _entity_hook(
        self, job_id: int | None, *, dry_run: bool = False, failures_only: bool = False
    ) -> Callable[[core.EntityResult], None]:
        # core calls this on the event loop (sync callbacks hand results back thread-safely)
        def hook(result: core.EntityResult) -> None:
            if not (failures_only and result.ok):
                self.post_message(EntityDone(job_id, result, dry_run=dry_run))

        return hook

    def step(self, job_id: int | None) -> None:
        """Process one chunk of ``job_id`` (None: the next job in line), reporting live."""
        processor = self.require_processor()
        if processor is None:
            return
        if self.auto_worker is not None:
            self.notify("auto-run is processing; press a to stop it before stepping", severity="warning")
            return
        if self.stepping is not None:
            self.notify("a chunk is already in flight; wait for it to commit", severity="warning")
            return
        self.stepping = job_id or 0
        self.update_sub_title()
        self.post_message(ProcessingChanged())
        self._step(job_id, processor)

    @work(group="processing", exit_on_error=False)
    async def _step(self, job_id: int | None, processor: core.Processor) -> None:
        # The chunk runs in a task of our own, so quitting can cancel it (core then releases
        # the lease) and wait until that release has really happened.
        self._step_task = asyncio.ensure_future(self._step_once(job_id, processor))
        try:
            await self._step_task
        except asyncio.CancelledError:
            self.post_message(ActivityNote("step abandoned: the chunk was released for another worker",
                                           severity="warning"))
        except core.ChunkqError as exc:
            self.post_message(ActivityNote(str(exc), severity="error"))
        finally:
            self._step_task = None
            self.stepping = None
            self.update_sub_title()
            self.post_message(ProcessingChanged())

    async def _step_once(self, job_id: int | None, processor: core.Processor) -> None:
        if job_id is None:
            result = await self.queue.process_next_chunk(processor, on_entity=self._entity_hook(None))
            if result is None:
                self.post_message(ActivityNote("nothing to process: no job has a claimable chunk"))
        else:
            result = await self.queue.process_chunk(job_id, processor, on_entity=self._entity_hook(job_id))
            if result is None:
                job = await self.queue.get_job(job_id)
                why = "its chunks are leased by other workers"
                if job.waiting_count and job.next_retry_at is not None:
                    why = (f"{humanize.plural(job.waiting_count, 'entity', 'entities')} wait for a retry, "
                           f"next {humanize.until(job.next_retry_at, self.now())}")
                self.post_message(ActivityNote(f"job {job_id} has nothing claimable right now: {why}"))
        if result is not None:
            self.post_message(ChunkDone(result, source="step"))

    def stop_auto_run(self) -> None:
        """Graceful: auto-run commits the chunks in flight and claims no other (on its own loop)."""
        if self.auto_worker is not None and self._auto_thread is not None:
            self._auto_stop_asked = True
            self._auto_thread.call(self.auto_worker.stop)

    def action_toggle_auto_run(self) -> None:
        if self.auto_worker is not None:
            if not (self.auto_worker.stopping or self._auto_stop_asked):
                self.stop_auto_run()
                self.notify("auto-run stops after the chunk in flight commits")
                self.update_sub_title()
            return
        processor = self.require_processor()
        if processor is None:
            return
        if self.stepping is not None:
            self.notify("a step is in flight; start auto-run once it commits", severity="warning")
            return
        # Core's loop, as `chunkq process --until-empty` runs it: until nothing is claimable,
        # waiting for retries that fall due (one aggregate query over every active job), but
        # not for one further off than AUTO_RUN_MAX_WAIT.
        self.stop_requested = None
        self.breakpoint_hit = None
        self._auto_stop_asked = False
        # The worker's own queue (an engine belongs to one loop), opened on the worker's thread.
        queue = core.Queue(self.db_url, clock=self._queue_clock)
        ui_loop = asyncio.get_running_loop()
        waiting = self._auto_waiting  # looked up now: tests wrap it
        batcher = EntityBatcher(self.post_message, failures_only=True)  # successes: one line per chunk
        self.auto_worker = core.Worker(
            queue, processor, wait_for_retries=True, max_retry_wait=AUTO_RUN_MAX_WAIT,
            on_wait=lambda due: ui_loop.call_soon_threadsafe(waiting, due),
            on_chunk=lambda result: self._auto_chunk(result, batcher),
            on_entity=batcher, stop_on_new_error=self.breakpoint, new_error_scope=self.breakpoint_scope,
        )
        self._auto_thread = LoopThread("chunkq-auto-run")
        self.update_sub_title()
        self.post_message(ProcessingChanged())
        self._auto_run(self.auto_worker, queue, batcher)

    def _auto_chunk(self, result: core.ChunkResult, batcher: EntityBatcher | None = None) -> None:
        """Core's ``on_chunk`` (after each commit, on auto-run's loop): report it. The breakpoint is the
        worker's own (``Worker(stop_on_new_error=…)``: it knows what is new to a processor)."""
        if batcher is not None:
            batcher.flush()  # the chunk's entity lines come before its summary
        self.post_message(ChunkDone(result, source="auto-run"))

    def action_toggle_breakpoint(self) -> None:
        self.breakpoint = not self.breakpoint
        if self.breakpoint:
            self.notify(f"breakpoint on: auto-run stops at the first kind of error {self._new_for()} and opens "
                        "it (B: new for the job or for its processor)", title="Breakpoint")
        else:
            self.notify("breakpoint off: auto-run goes on through new kinds of error", title="Breakpoint")
        self._arm_breakpoint()

    def action_breakpoint_scope(self) -> None:
        """``B``: the other scope, and the breakpoint on (someone choosing what counts as new wants it)."""
        self.breakpoint_scope = "processor" if self.breakpoint_scope == "job" else "job"
        self.breakpoint = True
        self.notify(f"breakpoint on: auto-run stops at the first kind of error {self._new_for()} and opens it",
                    title="Breakpoint")
        self._arm_breakpoint()

    def _new_for(self) -> str:
        return ("new to the job's processor (that none of its jobs logged)" if self.breakpoint_scope == "processor"
                else "new to its job")

    def _arm_breakpoint(self) -> None:
        """The header says it; an auto-run already going takes it for its next commit (set on its loop)."""
        if self.auto_worker is not None and self._auto_thread is not None:
            self._auto_thread.call(arm_breakpoint, self.auto_worker, self.breakpoint, self.breakpoint_scope)
        self.update_sub_title()
        self.post_message(ProcessingChanged())

    def _auto_waiting(self, due: float | None) -> None:
        """Core's ``on_wait``: auto-run sleeps until ``due`` (None: it woke up)."""
        self.auto_waiting_until = due
        self.update_sub_title()

    def auto_run_ended(self, summary: core.RunSummary) -> str:
        """Why auto-run stopped, in a few words (the next retry's time when it was too far off)."""
        if self.stop_requested is not None:
            return ("an operator asked it to stop after its chunk" if self.stop_requested == "finish"
                    else "an operator asked it to release its chunk and stop")
        if self.breakpoint_hit is not None:
            return f"breakpoint: job {self.breakpoint_hit[0]} logged a kind of error {self._new_for()}"
        if summary.stopped_by == "retry_later" and summary.next_retry_at is not None:
            wait = summary.next_retry_at - self.queue.now()
            return f"the next retry is due in {humanize.duration(max(wait, 0.0))}; press a again then"
        if summary.stopped_by == "orphaned" and summary.orphaned:  # core/orphans.py: a dead worker's chunks
            return (f"{summary.orphaned}, expiring in {humanize.duration(summary.orphaned_expire_in or 0.0)}; "
                    "press a again then")
        return {"empty": "nothing left to claim", "signal": "stopped", "aborted": "aborted, chunk released",
                "requested": "an operator asked it to stop after its chunk"}.get(
            summary.stopped_by, summary.stopped_by)

    async def _registered_run(self, worker: core.Worker, queue: core.Queue,
                              batcher: EntityBatcher | None = None) -> core.RunSummary:
        """``worker.run()`` inside a registration (kind "dashboard"), on auto-run's own loop: the
        Workers view lists this auto-run, and an operator's stop request there (or from another
        host) stops it the way ``a`` and the quit dialog do (the registration calls
        ``worker.stop()``/``abort()``)."""
        path = self.processor_handle.path if self.processor_handle is not None else None
        try:
            async with queue, worker.registered(kind="dashboard", processor_name=path,
                                                interval=self.heartbeat_interval) as registration:
                try:
                    return await worker.run()
                finally:
                    self.stop_requested = registration.stop_request
        finally:
            if batcher is not None:
                batcher.flush()

    @work(group="auto-run", exit_on_error=False)
    async def _auto_run(self, worker: core.Worker, queue: core.Queue, batcher: EntityBatcher) -> None:
        # Stopped with worker.stop()/abort() on its own loop, never by cancelling it mid-commit.
        thread = self._auto_thread
        assert thread is not None
        thread.start(lambda: self._registered_run(worker, queue, batcher))
        self._auto_task = asyncio.ensure_future(thread.wait())
        try:
            summary = await self._auto_task
            if summary.new_error is not None and summary.new_error_job is not None:
                self.breakpoint_hit = (summary.new_error_job, summary.new_error)
            why = self.auto_run_ended(summary)
            done = (f"{humanize.plural(summary.chunks, 'chunk')}, "
                    f"{humanize.plural(summary.entities, 'entity', 'entities')}")
            self.post_message(ActivityNote(
                f"auto-run ended ({why}): {done}, {humanize.plural(summary.errors, 'error')} "
                f"in {humanize.duration(summary.elapsed)}"))
            if not self._quitting:
                self.notify(f"auto-run ended: {why}; {done}")
                if self.breakpoint_hit is not None:
                    self.post_message(BreakpointHit(*self.breakpoint_hit))
        except core.ChunkqError as exc:
            self.post_message(ActivityNote(f"auto-run stopped: {exc}", severity="error"))
            self.notify(str(exc), title="Auto-run stopped", severity="error")
        except asyncio.CancelledError:
            # The interface is going away without the quit dialog: give the chunk back, and let core
            # release its lease on auto-run's loop before this process moves on (as a cancelled
            # auto-run on the interface's loop used to).
            thread.call(worker.abort)
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(thread.wait(), ABANDON_GRACE)
            raise
        finally:
            self._auto_task = None
            self._auto_thread = None
            self._auto_stop_asked = False
            self.auto_worker = None
            self.auto_waiting_until = None
            self.update_sub_title()
            self.post_message(ProcessingChanged())

    def dry_run(self, job_id: int) -> None:
        """Run ``job_id``'s next chunk through the callback; nothing is written."""
        processor = self.require_processor()
        if processor is None:
            return
        self._dry_run(job_id, processor)

    @work(group="dry-run", exit_on_error=False)
    async def _dry_run(self, job_id: int, processor: core.Processor) -> None:
        self.post_message(ActivityNote(f"dry run of job {job_id}'s next chunk (nothing is written)…"))
        try:
            results = await self.queue.dry_run(job_id, processor,
                                               on_entity=self._entity_hook(job_id, dry_run=True))
        except core.ChunkqError as exc:
            self.post_message(ActivityNote(str(exc), severity="error"))
            self.notify(str(exc), title="Dry run", severity="error")
            return
        failed = sum(1 for r in results if not r.ok)
        self.last_dry_run = (job_id, tuple(results), self.now())
        text = (f"dry run of job {job_id}: {len(results) - failed} ok, {failed} failed; "
                "the job is unchanged")
        self.post_message(ActivityNote(text + ("; D opens its failures' tracebacks" if failed else ""),
                                       severity="error" if failed else "information"))
        self.notify(text, title="Dry run · D opens its failures" if failed else "Dry run")

    def action_reload_processor(self) -> None:
        if self.processor_handle is None:
            self.notify(PROCESSOR_HINT, title="No processor", severity="warning")
            return
        try:
            reloaded = self.processor_handle.reload()
        except core.ProcessorError as exc:
            self.post_message(ActivityNote(f"{exc} (the previous callback stays in use)", severity="error"))
            self.notify(f"{exc}\nThe previous callback stays in use.", title="Reload failed",
                        severity="error", timeout=10)
            return
        if self.auto_worker is not None:
            # The worker reads .processor before each chunk: the next one uses the new code.
            self.auto_worker.processor = self.processor_handle.processor
        names = ", ".join(reloaded) or "nothing changed"
        self.post_message(ActivityNote(f"reloaded {self.processor_handle.path}: {names}"))
        self.notify(f"reloaded: {names}", title="Processor reloaded")

    def _abandon(self) -> None:
        """Give up the chunk in flight: core releases its lease so another worker redoes it."""
        if self.auto_worker is not None and self._auto_thread is not None:
            self._auto_thread.call(self.auto_worker.abort)
        if self._step_task is not None:
            self._step_task.cancel()

    async def _wait_for_processing(self, grace: float | None = None) -> None:
        tasks = [t for t in (self._step_task, self._auto_task) if t is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group in ("processing", "auto-run", "dry-run"):
            error = event.worker.error
            self.notify(f"{type(error).__name__}: {error}", title="Processing failed", severity="error")
