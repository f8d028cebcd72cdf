"""Section 12: fair scheduling (issue 25) - the claim's cost with many jobs, and a small job beside a big one.

* **Claim cost.** A claim reads the first claimable entry of a partial index in
  claim order (``ix_chunkq_jobs_fair``/``_fifo``), so it must cost the same with
  10,000 live jobs as with 10 (target ≤ 1.25×), both backends, both orders. The
  jobs are written straight into the tables (10,000 enqueues would take
  minutes); each claim is timed alone, its chunk committed untimed, so every
  job stays claimable as it is on a shared queue. The two queues' claims take
  turns; the first quartile of each (load from elsewhere only adds time).
  PostgreSQL's tables are analysed first, as autovacuum does soon after such a
  change: with no statistics at all its planner sorts the live jobs instead
  (measured: 15 ms a claim at 10,000, 10×) until they exist.
* **A small job behind a big one.** One worker (async callback, concurrency 20,
  10 ms a call, chunks of 100) drains a 200,000-entity job; a 3-entity job is
  enqueued after 2 s. Its last entity must be done within 3 of the big job's
  chunk durations of being enqueued, and the big job's rate over the run must
  stay ≥ 0.95× of a run alone (same worker, same length). Before: the small job
  waited for the whole big job (minutes here).
* **Tenants.** 100 tenants × 10 jobs, 4 workers (separate queues, one process:
  the callback only waits) for 20 s; 10 tenants have weight 2. Each tenant's
  entities done per unit of weight must be within ±20% of the mean.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from chunkq.core import Processor, Queue, Worker
from chunkq.core import schema as s
from chunkq.core.chunk import run_claimed
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from .common import Row, ids
from .postgres_section import DEFAULT_PG, _admin

JOBS = (10, 10_000)
ENTITIES_PER_JOB = 40  # chunks of 1: 10 jobs hold 361 claims, more than are timed
CLAIMS = 300
COST_TARGET = 1.25
SMALL_TARGET = 3.0
RATE_TARGET = 0.95


def _job_rows(n: int, now: float) -> list[dict[str, Any]]:
    return [dict(name=f"bench-{i}", entity_type="company", provider="bench", status="pending", chunk_size=1,
                 priority=0, max_workers=1, max_attempts=3, total_count=ENTITIES_PER_JOB, next_pos=0, next_chunk=0,
                 leased_chunks=0, processed_count=0, succeeded_count=0, failed_count=0, waiting_count=0,
                 error_count=0, dead_chunks=0, created_at=now, updated_at=now) for i in range(n)]


async def _fill(q: Queue, jobs: int) -> None:
    await q.enqueue_job(["warm"], entity_type="company", provider="bench")  # a first job: the tables exist
    rows = _job_rows(jobs - 1, time.time())

    def fill(conn: Any) -> None:
        new = conn.execute(insert(s.jobs).returning(s.jobs.c.id), rows).scalars().all()
        ents = [(job_id, pos, f"{job_id}-{pos}") for job_id in new for pos in range(ENTITIES_PER_JOB)]
        q.backend.insert_entities(conn, ents)

    async with q.engine.begin() as conn:
        await conn.run_sync(fill)
    if q.backend.name == "postgresql":
        # what autovacuum does within a minute of such a change: without statistics PostgreSQL
        # takes a fresh table for a few rows and sorts them all instead of reading the index
        async with q.engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")


async def _claim_costs(urls: dict[int, str], order: str) -> dict[int, float]:
    """Seconds per claim (first quartile) on a queue of each number of live jobs; the queues'
    claims take turns, so a machine busy with something else slows both alike."""
    noop = Processor(on_process=lambda e, j: None)
    queues = {n: Queue(url, order=order) for n, url in urls.items()}
    times: dict[int, list[float]] = {n: [] for n in urls}
    try:
        for n, q in queues.items():
            await q.open()
            await _fill(q, n)
        for _ in range(CLAIMS):
            for n, q in queues.items():
                t0 = time.perf_counter()
                claim = await q.claims.claim()
                times[n].append(time.perf_counter() - t0)
                assert claim is not None
                await run_claimed(q, claim, noop, None)
    finally:
        for q in queues.values():
            await q.close()
    # the first quartile: load from other processes on a shared machine only ever adds time, and
    # a PostgreSQL claim (~0.1 ms of SQL, the rest round trips) is easily doubled by it
    return {n: statistics.quantiles(ts, n=4)[0] for n, ts in times.items()}


def _sqlite_url(work: Path, name: str) -> str:
    return f"sqlite:///{work / name}"


def _pg_db(server_url: str) -> tuple[str, str]:
    name = f"chunkq_bench_fair_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    return name, make_url(server_url).set(database=name).render_as_string(hide_password=False)


def claim_cost(work: Path, server_url: str = DEFAULT_PG) -> list[Row]:
    rows = []
    for backend in ("sqlite", "postgres"):
        for order in ("fair", "fifo"):
            if backend == "sqlite":
                cost = asyncio.run(_claim_costs({n: _sqlite_url(work, f"fair-{order}-{n}.db") for n in JOBS}, order))
            else:
                dbs = {n: _pg_db(server_url) for n in JOBS}
                try:
                    cost = asyncio.run(_claim_costs({n: url for n, (_name, url) in dbs.items()}, order))
                finally:
                    for name, _url in dbs.values():
                        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            few, many = JOBS
            rows.append(Row("12 fair", f"claim at {many:,} live jobs, {order} order ({backend})", cost[many] * 1e3,
                            "ms", cost[few] * 1e3, f"{few} live jobs", COST_TARGET,
                            note=f"first quartile of {CLAIMS} claims each, taking turns; chunks committed untimed"))
    return rows


async def _drain(db: str, seconds: float, small_after: float | None) -> dict[str, Any]:
    async def call(_e: str, _j: object) -> None:
        await asyncio.sleep(0.010)

    async with Queue(db) as q:
        big = await q.enqueue_job(ids(200_000), entity_type="company", provider="bench", chunk_size=100)
        out: dict[str, Any] = {}

        def on_chunk(r: Any) -> None:
            # (its chunk may commit before its enqueue call has returned)
            if r.job_id != big.id and r.status == "complete":
                out["small_done"] = time.perf_counter()

        worker = Worker(q, Processor(on_process=call, concurrency=20), max_seconds=seconds, on_chunk=on_chunk)
        t0 = time.perf_counter()
        run = asyncio.ensure_future(worker.run())
        if small_after is not None:
            await asyncio.sleep(small_after)
            out["small_enqueued"] = time.perf_counter()
            await q.enqueue_job(["s0", "s1", "s2"], entity_type="company", provider="bench")
        await run
        out["elapsed"] = time.perf_counter() - t0
        out["big_done"] = (await q.get_job(big.id)).processed_count
        chunks = [c for c in await q.list_chunks(big.id, limit=10_000) if c.duration is not None]
        out["chunk_seconds"] = statistics.median(c.duration for c in chunks)
    return out


def small_behind_big(work: Path, seconds: float = 8.0, rounds: int = 2) -> list[Row]:
    """Alone and shared runs interleaved, the best rate of each (the machine is shared: a run
    that another process slowed down says nothing about chunkq); the small job's worst latency."""
    alone, shared = [], []
    for i in range(rounds):
        alone.append(asyncio.run(_drain(str(work / f"fair-alone-{i}.db"), seconds, None)))
        shared.append(asyncio.run(_drain(str(work / f"fair-shared-{i}.db"), seconds, 2.0)))
    latency = max(r["small_done"] - r["small_enqueued"] if "small_done" in r else float("inf") for r in shared)
    chunk = statistics.median(r["chunk_seconds"] for r in shared)
    rate_alone = max(r["big_done"] / r["elapsed"] for r in alone)
    rate_shared = max(r["big_done"] / r["elapsed"] for r in shared)
    return [
        Row("12 fair", "3-entity job enqueued beside a 200,000-entity one: done after", latency / chunk,
            "chunk durations", None, "", SMALL_TARGET,
            note=f"{latency * 1e3:.0f} ms; the big job's chunk takes {chunk * 1e3:.0f} ms (100 entities, "
                 "concurrency 20, 10 ms a call). Oldest first: after the whole big job"),
        Row("12 fair", "the big job's rate beside it", rate_shared, "/s", rate_alone, "the big job alone",
            RATE_TARGET, higher_is_better=True, note=f"{seconds:g} s runs, one worker, best of {rounds}"),
    ]


