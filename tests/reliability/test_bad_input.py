"""Bad input through core's API: a clear one-line ChunkqError, and the database untouched.

Every rejected call is checked against a full dump of what core's read API
shows (jobs, entity IDs, chunks, errors, stats) taken just before it. Callback
faults (BaseException subclasses, a callback that never returns) are the other
kind: they are recorded as the entity's error and the job goes on, or the lease
is released at once when the worker is aborted. The CLI/HTTP/dashboard suites
cover their own entry points; this one covers core and the cross-cutting cases.
"""

from __future__ import annotations

import asyncio
import math
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import (
    MAX_CHUNK_SIZE,
    ChunkqError,
    DatabaseUnavailable,
    InvalidInput,
    InvalidTransition,
    JobNotFound,
    Processor,
    ProcessorError,
    Queue,
    Worker,
    load_processor,
)

from ._support import SOAK, backend, dump

Call = Callable[[Queue], Awaitable[Any]]
BIG = 1_000_000


def _enqueue(ids: Any, **kw: Any) -> Call:
    kw.setdefault("entity_type", "company")
    kw.setdefault("provider", "p")
    return lambda q: q.enqueue_job(ids, **kw)


def _many_then(bad: object, n: int = BIG) -> Callable[[], Iterator[object]]:
    def gen() -> Iterator[object]:
        for i in range(n - 1):
            yield f"id-{i}"
        yield bad

    return gen


def _raises_midway() -> Iterator[str]:
    yield "fine-1"
    yield "fine-2"
    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


SURROGATE = b"caf\xe9".decode("utf-8", "surrogateescape")  # what os.fsdecode gives for Latin-1 bytes

# (label, call, error type, a fragment the message must contain)
ENQUEUE_CASES: list[tuple[str, Call, type[ChunkqError], str]] = [
    ("empty list", _enqueue([]), InvalidInput, "no entity IDs"),
    ("empty generator", _enqueue(iter([])), InvalidInput, "no entity IDs"),
    ("blank ID", _enqueue(["a", ""]), InvalidInput, "#2 is blank"),
    ("whitespace ID", _enqueue(["a", "b", " \t\n "]), InvalidInput, "#3 is blank"),
    ("ideographic-space ID", _enqueue(["\u3000"]), InvalidInput, "blank"),
    ("int ID", _enqueue(["a", 42]), InvalidInput, "#2 is int"),
    ("None ID", _enqueue([None]), InvalidInput, "NoneType"),
    ("bytes ID", _enqueue([b"abc"]), InvalidInput, "bytes"),
    ("float ID", _enqueue([1.5]), InvalidInput, "float"),
    ("nested list ID", _enqueue([["a"]]), InvalidInput, "list"),
    ("10 KB ID", _enqueue(["ok", "x" * 10_240]), InvalidInput, "10,240 characters"),
    ("NUL byte", _enqueue(["a\x00b"]), InvalidInput, "NUL"),
    ("invalid UTF-8 (surrogate escape)", _enqueue(["ok", SURROGATE]), InvalidInput, "not valid UTF-8"),
    ("lone surrogate", _enqueue(["\ud800"]), InvalidInput, "not valid UTF-8"),
    ("a string, not a list", _enqueue("abc"), InvalidInput, "not a single string"),
    ("bytes, not a list", _enqueue(b"abc"), InvalidInput, "not a single string"),
    ("None, not a list", _enqueue(None), InvalidInput, "NoneType"),
    ("int, not a list", _enqueue(7), InvalidInput, "int"),
    ("chunk size 0", _enqueue(["a"], chunk_size=0), InvalidInput, "chunk_size"),
    ("chunk size -1", _enqueue(["a"], chunk_size=-1), InvalidInput, "chunk_size"),
    ("chunk size huge", _enqueue(["a"], chunk_size=10**12), InvalidInput, "chunk_size"),
    ("chunk size max+1", _enqueue(["a"], chunk_size=MAX_CHUNK_SIZE + 1), InvalidInput, "chunk_size"),
    ("chunk size 2.5", _enqueue(["a"], chunk_size=2.5), InvalidInput, "chunk_size"),
    ("chunk size '10'", _enqueue(["a"], chunk_size="10"), InvalidInput, "chunk_size"),
    ("chunk size True", _enqueue(["a"], chunk_size=True), InvalidInput, "chunk_size"),
    ("blank entity type", _enqueue(["a"], entity_type="  "), InvalidInput, "entity_type"),
    ("None provider", _enqueue(["a"], provider=None), InvalidInput, "provider"),
    ("NUL in provider", _enqueue(["a"], provider="p\x00"), InvalidInput, "provider"),
    ("huge priority", _enqueue(["a"], priority=10**9), InvalidInput, "priority"),
    ("max_workers 0", _enqueue(["a"], max_workers=0), InvalidInput, "max_workers"),
    ("max_attempts 0", _enqueue(["a"], max_attempts=0), InvalidInput, "max_attempts"),
    ("max_errors -1", _enqueue(["a"], max_errors=-1), InvalidInput, "max_errors"),
    ("max_error_ratio 1.5", _enqueue(["a"], max_error_ratio=1.5), InvalidInput, "max_error_ratio"),
    ("max_error_ratio NaN", _enqueue(["a"], max_error_ratio=math.nan), InvalidInput, "max_error_ratio"),
    ("name of 300 chars", _enqueue(["a"], name="n" * 300), InvalidInput, "name"),
    ("params not a dict", _enqueue(["a"], params=["x"]), InvalidInput, "params"),
    ("params not JSON", _enqueue(["a"], params={"client": object()}), InvalidInput, "params"),
    ("params with NaN", _enqueue(["a"], params={"rate": math.nan}), InvalidInput, "params"),
    # untrusted text (tests/reliability/test_untrusted_text.py fuzzes every entry point)
    ("escape sequence in an ID", _enqueue(["a", "b\x1b]2;x\x07"]), InvalidInput, "#2 contains a control"),
    ("C1 control in an ID", _enqueue(["a\x9bb"]), InvalidInput, "#1 contains a control"),
    ("escape sequence in name", _enqueue(["a"], name="\x1b[31mred"), InvalidInput, "name contains a control"),
    ("lone surrogate in provider", _enqueue(["a"], provider="p\ud800"), InvalidInput, "provider is not valid"),
    ("lone surrogate in entity type", _enqueue(["a"], entity_type=SURROGATE), InvalidInput, "entity_type"),
    ("lone surrogate in params", _enqueue(["a"], params={"k": ["\udcff"]}), InvalidInput, "params['k'][0]"),
    ("lone surrogate in a params key", _enqueue(["a"], params={"\ud800": 1}), InvalidInput, "a key of params"),
    ("NUL in params", _enqueue(["a"], params={"k": "a\x00b"}), InvalidInput, "params['k'] contains a NUL"),
]

