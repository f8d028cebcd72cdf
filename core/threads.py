"""Threads for sync callbacks: daemon threads, apart from the queue's own, abandoned on timeout.

A sync callback runs in a thread so it never blocks the event loop. Those
threads are not asyncio's default pool, for three reasons:

* the queue's transactions must never wait behind a callback (SQLite's run on
  the backend's own executor; see ``backend/sqlite.py``), nor must asyncio's
  ``getaddrinfo`` (PostgreSQL reconnects), which uses the default pool;
* a callback that outlives its ``timeout`` is recorded as a ``TimeoutError``
  and *abandoned*: Python cannot stop a thread, so it goes on running, and a
  pool of ``concurrent.futures`` (joined at interpreter exit) would keep the
  process alive for as long as it hangs. These threads are daemons: a worker
  exits whatever its abandoned calls do;
* abandoned calls are counted, process-wide (``abandoned()``): once they pile
  up, the worker stops claiming and exits so a supervisor starts a clean
  process (``Worker``, ``stopped_by="wedged"``).

One pool serves the process (``CALLBACK_THREADS``): a runner keeps at most its
``concurrency`` calls live (its semaphore sees to that), so the threads busy
are the live calls plus one per abandoned call; idle threads end after
``IDLE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: an idle thread ends after this long without work
IDLE_SECONDS = 10.0
#: abandoned calls a worker tolerates before it stops (or twice its concurrency, if more): ``Worker``
ABANDONED_THREADS_MAX = 16

_lock = threading.Lock()
_abandoned = 0
_names = itertools.count(1)


def abandoned() -> int:
    """Calls still running in this process after their caller gave up on them (timeout, abort)."""
    return _abandoned


class _Call:
    __slots__ = ("abandoned", "args", "fn", "future", "loop", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[tuple[bool, Any]]) -> None:
        self.fn, self.args, self.loop, self.future = fn, args, loop, future
        self.state = "queued"  # queued -> running -> done
        self.abandoned = False

    def given_up(self, future: asyncio.Future[Any]) -> None:
        """Done callback, on the loop: a cancelled future whose call still runs is abandoned."""
        global _abandoned
        if not future.cancelled():
            return
        with _lock:
            if self.state == "running" and not self.abandoned:
                self.abandoned = True
                _abandoned += 1

    def run(self) -> None:
        global _abandoned
        with _lock:
            if self.future.cancelled():  # given up before it started: never run it
                self.state = "done"
                return
            self.state = "running"
        try:
            result: tuple[bool, Any] = (True, self.fn(*self.args))
        except BaseException as exc:  # everything the callback raises is its result, even SystemExit
            result = (False, exc)
        with _lock:
            self.state = "done"
            if self.abandoned:
                _abandoned -= 1
                return
        # The loop may be closed by now (the worker gave up and exited its loop): nobody is waiting.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_deliver, self.future, result)


def _deliver(future: asyncio.Future[tuple[bool, Any]], result: tuple[bool, Any]) -> None:
    if not future.done():
        future.set_result(result)


class CallbackThreads:
    """A pool of daemon threads for one processor's sync callbacks."""

    def __init__(self, name: str = "chunkq-callback") -> None:
        self.name = name
        self._work: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work, less the calls queued for them

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread; what it raises is raised here. Cancelling this abandons the call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        call = _Call(fn, args, loop, future)
        future.add_done_callback(call.given_up)
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._work.put(call)
        if spawn:
            threading.Thread(target=self._serve, name=f"{self.name}-{next(_names)}", daemon=True).start()
        ok, value = await future
        if ok:
            return value  # type: ignore[no-any-return]  # ok: what fn returned
        try:
            raise value
        finally:
            del value  # no reference cycle through the traceback

    def _serve(self) -> None:
        while True:
            try:
                call = self._work.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # a spare thread: end it
                        self._idle -= 1
                        return
                continue  # every waiting thread is spoken for by a queued call: take it
            call.run()
            del call
            with self._lock:
                self._idle += 1


#: the process's pool for sync callbacks
CALLBACK_THREADS = CallbackThreads()
