"""Section 7: heavy-tailed I/O (issue 14) - one worker against a per-entity semaphore loop.

Real providers answer most calls in ~100 ms and a few in seconds. Both sides
sleep through the very same lognormal latency sequence (entity ``i`` always
takes ``latency[i]``), scaled down five times so a run takes seconds: median
20 ms, sigma 1 (about 1 call in 100 over 200 ms, 1 in 3,000 over 600 ms),
capped at 2 s. The baseline is what a per-entity queue (Sidekiq, Oban, huey)
does at best: ``concurrency`` calls always in flight, no chunks, no database.
chunkq's worker must keep its slots as busy across chunk boundaries (its
sliding window): target ≥ 0.90× the loop.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from chunkq.core import Processor, Queue, Worker

from .common import Row, ids

MEDIAN = 0.020
SIGMA = 1.0
CAP = 2.0
#: (concurrency, chunk size, entities): each run lasts about 4 s at the loop's rate
CASES = ((20, 50, 2_400), (20, 500, 3_000), (100, 50, 10_000), (100, 500, 10_000))
TARGET = 0.90


def latencies(n: int, seed: int = 14) -> list[float]:
    rng = random.Random(seed)
    return [min(MEDIAN * rng.lognormvariate(0.0, SIGMA), CAP) for _ in range(n)]


async def _loop_rate(lat: list[float], concurrency: int) -> float:
    """``concurrency`` slots, each taking the next call the moment it is free (a semaphore's
    best case, without thousands of waiting tasks to schedule)."""
    calls = iter(lat)

    async def slot() -> None:
        for seconds in calls:
            await asyncio.sleep(seconds)

    t0 = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return len(lat) / (time.perf_counter() - t0)


async def _chunkq_rate(db: Path, lat: list[float], concurrency: int, chunk_size: int) -> tuple[float, int]:
    names = ids(len(lat))
    by_id = dict(zip(names, lat, strict=True))

    async def call(entity_id: str, _job: object) -> None:
        await asyncio.sleep(by_id[entity_id])

    async with Queue(db) as q:
        await q.enqueue_job(names, entity_type="company", provider="bench", chunk_size=chunk_size)
        widest = 0
        worker: Worker

        def watch(_r: object) -> None:
            nonlocal widest
            widest = max(widest, len(worker.in_flight))

        worker = Worker(q, Processor(on_process=call, concurrency=concurrency), on_entity=watch)
        t0 = time.perf_counter()
        summary = await worker.run()
        elapsed = time.perf_counter() - t0
    assert summary.entities == len(lat), summary
    return summary.entities / elapsed, widest


def heavy_tail(work: Path) -> list[Row]:
    rows = []
    for concurrency, chunk_size, n in CASES:
        lat = latencies(n)
        loop = asyncio.run(_loop_rate(lat, concurrency))
        rate, widest = asyncio.run(_chunkq_rate(work / f"tail-{concurrency}-{chunk_size}.db", lat, concurrency,
                                                chunk_size))
        rows.append(Row("7 heavy tail", f"lognormal I/O, concurrency {concurrency}, chunk {chunk_size}", rate, "/s",
                        loop, "per-entity semaphore loop", TARGET, higher_is_better=True,
                        note=f"{n:,} calls, median {MEDIAN * 1e3:.0f} ms, sigma {SIGMA:g}; "
                             f"window up to {widest} chunks"))
    return rows
