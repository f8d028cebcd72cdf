"""Live refresh that never overlaps: fetch in a worker, render, then arm the next poll.

Dolphie's rule (``Modules/WorkerManager.py``): one read at a time; when it is done,
its result is rendered on the main thread and a one-shot timer arms the next read.
A poll asked for while one is in flight runs right after it, once; while the view
is hidden (a dialog on top, pdb holding the terminal) nothing is read, the timer
just looks again later. Both live screens (jobs, job detail) use this.

The fetch is an async function on the app's event loop, never a thread: the
queue's async engine belongs to that loop. It runs through the app's ``shielded``:
when the view closes, Textual cancels the worker, never the read halfway through
(quitting waits for it instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from chunkq.tui.dashboard.protocol import dashboard
from textual.timer import Timer
from textual.widget import Widget

T = TypeVar("T")


class Poller(Generic[T]):
    """Runs ``fetch`` then ``render`` now and every ``interval()`` seconds, one at a time."""

    def __init__(
        self,
        host: Widget,
        *,
        group: str,
        fetch: Callable[[], Coroutine[Any, Any, T]],
        render: Callable[[T], None],
        interval: Callable[[], float],
        visible: Callable[[], bool],
        on_error: Callable[[Exception], None],
        errors: tuple[type[Exception], ...] = (Exception,),
    ) -> None:
        self._host = host
        self.group = group  # the Textual worker group of the reads
        self._fetch = fetch
        self._render = render
        self._interval = interval
        self._visible = visible
        self._on_error = on_error
        self._errors = errors
        self._timer: Timer | None = None
        self._again = False
        #: a read is in flight
        self.busy = False
        #: reads finished (rendered or failed); tests wait on it
        self.completed = 0

    def poll(self) -> None:
        """Read now, or right after the read in flight; while hidden, only look again later."""
        if self.busy:
            self._again = True
            return
        self.stop()
        if not self._visible():
            self.arm()
            return
        self.busy = True
        self._host.run_worker(self._run(), group=self.group, exit_on_error=False)

    def arm(self) -> None:
        """Poll once after the interval (unless a poll is already armed)."""
        if self._timer is None:
            self._timer = self._host.set_timer(self._interval(), self._tick, name=self.group)

    def stop(self) -> None:
        """No timer fires after this (until the next poll arms one)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        self.poll()

    async def _run(self) -> None:
        cancelled = False
        try:
            result = await dashboard(self._host).shielded(self._fetch())
        except asyncio.CancelledError:
            # the view is closing (or the app quitting): the read runs on to its end unseen; nothing is drawn
            # and no poll armed
            cancelled = True
            raise
        except self._errors as exc:
            self._on_error(exc)
        else:
            self._render(result)
        finally:
            self.busy = False
            if not cancelled:
                self.completed += 1
                self._next()

    def _next(self) -> None:
        if not self._host.is_attached:  # the view is gone: nothing more to read
            self._again = False
        elif self._again:
            self._again = False
            self.poll()
        else:
            self.arm()
