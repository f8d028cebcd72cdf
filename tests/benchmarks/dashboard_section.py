"""Section 5: the dashboard's jobs screen, headless, with 10 and with 10,000 jobs.

* Refresh: the jobs screen's own poll (``JobsScreen.poll``: fetch from chunkq.core on a
  worker, apply to the table, repaint), driven back to back through Textual's
  Pilot, timed from ``poll()`` until the screen has counted the poll as rendered
  and the app is idle again.
* Queue totals: ``Queue.stats()``, the one aggregate over every job that the
  screen re-reads every couple of seconds.
* Idle CPU: the real ``chunkq tui`` in a pseudo-terminal, left alone for 10 s.
* Key latency during auto-run (issue 28): the job detail open on a job whose every entity
  but one fails at once (chunk 500), auto-run going, and a cursor key sent every 50 ms; timed from
  the key's arrival in the app's queue until the focused table's action ran. The baseline
  is the same key on the same screen with nothing running.
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import pty
import shutil
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

from chunkq.core import Queue

from .common import Row, ids, median, noop

IDLE_SECONDS = 10.0


async def _seed(db: Path, n_jobs: int) -> None:
    """Ten real jobs through the API (pending, paused, complete), then raw copies up to ``n_jobs``."""
    async with Queue(db) as q:
        for i in range(10):
            job = await q.enqueue_job(ids(120, f"j{i}-"), entity_type="company", provider=f"provider{i % 3}",
                                      chunk_size=50, name=f"job {i}")
            if i < 3:
                while (await q.process_chunk(job.id, noop)).status != "complete":  # type: ignore[union-attr]
                    pass
            elif i < 5:
                await q.pause(job.id)
    if n_jobs > 10:
        conn = sqlite3.connect(db)
        cols = [r[1] for r in conn.execute("PRAGMA table_info(chunkq_jobs)") if r[1] != "id"]
        names = ", ".join(cols)
        picked = ", ".join("name || ' copy ' || n" if c == "name" else c for c in cols)
        conn.execute(
            f"WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {(n_jobs - 10) // 10})"
            f" INSERT INTO chunkq_jobs ({names}) SELECT {picked} FROM chunkq_jobs, k WHERE id <= 10"
        )
        conn.commit()
        conn.close()


async def _refresh_times(db: Path, polls: int) -> list[float]:
    from chunkq.tui.dashboard.app import ChunkqApp

    app = ChunkqApp(str(db), refresh_interval=3600.0)  # the benchmark drives the polls
    times: list[float] = []
    async with app.run_test(size=(160, 50)) as pilot:

        async def until(cond) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 30
            while not cond():
                if time.monotonic() > deadline:
                    raise TimeoutError("the jobs screen did not finish a poll within 30 s")
                await asyncio.sleep(0.0005)

        await until(lambda: app.jobs_screen is not None and app.jobs_screen.polls >= 1)
        screen = app.jobs_screen
        assert screen is not None
        screen.stop_polling()
        await pilot.pause()
        for _ in range(polls):
            done = screen.polls
            t0 = time.perf_counter()
            screen.poll()
            await until(lambda done=done: screen.polls > done)  # type: ignore[misc]
            await pilot.pause()  # and repainted
            times.append(time.perf_counter() - t0)
            screen.stop_polling()
    return times


async def _stats_times(db: Path, n: int) -> list[float]:
    async with Queue(db) as q:
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            await q.stats()
            out.append(time.perf_counter() - t0)
        return out


def _idle_cpu(db: Path, seconds: float) -> float:
    """CPU seconds per second of the real dashboard process, idle in an 160×50 pseudo-terminal."""
    import psutil

    exe = shutil.which("chunkq", path=str(Path(sys.executable).parent)) or "chunkq"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50"}
    proc = subprocess.Popen([exe, "--db", str(db), "tui"], stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)

    def drain() -> None:  # a terminal that never reads would block the app's writes
        try:
            while os.read(master, 65536):
                pass
        except OSError:
            pass

    threading.Thread(target=drain, daemon=True).start()
    try:
        p = psutil.Process(proc.pid)
        time.sleep(4.0)  # start-up and first paint
        if proc.poll() is not None:
            raise RuntimeError(f"chunkq tui exited early with status {proc.returncode}")
        c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
        time.sleep(seconds)
        c1, t1 = sum(p.cpu_times()[:2]), time.monotonic()
        return (c1 - c0) / (t1 - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)


FAILING_PROCESSOR = """
def process(entity_id, job):
    if not entity_id.endswith(("000", "500")):  # one success a chunk: the circuit breaker stays shut
        raise ValueError(f"no company matches {entity_id}")
