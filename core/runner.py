"""Running the user's callback over one chunk, and nothing else.

No database here: the queue claims, this module calls, the queue commits (the
whole life of a chunk reads top to bottom in ``chunk.py``). That split is what
keeps the user's (slow, flaky) code outside every write transaction.

The runner also decides, as each entity fails, whether it will be tried again
and when (``Outcome.retry_at``): the live report (``EntityResult.retry_at``)
and the commit then agree on it, because there is only one decision.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from . import capture
from .adaptive import ConcurrencyLimit, is_overloaded, limit_for
from .callbacks import batch_failures, being_cancelled, captured, is_async, needs_settling, settle
from .errors import JobFailed, Retry
from .fingerprint import declared
from .models import EntityResult, Job
from .outcomes import Item, Items, Outcome, Outcomes
from .processor import EntityCallback, EntityHook, Processor, noop
from .text import safe_repr, safe_str, storable
from .tracebacks import capture_stacks, format_exception, message, type_name

log = logging.getLogger("chunkq")


class ChunkAborted(Exception):
    """A callback raised ``JobFailed``: the chunk stops and the job fails.

    ``outcomes.culprit``: the entity that raised it, with its traceback (None for a batch callback).
    """

    def __init__(self, reason: str, outcomes: Outcomes, culprit: Outcome | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcomes = outcomes
        outcomes.culprit = culprit
        #: every entity's report up to the abort, where a caller kept them (``control.dry_run``)
        self.reported: list[EntityResult] = []


class LeaseGate(Protocol):
    """What the runner asks before it starts an entity: is the chunk still ours? (``renewal.py``)

    ``held`` is the cheap answer, from any thread: not known lost, and renewed
    recently enough. When it says no, ``confirm`` (on the loop) asks the
    database. Either says False only when the lease is *known* lost, so the
    commit of what did run is certain to be refused: a chunk is never
    committed with entities skipped.
    """

    def held(self) -> bool: ...

    async def confirm(self) -> bool: ...


class _TimedOut(Exception):
    """The processor's timeout ran out (not a ``TimeoutError`` the callback raised itself)."""


# --------------------------------------------------------------------------- running


