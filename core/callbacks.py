"""Calling user code: what a callback returns and raises, taken at its word only when it is honest.

* A sync function may return the work instead of doing it: a coroutine (a
  non-async-aware decorator around an ``async def``, a ``lambda`` calling one)
  or a ``concurrent.futures.Future``. ``settle`` awaits it, so work that did not
  run is never counted as a success; a generator (whose body never runs) is an
  error.
* ``CancelledError`` means two things: the worker is stopping (the task was
  cancelled: re-raise it) or the callback raised it itself (that entity's error).
  ``being_cancelled`` tells them apart.
* A coroutine of user code run as a task of its own would have its
  ``KeyboardInterrupt``/``SystemExit`` re-raised out of the event loop by
  asyncio; ``captured`` turns every outcome into a value first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any


def batch_failures(returned: Any) -> Mapping[str, Any]:
    """A batch callback's ``{entity_id: error}``; a ``TypeError`` for anything else (a contract bug,
    visible on every entity of the chunk rather than a crashed worker)."""
    if returned is None:
        return {}
    if not isinstance(returned, Mapping):
        raise TypeError(
            f"on_chunk returned {type(returned).__name__}; it must return a dict "
            "{entity_id: error} of the failed entities (or None when all succeeded)"
        )
    return dict(returned)


def needs_settling(result: Any) -> bool:
    return result is not None and (
        inspect.isawaitable(result) or isinstance(result, concurrent.futures.Future)
        or inspect.isgenerator(result) or inspect.isasyncgen(result)
    )


async def settle(result: Any) -> Any:
    """What a callback's work produced, once it has run.

    A sync function that returns a coroutine (a non-async-aware decorator around
    an ``async def``, a ``lambda`` calling one) has done nothing yet: the
    coroutine is the work. Awaiting it here - or failing - is what keeps chunkq
    from counting work that never ran as a success.
    """
    for _ in range(8):  # an async def that returns another coroutine, and so on
        if inspect.isawaitable(result):
            result = await result
        elif isinstance(result, concurrent.futures.Future):
            result = await asyncio.wrap_future(result)
        else:
            break
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        raise TypeError(
            f"the callback returned a {type(result).__name__} object, so its body never ran: "
            "a callback does its work when called (a function, or an async def)"
        )
    return result


async def captured(coro: Awaitable[Any]) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, exception)``: a coroutine of user code run as a task of its own,
    whose ``KeyboardInterrupt`` asyncio would otherwise re-raise out of the event loop."""
    try:
        return True, await coro
    except BaseException as exc:  # the callback's error, whatever it is, for the thread to raise
        return False, exc


def being_cancelled() -> bool:
    """The current task was asked to stop (the worker aborts), as opposed to a callback that
    raised ``CancelledError`` itself, which is that entity's error."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    return call is not None and inspect.iscoroutinefunction(call)
