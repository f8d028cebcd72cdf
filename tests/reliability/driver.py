"""A worker process for the reliability suites: core's API, plus hooks to be killed at.

Run as ``python -m tests.reliability.driver --db URL --record FILE ...``. The
callback appends one line per entity it handled to ``--record`` with
``O_APPEND`` (a record that survives SIGKILL and lives outside the database),
and every claim/commit is appended to ``--claims``, so the test can tell which
chunk was in flight when the process died.

Entity IDs can carry a hostile behaviour for the callback (issue 13): ``!exit``
(``os._exit``), ``!segv`` (a segfault), ``!kill`` (SIGKILL from inside, as the
OOM killer would), each recorded first; ``!block`` (``time.sleep(--block-ms)``,
which blocks the event loop when the callback is async: ``--async``).

``--hook POINT:N`` makes the process stop at the N-th occurrence of POINT, print
``AT POINT`` on stdout and hold there until it is killed (or, with
``--release-file``, until that file appears): ``callback`` (inside the user
callback, after its side effect), ``before_commit`` (all entities done, commit
not started), ``in_commit`` (inside the commit transaction, after the fenced
UPDATE of the chunk row, before COMMIT), ``in_claim`` (inside the claim
transaction, before COMMIT).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import faulthandler
import json
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any

from chunkq.core import DatabaseUnavailable, Processor, Queue, Retry, Worker

POINTS = ("callback", "before_commit", "in_commit", "in_claim")


class Hooks:
    def __init__(self, spec: str | None, release_file: str | None) -> None:
        self.point, self.at = None, 0
        if spec:
            point, _, n = spec.partition(":")
            assert point in POINTS, point
            self.point, self.at = point, int(n or 1)
        self.release_file = release_file
        self.counts = dict.fromkeys(POINTS, 0)

    def due(self, point: str) -> bool:
        if point != self.point:
            return False
        self.counts[point] += 1
        return self.counts[point] == self.at

    def announce(self, point: str) -> None:
        # the process's own stdout: inside a callback ``sys.stdout`` is the entity's captured output
        print(f"AT {point}", file=sys.__stdout__, flush=True)

    def hold_blocking(self) -> None:
        """Block the calling thread (even the event loop's) until killed or released."""
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.release_file and os.path.exists(self.release_file):
                return
            time.sleep(0.02)
        print("driver: held for 60 s and nobody killed me", file=sys.stderr, flush=True)
        os._exit(3)

    async def hold(self) -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.release_file and os.path.exists(self.release_file):
                return
            await asyncio.sleep(0.02)
        print("driver: held for 60 s and nobody killed me", file=sys.stderr, flush=True)
        os._exit(3)


def dump_stacks() -> None:
    """SIGUSR1: every thread's and every task's stack on stderr, so a driver that hangs says where
    (``_support.finish`` asks for it before it kills one that did not finish in time)."""
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


def append(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())  # one write(2) with O_APPEND: atomic between processes


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--claims", required=True)
    ap.add_argument("--lease", type=float, default=30.0)
    ap.add_argument("--hook")
    ap.add_argument("--release-file")
    ap.add_argument("--mode", choices=("finish", "worker"), default="finish")
    ap.add_argument("--work-ms", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--flags-dir", help="for '!retry' IDs: a transient failure the first time only")
    ap.add_argument("--start-file", help="wait for this file before starting (a start barrier)")
    ap.add_argument("--deadline", type=float, default=90.0)
    ap.add_argument("--async", dest="use_async", action="store_true", help="an async callback even at concurrency 1")
    ap.add_argument("--block-ms", type=float, default=1500.0, help="how long a '!block' ID blocks")
    args = ap.parse_args()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_stacks)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")

    pid = os.getpid()
    rec_fd = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    log_fd = os.open(args.claims, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    hooks = Hooks(args.hook, args.release_file)
    current: dict[str, Any] = {}
    work = args.work_ms / 1000

    def outcome(entity_id: str) -> None:
        if "!fail" in entity_id:
            raise ValueError(f"provider has no record of {entity_id}")
        if "!retry" in entity_id and args.flags_dir:
            try:
                os.close(os.open(os.path.join(args.flags_dir, entity_id), os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            raise Retry("429 Too Many Requests", after=0)

    def record(entity_id: str) -> None:
        c = current.get("claim")
        where = f"{c.job.id}\t{c.chunk_index}\t{c.attempt}" if c is not None else "-\t-\t-"
        append(rec_fd, f"{entity_id}\t{pid}\t{where}")

    def hostile(entity_id: str) -> None:
        if "!exit" in entity_id or "!segv" in entity_id or "!kill" in entity_id:
            record(entity_id)
            if "!exit" in entity_id:
                os._exit(70)
            if "!segv" in entity_id:
                ctypes.string_at(0)
            os.kill(os.getpid(), signal.SIGKILL)
        if "!block" in entity_id:
            time.sleep(args.block_ms / 1000)  # inside an async callback: the whole event loop stops

    def sync_cb(entity_id: str, job: Any) -> None:
        time.sleep(work)
        hostile(entity_id)
        outcome(entity_id)
        record(entity_id)
        if hooks.due("callback"):
            hooks.announce("callback")
            hooks.hold_blocking()

    async def async_cb(entity_id: str, job: Any) -> None:
        await asyncio.sleep(work)
        hostile(entity_id)
        outcome(entity_id)
        record(entity_id)
        if hooks.due("callback"):
            hooks.announce("callback")
            await hooks.hold()

    if args.concurrency > 1 or args.use_async:
        proc = Processor(on_process=async_cb, concurrency=args.concurrency)
    else:
        proc = Processor(on_process=sync_cb)

    async with Queue(args.db, lease_seconds=args.lease) as q:
        # the two public collaborators every way of processing goes through (core/chunk.py)
        orig_claim, orig_commit = q.claims.claim, q.committer.commit

        async def claim(job_id: int | None = None, **kw: Any) -> Any:
            c = await orig_claim(job_id, **kw)
            if c is not None:
                current["claim"] = c
                ids = ",".join(i.entity_id for i in c.items)
                append(log_fd, f"claim\t{pid}\t{c.job.id}\t{c.chunk_index}\t{c.attempt}\t{ids}")
            return c

        async def commit(c: Any, *a: Any, **kw: Any) -> Any:
            if hooks.due("before_commit"):
                hooks.announce("before_commit")
                await hooks.hold()
            try:
                r = await orig_commit(c, *a, **kw)
            except BaseException:
                append(log_fd, f"commit\t{pid}\t{c.job.id}\t{c.chunk_index}\t{c.attempt}\t-1")
                raise
            append(log_fd, f"commit\t{pid}\t{c.job.id}\t{c.chunk_index}\t{c.attempt}\t{int(r.committed)}")
            return r

        q.claims.claim = claim  # type: ignore[method-assign]
        q.committer.commit = commit  # type: ignore[method-assign]

        from sqlalchemy import event

        def _in_tx(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            sql = statement.lstrip().upper()
            if sql.startswith("UPDATE CHUNKQ_CHUNKS SET STATE"):
                point = "in_commit"
            elif sql.startswith("INSERT INTO CHUNKQ_CHUNKS"):
                point = "in_claim"
            else:
                return
            if hooks.due(point):
                hooks.announce(point)
                hooks.hold_blocking()

        # On SQLite the claim and commit run on the queue's threaded engine (issue 7).
        for engine in (q.engine.sync_engine, getattr(q, "_thread_engine", None)):
            if engine is not None:
                event.listen(engine, "after_cursor_execute", _in_tx)

        print("READY", flush=True)
        if args.start_file:
            while not os.path.exists(args.start_file):  # noqa: ASYNC110 - a cross-process barrier
                await asyncio.sleep(0.01)
        deadline = time.monotonic() + args.deadline
        summary: dict[str, Any] = {"chunks": 0, "discarded": 0}

        async def all_done() -> bool:
            return await q.count_jobs(["pending", "running", "paused"]) == 0

        if args.mode == "finish":
            while time.monotonic() < deadline:
                r = await q.process_next_chunk(proc)
                if r is not None:
                    summary["chunks" if r.committed else "discarded"] += 1
                    continue
                if await all_done():
                    break
                await asyncio.sleep(0.05)
            else:
                print("driver: deadline passed with work left", file=sys.stderr, flush=True)
                return 4
        else:
            worker = Worker(q, proc, forever=True, poll_interval=0.1, max_seconds=args.deadline)

            async def monitor() -> None:
                while not worker.stopping:
                    await asyncio.sleep(0.3)
                    try:
                        if await all_done():
                            worker.stop()
                    except DatabaseUnavailable:
                        pass
                    except Exception:  # said, never the end of the watch: the worker would then run on
                        print("driver: the monitor's read raised:\n" + traceback.format_exc(), file=sys.stderr,
                              flush=True)

            mon = asyncio.create_task(monitor())
            s = await worker.run()
            mon.cancel()
            summary = s.to_dict()
            if s.stopped_by != "signal":
                print(f"driver: worker stopped by {s.stopped_by} with work left", file=sys.stderr, flush=True)
                return 4
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
