"""What a screen may ask of the dashboard app, stated as a protocol.

Screens and widgets never import ``app.py`` (the app imports them: importing back
made a cycle). They reach the app through ``dashboard(node)``, typed as
``Dashboard``, which ``ChunkqApp`` satisfies (tests check it). Anything not listed
here is the app's own business.
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

from chunkq import core
from chunkq.tui.dashboard.messages import ProcessingMessage
from textual.dom import DOMNode

T = TypeVar("T")


@runtime_checkable
class Dashboard(Protocol):
    """The app as screens see it: the open queue, the processor, the clock and processing."""

    #: open once the app has mounted (an async engine belongs to the app's event loop)
    queue: core.Queue
    #: None when the dashboard only watches (started without ``--processor``)
    processor_handle: core.ProcessorHandle | None
    #: show a stored traceback's locals (the operator opted in with ``--capture-locals``)
    capture_locals: bool
    #: seconds between two polls of a live view
    refresh_interval: float

    @property
    def processing(self) -> bool:
        """A chunk may be in flight (a step or auto-run): the debugger must not stall its lease."""
        ...

    def now(self) -> datetime:
        """The display clock (UTC-aware); tests freeze it."""
        ...

    async def shielded(self, call: Coroutine[Any, Any, T]) -> T:
        """``await call`` (a read of the queue), in a task of its own that cancelling the caller never reaches:
        the call runs to its end, and quitting waits for it before the queue closes (``ProcessingApp.shielded``)."""
        ...

    def require_processor(self) -> core.Processor | None:
        """The processor, or None after telling the operator how to start with one."""
        ...

    def step(self, job_id: int | None) -> None:
        """Process one chunk of ``job_id`` (None: the next job in line), reporting live."""
        ...

    def dry_run(self, job_id: int) -> None:
        """Run ``job_id``'s next chunk through the callback, writing nothing."""
        ...


@runtime_checkable
class ProcessingListener(Protocol):
    """A screen that wants processing messages while it is on top (the jobs screen always gets them)."""

    def processing_event(self, message: ProcessingMessage) -> None: ...


def dashboard(node: DOMNode) -> Dashboard:
    """The running app, as the ``Dashboard`` it promises to be."""
    return cast(Dashboard, node.app)
