"""Callbacks as real users' code behaves (issue 13): whatever they raise or return is recorded, never lost.

Every case runs on SQLite and PostgreSQL: the text a broken exception leaves
behind (lone surrogates, NUL) is stored by both and read back.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest
from chunkq.core import Processor, Queue, Worker, threads
from chunkq.core.text import storable

from .test_leases import enqueue


class UnprintableError(RuntimeError):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


class HostileRepr:
    def __repr__(self) -> str:
        raise KeyboardInterrupt  # even this must not escape a captured traceback


class RawRepr:
    def __repr__(self) -> str:
        return "raw \udcff and \x00"  # Python's own reprs escape these; a custom one need not


def _raise_for(entity_id: str) -> None:
    hostile = HostileRepr()  # noqa: F841 - captured with capture_locals
    raw = RawRepr()  # noqa: F841
    if entity_id == "e1":
        raise UnprintableError
    if entity_id == "e2":
        raise ValueError("provider said b'\\xff': " + b"caf\xff".decode("utf-8", "surrogateescape"))
    if entity_id == "e3":
        raise ValueError("NUL\x00inside and a lone \ud800 surrogate")
    if entity_id == "e4":
        raise KeyError("\udce9t\udce9")


async def _run_all(q: Queue, proc: Processor, n: int = 6) -> tuple[Any, dict[str, Any]]:
    job = await enqueue(q, n, chunk_size=n)
    while await q.process_next_chunk(proc) is not None:
        pass
    return await q.get_job(job.id), {e.entity_id: e for e in await q.list_errors(job.id)}


@pytest.mark.parametrize("style", ["sync", "async", "threads", "timeout"])
async def test_any_exception_however_broken_is_recorded_and_stored(queue: Queue, style: str) -> None:
    async def async_cb(entity_id: str, _job: Any) -> None:
        await asyncio.sleep(0)
        _raise_for(entity_id)

    proc = {
        "sync": Processor(on_process=lambda e, _j: _raise_for(e), capture_locals=True),
        "async": Processor(on_process=async_cb, concurrency=2, capture_locals=True),
        "threads": Processor(on_process=lambda e, _j: _raise_for(e), concurrency=2, capture_locals=True),
        "timeout": Processor(on_process=async_cb, timeout=5, capture_locals=True),
    }[style]
    job, errors = await _run_all(queue, proc)
    assert (job.status, job.processed_count, job.failed_count) == ("complete", 6, 4)
    assert errors["e1"].message == "<unprintable UnprintableError>"
    assert errors["e1"].error_type.endswith("UnprintableError")
    assert errors["e2"].message == "provider said b'\\xff': caf\\xff"
    assert errors["e3"].message == "NUL\\x00inside and a lone \\ud800 surrogate"
    assert errors["e4"].message == "'\\udce9t\\udce9'"  # a KeyError's message is the key's repr
    for e in errors.values():
        assert e.traceback and "Traceback" in e.traceback
        assert e.stacks, "the structured traceback was stored"
        local_values = [v for st in e.stacks for f in st.frames for v in (f.locals or {}).values()]
        assert "raw \\xff and \\x00" in local_values
        assert "<repr failed: KeyboardInterrupt>" in local_values
    assert "<unprintable UnprintableError>" in errors["e1"].traceback or "str() failed" in errors["e1"].traceback


async def test_an_async_callback_raising_cancelled_error_is_that_entitys_error(queue: Queue) -> None:
    async def cb(entity_id: str, _job: Any) -> None:
        if entity_id == "e2":
            raise asyncio.CancelledError("the provider's client cancelled itself")
        await asyncio.sleep(0)

    for proc in (Processor(on_process=cb), Processor(on_process=cb, concurrency=3, timeout=5)):
        job, errors = await _run_all(queue, proc)
        assert (job.status, job.succeeded_count, job.failed_count) == ("complete", 5, 1)
        assert errors["e2"].error_type == "asyncio.exceptions.CancelledError"
        assert errors["e2"].final


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
async def test_async_base_exceptions_under_a_timeout_stay_entity_errors(queue: Queue, exc: type) -> None:
    """With a timeout the callback used to run as a task of its own, whose KeyboardInterrupt
    or SystemExit asyncio re-raises out of the event loop: the worker died."""

    async def cb(entity_id: str, _job: Any) -> None:
        await asyncio.sleep(0)
        if entity_id == "e3":
            raise exc

    job, errors = await _run_all(queue, Processor(on_process=cb, timeout=5))
    assert (job.status, job.failed_count) == ("complete", 1)
    assert errors["e3"].error_type == exc.__name__


def _sync_wrapper(fn: Any) -> Any:
    """A decorator that does not know about coroutines: the call returns one, unawaited."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("shape", ["plain", "threads", "timeout"])
