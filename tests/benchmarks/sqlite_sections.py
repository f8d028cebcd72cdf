"""Sections 1-3: a chunk's cost as the job grows, throughput, and write-lock time (SQLite)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chunkq.core import Queue, Worker

from . import baselines
from .common import Row, ids, median, noop

CHUNK = 50


# --------------------------------------------------------------------------- 1. flat chunk cost


async def _chunk_times(db: Path, n_chunks: int) -> list[float]:
    """Seconds per chunk (claim + no-op callback + commit) through the public API."""
    times = []
    async with Queue(db) as q:
        for _ in range(n_chunks):
            t0 = time.perf_counter()
            r = await q.process_next_chunk(noop)
            if r is None:
                break
            times.append(time.perf_counter() - t0)
    return times


async def _enqueue(db: Path, n: int, chunk_size: int = CHUNK, jobs: int = 1) -> None:
    async with Queue(db) as q:
        for _ in range(jobs):
            await q.enqueue_job(ids(n), entity_type="company", provider="bench", chunk_size=chunk_size)


def chunk_cost(work: Path, big_db: Path | None) -> list[Row]:
    """Time per chunk at 1,000 and 1,000,000 entities, chunkq and the JSON-array design."""
    small = work / "cost-1k.db"
    asyncio.run(_enqueue(small, 1_000, jobs=3))
    if big_db is None:
        big_db = work / "cost-1m.db"
        asyncio.run(_enqueue(big_db, 1_000_000))
    t_small = median(asyncio.run(_chunk_times(small, 60)))
    t_big = median(asyncio.run(_chunk_times(big_db, 60)))

    def json_times(n: int, jobs: int, chunks: int) -> float:
        path = work / f"json-{n}.db"
        jq = baselines.JsonArrayQueue(path)
        for _ in range(jobs):
            jq.enqueue(ids(n), CHUNK)
        xs = []
        for _ in range(chunks):
            t0 = time.perf_counter()
            jq.process_next_chunk(lambda e: None)
            xs.append(time.perf_counter() - t0)
        jq.close()
        return median(xs)

    j_small = json_times(1_000, 3, 60)
    j_big = json_times(1_000_000, 1, 7)
    return [
        Row("1 chunk cost", "chunk cost, job of 1M vs 1k entities", t_big * 1e3, "ms", t_small * 1e3,
            "chunkq at 1k", 1.25, note=f"design's JSON array: {j_small * 1e3:.2f} → {j_big * 1e3:.1f} ms "
            f"({j_big / j_small:,.0f}×)",
            extra={"chunkq_1k_ms": t_small * 1e3, "chunkq_1m_ms": t_big * 1e3,
                   "json_1k_ms": j_small * 1e3, "json_1m_ms": j_big * 1e3}),
        Row("1 chunk cost", "the design's JSON array, 1M vs 1k", j_big * 1e3, "ms", j_small * 1e3,
            "design at 1k", None, note="the original layout, for comparison"),
    ]


# --------------------------------------------------------------------------- 2. throughput


async def _chunkq_rate(db: Path, n: int, chunk_size: int, seconds: float) -> tuple[int, float]:
    async with Queue(db) as q:
        await q.enqueue_job(ids(n), entity_type="company", provider="bench", chunk_size=chunk_size)
        w = Worker(q, noop, max_seconds=seconds)
        t0 = time.perf_counter()
        summary = await w.run()
        return summary.entities, time.perf_counter() - t0


def throughput(work: Path, seconds: float = 1.5, rounds: int = 3) -> list[Row]:
    """Best of ``rounds`` interleaved runs of each side: other processes on a shared machine only slow runs down."""
    rows = []
    rates: dict[int, float] = {}
    for chunk_size, n_floor, n_chunkq, target in ((50, 300_000, 200_000, 0.10), (500, 1_000_000, 600_000, 0.25)):
        floor_rate = chunkq_rate = 0.0
        for i in range(rounds):
            floor_db = work / f"floor-{chunk_size}-{i}.db"
            baselines.floor_setup(floor_db, ids(n_floor), chunk_size)
            fn, fe = baselines.floor_loop(floor_db, noop, seconds)
            floor_rate = max(floor_rate, fn / fe)
            cn, ce = asyncio.run(_chunkq_rate(work / f"tp-{chunk_size}-{i}.db", n_chunkq, chunk_size, seconds))
            chunkq_rate = max(chunkq_rate, cn / ce)
        rates[chunk_size] = chunkq_rate
        rows.append(Row("2 throughput", f"throughput, chunk {chunk_size}, 1 worker", chunkq_rate, "/s", floor_rate,
                        "raw sqlite3 loop", target, higher_is_better=True, note=f"best of {rounds} runs each"))
    hn, he = baselines.huey_run(work / "huey.db", HUEY_N)
    en, ee = asyncio.run(_chunkq_end_to_end(work / "e2e.db", HUEY_N))
    rows.append(Row("2 throughput", f"{HUEY_N // 1000}k entities end to end, chunk 50",
                    en / ee, "/s", hn / he, "SqliteHuey, 1 task/entity", 10.0, higher_is_better=True,
                    note=f"chunkq's steady rate: {rates[50]:,.0f}/s"))
    return rows


HUEY_N = 10_000


async def _chunkq_end_to_end(db: Path, n: int) -> tuple[int, float]:
    async with Queue(db) as q:
        t0 = time.perf_counter()
        await q.enqueue_job(ids(n), entity_type="company", provider="bench", chunk_size=CHUNK)
        summary = await Worker(q, noop).run()
        return summary.entities, time.perf_counter() - t0


# --------------------------------------------------------------------------- 3. write-lock time


class _LockLog:
    """Write-lock hold times, from ``BEGIN IMMEDIATE`` returning to the transaction's end returning."""

    def __init__(self) -> None:
        self.spans: list[float] = []
        self.lock = threading.Lock()