class ChunkRunner:
    """Runs one chunk's items through a processor, reporting each entity as it ends.

    ``schedule_retries`` is the queue's clock when the outcomes will be committed:
    a transient failure with attempts left then gets its ``retry_at``. Without it
    (a dry run, a one-off retry of one entity) nothing is scheduled. ``lease``,
    when given, is asked before each entity starts: once the chunk is known to
    belong to another worker, no more of its entities are started (``stop`` is
    set too, for the thread that runs a sync chunk).
    """

    def __init__(
        self,
        processor: Processor,
        job: Job,
        *,
        on_entity: EntityHook | None = None,
        before_call: Callable[[], Awaitable[None]] | None = None,
        schedule_retries: Callable[[], float] | None = None,
        lease: LeaseGate | None = None,
        limiter: ConcurrencyLimit | None = None,
    ) -> None:
        self.processor = processor
        #: the worker's slots, shared by every chunk of its window (``worker.py``); None: this chunk's own
        self.limiter = limiter
        self.job = job
        self.on_entity = on_entity
        self.before_call = before_call  # e.g. a shared rate limiter
        self.clock = schedule_retries
        self.lease = lease
        self.stop = threading.Event()  # set to stop a sync chunk loop between entities

    async def run(self, items: Sequence[Item]) -> Outcomes:
        """Run every entity (until the lease is known lost or the chunk is cancelled); what came of it.

        What the callback prints and logs for an entity is captured (``capture.py``) and kept on its
        ``Outcome``/``EntityResult`` (``output``)."""
        chunk = Items.of(items)
        capture.install()
        if self.processor.on_chunk is not None:
            return await self._run_batch(chunk)
        fn = self.processor.on_process or noop
        if (
            not is_async(fn)
            and self.processor.concurrency == 1
            and self.processor.timeout is None
            and self.before_call is None
        ):
            if self.limiter is None:
                return await self._run_sync_loop(fn, chunk)
            # In a window, chunks share the worker's slots: the whole loop holds one, so a
            # concurrency of 1 stays one call at a time across the chunks of the window.
            async with self.limiter.slot():
                return await self._run_sync_loop(fn, chunk)
        return await self._run_each(fn, chunk)

    # One thread hand-off for the whole chunk: the cheap path for plain sync callbacks.
    async def _run_sync_loop(self, fn: EntityCallback, items: Items) -> Outcomes:
        loop = asyncio.get_running_loop()
        hook = self.on_entity
        job = self.job
        capture_locals = self.processor.capture_locals
        stop = self.stop
        lease = self.lease

        def on_loop(coro: Any) -> Any:  # from the thread: run a coroutine on the loop, wait, raise what it raised
            ok, value = asyncio.run_coroutine_threadsafe(captured(coro), loop).result()
            if ok:
                return value
            raise value

        monotonic = time.monotonic
        # The lease is held until then (monotonic), asked again after; a lost lease sets ``stop`` too.
        # Asking ``lease.held()`` before each entity cost more than a no-op entity itself.
        trusted = math.inf if lease is None else 0.0

        def may_start() -> bool:
            nonlocal trusted
            if stop.is_set():
                return False
            if lease is None or monotonic() < trusted:
                return True
            if lease.held() or on_loop(lease.confirm()):
                trusted = getattr(lease, "valid_until", 0.0)
                return True
            return False

        def work() -> Outcomes:
            # The per-entity cost of a no-op callback is this loop's own (issue 14): names are local,
            # the clock is read once per entity (it times a failure, and a success only when someone
            # listens), and a success makes no object at all (``outcomes.py``). One ``Output`` serves
            # the chunk, made current once for this thread: per entity, a label and a flag.
            failures: list[Outcome] = []
            stopped = stop.is_set
            out = capture.Output()
            token = capture.activate(out)
            ran = 0
            try:
                for ran, entity_id in enumerate(items.ids):  # ``ran``: how many were started before this one
                    t0 = monotonic()
                    if t0 >= trusted or stopped():  # the cheap test inline
                        if not may_start():
                            break
                        t0 = monotonic()  # asking the database is not the entity's time
                    out.label = entity_id
                    try:
                        result = fn(entity_id, job)
                        if result is not None and needs_settling(result):  # a sync wrapper around an async one
                            on_loop(settle(result))
                    except JobFailed as exc:
                        culprit = self._culprit(items[ran], exc, monotonic() - t0)
                        culprit.output = out.take()
                        raise ChunkAborted(message(exc, empty="JobFailed"), Outcomes.ran(items, ran, failures),
                                           culprit) from exc
                    except BaseException as exc:
                        failure = self._failure(items[ran], exc, monotonic() - t0, capture_locals)
                        if out.last_write:
                            failure.output = out.take()
                            out.restart("")
                        failures.append(failure)
                        if hook is not None:
                            loop.call_soon_threadsafe(hook, _result(failure))
                        continue
                    if hook is not None:
                        loop.call_soon_threadsafe(hook, EntityResult(entity_id, True, duration=monotonic() - t0,
                                                                     output=out.take()))
                    if out.last_write:
                        out.restart("")
                else:
                    ran = len(items)
            finally:
                capture.reset(token)
            return Outcomes.ran(items, ran, failures)

        try:
            return await self.processor.threads.call(work)
        except asyncio.CancelledError:
            stop.set()
            raise

    async def _run_each(self, fn: EntityCallback, items: Items) -> Outcomes:
        on_loop = is_async(fn)
        # a number, or "auto" (adaptive.py); in a window, the worker's own, shared by its chunks
        limiter = self.limiter if self.limiter is not None else limit_for(self.processor)
        #: per entity: None (not started, or stopped by JobFailed), True (succeeded) or its failure
        results: list[Outcome | bool | None] = [None] * len(items)
        abort: list[str] = []
        culprits: list[Outcome] = []
        capture_locals = self.processor.capture_locals
        ids = items.ids

        async def may_start() -> bool:
            if abort or self.stop.is_set():
                return False
            if self.lease is None or self.lease.held():
                return True
            return await self.lease.confirm()

        async def one(i: int) -> None:
            async with limiter.slot() as slot:
                if not await may_start():
                    return
                if self.before_call is not None:
                    await self.before_call()
                    if not await may_start():
                        return
                slot.started()
                # this task's own context: the entity's output, and the threads it copies the context to
                out = capture.Output(ids[i])
                capture.activate(out)
                t0 = time.perf_counter()
                try:
                    await self._invoke(fn, (ids[i], self.job), on_loop)
                except JobFailed as exc:
                    abort.append(message(exc, empty="JobFailed"))
                    culprit = self._culprit(items[i], exc, time.perf_counter() - t0)
                    culprit.output = out.take()
                    culprits.append(culprit)
                    return
                except _TimedOut:
                    slot.done(ok=False, overloaded=True)
                    timed_out = TimeoutError(f"entity timed out after {self.processor.timeout:g}s")
                    outcome = self._failure(items[i], timed_out, time.perf_counter() - t0, False)
                except asyncio.CancelledError as exc:
                    if being_cancelled():  # the worker is stopping: not the entity's doing
                        raise
                    outcome = self._failure(items[i], exc, time.perf_counter() - t0, capture_locals)
                except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the entity's error
                    slot.done(ok=False, overloaded=is_overloaded(exc, self.processor))
                    outcome = self._failure(items[i], exc, time.perf_counter() - t0, capture_locals)
                else:
                    slot.done(ok=True, overloaded=False)
                    results[i] = True
                    if self.on_entity is not None:
                        self.on_entity(EntityResult(ids[i], True, duration=time.perf_counter() - t0,
                                                    output=out.take()))
                    return
                outcome.output = out.take()
                results[i] = outcome
                if self.on_entity is not None:
                    self.on_entity(_result(outcome))

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(items))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            self.stop.set()
            for t in tasks:
                t.cancel()
            raise
        positions = items.positions
        done = Outcomes(
            ok=sum(1 for r in results if r is True),
            failures=[r for r in results if isinstance(r, Outcome)],
            succeeded=[positions[i] for i, r in enumerate(results) if r is True],
        )
        if abort:
            raise ChunkAborted(abort[0], done, culprits[0] if culprits else None)
        return done

    async def _run_batch(self, items: Items) -> Outcomes:
        assert self.processor.on_chunk is not None
        fn = self.processor.on_chunk
        ids = items.ids
        t0 = time.perf_counter()
        # one call for the chunk: its output is the chunk's, kept with each of its entities
        out = capture.Output(ids[0] if len(ids) == 1 else f"{ids[0] if ids else ''} (+{len(ids) - 1:,})")
        token = capture.activate(out)
        try:
            return await self._batch_call(fn, items, out, t0)
        finally:
            capture.reset(token)

    async def _batch_call(self, fn: Callable[..., Any], items: Items, out: capture.Output, t0: float) -> Outcomes:
        ids = items.ids
        capture_locals = self.processor.capture_locals
        try:
            if self.before_call is not None:
                await self.before_call()
            if self.lease is not None and not self.lease.held() and not await self.lease.confirm():
                return Outcomes()  # lost before it started: the commit will be refused
            returned = await self._invoke(fn, (list(ids), self.job), is_async(fn))
            failures = batch_failures(returned)
            _say_strays(failures, ids, self.job)
        except JobFailed as exc:
            raise ChunkAborted(message(exc, empty="JobFailed"), Outcomes()) from exc
        except asyncio.CancelledError as exc:
            if being_cancelled():
                raise
            return self._all_failed(items, exc, t0, capture_locals, out.take())
        except _TimedOut:
            timed_out = TimeoutError(f"batch timed out after {self.processor.timeout:g}s")
            return self._all_failed(items, timed_out, t0, False, out.take())
        except BaseException as exc:
            return self._all_failed(items, exc, t0, capture_locals, out.take())
        duration = (time.perf_counter() - t0) / max(len(items), 1)
        output = out.take()
        failed: list[Outcome] = []
        for i, entity_id in enumerate(ids):
            err = failures.get(entity_id)
            if err is None:
                if self.on_entity is not None:
                    self.on_entity(EntityResult(entity_id, True, duration=duration, output=output))
                continue
            if isinstance(err, BaseException):
                outcome = self._failure(items[i], err, duration, False)
            else:
                text = storable(safe_str(err))
                outcome = Outcome(items[i], False, "Error", text, text, duration=duration)
            outcome.output = output
            failed.append(outcome)
            if self.on_entity is not None:
                self.on_entity(_result(outcome))
        return Outcomes.ran(items, len(items), failed)

    async def _invoke(self, fn: Callable[..., Any], args: tuple[Any, ...], on_loop: bool) -> Any:
        """Call ``fn``, within the processor's timeout: async on the loop, sync on a callback
        thread; what it returns is awaited when awaitable. ``_TimedOut`` when the timeout ran out."""
        timeout = self.processor.timeout
        if timeout is None:
            return await self._call(fn, args, on_loop)
        try:
            async with asyncio.timeout(timeout) as limit:
                return await self._call(fn, args, on_loop)
        except TimeoutError:
            if limit.expired():
                raise _TimedOut from None
            raise

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...], on_loop: bool) -> Any:
        # a sync callback runs in a copy of this task's context, as ``asyncio.to_thread`` would: its
        # output is the entity's (``capture.py``)
        result = fn(*args) if on_loop else await self.processor.threads.call(contextvars.copy_context().run, fn, *args)
        return await settle(result)

    def _all_failed(self, items: Items, exc: BaseException, t0: float, capture_locals: bool,
                    output: str | None = None) -> Outcomes:
        duration = time.perf_counter() - t0
        failed = [self._failure(item, exc, duration, capture_locals) for item in items]
        for o in failed:
            o.output = output
        if self.on_entity is not None:
            for o in failed:
                self.on_entity(_result(o))
        return Outcomes.ran(items, len(items), failed)

    def _culprit(self, item: Item, exc: BaseException, duration: float) -> Outcome:
        """The entity that raised ``JobFailed``, as a final failure to log."""
        return dataclasses.replace(self._failure(item, exc, duration, self.processor.capture_locals),
                                   retry_at=None, aborted_job=True)

    def _failure(self, item: Item, exc: BaseException, duration: float, capture_locals: bool) -> Outcome:
        """The entity's error, whatever the exception does: a ``__str__`` that raises, text
        neither database can store, a traceback that cannot be walked."""
        try:
            return Outcome(
                item,
                False,
                error_type=type_name(exc),
                message=message(exc),
                traceback=format_exception(exc),
                stacks=capture_stacks(exc, capture_locals=capture_locals),
                retry_at=self._retry_at(item, exc),
                duration=duration,
                fingerprint=declared(exc),  # the processor named the bug (``fingerprint_as``)
            )
        except Exception as broken:  # capturing the traceback failed: keep what can be kept
            return Outcome(item, False, error_type=type_name(exc), message=message(exc),
                           traceback=f"(no traceback: capturing it raised {type_name(broken)}: {message(broken)})",
                           duration=duration)

    def _retry_at(self, item: Item, exc: BaseException) -> float | None:
        """When a transient failure with attempts left is tried again: the provider's
        Retry-After, else the processor's back-off; None when it is final."""
        if self.clock is None or item.attempt >= self.job.max_attempts:
            return None
        processor = self.processor
        transient = isinstance(exc, (Retry, *processor.retry_on))
        if not transient and processor.is_transient is not None:
            try:
                transient = bool(processor.is_transient(exc))
            except Exception:
                transient = False
        if not transient:
            return None
        delay = processor.backoff(item.attempt)
        if isinstance(exc, Retry) and exc.after is not None:
            try:
                after = float(exc.after)
            except (TypeError, ValueError):
                after = math.nan
            delay = after if math.isfinite(after) else delay
        return self.clock() + max(delay, 0.0)


def _result(o: Outcome) -> EntityResult:
    return EntityResult(
        entity_id=o.item.entity_id,
        ok=o.ok,
        error_type=o.error_type or None,
        message=o.message or None,
        traceback=o.traceback or None,
        retry_at=o.retry_at,
        duration=o.duration,
        stacks=o.stacks,
        output=o.output,
    )


def _say_strays(failures: Mapping[Any, Any], ids: Sequence[str], job: Job) -> None:
    """Warn about an ``on_chunk`` result keyed by something other than the chunk's IDs: those errors are
    not recorded, and were dropped without a word. A callback keying them by a normalised ID ("ACME" for
    "acme") or a number (``1`` for ``"1"``) saw its failures counted as successes and nothing said why."""
    if not failures:
        return
    given = set(ids)
    strays = [key for key in failures if not (isinstance(key, str) and key in given)]
    if strays:
        log.warning("job %s: on_chunk returned errors for %s key%s not among the chunk's %s IDs (e.g. %s): not "
                    "recorded; key the dict by the IDs it was given, exactly as given", job.id, f"{len(strays):,}",
                    "" if len(strays) == 1 else "s", f"{len(ids):,}", safe_repr(strays[0]))

