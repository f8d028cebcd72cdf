"""Section 14: views over a long history (issue 26): what `chunkq jobs` and the dashboard's poll cost
with millions of finished jobs, against the same with a handful.

The history is made with a fast bulk insert, not through enqueue: ten real jobs go
through the API (complete, failed, cancelled, paused, pending), then their finished
rows are copied in SQL up to the size wanted, so the live working set stays the
same ten jobs' few while the history grows. The copies are inserted with the count
triggers set aside and the counts rebuilt once by the migration's own backfill, then
the triggers put back (a trigger per copied row would only make the set-up slower).

* ``chunkq jobs``: the real CLI as a subprocess (interpreter start included), at
  10,000,000 jobs against 10; and the reads it makes, in process.
* The dashboard's poll: ``stats()`` + the first page of the list (200 rows) + its
  "1-200 of N" count, as the jobs screen reads them, at 1,000,000 against 10,000.
* Idle CPU of the real ``chunkq tui`` at 1,000,000 jobs (section 5's harness).
* What the views cost before (``counts.recount``: every job grouped and summed,
  as ``stats()`` did), as a note.

``--history-jobs N`` scales the big database (the default, 10,000,000, takes a few
minutes to build and about 4 GB of disk).
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chunkq.core import JobFailed, Processor, Queue, counts

from .common import Row, ids, median, noop

_MIGRATION = importlib.import_module("chunkq.core.migrations.versions.0008_job_counts")

def _boom(entity_id: str, job: Any) -> None:
    raise JobFailed("the API key was revoked")


async def _real_jobs(url: str) -> None:
    """Ten jobs through the API: 4 complete, 2 failed, 1 cancelled (the history), 1 paused, 2 pending."""
    async with Queue(url) as q:
        for i in range(10):
            job = await q.enqueue_job(ids(30, f"j{i}-"), entity_type="company", provider=f"provider{i % 3}",
                                      chunk_size=10, name=f"job {i}", tenant="acme" if i % 2 else None)
            if i < 4:
                while (await q.process_chunk(job.id, noop)).status != "complete":  # type: ignore[union-attr]
                    pass
            elif i < 6:
                await q.process_chunk(job.id, Processor(_boom))
            elif i == 6:
                await q.cancel(job.id)
            elif i == 7:
                await q.pause(job.id)


def seed_sqlite(db: Path, n_jobs: int) -> float:
    """A database of ``n_jobs`` jobs, all but 3 finished; returns the seconds the bulk insert took."""
    asyncio.run(_real_jobs(str(db)))
    t0 = time.perf_counter()
    conn = sqlite3.connect(db)
    try:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(chunkq_jobs)") if r[1] != "id"]
        finished = conn.execute(f"SELECT count(*) FROM chunkq_jobs WHERE status IN {_MIGRATION.FINISHED}"
                                ).fetchone()[0]
        copies = max(0, (n_jobs - 10) // finished)
        if copies:
            for name in _MIGRATION.TRIGGERS:
                conn.execute(f"DROP TRIGGER {name}")
            names = ", ".join(cols)
            picked = ", ".join("name || ' copy ' || n" if c == "name" else c for c in cols)
            conn.execute(
                f"WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {copies})"
                f" INSERT INTO chunkq_jobs ({names}) SELECT {picked} FROM (SELECT * FROM chunkq_jobs"
                f" WHERE status IN {_MIGRATION.FINISHED} AND id <= 10), k")
            conn.execute(f"DELETE FROM {_MIGRATION.TABLE}")
            conn.execute(_MIGRATION.backfill_sql())
            for ddl in _MIGRATION.sqlite_ddl():
                conn.execute(ddl)
            conn.commit()
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as a long-lived database's WAL would be
    finally:
        conn.close()
    return time.perf_counter() - t0


def _cli_jobs(dbs: tuple[Path, Path], runs: int) -> tuple[list[float], list[float]]:
    """Wall time of `chunkq --db DB jobs`, on each database in turn."""
    exe = shutil.which("chunkq", path=str(Path(sys.executable).parent)) or "chunkq"
    out: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for db, times in zip(dbs, out, strict=True):
            t0 = time.perf_counter()
            subprocess.run([exe, "--db", str(db), "jobs"], check=True, capture_output=True, timeout=120)
            times.append(time.perf_counter() - t0)
    return out


async def _reads(urls: tuple[str, str], runs: int, *, page: int) -> tuple[dict[str, list[float]], ...]:
    """Each call the views make, timed alone, and the dashboard's poll (stats + page + count) together, on
    two databases in turn (one round on each, alternately: a machine whose load moves moves both alike)."""
    found: list[dict[str, list[float]]] = [{k: [] for k in ("list", "count", "stats", "poll", "totals")}
                                           for _ in urls]
    async with Queue(urls[0]) as qa, Queue(urls[1]) as qb:
        for q in (qa, qb):
            await q.list_jobs(limit=page)  # warm the cache once, as a running dashboard's is
        for _ in range(runs):
            for q, out in zip((qa, qb), found, strict=True):
                t0 = time.perf_counter()
                await q.list_jobs(limit=page)
                t1 = time.perf_counter()
                await q.count_jobs()
                t2 = time.perf_counter()
                await q.stats()
                t3 = time.perf_counter()
                await q.provider_totals()
                await q.tenant_totals()
                t4 = time.perf_counter()
                out["list"].append(t1 - t0)
                out["count"].append(t2 - t1)
                out["stats"].append(t3 - t2)
                out["poll"].append(t3 - t0)
                out["totals"].append(t4 - t3)
    return tuple(found)


async def _recount(url: str) -> float:
    """What one header poll cost before issue 26: every job grouped by status and summed."""
    async with Queue(url) as q:
        t0 = time.perf_counter()
        await q.backend.read(lambda conn: counts.recount(conn), "recounting")
        return time.perf_counter() - t0


def _ms(xs: list[float]) -> float:
    return median(xs) * 1e3


async def seed_pg(url: str, n_jobs: int) -> float:
    """``seed_sqlite`` on PostgreSQL: the copies by ``generate_series`` with the count triggers disabled."""
    import asyncpg
    from sqlalchemy import make_url

    await _real_jobs(url)
    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                 database=u.database)
    t0 = time.perf_counter()
    try:
        cols = [r[0] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'chunkq_jobs' "
            "AND column_name <> 'id' ORDER BY ordinal_position")]
        finished = await conn.fetchval(f"SELECT count(*) FROM chunkq_jobs WHERE status IN {_MIGRATION.FINISHED}")
        copies = max(0, (n_jobs - 10) // finished)
        if copies:
            names = ", ".join(cols)
            picked = ", ".join("name || ' copy ' || n" if c == "name" else c for c in cols)
            async with conn.transaction():
                await conn.execute("ALTER TABLE chunkq_jobs DISABLE TRIGGER USER")
                await conn.execute(
                    f"INSERT INTO chunkq_jobs ({names}) SELECT {picked} FROM (SELECT * FROM chunkq_jobs"
                    f" WHERE status IN {_MIGRATION.FINISHED}) j, generate_series(1, {copies}) n")
                await conn.execute(f"DELETE FROM {_MIGRATION.TABLE}")
                await conn.execute(_MIGRATION.backfill_sql())
                await conn.execute("ALTER TABLE chunkq_jobs ENABLE TRIGGER USER")
            await conn.execute("VACUUM ANALYZE chunkq_jobs")  # what autovacuum would have done by then
    finally:
        await conn.close()
    return time.perf_counter() - t0


def history_pg(server_url: str, n_jobs: int) -> list[Row]:
    """The poll and `chunkq jobs`' reads on PostgreSQL, ``n_jobs`` against 10 (throw-away databases)."""
    import os
    import secrets

    from sqlalchemy import make_url

    from .postgres_section import _admin

    rows: list[Row] = []
    made: list[str] = []
    try:
        urls = []
        for n in (10, n_jobs):
            name = f"chunkq_bench_hist_{os.getpid()}_{secrets.token_hex(3)}"
            asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
            made.append(name)
            url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
            seconds = asyncio.run(seed_pg(url, n))
            urls.append((url, seconds))
        (tiny, _), (big, big_seconds) = urls
        r_tiny, r_big = asyncio.run(_reads((tiny, big), 20, page=200))
        before = asyncio.run(_recount(big))
        rows.append(Row("14 history", f"PostgreSQL: dashboard poll (stats + 200 rows + count), {n_jobs:,} jobs",
                        _ms(r_big["poll"]), "ms", _ms(r_tiny["poll"]), "10 jobs", None,
                        note=f"list_jobs (200 rows) alone {_ms(r_big['list']):.1f} ms; a full recount "
                             f"{before * 1e3:.0f} ms; bulk insert {big_seconds:.0f} s"))
    finally:
        for name in made:
            asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return rows


