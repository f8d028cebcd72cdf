"""Section 13: pruning under load (issue 26), SQLite and PostgreSQL.

A database holds N old finished jobs (3 entities, one chunk each; every tenth with
an error and its traceback), inserted in bulk by SQL (not through enqueue, which
would take hours at a million), a twentieth as many recent ones the policy keeps,
and one live job. A worker in a process of its own processes the live job chunk
by chunk with a no-op callback and times every claim and every commit (the
``queue.claims.claim``/``queue.committer.commit`` steps the reliability suite wraps too). After a
quiet phase the pruner (what `chunkq prune` runs, in this process) deletes the
old jobs; the worker's latencies while it runs are compared with the quiet
phase's. Target: p99 of each under 50 ms while pruning.

Space: SQLite's file after the prune (and its incremental vacuum) against a
compact copy holding exactly what is left (``VACUUM INTO``, the size of a fresh
database with the same rows), target at most 1.2×; PostgreSQL's dead tuples
(``pg_stat_user_tables.n_dead_tup``) before the prune, after it, and after
``chunkq db vacuum``.

``--prune-jobs N`` sets N (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from .common import Row, ids
from .postgres_section import DEFAULT_PG, _admin

SECTION = "13 prune"
TARGET_MS = 50.0
QUIET_SECONDS = 6.0
#: a traceback as long as a real one (about 1.5 KB)
TRACEBACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "/srv/app/enrich/provider_{i}.py", line {100 + i}, in call_{i}\n    response = session.get(url, '
    f"timeout=30)\n" for i in range(12)) + "requests.exceptions.HTTPError: 503 Server Error for url\n"
DAY = 86400.0


def _fill_sql(dialect: str) -> list[str]:
    """Statements that add :n finished jobs (ids :first..:first+:n-1) last changed at :t + i ms."""
    if dialect == "sqlite":
        series = "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n - 1) "
        src = "s"
        cat = "||"
    else:
        series = ""
        src = "generate_series(0, :n - 1) AS s(i)"
        cat = "||"
    failed = "(i % 10 = 0)"
    statements = [
        series + "INSERT INTO chunkq_jobs (id, name, entity_type, provider, status, chunk_size, priority, "
        "max_workers, max_attempts, total_count, next_pos, next_chunk, leased_chunks, processed_count, "
        "succeeded_count, failed_count, waiting_count, error_count, dead_chunks, created_at, updated_at, "
        "started_at, finished_at, served_at, tenant) "
        f"SELECT :first + i, 'bench ' {cat} (:first + i), 'company', 'bench', 'complete', 10, 0, 1, 1, 3, 3, 1, 0, "
        f"3, CASE WHEN {failed} THEN 2 ELSE 3 END, CASE WHEN {failed} THEN 1 ELSE 0 END, 0, "
        f"CASE WHEN {failed} THEN 1 ELSE 0 END, 0, :t, :t + i * 0.001, :t, :t + i * 0.001, :t, '' FROM {src}",
        "INSERT INTO chunkq_entities (job_id, pos, entity_id) "
        f"SELECT j.id, p.pos, 'company-' {cat} j.id {cat} '-' {cat} p.pos FROM chunkq_jobs j, "
        "(SELECT 0 AS pos UNION ALL SELECT 1 UNION ALL SELECT 2) p WHERE j.id >= :first AND j.id < :first + :n",
        "INSERT INTO chunkq_chunks (job_id, chunk_index, kind, start_pos, end_pos, size, state, attempt, "
        "started_at, finished_at, duration, ok, errors, lost_leases) "
        "SELECT id, 0, 'range', 0, 3, 3, 'done', 1, created_at, updated_at, 0.01, succeeded_count, failed_count, 0 "
        "FROM chunkq_jobs WHERE id >= :first AND id < :first + :n",
        "INSERT INTO chunkq_errors (job_id, pos, entity_id, error_type, message, traceback, chunk_index, attempt, "
        "final, created_at, fingerprint) "
        f"SELECT id, 1, 'company-' {cat} id {cat} '-1', 'HTTPError', '503 Server Error for company-' {cat} id, "
        f":tb, 0, 1, {'1' if dialect == 'sqlite' else 'true'}, updated_at, 'f00dfeed' FROM chunkq_jobs "
        "WHERE id >= :first AND id < :first + :n AND failed_count > 0",
    ]
    if dialect != "sqlite":  # asyncpg wants every parameter's type stated
        casts = {":first": "CAST(:first AS bigint)", ":n": "CAST(:n AS bigint)", ":t": "CAST(:t AS float8)",
                 ":tb": "CAST(:tb AS text)"}
        statements = [re.sub(r":(first|n|tb|t)\b", lambda m: casts[m.group(0)], sql) for sql in statements]
    return statements


def fill(url: str, n_old: int, n_recent: int) -> tuple[int, float]:
    """The old and recent jobs, then the live one; (live job id, seconds the bulk insert took)."""
    from chunkq.core import Queue

    async def go() -> tuple[int, float]:
        async with Queue(url) as q:
            dialect = q.backend.engine.dialect.name
            now = time.time()
            t0 = time.perf_counter()

            def tx(conn: Any, first: int, n: int, at: float) -> None:
                if dialect == "postgresql":
                    # the job counts' row triggers (revision 0008) update one row per inserted job: 100,000
                    # versions of one row in one transaction, each found by walking the ones before it.
                    # Off for the bulk load (this session only), and the counts summed once at the end.
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
                for sql in _fill_sql(dialect):
                    conn.execute(text(sql), {"first": first, "n": n, "t": at, "tb": TRACEBACK})

            step = 100_000
            for first in range(1, n_old + 1, step):
                n = min(step, n_old + 1 - first)
                await q.backend.write(lambda c, f=first, n=n: tx(c, f, n, now - 60 * DAY), "bench fill")
            await q.backend.write(lambda c: tx(c, n_old + 1, n_recent, now - DAY), "bench fill")
            if dialect == "postgresql":
                counts = importlib.import_module("chunkq.core.migrations.versions.0008_job_counts")

                def finish(c: Any) -> None:
                    c.execute(text("SELECT setval(pg_get_serial_sequence('chunkq_jobs', 'id'), "
                                   "(SELECT max(id) FROM chunkq_jobs))"))
                    c.execute(text("DELETE FROM chunkq_job_counts"))
                    c.execute(text(counts.backfill_sql()))

                await q.backend.write(finish, "bench fill")
            took = time.perf_counter() - t0
            live = await q.enqueue_job(ids(100_000, "live-"), entity_type="company", provider="live", chunk_size=20)
            return live.id, took

    return asyncio.run(go())


# ---------------------------------------------------------------------------- the worker process

async def _worker(url: str, job_id: int, stop_file: str) -> list[tuple[float, str, float]]:
    from chunkq.core import InvalidTransition, Processor, Queue

    samples: list[tuple[float, str, float]] = []
    async with Queue(url) as q:
        claim, commit = q.claims.claim, q.committer.commit

        async def timed_claim(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await claim(*a, **kw)
            finally:
                samples.append((time.time(), "claim", (time.perf_counter() - t0) * 1e3))

        async def timed_commit(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await commit(*a, **kw)
            finally:
                samples.append((time.time(), "commit", (time.perf_counter() - t0) * 1e3))

        q.claims.claim, q.committer.commit = timed_claim, timed_commit  # type: ignore[method-assign]
        processor = Processor(lambda eid, job: None)
        while not os.path.exists(stop_file):
            try:
                if await q.process_chunk(job_id, processor) is not None:
                    continue
            except InvalidTransition:  # finished
                pass
            # done: a new live job, as a busy queue has
            job_id = (await q.enqueue_job(ids(20_000, f"live-{secrets.token_hex(3)}-"), entity_type="company",
                                          provider="live", chunk_size=20)).id
    return samples


def _p(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _split(samples: list[list[Any]], t_start: float, t_end: float) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {"quiet": {"claim": [], "commit": []},
                                              "pruning": {"claim": [], "commit": []}}
    for at, kind, ms in samples:
        if at < t_start - 0.5 and at > t_start - QUIET_SECONDS:
            out["quiet"][kind].append(ms)
        elif t_start <= at <= t_end:
            out["pruning"][kind].append(ms)
    return out


def _under_load(url: str, live: int, work: Path) -> tuple[dict[str, Any], dict[str, dict[str, list[float]]]]:
    """Start the worker, prune after its quiet phase, stop it; what the prune did and the split latencies."""
    from chunkq.core import Pruner, Queue, RetentionPolicy

    stop = work / f"stop-{secrets.token_hex(3)}"
    proc = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.prune_section", url, str(live), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(2.0 + QUIET_SECONDS)  # imported, connected, then a quiet phase

        async def prune() -> dict[str, Any]:
            async with Queue(url) as q:
                t0, w0 = time.perf_counter(), time.time()
                result = await Pruner(q).prune(RetentionPolicy())
                return {"result": result, "seconds": time.perf_counter() - t0, "start": w0, "end": time.time()}

        done = asyncio.run(prune())
    finally:
        stop.touch()
        stdout, stderr = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"prune bench worker exited {proc.returncode}: {stderr.decode()[-800:]}")
    return done, _split(json.loads(stdout), done["start"], done["end"])


def _latency_rows(backend: str, n: int, done: dict[str, Any], lat: dict[str, dict[str, list[float]]]) -> list[Row]:
    result = done["result"]
    rows = []
    for kind in ("claim", "commit"):
        quiet, busy = lat["quiet"][kind], lat["pruning"][kind]
        rows.append(Row(
            SECTION, f"{backend}: worker {kind} p99 while pruning {n:,} old jobs", _p(busy, 0.99), "ms",
            None, "", TARGET_MS,
            note=f"p50 {_p(busy, 0.5):.1f} ms; without pruning p50 {_p(quiet, 0.5):.1f} / p99 {_p(quiet, 0.99):.1f} "
                 f"ms ({len(busy)} and {len(quiet)} {kind}s)",
            extra={"p50": _p(busy, 0.5), "p99": _p(busy, 0.99), "quiet_p50": _p(quiet, 0.5),
                   "quiet_p99": _p(quiet, 0.99), "samples": len(busy), "quiet_samples": len(quiet)}))
    rows.append(Row(SECTION, f"{backend}: prune {n:,} old jobs ({result.entities:,} entities, "
                             f"{result.errors:,} errors)", result.jobs / done["seconds"], "/s", None, "", None,
                    higher_is_better=True, note=f"{done['seconds']:.1f} s, {result.jobs:,} jobs",
                    extra={"seconds": done["seconds"], "jobs": result.jobs, "reclaimed_pages": result.reclaimed_pages}))
    return rows


def _sqlite(work: Path, n: int) -> list[Row]:
    from chunkq.core.vacuum import sqlite_file_bytes

    path = work / "prune.db"
    url = f"sqlite:///{path}"
    live, fill_s = fill(url, n, max(1, n // 20))
    full = sqlite_file_bytes(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the errors' table and its indexes, page by page (dbstat)
        error_bytes = conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'chunkq_errors' "
                                   "OR name LIKE 'ix_chunkq_errors%'").fetchone()[0] or 0
        errors = conn.execute("SELECT count(*) FROM chunkq_errors").fetchone()[0] or 1
    done, lat = _under_load(url, live, work)
    rows = _latency_rows("SQLite", n, done, lat)
    rows.append(Row(SECTION, "SQLite: bytes per stored error (row and indexes)", error_bytes / errors, "B", None, "",
                    None, note=f"{errors:,} errors, each with a {len(TRACEBACK):,}-character traceback",
                    extra={"error_bytes": error_bytes, "errors": errors, "traceback_chars": len(TRACEBACK)}))
    after = sqlite_file_bytes(path)
    fresh_path = work / "fresh.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:  # a compact database holding exactly what is left
        conn.execute("VACUUM INTO ?", (str(fresh_path),))
    fresh = fresh_path.stat().st_size
    rows.append(Row(SECTION, "SQLite: file after prune vs a fresh one holding the rest", after, "B", fresh,
                    "VACUUM INTO copy", 1.2,
                    note=f"{full / 1e6:,.0f} MB full ({fill_s:.0f} s bulk insert) -> {after / 1e6:,.1f} MB; "
                         f"fresh {fresh / 1e6:,.1f} MB; {done['result'].reclaimed_pages:,} pages given back",
                    extra={"full_bytes": full, "after_bytes": after, "fresh_bytes": fresh}))
    return rows


def _postgres(server_url: str, n: int, work: Path) -> list[Row]:
    name = f"chunkq_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        from chunkq.core import Queue
        from chunkq.core.vacuum import space, vacuum

        async def dead() -> int:
            await asyncio.sleep(1.5)  # each session's statistics reach the shared ones within a second
            async with Queue(url) as q:
                return sum((await space(q)).dead_rows.values())

        async def vacuumed() -> int:
            async with Queue(url) as q:
                return sum((await vacuum(q)).after.dead_rows.values())

        live, _fill_s = fill(url, n, max(1, n // 20))
        before = asyncio.run(dead())
        done, lat = _under_load(url, live, work)
        after = asyncio.run(dead())
        cleaned = asyncio.run(vacuumed())
        rows = _latency_rows("PostgreSQL", n, done, lat)
        rows.append(Row(SECTION, "PostgreSQL: dead tuples after the prune (n_dead_tup)", after, "rows", None, "",
                        None, note=f"before {before:,}; after `chunkq db vacuum` {cleaned:,} (autovacuum does the "
                                   "same on its schedule)",
                        extra={"before": before, "after_prune": after, "after_vacuum": cleaned}))
        return rows
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def prune(work: Path, server_url: str = DEFAULT_PG, n: int = 1_000_000,
          backends: tuple[str, ...] = ("sqlite", "postgres")) -> list[Row]:
    rows: list[Row] = []
    failed: list[str] = []
    runs = {"sqlite": ("SQLite", lambda: _sqlite(work, n)), "postgres": ("PostgreSQL", lambda: _postgres(server_url, n,
                                                                                                        work))}
    for name, run in (runs[b] for b in backends):
        try:
            rows.extend(run())
        except Exception as exc:  # one backend's failure must not throw the other's rows away
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"prune section, {name} failed: {exc}", file=sys.stderr)
    if failed and not rows:
        raise RuntimeError("; ".join(failed))
    return rows


if __name__ == "__main__":  # the worker process: URL JOB_ID STOP_FILE; prints its samples as JSON
    found = asyncio.run(_worker(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    print(json.dumps(found))