async def test_a_sync_wrapper_around_an_async_callback_does_the_work(queue: Queue, shape: str) -> None:
    ran: list[str] = []

    @_sync_wrapper
    async def cb(entity_id: str, _job: Any) -> None:
        await asyncio.sleep(0)
        if entity_id == "e4":
            raise ValueError("the awaited body failed")
        ran.append(entity_id)

    proc = {"plain": Processor(on_process=cb), "threads": Processor(on_process=cb, concurrency=3),
            "timeout": Processor(on_process=cb, timeout=5)}[shape]
    job, errors = await _run_all(queue, proc)
    assert sorted(ran) == ["e0", "e1", "e2", "e3", "e5"], "the coroutine's body must run"
    assert (job.succeeded_count, job.failed_count) == (5, 1)
    assert errors["e4"].message == "the awaited body failed"


async def test_a_sync_wrapper_around_an_async_batch_callback_does_the_work(queue: Queue) -> None:
    ran: list[str] = []

    @_sync_wrapper
    async def batch(ids: list[str], _job: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        ran.extend(ids)
        return {"e1": "no such company"}

    job, errors = await _run_all(queue, Processor(on_chunk=batch))
    assert sorted(ran) == [f"e{i}" for i in range(6)]
    assert (job.succeeded_count, job.failed_count) == (5, 1)
    assert errors["e1"].message == "no such company"


async def test_a_sync_wrapper_whose_coroutine_hangs_times_out(queue: Queue) -> None:
    @_sync_wrapper
    async def cb(entity_id: str, _job: Any) -> None:
        if entity_id == "e1":
            await asyncio.Event().wait()

    job, errors = await _run_all(queue, Processor(on_process=cb, timeout=0.2), n=3)
    assert (job.succeeded_count, job.failed_count) == (2, 1)
    assert errors["e1"].error_type == "TimeoutError"


async def test_a_generator_callback_is_an_error_not_a_success(queue: Queue) -> None:
    def gen(entity_id: str, _job: Any) -> Any:
        yield entity_id  # the body of a generator function runs only when iterated: never, here

    job, errors = await _run_all(queue, Processor(on_process=gen), n=2)
    assert (job.succeeded_count, job.failed_count) == (0, 2)
    assert errors["e0"].error_type == "TypeError" and "never ran" in errors["e0"].message


async def test_provider_error_strings_of_a_batch_are_stored(queue: Queue) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError

    def batch(ids: list[str], _job: Any) -> dict[str, Any]:
        return {"e0": "502 \x00 from \udcff upstream", "e1": Unprintable()}

    job, errors = await _run_all(queue, Processor(on_chunk=batch), n=3)
    assert (job.succeeded_count, job.failed_count) == (1, 2)
    assert errors["e0"].message == "502 \\x00 from \\xff upstream"
    assert errors["e1"].message == "<unprintable Unprintable>"


def test_storable_keeps_plain_text_and_escapes_the_rest() -> None:
    assert storable("plain ascii") == "plain ascii"
    assert storable("café ✓ 🎉") == "café ✓ 🎉"
    assert storable("a\x00b") == "a\\x00b"
    assert storable("x\udcffy\ud800z") == "x\\xffy\\ud800z"
    assert storable(b"bytes") == "b'bytes'"
    storable("\ud800\x00").encode("utf-8")  # always encodable


async def test_a_worker_stops_claiming_once_abandoned_threads_pile_up(queue: Queue) -> None:
    release = threading.Event()

    def hang_some(entity_id: str, _job: Any) -> None:
        if entity_id.startswith("h"):
            release.wait(30)

    proc = Processor(on_process=hang_some, timeout=0.1)
    bound = threads.abandoned() + 2  # the count is the process's: other tests' threads may still be ending
    try:
        first = await queue.enqueue_job(["h0", "h1", "h2"], entity_type="company", provider="p", chunk_size=3)
        # Work done: three abandoned threads, nothing left to claim -> an ordinary end.
        summary = await asyncio.wait_for(Worker(queue, proc, max_abandoned=bound).run(), 20)
        assert (summary.chunks, summary.errors, summary.stopped_by) == (1, 3, "empty")
        second = await queue.enqueue_job(["g0", "g1"], entity_type="company", provider="p")
        # Work left and more abandoned threads than the bound: claim nothing, stop "wedged".
        summary = await asyncio.wait_for(Worker(queue, proc, max_abandoned=bound).run(), 20)
        assert (summary.chunks, summary.stopped_by) == (0, "wedged")
        assert (await queue.get_job(second.id)).processed_count == 0
    finally:
        release.set()
    end = asyncio.get_running_loop().time() + 10
    while threads.abandoned() >= bound:  # the hung calls returned: they count no more
        assert asyncio.get_running_loop().time() < end
        await asyncio.sleep(0.02)
    summary = await Worker(queue, proc, max_abandoned=bound).run()
    assert (summary.chunks, summary.stopped_by) == (1, "empty")
    assert (await queue.get_job(first.id)).failed_count == 3