def history(work: Path, big_jobs: int = 10_000_000, *, idle: bool = True, pg: str | None = None,
            pg_jobs: int = 1_000_000, mid_jobs: int = 1_000_000) -> list[Row]:
    from .dashboard_section import IDLE_SECONDS, _idle_cpu

    tiny, small, mid, big = (work / f"history-{n}.db" for n in ("10", "10k", "1m", "big"))
    seed_sqlite(tiny, 10)
    seed_sqlite(small, 10_000)
    mid_seconds = seed_sqlite(mid, mid_jobs)
    big_seconds = seed_sqlite(big, big_jobs)
    n_big = _count(big)
    rows: list[Row] = []
    cli_tiny, cli_big = _cli_jobs((tiny, big), 5)
    rows.append(Row("14 history", f"`chunkq jobs` (the CLI), {n_big:,} jobs", median(cli_big), "s", None, "", 1.0,
                    note=f"subprocess wall time, interpreter start included, median of 5 (slowest {max(cli_big):.2f} "
                         f"s); with 10 jobs {median(cli_tiny):.2f} s ({median(cli_big) / median(cli_tiny):.2f}×); "
                         f"bulk insert {big_seconds:.0f} s", extra={"cli_s_big": cli_big, "cli_s_10": cli_tiny}))
    r_tiny, r_big = asyncio.run(_reads((str(tiny), str(big)), 20, page=50))
    rows.append(Row("14 history", f"the reads of `chunkq jobs` (list_jobs, 50 rows), {n_big:,} jobs",
                    _ms(r_big["list"]), "ms", _ms(r_tiny["list"]), "10 jobs", None,
                    note=f"count_jobs() {_ms(r_big['count']):.2f} ms vs {_ms(r_tiny['count']):.2f}; /metrics' "
                         f"provider+tenant totals {_ms(r_big['totals']):.2f} ms vs {_ms(r_tiny['totals']):.2f}"))
    r_small, r_mid = asyncio.run(_reads((str(small), str(mid)), 30, page=200))
    before = asyncio.run(_recount(str(mid)))
    rows.append(Row("14 history", f"dashboard poll (stats + first 200 rows + count), {_count(mid):,} jobs",
                    _ms(r_mid["poll"]), "ms", _ms(r_small["poll"]), "10,000 jobs", 1.5,
                    note=f"stats() alone {_ms(r_mid['stats']):.2f} ms vs {_ms(r_small['stats']):.2f}; a full recount "
                         f"(what stats() read before) {before * 1e3:.0f} ms; bulk insert {mid_seconds:.0f} s",
                    extra={"poll_ms_1m": [t * 1e3 for t in r_mid["poll"]],
                           "poll_ms_10k": [t * 1e3 for t in r_small["poll"]]}))
    if idle:
        cpu_mid, cpu_small = _idle_cpu(mid, IDLE_SECONDS), _idle_cpu(small, IDLE_SECONDS)
        rows.append(Row("14 history", f"idle dashboard CPU, {_count(mid):,} jobs, {IDLE_SECONDS:.0f} s",
                        cpu_mid * 100, "%", None, "", 3.0, extra={"idle_cpu_10k": cpu_small * 100},
                        note=f"share of one core, real `chunkq tui` in a pty; with 10,000 jobs: {cpu_small:.1%}"))
    if pg:
        rows += history_pg(pg, pg_jobs)
    return rows


def _count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM chunkq_jobs").fetchone()[0])
    finally:
        conn.close()