UNKNOWN = 987_654
UNKNOWN_JOB_CASES: list[tuple[str, Call]] = [
    ("get_job", lambda q: q.get_job(UNKNOWN)),
    ("pause", lambda q: q.pause(UNKNOWN)),
    ("resume", lambda q: q.resume(UNKNOWN)),
    ("cancel", lambda q: q.cancel(UNKNOWN)),
    ("retry_failed", lambda q: q.retry_failed(UNKNOWN)),
    ("requeue_failed", lambda q: q.requeue_failed(UNKNOWN)),
    ("list_errors", lambda q: q.list_errors(UNKNOWN)),
    ("group_errors", lambda q: q.group_errors(UNKNOWN)),
    ("list_chunks", lambda q: q.list_chunks(UNKNOWN)),
    ("process_chunk", lambda q: q.process_chunk(UNKNOWN)),
    ("dry_run", lambda q: q.dry_run(UNKNOWN)),
    ("iter_errors", lambda q: _drain(q.iter_errors(UNKNOWN))),
]

BAD_IDS: list[object] = [0, -1, "1", None, True, 1.5, 2**63]


async def _drain(it: Any) -> list[Any]:
    return [x async for x in it]


async def _seed(q: Queue) -> list[int]:
    """A database with history: a finished job with errors, a running one, a paused one."""

    def cb(entity_id: str, _job: Any) -> None:
        if entity_id.endswith("3"):
            raise ValueError(f"no match for {entity_id}")

    a = await q.enqueue_job([f"a{i}" for i in range(12)], entity_type="company", provider="p", chunk_size=5)
    while (await q.get_job(a.id)).status != "complete":
        await q.process_chunk(a.id, cb)
    b = await q.enqueue_job([f"b{i}" for i in range(30)], entity_type="person", provider="q", chunk_size=10,
                            name="half done")
    await q.process_chunk(b.id, cb)
    c = await q.enqueue_job(["c1", "c2"], entity_type="url", provider="r", params={"k": [1, 2]})
    await q.pause(c.id)
    d = await q.enqueue_job(["d1"], entity_type="url", provider="r")
    await q.process_chunk(d.id, lambda e, j: None)  # complete, no failures
    return [a.id, b.id, c.id, d.id]


