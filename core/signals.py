"""The two-stage stop on SIGINT/SIGTERM, for any front end that runs a ``Worker``.

First signal: finish and commit the chunk in flight, start no other. Second:
give that chunk up now (its lease is released, so another worker redoes it).
This is what systemd, supervisor and a container runtime expect, and what a
person pressing Ctrl-C twice means. Core prints nothing: ``on_signal`` lets the
front end say so in its own voice (``stop_message`` is the sentence the CLI uses).

A process must also *end* after the second signal, whatever user code does: a
thread that never returns (a callback's own ``asyncio.to_thread``, a hung
socket in a library) would keep the interpreter from exiting. With
``hard_exit_after`` set (the CLI's commands; never a dashboard, which must put
the terminal back first) the process ends with ``os._exit(128 + signal)`` that
many seconds after the second signal if it has not ended by then (time for the
chunk's lease to be released), and at once on a third.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

SignalHook = Callable[[signal.Signals, int], None]


class Stoppable(Protocol):
    """What a signal stops: a ``Worker`` (a protocol, so that this module needs no worker to import)."""

    def stop(self) -> None: ...  # the first signal: finish what is in flight

    def abort(self) -> None: ...  # the second: give it up now


def stop_message(sig: signal.Signals, count: int) -> str:
    """What the ``count``-th stop signal does, in one line."""
    if count == 1:
        return f"{sig.name}: finishing the chunk in flight, then stopping (send it again to give it up now)"
    return f"{sig.name} again: giving up the chunk in flight; its lease is released for another worker"


class SignalStop:
    """Context manager: while inside, SIGINT/SIGTERM stop ``worker`` in two stages.

    ``worker`` may be set or replaced later (a front end running several workers
    in turn); a stop already requested is applied to the new one at once.
    ``event`` is set on the first signal, to wake anything else that waits.
    ``aborted_by`` is the number of the signal that aborted (exit with 128 + it).
    Outside the main thread, or where the loop has no signal handlers, it
    installs nothing and the worker simply runs.
    """

    def __init__(
        self,
        worker: Stoppable | None = None,
        *,
        on_signal: SignalHook | None = None,
        signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
        hard_exit_after: float | None = None,
    ) -> None:
        self._worker = worker
        self.on_signal = on_signal
        self.hard_exit_after = hard_exit_after
        self.signals = tuple(signals)
        self.count = 0
        self.aborted_by: int | None = None
        self.event = asyncio.Event()
        self._installed: list[signal.Signals] = []

    @property
    def worker(self) -> Stoppable | None:
        return self._worker

    @worker.setter
    def worker(self, worker: Stoppable | None) -> None:
        self._worker = worker
        if worker is not None and self.count:
            worker.stop() if self.aborted_by is None else worker.abort()

    def __enter__(self) -> SignalStop:
        loop = asyncio.get_running_loop()
        for sig in self.signals:
            try:
                loop.add_signal_handler(sig, self.handle, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / not POSIX
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def handle(self, sig: signal.Signals) -> None:
        """What a signal does (public so tests and other triggers can stage a stop without a signal)."""
        self.count += 1
        self.event.set()
        if self.count > 1:
            self.aborted_by = int(sig)
        if self.on_signal is not None:
            self.on_signal(sig, self.count)
        if self._worker is not None:
            self._worker.stop() if self.count == 1 else self._worker.abort()
        if self.hard_exit_after is not None and self.count >= 2:
            if self.count == 2:
                timer = threading.Timer(self.hard_exit_after, _hard_exit, (128 + int(sig),))
                timer.daemon = True
                timer.start()
            else:
                _hard_exit(128 + int(sig))


def _hard_exit(status: int) -> None:
    """End the process now, even with threads that never return (flushing what was printed)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more to say
            pass
    os._exit(status)
