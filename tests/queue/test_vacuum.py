"""Space comes back after a prune (issue 26): SQLite's incremental vacuum, `vacuum()`, PostgreSQL's dead rows.

Real files and the real server; jobs are made old with an injected clock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from chunkq.core import InvalidTransition, Pruner, Queue, Registration, RetentionPolicy, Worker
from chunkq.core.retention import DAY
from chunkq.core.vacuum import TABLES, VACUUM_PAGES, space, sqlite_file_bytes, vacuum

pytestmark = pytest.mark.timeout(300)

NOW = time.time()
#: long IDs so a job takes a few hundred pages
PAD = "x" * 120


async def old_cancelled_jobs(url: str, jobs: int, n: int, *, days_ago: float = 40) -> list[int]:
    async with Queue(url, clock=lambda: NOW - days_ago * DAY) as q:
        ids = []
        for j in range(jobs):
            job = await q.enqueue_job([f"{PAD}-{j}-{i}" for i in range(n)], entity_type="t", provider="p")
            await q.cancel(job.id)
            ids.append(job.id)
        return ids


def _path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def _auto_vacuum(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])


async def test_a_new_sqlite_database_is_incremental(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        await q.enqueue_job(["a"], entity_type="t", provider="p")
        assert (await space(q)).auto_vacuum == "incremental"
    assert _auto_vacuum(_path(sqlite_url)) == 2


async def test_prune_gives_the_space_back_in_short_steps(sqlite_url: str) -> None:
    await old_cancelled_jobs(sqlite_url, 4, 6000)
    async with Queue(sqlite_url) as q:
        kept = await q.enqueue_job([f"{PAD}-kept-{i}" for i in range(500)], entity_type="t", provider="p")
        full = await space(q)
        result = await Pruner(q).prune(RetentionPolicy())
        after = await space(q)
    assert result.jobs == 4 and result.entities == 24000
    # more pages than one step gives back: it took several transactions
    assert result.reclaimed_pages > VACUUM_PAGES
    assert after.free_pages == 0
    assert after.page_count is not None and full.page_count is not None
    assert after.page_count < full.page_count - result.reclaimed_pages // 2
    async with Queue(sqlite_url) as q:
        assert (await q.get_job(kept.id)).total_count == 500


async def test_a_cut_short_round_leaves_the_vacuum_to_the_next(sqlite_url: str) -> None:
    await old_cancelled_jobs(sqlite_url, 3, 2000)
    async with Queue(sqlite_url) as q:
        first = await Pruner(q, batch_rows=1000).prune(RetentionPolicy(), max_batches=2)
        assert first.reclaimed_pages == 0 and (await space(q)).free_pages
        rest = await Pruner(q, batch_rows=1000).prune(RetentionPolicy())
        assert rest.reclaimed_pages > 0 and (await space(q)).free_pages == 0


async def test_an_old_file_needs_one_vacuum_then_prunes_shrink_it(sqlite_url: str) -> None:
    path = _path(sqlite_url)
    await old_cancelled_jobs(sqlite_url, 2, 3000)
    with sqlite3.connect(path, isolation_level=None) as conn:  # a file made before chunkq set the mode
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")
    assert _auto_vacuum(path) == 0
    async with Queue(sqlite_url) as q:
        pruned = await Pruner(q).prune(RetentionPolicy())
        stuck = await space(q)
        assert pruned.jobs == 2 and pruned.reclaimed_pages == 0
        assert stuck.free_pages and stuck.auto_vacuum == "none"
        done = await vacuum(q)
    assert done.before.auto_vacuum == "none" and done.after.auto_vacuum == "incremental"
    assert done.after.free_pages == 0
    assert done.after.file_bytes is not None and done.before.file_bytes is not None
    assert done.after.file_bytes < done.before.file_bytes / 2
    assert sqlite_file_bytes(path) == done.after.file_bytes
    assert _auto_vacuum(path) == 2


async def test_sqlite_vacuum_refuses_while_a_worker_is_alive(sqlite_url: str) -> None:
    await old_cancelled_jobs(sqlite_url, 1, 10)
    with sqlite3.connect(_path(sqlite_url), isolation_level=None) as conn:  # a file made before chunkq set the mode
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")
    async with Queue(sqlite_url) as q, Registration(q, Worker(q, None), kind="worker", interval=3600):
        with pytest.raises(InvalidTransition, match="1 worker is alive"):
            await vacuum(q)
        assert (await space(q)).auto_vacuum == "none"  # the VACUUM never ran
        forced = await vacuum(q, force=True)
        assert forced.after.auto_vacuum == "incremental"


async def test_postgres_vacuum_clears_dead_rows(pg_url: str) -> None:
    await old_cancelled_jobs(pg_url, 2, 2000)
    async with Queue(pg_url) as q:
        result = await Pruner(q).prune(RetentionPolicy())
        assert result.jobs == 2 and result.reclaimed_pages == 0  # autovacuum's business
        async with Registration(q, Worker(q, None), kind="worker", interval=3600):
            done = await vacuum(q)  # a plain VACUUM: fine while workers run
    assert set(done.after.dead_rows) == set(TABLES)
    assert done.after.dead_rows["chunkq_entities"] == 0
    assert done.after.live_rows["chunkq_entities"] == 0