"""


async def _key_latencies(db: Path, work: Path, *, auto_run: bool, keys: int = 120) -> tuple[list[float], int]:
    """Key latencies (seconds) on the job detail; with ``auto_run``, while it processes a failing job.

    Also how many entities auto-run had got through when the last key was answered (the load was real).
    A database of its own each time: auto-run works on the one job the detail shows.
    """
    from chunkq.tui.dashboard.app import ChunkqApp
    from chunkq.tui.dashboard.screens.detail import JobDetailScreen
    from textual import events

    module = f"chunkq_bench_fail_{os.getpid()}"
    (work / f"{module}.py").write_text(FAILING_PROCESSOR)
    if str(work) not in sys.path:
        sys.path.insert(0, str(work))
    async with Queue(db) as q:
        job = await q.enqueue_job(ids(300_000 if auto_run else 1_000, "k-"), entity_type="company",
                                  provider="p", chunk_size=500, name="failing fast")
    app = ChunkqApp(str(db), processor=f"{module}:process")  # the real refresh interval
    latencies: list[float] = []
    async with app.run_test(size=(160, 45)) as pilot:

        async def until(cond, what: str, limit: float = 60.0) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + limit
            while not cond():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what} within {limit:g} s")
                await asyncio.sleep(0.001)

        await until(lambda: app.jobs_screen is not None and app.jobs_screen.polls >= 1, "no first poll")
        screen = JobDetailScreen(job.id)
        await app.push_screen(screen)
        await until(lambda: screen.loads >= 1, "the detail never loaded")
        await pilot.pause()
        table = screen.query_one("#detail-errors")
        table.focus()
        answered: list[float] = []
        cursor_down = table.action_cursor_down  # type: ignore[attr-defined]

        def probe() -> None:  # the key's action: note when it ran
            answered.append(time.perf_counter())
            cursor_down()

        table.action_cursor_down = probe  # type: ignore[attr-defined]
        if auto_run:
            app.action_toggle_auto_run()
            await until(lambda: app.auto_worker is not None and app.auto_worker.summary.entities > 0,
                        "auto-run processed nothing")
        for _ in range(keys):
            if auto_run and app.auto_worker is None:
                break  # the job ran out: what was measured stands
            n = len(answered)
            t0 = time.perf_counter()
            app.post_message(events.Key("down", None))
            await until(lambda n=n: len(answered) > n, "a key was never answered")  # type: ignore[misc]
            latencies.append(answered[-1] - t0)
            await asyncio.sleep(0.05)
        done = app.auto_worker.summary.entities if app.auto_worker is not None else -1
        if app.auto_worker is not None:
            app.action_toggle_auto_run()  # stop after the chunk in flight
        await until(lambda: app.auto_worker is None, "auto-run did not stop", 120.0)
    return latencies, done


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, math.ceil(0.95 * len(xs)) - 1)] if xs else float("nan")


def key_latency(work: Path) -> Row:
    """The issue 28 row: p95 key latency on the job detail while auto-run fails 500 entities a chunk."""
    idle, _ = asyncio.run(_key_latencies(work / "dash-keys-idle.db", work, auto_run=False, keys=60))
    t0 = time.perf_counter()
    busy, done = asyncio.run(_key_latencies(work / "dash-keys-busy.db", work, auto_run=True))
    return Row("5 dashboard", "key latency (p95), job detail during auto-run of a failing callback",
               p95(busy) * 1e3, "ms", None, "", 100.0,
               note=f"{len(busy)} keys, median {median(busy) * 1e3:.1f} ms, slowest {max(busy) * 1e3:.0f} ms; "
                    f"same key idle: p95 {p95(idle) * 1e3:.1f} ms; auto-run got through {done:,} entities "
                    f"in {time.perf_counter() - t0:.0f} s",
               extra={"key_ms_busy": [t * 1e3 for t in busy], "key_ms_idle": [t * 1e3 for t in idle]})


def dashboard(work: Path) -> list[Row]:
    small, big = work / "dash-10.db", work / "dash-10k.db"
    asyncio.run(_seed(small, 10))
    asyncio.run(_seed(big, 10_000))
    r_small = asyncio.run(_refresh_times(small, 40))
    r_big = asyncio.run(_refresh_times(big, 40))
    s_small = asyncio.run(_stats_times(small, 30))
    s_big = asyncio.run(_stats_times(big, 30))
    cpu = _idle_cpu(big, IDLE_SECONDS)
    cpu_small = _idle_cpu(small, IDLE_SECONDS)
    keys = key_latency(work)
    return [
        Row("5 dashboard", "jobs screen refresh, 10,000 jobs", median(r_big) * 1e3, "ms", median(r_small) * 1e3,
            "10 jobs", 1.5, note=f"slowest refresh {max(r_big) * 1e3:.1f} ms vs {max(r_small) * 1e3:.1f} ms",
            extra={"refresh_ms_10k": [t * 1e3 for t in r_big], "refresh_ms_10": [t * 1e3 for t in r_small]}),
        Row("5 dashboard", "queue totals (Queue.stats), 10,000 jobs", median(s_big) * 1e3, "ms",
            median(s_small) * 1e3, "10 jobs", None, note="re-read by the jobs screen every 2 s"),
        Row("5 dashboard", "idle dashboard CPU, 10,000 jobs, 10 s", cpu * 100, "%", None, "", 3.0,
            note=f"share of one core, real `chunkq tui` in a pty; with 10 jobs: {cpu_small:.1%}",
            extra={"idle_cpu_10_jobs": cpu_small * 100}),
        keys,
    ]
