"""Auto-run's own thread and event loop, and the batching of what it reports.

Auto-run used to share the interface's event loop: at ~800 failing entities a
second the worker's bookkeeping (claims, commits, tracebacks, fingerprints,
one message per failure) held keys back for 0.3-1.1 s (issue 28). So auto-run
runs on a thread of its own with an event loop of its own, and with a
``Queue`` of its own: an async SQLAlchemy engine belongs to the loop that made
it. The interface never awaits the worker's database work; it awaits one
future that resolves when the run ends.

What the run reports crosses over without waiting for the interface:
``App.post_message`` is thread-safe, and ``EntityBatcher`` gathers the
per-entity results into one message every ``BATCH_SECONDS`` (and before each
chunk's summary, so the log keeps its order).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from chunkq import core
from chunkq.tui.dashboard.messages import EntityBatch, EntityDone
from textual.message import Message

T = TypeVar("T")

#: how long entity results gather before they go to the screen as one message
BATCH_SECONDS = 0.25


class LoopThread(Generic[T]):
    """One coroutine, run to its end on a daemon thread with an event loop of its own.

    ``call`` runs a function on that loop from any thread (``Worker.stop`` sets an
    ``asyncio.Event``, which is not thread-safe); ``wait`` is the interface's side:
    an awaitable that resolves with the coroutine's result, or raises what it raised.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._done: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._thread: threading.Thread | None = None

    def start(self, main: Callable[[], Awaitable[T]]) -> None:
        self._thread = threading.Thread(target=self._main, args=(main,), name=self.name, daemon=True)
        self._thread.start()

    def _main(self, main: Callable[[], Awaitable[T]]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            result = self.loop.run_until_complete(main())
        except BaseException as exc:  # the interface's await raises it (KeyboardInterrupt too)
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # nobody waits any more
                self._done.set_exception(exc)
        else:
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                self._done.set_result(result)
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """``fn(*args)`` on the thread's loop, soon; nothing if the run has already ended."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self.loop.call_soon_threadsafe(fn, *args)

    @property
    def done(self) -> bool:
        return self._done.done()

    async def wait(self) -> T:
        """The run's result; cancelling this wait leaves the run alone (``call`` stops it)."""
        return await asyncio.shield(asyncio.wrap_future(self._done))


class EntityBatcher:
    """Per-entity results, gathered on the worker's loop and posted as one ``EntityBatch``.

    One message per failure cost the interface a dispatch and a log write each:
    hundreds a second starve key handling. ``flush`` is also called before a
    chunk's summary is posted, so every entity line comes before its chunk's.
    """

    def __init__(self, post: Callable[[Message], object], job_id: int | None = None,
                 *, failures_only: bool = False, interval: float = BATCH_SECONDS) -> None:
        self.post = post
        self.job_id = job_id
        self.failures_only = failures_only
        self.interval = interval
        self._pending: list[EntityDone] = []
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, result: core.EntityResult) -> None:
        """Core's ``on_entity`` hook, on the worker's loop."""
        if self.failures_only and result.ok:
            return
        self._pending.append(EntityDone(self.job_id, result))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            batch, self._pending = self._pending, []
            self.post(EntityBatch(batch))