TENANTS, JOBS_PER_TENANT, HEAVY = 100, 10, 10  # the first HEAVY tenants have weight 2
SHARE_TARGET = 0.20


async def _tenant_shares(db: str, seconds: float, workers: int = 4) -> tuple[list[float], int]:
    """Entities done per tenant, divided by its weight, after ``workers`` workers ran ``seconds``."""
    async def call(_e: str, _j: object) -> None:
        await asyncio.sleep(0.005)

    async with Queue(db) as q:
        for t in range(TENANTS):
            for _ in range(JOBS_PER_TENANT):
                await q.enqueue_job(ids(200, f"t{t}-"), entity_type="company", provider="bench", chunk_size=10,
                                    tenant=f"tenant-{t:03d}")
        for t in range(HEAVY):
            await q.set_tenant_weight(f"tenant-{t:03d}", 2)
        queues = [Queue(db) for _ in range(workers)]
        try:
            for w in queues:
                await w.open()
            await asyncio.gather(*(Worker(w, Processor(on_process=call, concurrency=10), max_seconds=seconds).run()
                                   for w in queues))
        finally:
            for w in queues:
                await w.close()
        done: dict[str, int] = {}
        for job in await q.list_jobs(limit=10_000):
            done[job.tenant or ""] = done.get(job.tenant or "", 0) + job.processed_count
    per_weight = [done.get(f"tenant-{t:03d}", 0) / (2 if t < HEAVY else 1) for t in range(TENANTS)]
    return per_weight, sum(done.values())


def tenant_shares(work: Path, seconds: float = 20.0) -> list[Row]:
    shares, total = asyncio.run(_tenant_shares(str(work / "fair-tenants.db"), seconds))
    mean = statistics.mean(shares)
    worst = max(abs(x / mean - 1) for x in shares)
    return [Row("12 fair", f"{TENANTS} tenants × {JOBS_PER_TENANT} jobs, 4 workers: worst tenant's share off equal",
                worst * 100, "%", None, "", SHARE_TARGET * 100,
                note=f"{total:,} entities in {seconds:g} s; {HEAVY} tenants of weight 2, counted per unit of weight "
                     f"(lowest {min(shares) / mean:.2f}×, highest {max(shares) / mean:.2f}× of the mean)")]


def fair(work: Path, server_url: str = DEFAULT_PG) -> list[Row]:
    return claim_cost(work, server_url) + small_behind_big(work) + tenant_shares(work)