def _clear(exc: BaseException, fragment: str) -> str:
    text = str(exc)
    assert isinstance(exc, ChunkqError), f"{type(exc).__name__} is not a ChunkqError: {text}"
    assert text and "\n" not in text, f"not one line: {text!r}"
    assert "Traceback" not in text and "[SQL" not in text, text
    assert fragment.lower() in text.lower(), f"{fragment!r} not in {text!r}"
    return text


async def _rejected(
    q: Queue, call: Call, exc_type: type[BaseException], fragment: str, label: str, *, compare: bool = True
) -> str:
    before = await dump(q) if compare else None
    try:
        await call(q)
    except exc_type as exc:
        message = _clear(exc, fragment)
    except BaseException as exc:
        raise AssertionError(f"{label}: expected {exc_type.__name__}, got {type(exc).__name__}: {exc}") from exc
    else:
        raise AssertionError(f"{label}: accepted")
    if compare:
        assert await dump(q) == before, f"{label}: the database changed"
    return message


@pytest.mark.slow
async def test_bad_enqueue_input_changes_nothing(queue: Queue) -> None:
    await _seed(queue)
    for label, call, exc_type, fragment in ENQUEUE_CASES:
        await _rejected(queue, call, exc_type, fragment, label)
    print(f"\n[bad input {backend(queue.url)}] {len(ENQUEUE_CASES)} enqueue cases rejected, database unchanged")


@pytest.mark.slow
async def test_a_million_ids_that_go_bad_at_the_end_create_nothing(queue: Queue) -> None:
    await _seed(queue)
    # One million IDs, the last one blank: validated and inserted in batches, then all rolled back.
    await _rejected(queue, _enqueue(_many_then("   ")()), InvalidInput, f"#{BIG} is blank", "1M then blank")
    n = BIG if SOAK > 1 else 10_000
    await _rejected(queue, _enqueue(_many_then(123, n)()), InvalidInput, f"#{n} is int", f"{n:,} then an int")
    # The caller's own generator failing is the caller's exception, and still nothing is created.
    before = await dump(queue)
    with pytest.raises(UnicodeDecodeError):
        await queue.enqueue_job(_raises_midway(), entity_type="company", provider="p")
    assert await dump(queue) == before


@pytest.mark.slow
async def test_unknown_and_malformed_job_ids(queue: Queue) -> None:
    ids = await _seed(queue)
    for label, call in UNKNOWN_JOB_CASES:
        await _rejected(queue, call, JobNotFound, str(UNKNOWN), f"{label}(unknown)")
    n = 0
    before = await dump(queue)  # malformed ids never reach the database: one comparison for all of them
    for bad in BAD_IDS:
        for name in ("get_job", "pause", "resume", "cancel", "retry_failed", "list_errors", "list_chunks",
                     "process_chunk"):
            await _rejected(queue, lambda q, name=name, bad=bad: getattr(q, name)(bad), InvalidInput,
                            "job id", f"{name}({bad!r})", compare=False)
            n += 1
    assert await dump(queue) == before
    for bad_error in (UNKNOWN, 0, "x"):
        await _rejected(queue, lambda q, e=bad_error: q.get_error(e), InvalidInput, "error", f"get_error({bad_error})")
        await _rejected(queue, lambda q, e=bad_error: q.retry_entity(e), InvalidInput, "error",
                        f"retry_entity({bad_error})")
    a, b, c, d = ids
    transitions: list[tuple[str, Call, type[ChunkqError], str]] = [
        ("resume a pending job", lambda q: q.resume(b), InvalidTransition, "pending"),
        ("pause a complete job", lambda q: q.pause(a), InvalidTransition, "complete"),
        ("cancel a complete job", lambda q: q.cancel(a), InvalidTransition, "complete"),
        ("process a paused job", lambda q: q.process_chunk(c), InvalidTransition, "paused"),
        ("retry a job with no failures", lambda q: q.retry_failed(d), InvalidInput, "no failed entities"),
        ("requeue a job with no failures", lambda q: q.requeue_failed(d), InvalidInput, "no failed entities"),
        ("unknown status filter", lambda q: q.list_jobs(status="done"), InvalidInput, "unknown status"),
        ("negative limit", lambda q: q.list_jobs(limit=-1), InvalidInput, "limit"),
        ("negative error offset", lambda q: q.list_errors(a, offset=-5), InvalidInput, "offset"),
    ]
    for label, call, exc_type, fragment in transitions:
        await _rejected(queue, call, exc_type, fragment, label)
    print(f"\n[bad input {backend(queue.url)}] {len(UNKNOWN_JOB_CASES)} unknown-id calls, {n} malformed ids, "
          f"{len(transitions) + 6} bad transitions/lookups: all rejected, database unchanged")


