"""Section 6: PostgreSQL, several worker processes on one job.

A throw-away database (unique name) is created on the server and dropped at the
end. Workers are real processes started together (``--start-at``) so their
measuring windows overlap; each reports its own entities/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from typing import Any

from sqlalchemy.engine import make_url

from .common import Row, ids

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


async def _admin(server_url: str, sql: str) -> None:
    import asyncpg

    u = make_url(server_url)
    conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                                 password=u.password, database=u.database or "postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _sleepy(entity_id: str, job: Any) -> None:
    time.sleep(0.005)


def _noop(entity_id: str, job: Any) -> None:
    return None


async def _work(url: str, seconds: float, sleep: bool, start_at: float) -> dict[str, Any]:
    from chunkq.core import Queue, Worker

    async with Queue(url) as q:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t0, c0 = time.perf_counter(), time.process_time()
        summary = await Worker(q, _sleepy if sleep else _noop, max_seconds=seconds).run()
        return {"entities": summary.entities, "chunks": summary.chunks, "seconds": time.perf_counter() - t0,
                "cpu": time.process_time() - c0}


async def _pg_floor(url: str, seconds: float, n: int = 100_000) -> float:
    """A raw asyncpg chunk loop doing what a correct queue must (the SQLite floor's statements):
    a claim transaction and a mark transaction per chunk, each committed durably. Entities/s."""
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                 database=u.database)
    try:
        await conn.execute(
            "CREATE TABLE floor_jobs (id bigint PRIMARY KEY, status text NOT NULL, chunk_size int NOT NULL,"
            " next_pos bigint NOT NULL, next_chunk int NOT NULL, total bigint NOT NULL, processed bigint NOT NULL);"
            "CREATE TABLE floor_entities (job_id bigint, pos bigint, entity_id text NOT NULL,"
            " PRIMARY KEY (job_id, pos));"
            "CREATE TABLE floor_chunks (job_id bigint, chunk_index int, start_pos bigint, end_pos bigint,"
            " state text NOT NULL, lease_expires_at float8, ok int NOT NULL DEFAULT 0,"
            " PRIMARY KEY (job_id, chunk_index));"
            f"INSERT INTO floor_jobs VALUES (1, 'pending', 50, 0, 0, {n}, 0)"
        )
        await conn.copy_records_to_table("floor_entities", records=[(1, i, e) for i, e in enumerate(ids(n))])
        done = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            async with conn.transaction():
                row = await conn.fetchrow(
                    "UPDATE floor_jobs SET next_pos = next_pos + chunk_size, next_chunk = next_chunk + 1,"
                    " status = 'running' WHERE id = (SELECT id FROM floor_jobs WHERE status IN ('pending',"
                    " 'running') AND next_pos < total ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                    " RETURNING id, next_chunk - 1 AS idx, next_pos - chunk_size AS start,"
                    " least(next_pos, total) AS end")
                if row is None:
                    break
                await conn.execute("INSERT INTO floor_chunks VALUES ($1, $2, $3, $4, 'leased', $5, 0)",
                                   row["id"], row["idx"], row["start"], row["end"], time.time() + 30)
                chunk = await conn.fetch("SELECT entity_id FROM floor_entities WHERE job_id = $1 AND pos >= $2"
                                         " AND pos < $3 ORDER BY pos", row["id"], row["start"], row["end"])
            for r in chunk:
                _noop(r[0], None)
            async with conn.transaction():
                await conn.execute("UPDATE floor_chunks SET state = 'done', ok = $3 WHERE job_id = $1"
                                   " AND chunk_index = $2 AND state = 'leased'", row["id"], row["idx"], len(chunk))
                await conn.execute("UPDATE floor_jobs SET processed = processed + $2, status = CASE WHEN"
                                   " next_pos >= total THEN 'complete' ELSE 'pending' END WHERE id = $1",
                                   row["id"], len(chunk))
            done += len(chunk)
        return done / (time.perf_counter() - t0)
    finally:
        await conn.close()


def _workers(url: str, n: int, seconds: float, sleep: bool) -> list[dict[str, Any]]:
    start_at = time.time() + 3.0  # every process imported and connected by then
    cmd = [sys.executable, "-m", "tests.benchmarks.postgres_section", url, str(seconds),
           "sleep" if sleep else "noop", str(start_at)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=seconds + 60)
        if p.returncode != 0:
            raise RuntimeError(f"PostgreSQL worker exited {p.returncode}: {stderr.decode()[-500:]}")
        out.append(json.loads(stdout))
    return out


def postgres(server_url: str = DEFAULT_PG, seconds: float = 4.0) -> list[Row]:
    name = f"chunkq_bench_{os.getpid()}_{secrets.token_hex(3)}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        from chunkq.core import Queue

        async def setup() -> int:
            async with Queue(url) as q:
                job = await q.enqueue_job(ids(1_000_000), entity_type="company", provider="bench", chunk_size=50,
                                          max_workers=4)
                return job.id

        async def own_jobs(shared: int) -> list[int]:
            """Park the shared job and give each of two workers a job of its own."""
            async with Queue(url) as q:
                await q.pause(shared)
                return [(await q.enqueue_job(ids(100_000, f"own{i}-"), entity_type="company", provider="bench",
                                             chunk_size=50)).id for i in range(2)]

        async def back_to_shared(shared: int, own: list[int]) -> None:
            async with Queue(url) as q:
                for job_id in own:
                    await q.cancel(job_id)
                await q.resume(shared)

        shared = asyncio.run(setup())

        def rate(results: list[dict[str, Any]]) -> tuple[float, float, float]:
            """Total entities/s, the slowest worker's, and the mean share of a core each worker used."""
            per = [r["entities"] / r["seconds"] for r in results]
            return sum(per), min(per), sum(r["cpu"] / r["seconds"] for r in results) / len(results)

        floor = asyncio.run(_pg_floor(url, seconds))
        one, _, cpu1 = rate(_workers(url, 1, seconds, sleep=False))
        two, two_min, cpu2 = rate(_workers(url, 2, seconds, sleep=False))
        own = asyncio.run(own_jobs(shared))
        two_own, _, _ = rate(_workers(url, 2, seconds, sleep=False))
        asyncio.run(back_to_shared(shared, own))
        s1, _, _ = rate(_workers(url, 1, seconds, sleep=True))
        s4, _, _ = rate(_workers(url, 4, seconds, sleep=True))
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return [
        Row("6 postgres", "PostgreSQL, 1 worker process, no-op", one, "/s", None, "", 10_000,
            higher_is_better=True, note=f"raw asyncpg loop, same transactions: {floor:,.0f}/s "
            f"(chunkq = {one / floor:.2f}× of it); worker used {cpu1:.0%} of a core",
            extra={"raw_asyncpg_floor": floor, "worker_cpu": cpu1}),
        Row("6 postgres", "PostgreSQL, 2 worker processes, per worker", two / 2, "/s", None, "", 10_000,
            higher_is_better=True, note=f"one shared job: total {two:,.0f}/s, slowest worker {two_min:,.0f}/s, "
            f"each used {cpu2:.0%} of a core; a job each: {two_own / 2:,.0f}/s per worker",
            extra={"total": two, "worker_cpu": cpu2, "per_worker_own_jobs": two_own / 2}),
        Row("6 postgres", "PostgreSQL, 4 vs 1 processes, 5 ms callback", s4, "/s", s1, "1 worker",
            3.2, higher_is_better=True, note="ideal 4×: 200/s per worker"),
    ]


if __name__ == "__main__":  # one worker process
    url_, seconds_, kind, start = sys.argv[1:5]
    print(json.dumps(asyncio.run(_work(url_, float(seconds_), kind == "sleep", float(start)))))
