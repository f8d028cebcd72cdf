"""Issue 14 parts 2 and 3: every core (``--processes N``) and ``--concurrency auto`` (AIMD).

**Processes.** Steady-state throughput of ``chunkq worker --processes N`` read
from the database (entities done between two reads a few seconds apart, after a
warm-up), so interpreter start-up is not counted; N processes against one, on
the same kind of job (``max_workers`` = N, so N workers may share it):

- a CPU-bound sync callback (pure Python, ~4 ms an entity): target >= 1.8x with 2
  processes on a 2-core machine;
- a 5 ms I/O callback (``time.sleep``) on SQLite: 8 processes >= 7x one.

**Start-up** (issue 25). ``chunkq process --until-empty --processes 2`` against
``process --until-empty`` on an empty SQLite queue, whole processes, wall time,
the two in turn and the median of each: the children are forked from the
supervisor, which has imported chunkq already (``core/supervisor.py``), so two
processes cost about one more database open, not two more interpreters
(before: three times one process's 0.5 s). Target <= 1.6x.

**Auto.** ``AIMDLimit`` against an in-process provider simulator that answers
429 at once above a hidden K concurrent calls (each call otherwise takes
~20 ms, lognormal, a fifth of a real provider's 100 ms: times are scaled down 5x,
so "settles within 30 s" is 6 s here). Demand is unbounded (a pool of callers
always waiting for a slot). Reported per K: when the limit first stays within
20% of K, the mean limit after that, and the share of calls answered 429 after
settling (targets: settled, mean within 20% of K, < 5%).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import Row

ROOT = Path(__file__).resolve().parents[2]

CPU_MODULE = '''
def spin(entity_id, job):
    x = 0
    for i in range(60_000):
        x += i * i
    return None
'''

IO_MODULE = '''
import time
def sleep5(entity_id, job):
    time.sleep(0.005)
'''


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(work), env.get("PYTHONPATH", "")])
    env.pop("CHUNKQ_PROCESSOR", None)
    return env


def _chunkq(*args: str) -> list[str]:
    return [sys.executable, "-m", "chunkq.tui.cli", *args]


async def _done(db: str) -> int:
    from chunkq.core import Queue

    async with Queue(db, create=False) as q:
        jobs = await q.list_jobs()
        return sum(j.processed_count for j in jobs)


def _rate(work: Path, name: str, processes: int, processor: str, n: int, warmup: float, window: float) -> float:
    """Entities a second of ``chunkq worker --processes N`` once every process is running."""
    db = f"sqlite:///{work / f'{name}-{processes}.db'}"
    env = _env(work)
    ids = work / "ids.txt"
    ids.write_text("".join(f"e{i}\n" for i in range(n)))
    subprocess.run(_chunkq("--db", db, "enqueue", str(ids), "-t", "t", "-p", "p", "--max-workers",
                           str(max(processes, 1)), "--chunk-size", "50"), env=env, check=True, capture_output=True)
    proc = subprocess.Popen(_chunkq("--db", db, "-q", "worker", "--processes", str(processes), "--processor",
                                    processor, "--poll-interval", "0.2"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        c0, t0 = asyncio.run(_done(db)), time.perf_counter()
        time.sleep(window)
        c1, t1 = asyncio.run(_done(db)), time.perf_counter()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if c1 >= n:
        raise RuntimeError(f"{name}: the job ran out during the window; enqueue more")
    return (c1 - c0) / (t1 - t0)


def _startup(work: Path, runs: int = 7) -> tuple[float, float]:
    """Median wall seconds of ``process --until-empty`` with ``--processes 2`` and without, on an empty queue."""
    db = f"sqlite:///{work / 'startup.db'}"
    env = _env(work)
    subprocess.run(_chunkq("--db", db, "db", "upgrade"), env=env, check=True, capture_output=True)
    base = ["--db", db, "-q", "process", "--until-empty", "--processor", "chunkq.core.demo:enrich"]
    times: dict[int, list[float]] = {1: [], 2: []}
    for i in range(runs + 1):  # the first pair warms the page cache and is not counted
        for n in (2, 1):
            t0 = time.perf_counter()
            subprocess.run(_chunkq(*base, *(["--processes", "2"] if n == 2 else [])), env=env, check=True,
                           capture_output=True, timeout=120)
            if i:
                times[n].append(time.perf_counter() - t0)
    return statistics.median(times[2]), statistics.median(times[1])


def processes(work: Path) -> list[Row]:
    (work / "bench_cpu.py").write_text(CPU_MODULE)
    (work / "bench_io.py").write_text(IO_MODULE)
    rows = []
    one = _rate(work, "cpu", 1, "bench_cpu:spin", 20_000, 3.0, 6.0)
    two = _rate(work, "cpu", 2, "bench_cpu:spin", 20_000, 3.0, 6.0)
    rows.append(Row("10 processes", "CPU-bound sync callback, --processes 2", two, "/s", one, "1 process",
                    1.8, higher_is_better=True, note="steady state, SQLite, chunk 50"))
    one = _rate(work, "io", 1, "bench_io:sleep5", 60_000, 3.0, 5.0)
    eight = _rate(work, "io", 8, "bench_io:sleep5", 60_000, 6.0, 5.0)
    rows.append(Row("10 processes", "5 ms I/O callback, --processes 8", eight, "/s", one, "1 process",
                    7.0, higher_is_better=True, note="steady state, SQLite, chunk 50"))
    two, one = _startup(work)
    rows.append(Row("10 processes", "start-up, process --until-empty --processes 2", two, "s", one, "1 process",
                    1.6, note="empty SQLite queue, whole processes, median of 7"))
    return rows


# --------------------------------------------------------------------------- auto


class Provider:
    """Answers 429 at once to a call beyond ``k`` at the same time; otherwise takes ~``latency`` s."""

    def __init__(self, k: int, latency: float, rng: random.Random) -> None:
        self.k, self.latency, self.rng = k, latency, rng
        self.live = 0

    async def call(self) -> bool:
        if self.live >= self.k:
            await asyncio.sleep(0)
            return False
        self.live += 1
        try:
            await asyncio.sleep(self.latency * self.rng.lognormvariate(0.0, 0.3))
        finally:
            self.live -= 1
        return True


async def _auto_run(k: int, seconds: float, latency: float, seed: int = 7) -> dict[str, Any]:
    from chunkq.core.adaptive import AIMDLimit

    provider = Provider(k, latency, random.Random(seed))
    limiter = AIMDLimit()
    t0 = time.perf_counter()
    samples: list[tuple[float, int]] = []
    calls: list[tuple[float, bool]] = []
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            async with limiter.slot() as slot:
                ok = await provider.call()
                slot.done(ok=ok, overloaded=not ok)
                calls.append((time.perf_counter() - t0, ok))

    async def sampler() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, limiter.limit))
            await asyncio.sleep(0.01)

    tasks = [asyncio.ensure_future(caller()) for _ in range(min(limiter.maximum, 4 * k + 50))]
    tasks.append(asyncio.ensure_future(sampler()))
    await asyncio.sleep(seconds)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    lo, hi = 0.8 * k, 1.2 * k
    settled = None
    for i, (t, _) in enumerate(samples):  # from here on, the limit stays within 20% of K
        if all(lo <= lim <= hi for _, lim in samples[i:]):
            settled = t
            break
    after = [ok for t, ok in calls if settled is not None and t >= settled]
    rejected = (after.count(False) / len(after)) if after else float("nan")
    mean_limit = (sum(lim for t, lim in samples if settled is not None and t >= settled)
                  / max(1, sum(1 for t, _ in samples if settled is not None and t >= settled)))
    return {"k": k, "settled_s": settled, "rejected_after": rejected, "mean_limit": mean_limit,
            "calls": len(calls), "cuts": limiter.cuts}


def auto(scale: float = 5.0) -> list[Row]:
    """K = 5, 20, 80 against the simulator, 100 ms calls scaled down ``scale`` times (and so the 30 s)."""
    rows = []
    window = 30.0 / scale
    for k in (5, 20, 80):
        r = asyncio.run(_auto_run(k, seconds=window * 2, latency=0.1 / scale))
        settled = r["settled_s"]
        real = None if settled is None else settled * scale
        note = (f"mean limit after settling {r['mean_limit']:.1f}; 429s after settling "
                f"{100 * r['rejected_after']:.2f}% (target < 5%); {r['calls']:,} calls, {r['cuts']} cuts; "
                f"times scaled {scale:g}x")
        rows.append(Row("11 auto", f"--concurrency auto vs a provider refusing > {k} at once: settles within 20%",
                        real if real is not None else float("inf"), "s", None, "", 30.0,
                        higher_is_better=False, note=note, extra=r))
    return rows
