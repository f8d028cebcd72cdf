"""Post-mortem debugging of the user's callback on one entity, from the dashboard.

The dashboard suspends itself (``App.suspend``), then this module calls the
callback once on the failed entity and, if it raises, hands the exception's
traceback to a debugger (``pdb.post_mortem`` unless told otherwise), so the
developer lands in the frame that raised with its locals alive. Tests pass a
stub debugger that records the traceback it was given.

The callback runs on a thread of its own with a fresh event loop: the
dashboard's loop is busy (it is the one waiting here), and an async callback
needs a loop to run on. Nothing is written to the queue: a debugging run is an
experiment, not an attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import pdb
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TextIO

from chunkq.core import EntityResult, ErrorEntry, Job, Processor
from chunkq.tui.humanize import printable

#: Called with the traceback of the exception the callback raised; returns when the user leaves.
Debugger = Callable[[TracebackType], None]

#: ``ErrorEntry.chunk_index`` of a dry run's failure: it belongs to no chunk and was never stored
DRY_RUN_CHUNK = -2

#: A sync callback that never returns cannot be stopped from outside its thread; past this we give up on it.
SYNC_WAIT_LIMIT = 3600.0


def pdb_post_mortem(tb: TracebackType) -> None:
    """The default debugger: ``pdb`` at the frame that raised."""
    pdb.post_mortem(tb)


@dataclass(frozen=True)
class DebugOutcome:
    """What happened, in a sentence the dashboard can show once it is back."""

    entity_id: str
    ok: bool
    debugged: bool
    summary: str
    exception: BaseException | None = None


def _run_once(processor: Processor, entity_id: str, job: Job) -> BaseException | None:
    """Call the callback once on ``entity_id``; the exception it raised (or reported), else None."""

    async def run_async(awaitable: Any) -> Any:
        if processor.timeout is not None:
            # Cut off where it hangs, so post-mortem shows the await that never returned.
            return await asyncio.wait_for(awaitable, processor.timeout)
        return await awaitable

    def call() -> Any:
        if processor.on_chunk is not None:
            result = processor.on_chunk([entity_id], job)
        else:
            fn = processor.on_process
            assert fn is not None
            result = fn(entity_id, job)
        if inspect.isawaitable(result):
            result = asyncio.run(run_async(result))
        return result

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"chunkq-debug-{entity_id}", daemon=True)
    thread.start()
    thread.join(SYNC_WAIT_LIMIT)
    if thread.is_alive():
        return TimeoutError(f"the callback was still running on {entity_id!r} after {SYNC_WAIT_LIMIT:g}s")
    if "error" in box:
        return box["error"]
    result = box.get("result")
    if processor.on_chunk is not None and isinstance(result, Mapping):
        reported = result.get(entity_id)
        if isinstance(reported, BaseException):
            return reported
        if reported is not None:
            return RuntimeError(str(reported))
    return None


def post_mortem(
    processor: Processor,
    entity_id: str,
    job: Job,
    *,
    debugger: Debugger | None = None,
    out: TextIO | None = None,
) -> DebugOutcome:
    """Run the callback on one entity and, if it raises, debug the exception post-mortem.

    Meant to be called while the dashboard is suspended: it prints to the real
    terminal and blocks until the debugger returns.
    """
    write = (out or sys.stdout).write
    write(f"\nchunkq: running the callback on {entity_id!r} (job {job.id}) for post-mortem debugging…\n")
    try:
        exc = _run_once(processor, entity_id, job)
    except KeyboardInterrupt:
        return DebugOutcome(entity_id, False, False, f"post-mortem of {entity_id} interrupted")
    if exc is None:
        write("chunkq: the callback succeeded; nothing to debug.\n")
        return DebugOutcome(entity_id, True, False, f"{entity_id} succeeded this time; nothing to debug")
    name = type(exc).__name__
    said = printable(exc)  # the provider's message, on the real terminal: escaped like everywhere else
    if exc.__traceback__ is None:
        write(f"chunkq: {name}: {said} (no traceback to debug)\n")
        return DebugOutcome(
            entity_id, False, False, f"{entity_id}: {name}: {exc} (no traceback to debug)", exc
        )
    write(
        f"chunkq: {name}: {said}\nchunkq: entering the debugger at the exception; "
        "quit it (q) to return to the dashboard.\n"
    )
    try:
        (debugger or pdb_post_mortem)(exc.__traceback__)
    except KeyboardInterrupt:
        pass
    except Exception as debug_exc:  # a broken debugger must not take the dashboard down
        return DebugOutcome(
            entity_id, False, False, f"the debugger failed: {type(debug_exc).__name__}: {debug_exc}", exc
        )
    return DebugOutcome(entity_id, False, True, f"debugged {entity_id}: {name}: {exc}", exc)


def dry_run_entry(job_id: int, result: EntityResult, index: int, at: datetime) -> ErrorEntry:
    """A dry run's failure shaped as a stored error, so the error view draws it the same way.

    Nothing of a dry run is written, so it has no id: ``-index`` (1-based) keeps
    the entries of one dry run apart, and ``chunk_index`` is ``DRY_RUN_CHUNK``.
    """
    return ErrorEntry(
        id=-index, job_id=job_id, entity_id=result.entity_id, error_type=result.error_type or "Error",
        message=result.message or "", traceback=result.traceback or "", chunk_index=DRY_RUN_CHUNK, attempt=1,
        created_at=at, final=result.retry_at is None, stacks=result.stacks, output=result.output,
    )
