"""Each entity's own output (issue 28): what the callback printed and logged, kept with its error.

Real queues on both backends; the callbacks are plain functions here (the runner
is the same for a processor module loaded by path).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import pytest
from chunkq.core import EntityResult, JobFailed, Processor, Queue, capture

log = logging.getLogger("chunkq_test_provider")


async def _run(url: str, processor: Processor | Any, ids: list[str]) -> tuple[Queue, int, list[EntityResult]]:
    q = Queue(url)
    await q.open()
    job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=len(ids))
    seen: list[EntityResult] = []
    await q.process_chunk(job.id, processor, on_entity=seen.append)
    return q, job.id, seen


async def _stored(q: Queue, job_id: int) -> dict[str, str | None]:
    """entity ID -> the output stored with its error (read one by one: a page leaves it out)."""
    listed = await q.list_errors(job_id, limit=100)
    assert all(e.output is None for e in listed), "a page of the log never carries the output"
    return {e.entity_id: (await q.get_error(e.id)).output for e in listed}


def noisy(entity_id: str, job: object) -> None:
    print(f"looking up {entity_id}")
    sys.stderr.write(f"stderr about {entity_id}\n")
    log.warning("provider slow for %s", entity_id)
    if entity_id.endswith("3"):
        raise LookupError(f"no match for {entity_id}")


async def test_a_sync_callbacks_output_is_stored_with_its_error(db_url: str) -> None:
    q, job_id, seen = await _run(db_url, noisy, ["e1", "e2", "e3"])
    try:
        stored = await _stored(q, job_id)
        assert stored == {"e3": "looking up e3\nstderr about e3\nWARNING chunkq_test_provider: provider slow for e3"}
        # successes carry theirs in the live report (dry runs and steps show it)
        by_id = {r.entity_id: r for r in seen}
        assert by_id["e1"].output == ("looking up e1\nstderr about e1\n"
                                      "WARNING chunkq_test_provider: provider slow for e1")
        assert by_id["e3"].output == stored["e3"]
    finally:
        await q.close()


async def test_a_quiet_callback_stores_nothing(sqlite_url: str) -> None:
    def quiet(entity_id: str, job: object) -> None:
        raise ValueError("bad")

    q, job_id, seen = await _run(sqlite_url, quiet, ["a", "b"])
    try:
        assert set((await _stored(q, job_id)).values()) == {None}
        assert all(r.output is None for r in seen)
    finally:
        await q.close()


async def test_async_callbacks_at_once_keep_their_output_apart(sqlite_url: str) -> None:
    """Tasks interleave: each entity's lines are its own, and ``asyncio.to_thread`` copies the context."""

    async def interleaved(entity_id: str, job: object) -> None:
        print(f"{entity_id} start")
        await asyncio.sleep(0.01)
        await asyncio.to_thread(print, f"{entity_id} from to_thread")
        log.warning("%s logged", entity_id)
        raise RuntimeError(entity_id)

    ids = [f"a{i}" for i in range(6)]
    q, job_id, _seen = await _run(sqlite_url, Processor(on_process=interleaved, concurrency=6), ids)
    try:
        stored = await _stored(q, job_id)
        assert stored == {i: f"{i} start\n{i} from to_thread\nWARNING chunkq_test_provider: {i} logged" for i in ids}
    finally:
        await q.close()


async def test_sync_callbacks_on_several_threads_keep_their_output_apart(sqlite_url: str) -> None:
    barrier = threading.Barrier(3, timeout=10)

    def together(entity_id: str, job: object) -> None:
        print(f"{entity_id} before")
        barrier.wait()  # all three are running at once, on three threads
        print(f"{entity_id} after")
        raise RuntimeError(entity_id)

    ids = ["t0", "t1", "t2"]
    q, job_id, _seen = await _run(sqlite_url, Processor(on_process=together, concurrency=3), ids)
    try:
        assert await _stored(q, job_id) == {i: f"{i} before\n{i} after" for i in ids}
    finally:
        await q.close()