def _timing_classes(log: _LockLog) -> tuple[type[sqlite3.Connection], type[sqlite3.Cursor]]:
    class TimingCursor(sqlite3.Cursor):
        def execute(self, sql: str, params: Any = ()) -> Any:  # type: ignore[override]
            conn = self.connection
            head = sql.lstrip()[:15].upper()
            result = super().execute(sql, params)
            if head.startswith("BEGIN IMMEDIATE"):
                conn._lock_t0 = time.perf_counter()  # type: ignore[attr-defined]
            elif head.startswith(("COMMIT", "ROLLBACK", "END")):
                conn._end()  # type: ignore[attr-defined]
            return result

    class TimingConnection(sqlite3.Connection):
        _lock_t0: float | None = None

        def cursor(self, factory: Any = TimingCursor) -> Any:  # type: ignore[override]
            return super().cursor(factory)

        def execute(self, sql: str, params: Any = ()) -> Any:  # type: ignore[override]
            # the connection's shortcut (the hot path's BEGIN IMMEDIATE) skips ``cursor()``: time it too
            return self.cursor().execute(sql, params)

        def commit(self) -> None:
            super().commit()
            self._end()

        def rollback(self) -> None:
            super().rollback()
            self._end()

        def _end(self) -> None:
            if self._lock_t0 is not None:
                with log.lock:
                    log.spans.append(time.perf_counter() - self._lock_t0)
                self._lock_t0 = None

    return TimingConnection, TimingCursor


@contextmanager
def timing_sqlite() -> Iterator[_LockLog]:
    """Every SQLite connection opened meanwhile, by any driver layer, reports its write-lock spans."""
    log = _LockLog()
    conn_cls, _ = _timing_classes(log)
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", conn_cls)
        return real(*args, **kwargs)

    # sqlite3.connect (aiosqlite) and sqlite3.dbapi2.connect (SQLAlchemy's pysqlite) are two names.
    sqlite3.connect = sqlite3.dbapi2.connect = connect  # type: ignore[assignment]
    try:
        yield log
    finally:
        sqlite3.connect = sqlite3.dbapi2.connect = real  # type: ignore[assignment]


async def _locked_run(db: Path, seconds: float) -> int:
    async with Queue(db) as q:
        await q.enqueue_job(ids(200_000), entity_type="company", provider="bench", chunk_size=CHUNK)
    with timing_sqlite() as log:
        async with Queue(db) as q:
            log.spans.clear()
            summary = await Worker(q, noop, max_seconds=seconds).run()
        spans = list(log.spans)
    return summary.chunks, spans  # type: ignore[return-value]


def write_lock(work: Path, seconds: float = 2.0) -> list[Row]:
    chunks, spans = asyncio.run(_locked_run(work / "lock.db", seconds))  # type: ignore[misc]
    # A worker alternates claim, commit, claim, commit...: pair them up per chunk.
    claims, commits = spans[0::2], spans[1::2]
    per_chunk = [a + b for a, b in zip(claims, commits, strict=False)]
    return [
        Row("3 write lock", "write lock held per chunk (median)", median(per_chunk) * 1e3,
            "ms", None, "", 2.0,
            note=f"claim {median(claims) * 1e3:.2f} ms + commit {median(commits) * 1e3:.2f} ms "
                 f"over {chunks} chunks",
            extra={"claim_ms": median(claims) * 1e3, "commit_ms": median(commits) * 1e3, "transactions": len(spans)}),
    ]
