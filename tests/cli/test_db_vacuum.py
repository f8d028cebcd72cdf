"""`chunkq db space` and `chunkq db vacuum` (issue 26), both backends; refusals exit 2 and change nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue, Registration, Worker
from chunkq.core.retention import DAY

from .helpers import one_line_error

pytestmark = pytest.mark.timeout(300)


def old_cancelled(url: str, n: int = 2000) -> None:
    async def go() -> None:
        async with Queue(url, clock=lambda: time.time() - 40 * DAY) as q:
            job = await q.enqueue_job([f"entity-{i:06d}-{'x' * 60}" for i in range(n)], entity_type="t",
                                      provider="p")
            await q.cancel(job.id)

    asyncio.run(go())


def test_prune_then_space_and_vacuum(cli: Any, db_url: str) -> None:
    old_cancelled(db_url)
    assert cli("prune").exit_code == 0
    shown = cli("db", "space", "--json")
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    done = cli("db", "vacuum", "--json")
    assert done.exit_code == 0, done.output
    after = json.loads(done.output)["after"]
    if db_url.startswith("sqlite"):
        # a database chunkq made is incremental: the prune gave its pages back already
        assert report["auto_vacuum"] == "incremental" and report["free_pages"] == 0
        assert after["auto_vacuum"] == "incremental" and after["free_pages"] == 0
    else:
        assert after["dead_rows"]["chunkq_entities"] == 0 and after["live_rows"]["chunkq_entities"] == 0
    assert "on disk" in cli("db", "space").output or "dead" in cli("db", "space").output


def test_vacuum_of_a_missing_database_exits_2_and_creates_nothing(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    result = cli("db", "vacuum", db=str(path))
    assert result.exit_code == 2, result.output
    one_line_error(result.output)
    assert not path.exists()


def test_sqlite_vacuum_refuses_while_a_worker_is_alive(cli: Any, sqlite_url: str) -> None:
    old_cancelled(sqlite_url, 10)
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path, isolation_level=None) as conn:  # a file made before chunkq set the mode
        conn.execute("PRAGMA auto_vacuum = NONE")
        conn.execute("VACUUM")

    async def with_a_worker() -> Any:
        async with Queue(sqlite_url) as q, Registration(q, Worker(q, None), kind="worker", interval=3600):
            return await asyncio.to_thread(cli, "db", "vacuum", db=sqlite_url)

    result = asyncio.run(with_a_worker())
    assert result.exit_code == 2, result.output
    assert "1 worker is alive" in one_line_error(result.output)
    assert "auto_vacuum none" in cli("db", "space", db=sqlite_url).output
    assert cli("db", "vacuum", db=sqlite_url).exit_code == 0  # the worker has stopped
    assert "auto_vacuum incremental" in cli("db", "space", db=sqlite_url).output