def test_bad_database_urls_and_settings(tmp_path: Path) -> None:
    async def run() -> None:
        for url, fragment in (("mysql://u@h/db", "unsupported database"),
                              ("sqlite:///:memory:", "in-memory"),
                              (str(tmp_path / "no" / "such" / "dir" / "x.db"), "does not exist"),
                              ("postgresql://u@[::1", "not a valid URL")):
            with pytest.raises(InvalidInput) as err:
                async with Queue(url):
                    pass
            _clear(err.value, fragment)
        with pytest.raises(InvalidInput) as err:
            Queue(str(tmp_path / "x.db"), lease_seconds=0)
        _clear(err.value, "lease_seconds")
        with pytest.raises(DatabaseUnavailable) as err2:  # nothing listens on port 1
            async with Queue("postgresql://postgres@127.0.0.1:1/none"):
                pass
        _clear(err2.value, "127.0.0.1")
        assert not (tmp_path / "no").exists()

    asyncio.run(asyncio.wait_for(run(), 60))


# ---------------------------------------------------------------------- processor paths

MODULES = {
    "rel_not_callable": "VALUE = 5\n",
    "rel_raises": "raise RuntimeError('provider SDK needs an API key')\n",
    "rel_syntax": "def broken(:\n    pass\n",
    "rel_exits": "import sys\nsys.exit(3)\n",
    "rel_bad_dep": "import rel_no_such_dependency_xyz\n",
}

PROCESSOR_CASES = [
    ("rel_no_such_module_xyz:fn", "no module named"),
    ("json:no_such_function", "has no attribute 'no_such_function'"),
    ("rel_not_callable:VALUE", "not a callable"),
    ("rel_raises:fn", "RuntimeError: provider SDK needs an API key"),
    ("rel_syntax:broken", "syntax error"),
    ("rel_exits:fn", "SystemExit"),
    ("rel_bad_dep:fn", "rel_no_such_dependency_xyz"),
    ("json", "package.module:function"),
    ("json:", "package.module:function"),
    (":fn", "package.module:function"),
    ("a:b:c", "package.module:function"),
    ("", "package.module:function"),
]


def test_processor_paths_that_cannot_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> None:
    for name, src in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(tmp_path))

    async def snapshot() -> Any:
        async with Queue(sqlite_url) as q:
            if not await q.count_jobs():
                await _seed(q)
            return await dump(q)

    before = asyncio.run(snapshot())
    for path, fragment in PROCESSOR_CASES:
        with pytest.raises(ProcessorError) as err:
            load_processor(path)
        _clear(err.value, fragment)
    assert asyncio.run(snapshot()) == before
    print(f"\n[bad input] {len(PROCESSOR_CASES)} processor paths rejected with ProcessorError")


# ---------------------------------------------------------------------- callback faults


def _ki(entity_id: str, _job: Any) -> None:
    if entity_id == "e2":
        raise KeyboardInterrupt
    if entity_id == "e4":
        raise SystemExit(3)


async def _ki_async(entity_id: str, job: Any) -> None:
    await asyncio.sleep(0)
    _ki(entity_id, job)


def _ki_batch(ids: list[str], _job: Any) -> dict[str, Any]:
    if "e12" in ids:
        raise SystemExit("batch provider exited")
    return {"e2": KeyboardInterrupt(), "e4": SystemExit(3)} if "e2" in ids else {}