async def test_a_plain_thread_the_callback_starts_writes_to_the_process_stream(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No context travels with a ``threading.Thread``: its output is nobody's entity's (documented)."""

    def with_thread(entity_id: str, job: object) -> None:
        print(f"{entity_id} itself")
        t = threading.Thread(target=print, args=(f"{entity_id} from a plain thread",))
        t.start()
        t.join()
        raise RuntimeError(entity_id)

    q, job_id, _seen = await _run(sqlite_url, with_thread, ["p1"])
    try:
        assert await _stored(q, job_id) == {"p1": "p1 itself"}
        assert "p1 from a plain thread" in capsys.readouterr().out
    finally:
        await q.close()


async def test_a_batch_callbacks_output_is_kept_with_each_failed_entity(db_url: str) -> None:
    def batch(ids: list[str], job: object) -> dict[str, str]:
        print(f"batch of {len(ids)}")
        log.warning("bulk API answered 207")
        return {i: "not found" for i in ids if i.endswith("2")}

    q, job_id, seen = await _run(db_url, Processor(on_chunk=batch), ["b1", "b2", "c2"])
    try:
        chunk_output = "batch of 3\nWARNING chunkq_test_provider: bulk API answered 207"
        assert await _stored(q, job_id) == {"b2": chunk_output, "c2": chunk_output}
        assert {r.entity_id: r.output for r in seen if r.ok} == {"b1": chunk_output}
    finally:
        await q.close()


async def test_a_callback_that_logs_a_megabyte_stores_the_bounded_tail(db_url: str) -> None:
    def chatty(entity_id: str, job: object) -> None:
        line = "x" * 1000
        for i in range(1024):  # ~1 MB through print and logging
            (print if i % 2 else log.warning)(f"{i:04d} {line}")
        raise RuntimeError("after a megabyte")

    q, job_id, _seen = await _run(db_url, chatty, ["big"])
    try:
        output = (await _stored(q, job_id))["big"]
        assert output is not None
        assert len(output) <= capture.MAX_BYTES + 100
        first, *rest = output.split("\n")
        assert first.startswith("[output truncated: ") and "earlier lines dropped]" in first
        assert rest[-1].startswith("1023 "), "the last lines are the ones kept"
        assert len(rest) <= capture.MAX_LINES
    finally:
        await q.close()


async def test_many_short_lines_keep_the_last_200(sqlite_url: str) -> None:
    def lines(entity_id: str, job: object) -> None:
        for i in range(1000):
            print(i)
        raise RuntimeError("done")

    q, job_id, _seen = await _run(sqlite_url, lines, ["n"])
    try:
        output = (await _stored(q, job_id))["n"]
        assert output is not None
        assert output.split("\n") == ["[output truncated: 800 earlier lines dropped]",
                                      *(str(i) for i in range(800, 1000))]
    finally:
        await q.close()


async def test_the_entity_that_fails_the_job_keeps_its_output(sqlite_url: str) -> None:
    def revoked(entity_id: str, job: object) -> None:
        print("calling the provider")
        raise JobFailed("401: key revoked")

    q, job_id, _seen = await _run(sqlite_url, revoked, ["k"])
    try:
        job = await q.get_job(job_id)
        assert job.status == "failed" and job.reason_error_id is not None
        assert (await q.get_error(job.reason_error_id)).output == "calling the provider"
    finally:
        await q.close()


async def test_a_users_own_stream_handler_is_not_captured_twice(sqlite_url: str) -> None:
    capture.install()  # the handler below is made afterwards: it writes into the captured stream
    handler = logging.StreamHandler()  # sys.stderr: the capture's proxy
    handler.setFormatter(logging.Formatter("user format: %(message)s"))
    log.addHandler(handler)
    try:
        def logs(entity_id: str, job: object) -> None:
            log.warning("once for %s", entity_id)
            raise RuntimeError("x")

        q, job_id, _seen = await _run(sqlite_url, logs, ["u"])
        try:
            assert await _stored(q, job_id) == {"u": "user format: once for u"}
        finally:
            await q.close()
    finally:
        log.removeHandler(handler)


async def test_a_root_handler_added_after_the_capture_is_not_captured_twice(sqlite_url: str) -> None:
    """Logging set up again after the capture was installed (a CLI run in the same process): the new
    root handler writes into the captured stream, and the capture's own handler still adds the line once."""
    capture.install()
    handler = logging.StreamHandler()  # sys.stderr: the capture's proxy
    handler.setFormatter(logging.Formatter("root format: %(message)s"))
    logging.root.addHandler(handler)  # after the capture's handler
    try:
        def logs(entity_id: str, job: object) -> None:
            log.warning("once for %s", entity_id)
            raise RuntimeError("x")

        q, job_id, _seen = await _run(sqlite_url, logs, ["r"])
        try:
            assert await _stored(q, job_id) == {"r": "root format: once for r"}
        finally:
            await q.close()
    finally:
        logging.root.removeHandler(handler)


@pytest.mark.parametrize("message", ["esc \x1b[1mbold", "bidi \u202e gnp.exe", "two\nlines\tand a tab"])
async def test_a_handler_that_escapes_controls_is_not_captured_twice(sqlite_url: str, message: str) -> None:
    """chunkq's own log lines escape controls (``\\x1b``) and write one line: the record's message, as
    the capture's handler has it, was never found in what they wrote, so the line was kept (and echoed
    to stderr) twice."""
    capture.install()
    handler = logging.StreamHandler()  # sys.stderr: the capture's proxy
    escape = str.maketrans({"\x1b": "\\x1b", "\u202e": "\\u202e", "\n": " ", "\t": " "})
    handler.setFormatter(type("Escaping", (logging.Formatter,), {
        "format": lambda self, record: "escaped: " + record.getMessage().translate(escape)})())
    log.addHandler(handler)
    try:
        def logs(entity_id: str, job: object) -> None:
            log.warning(message)
            raise RuntimeError("x")

        q, job_id, _seen = await _run(sqlite_url, logs, ["e"])
        try:
            assert await _stored(q, job_id) == {"e": "escaped: " + message.translate(escape)}
        finally:
            await q.close()
    finally:
        log.removeHandler(handler)


async def test_terminal_escapes_are_stored_as_the_text_they_colour(sqlite_url: str) -> None:
    """A coloured print or a Rich log handler: the stored output is what a reader sees, without the codes."""
    def coloured(entity_id: str, job: object) -> None:
        print(f"\x1b[33mWARNING\x1b[0m slow for \x1b[1;36m{entity_id}\x1b[0m        ")
        print("\x1b]0;a window title\x07\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ done")
        raise RuntimeError("x")

    q, job_id, _seen = await _run(sqlite_url, coloured, ["c"])
    try:
        assert await _stored(q, job_id) == {"c": "WARNING slow for c\nlink done"}
    finally:
        await q.close()


def test_outside_a_capture_writes_and_log_records_go_where_they_went(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application without logging configured still sees its warnings (logging's last resort)."""
    capture.install()
    monkeypatch.setattr(logging.root, "handlers", [capture._handler])  # not pytest's own
    print("plain print")
    logging.getLogger("chunkq_test_unconfigured").warning("to the last resort")
    out, err = capsys.readouterr()
    assert "plain print" in out
    assert "to the last resort" in err


def test_the_echo_prefixes_each_line_and_never_captures_itself() -> None:
    lines: list[tuple[str, str]] = []
    previous = capture.set_echo(lambda label, line: (lines.append((label, line)), print("echoed", line)))
    try:
        with capture.capturing("ent-1") as out:
            print("one\ntwo", end="")
            print(" and a half")
        assert lines == [("ent-1", "one"), ("ent-1", "two and a half")]
        assert out.text() == "one\ntwo and a half", "what the echo printed is nobody's output"
    finally:
        capture.set_echo(previous)
