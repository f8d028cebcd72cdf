"""Tracebacks that stay true (issue 16): source kept at capture, recursion collapsed, ExceptionGroup
members, empty messages, and chunkq's own frames left out."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from chunkq.core import Queue, TraceFrame
from chunkq.core import rows as core_rows
from chunkq.core.tracebacks import (
    FRAMES_MAX,
    INNER_KEEP,
    NO_MESSAGE,
    bound_frames,
    capture_stacks,
    describe,
    format_exception,
    message,
    source_digest,
)


def _raised(fn, *args):
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def walk(n: int) -> None:
    if n == 0:
        raise ValueError("bottom")
    walk(n - 1)


def caller() -> None:
    walk(300)


def ping(n: int) -> None:
    if n == 0:
        raise KeyError("deep")
    pong(n - 1)


def pong(n: int) -> None:
    ping(n - 1)


def test_deep_recursion_keeps_the_caller_and_the_innermost_frames() -> None:
    (stack,) = capture_stacks(_raised(caller))
    names = [f.name for f in stack.frames]
    assert names[:3] == ["_raised", "caller", "walk"]  # the outermost frames, down to the recursion's start
    marker = stack.frames[3]
    assert marker.repeated == 301 - 1 - INNER_KEEP and marker.name == f"<{marker.repeated} repeated frames of walk>"
    assert marker.filename == "" and marker.lineno == 0
    assert names[4:] == ["walk"] * INNER_KEEP  # the innermost frames, as they were
    assert sum(f.repeated or 1 for f in stack.frames if f.name != "_raised" and f.name != "caller") == 301
    assert sum(1 for f in stack.frames if f.repeated) == 1


def test_mutual_recursion_collapses_as_one_block() -> None:
    (stack,) = capture_stacks(_raised(ping, 200))
    markers = [f for f in stack.frames if f.repeated]
    assert len(markers) == 1 and markers[0].name.endswith("repeated frames of ping and pong>")
    assert len(stack.frames) < 20
    assert sum(f.repeated or 1 for f in stack.frames) == 202  # _raised + 201 calls of ping/pong


def test_a_real_recursion_error_is_stored_short_with_the_callback_frame_first(sqlite_url: str) -> None:
    import asyncio

    def forever(eid: str, _job: object) -> None:
        def down(n: int) -> int:
            return down(n + 1) + 1
        down(0)

    async def go() -> None:
        async with Queue(sqlite_url) as q:
            job = await q.enqueue_job(["ent1"], entity_type="t", provider="p")
            await q.process_next_chunk(forever)
            (err,) = await q.list_errors(job.id)
            assert err.error_type == "RecursionError"
            frames = err.stacks[-1].frames
            assert len(frames) <= FRAMES_MAX
            # chunkq's runner and the thread machinery above the callback are left out
            assert frames[0].name == "forever" and frames[0].filename == __file__
            assert [f.name for f in frames[1:2]] == ["down"]
            (marker,) = [f for f in frames if f.repeated]
            assert marker.repeated > 500 and "down" in marker.name

    asyncio.run(go())


def test_bound_frames_keeps_the_head_down_to_the_first_user_frame_and_the_tail() -> None:
    lib = f"{sys.prefix}/lib/python3.11/site-packages/lib/x.py"
    frames = [TraceFrame(lib, i, f"lib{i}", "") for i in range(2)]
    frames += [TraceFrame("/app/job.py", i, f"f{i}", "") for i in range(2, 100)]
    kept = bound_frames(frames)
    assert len(kept) == FRAMES_MAX
    assert [f.name for f in kept[:3]] == ["lib0", "lib1", "f2"]
    assert kept[3].repeated == 100 - 3 - (FRAMES_MAX - 4)
    assert [f.name for f in kept[4:]] == [f"f{i}" for i in range(100 - (FRAMES_MAX - 4), 100)]
    assert bound_frames(frames[:10]) == tuple(frames[:10])


def _group() -> None:
    raise ExceptionGroup("many failed", [ValueError("a"), KeyError("b"),
                                         ExceptionGroup("inner", [OSError("c")])])


def test_exception_group_members_are_captured_and_stored() -> None:
    (stack,) = capture_stacks(_raised(_group))
    assert stack.exc_type == "ExceptionGroup"
    assert [(m.exc_type, m.exc_value) for m in stack.members] == [
        ("ValueError", "a"), ("KeyError", "'b'"), ("ExceptionGroup", "inner (1 sub-exception)")]
    assert [(m.exc_type, m.exc_value) for m in stack.members[2].members] == [("OSError", "c")]
    stored = json.loads(json.dumps(core_rows.stacks_json([stack])))
    assert core_rows.stacks(stored) == (stack,)
    big = _raised(lambda: (_ for _ in ()).throw(ExceptionGroup("big", [ValueError(str(i)) for i in range(30)])))
    (stack,) = capture_stacks(big)
    assert len(stack.members) == 10  # bounded: the group's message still says how many


def test_an_empty_message_reads_type_no_message() -> None:
    exc = _raised(lambda: (_ for _ in ()).throw(ValueError("")))
    assert message(exc) == NO_MESSAGE
    assert describe("ValueError", message(exc)) == "ValueError (no message)"
    assert describe("ValueError", "boom") == "ValueError: boom"
    text = format_exception(exc)
    assert text.endswith("\nValueError (no message)") and "ValueError: ValueError" not in text
    (stack,) = capture_stacks(exc)
    assert stack.exc_value == ""  # what it really said
    assert format_exception(_raised(lambda: (_ for _ in ()).throw(ValueError("x")))).endswith("ValueError: x")


async def test_an_empty_message_is_stored_as_no_message(db_url: str) -> None:
    def cb(eid: str, _job: object) -> None:
        raise ValueError("")

    async with Queue(db_url) as q:
        job = await q.enqueue_job(["ent1"], entity_type="t", provider="p")
        await q.process_next_chunk(cb)
        (err,) = await q.list_errors(job.id)
        assert (err.error_type, err.message) == ("ValueError", NO_MESSAGE)
        assert err.traceback.endswith("ValueError (no message)")
        (group,) = await q.group_errors(job.id)
        assert group.message == NO_MESSAGE


MODULE_V1 = '''\
def fetch(entity_id):
    data = {"id": entity_id}
    # the bug
    return data["email"]
'''
MODULE_V2 = '''\
def fetch(entity_id):
    data = {"id": entity_id, "email": None}
    # fixed: data now always has an email, and this comment is longer
    return data.get("email")
'''


def test_source_lines_are_those_of_the_failure_and_a_changed_file_is_told(tmp_path: Path) -> None:
    path = tmp_path / "usermod.py"
    path.write_text(MODULE_V1)
    spec = importlib.util.spec_from_file_location("usermod_v1", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (stack,) = capture_stacks(_raised(mod.fetch, "ent1"))
    frame = stack.frames[-1]
    assert (frame.filename, frame.lineno, frame.line) == (str(path), 4, 'return data["email"]')
    assert frame.context_start == 1
    assert frame.context == tuple(MODULE_V1.splitlines())
    assert frame.context[frame.lineno - frame.context_start] == '    return data["email"]'
    assert frame.source_digest is not None and frame.source_digest == source_digest(str(path))
    stored = core_rows.stacks(json.loads(json.dumps(core_rows.stacks_json([stack]))))
    assert stored[-1].frames[-1] == frame

    path.write_text(MODULE_V2)  # the fix lands; the stored error still shows what failed
    assert source_digest(str(path)) not in (None, frame.source_digest)
    assert stored[-1].frames[-1].context[3] == '    return data["email"]'
    path.unlink()
    assert source_digest(str(path)) is None


def test_library_frames_keep_their_line_but_no_context() -> None:
    exc = _raised(json.loads, "{bad")
    (stack,) = capture_stacks(exc)
    lib = [f for f in stack.frames if "json" in f.filename]
    assert lib and all(f.context == () and f.source_digest is None and f.line for f in lib)
    mine = [f for f in stack.frames if f.filename == __file__]
    assert mine and all(f.context and f.source_digest for f in mine)


def test_tracebacks_stored_before_context_existed_still_read() -> None:
    old = [{"exc_type": "KeyError", "exc_value": "'x'", "is_cause": False,
            "frames": [{"filename": "/app/a.py", "lineno": 3, "name": "f", "line": "d['x']", "locals": None}]}]
    (stack,) = core_rows.stacks(old)
    (frame,) = stack.frames
    assert (frame.line, frame.context, frame.context_start, frame.source_digest, frame.repeated) == (
        "d['x']", (), 0, None, 0)
    assert stack.members == ()
    assert core_rows.stacks(None) == () and core_rows.stacks([{"exc_type": "E", "members": "junk"}])[0].members == ()


@pytest.mark.parametrize("depth", [5, 40])
def test_shallow_recursion_is_left_alone_when_it_fits_the_innermost_frames(depth: int) -> None:
    (stack,) = capture_stacks(_raised(walk, depth))
    collapsed = any(f.repeated for f in stack.frames)
    assert collapsed == (depth + 1 > INNER_KEEP + 2)
    assert sum(f.repeated or 1 for f in stack.frames) == depth + 2


async def test_the_printed_traceback_starts_at_the_callback_too(db_url: str) -> None:
    def cb(eid: str, _job: object) -> None:
        try:
            {}["x"]
        except KeyError as exc:
            raise ValueError("wrapped") from exc

    async with Queue(db_url) as q:
        job = await q.enqueue_job(["ent1"], entity_type="t", provider="p")
        await q.process_next_chunk(cb)
        (err,) = await q.list_errors(job.id)
        assert "runner.py" not in err.traceback and "callbacks.py" not in err.traceback
        assert err.traceback.count(", in cb") == 2 and err.traceback.endswith("ValueError: wrapped")
        assert "The above exception was the direct cause" in err.traceback
        assert [st.frames[0].name for st in err.stacks] == ["cb", "cb"]