@pytest.mark.parametrize("style", ["sync", "async", "threads", "batch"])
async def test_callback_raising_base_exceptions_is_recorded_and_the_job_goes_on(queue: Queue, style: str) -> None:
    proc = {
        "sync": Processor(on_process=_ki),
        "async": Processor(on_process=_ki_async, concurrency=3),
        "threads": Processor(on_process=_ki, concurrency=2),
        "batch": Processor(on_chunk=_ki_batch),
    }[style]
    job = await queue.enqueue_job([f"e{i}" for i in range(15)], entity_type="company", provider="p", chunk_size=5)
    try:
        while await queue.process_next_chunk(proc) is not None:
            pass
    except (KeyboardInterrupt, SystemExit) as exc:  # pragma: no cover - the bug this test is for
        pytest.fail(f"{type(exc).__name__} escaped the chunk")
    j = await queue.get_job(job.id)
    errors = {e.entity_id: e for e in await queue.list_errors(job.id)}
    assert j.status == "complete" and j.processed_count == 15
    assert errors["e2"].error_type == "KeyboardInterrupt" and errors["e4"].error_type == "SystemExit"
    if style == "batch":
        assert {e for e, x in errors.items() if x.error_type == "SystemExit"} >= {f"e{i}" for i in range(10, 15)}
    else:
        assert set(errors) == {"e2", "e4"} and j.succeeded_count == 13
    assert all(e.final for e in errors.values()), "a BaseException is no reason to retry"


async def test_callback_that_never_returns_times_out_per_entity(queue: Queue) -> None:
    release = threading.Event()

    async def hangs_async(entity_id: str, _job: Any) -> None:
        if entity_id == "e1":
            await asyncio.Event().wait()

    def hangs_sync(entity_id: str, _job: Any) -> None:
        if entity_id == "e3":
            release.wait(30)

    try:
        for proc in (Processor(on_process=hangs_async, timeout=0.3), Processor(on_process=hangs_sync, timeout=0.3)):
            job = await queue.enqueue_job([f"e{i}" for i in range(5)], entity_type="company", provider="p")
            r = await asyncio.wait_for(queue.process_chunk(job.id, proc), 20)
            assert r is not None and r.committed and r.status == "complete"
            errors = await queue.list_errors(job.id)
            assert [(e.entity_id, e.error_type) for e in errors] in (
                [("e1", "TimeoutError")], [("e3", "TimeoutError")])
            assert "timed out after 0.3s" in errors[0].message
            assert (await queue.get_job(job.id)).succeeded_count == 4
    finally:
        release.set()


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_aborting_a_worker_stuck_in_a_callback_releases_its_lease(db_url: str, kind: str) -> None:
    entered, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    async def hang_async(entity_id: str, _job: Any) -> None:
        if entity_id == "e2":
            entered.set()
            await asyncio.Event().wait()

    def hang_sync(entity_id: str, _job: Any) -> None:
        if entity_id == "e2":
            loop.call_soon_threadsafe(entered.set)
            release.wait(30)

    async with Queue(db_url, lease_seconds=300, owner="stuck:1:a") as stuck, \
            Queue(db_url, lease_seconds=300, owner="fresh:2:b") as fresh:
        job = await stuck.enqueue_job([f"e{i}" for i in range(6)], entity_type="company", provider="p",
                                      chunk_size=3)
        worker = Worker(stuck, hang_async if kind == "async" else hang_sync)
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(entered.wait(), 20)
            worker.abort()
            summary = await asyncio.wait_for(task, 20)
        finally:
            release.set()
        assert summary.stopped_by == "aborted"
        held = await fresh.list_chunks(job.id)
        assert [c.chunk_index for c in held] in ([0], [0, 1])  # the window may hold the next chunk too
        for chunk in held:  # every lease the aborted worker held is given back
            assert chunk.state == "leased" and chunk.lease_expires_at is not None
            assert chunk.lease_expires_at.timestamp() < fresh.now(), "the lease was not released"
        # Another worker takes the chunk over at once, not after the 300 s lease.
        seen: list[str] = []
        r = await fresh.process_next_chunk(lambda e, _j: seen.append(e))
        assert r is not None and r.chunk_index == 0 and r.committed
        assert seen == ["e0", "e1", "e2"]
        while await fresh.process_next_chunk(lambda e, _j: None):
            pass
        j = await fresh.get_job(job.id)
        assert (j.status, j.processed_count, j.error_count) == ("complete", 6, 0)
        assert [c.attempt for c in await fresh.list_chunks(job.id)] == [2] * len(held) + [1] * (2 - len(held))


def test_soak_scale_is_sane() -> None:
    assert SOAK >= 1
