"""The baselines chunkq is measured against, all on plain ``sqlite3``.

* ``JsonArrayQueue`` - the original design: one jobs row holding the whole job's
  IDs as a JSON array and its error log as another JSON array. Every chunk parses
  the whole array and rewrites the whole log, so a chunk's cost grows with the job.
* ``floor_loop`` - the least a correct chunk loop can do on SQLite (claim, read the
  chunk's IDs, mark, advance, commit; WAL, synchronous=NORMAL): the speed of light
  chunkq's throughput is compared with.
* ``huey_run`` - what a user might pick instead: huey's SqliteHuey, one task per entity.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


# --------------------------------------------------------------------------- the original design


class JsonArrayQueue:
    """The design's layout, as a minimal implementation of its chunk loop.

    find pending -> mark running -> ``json.loads`` the whole ID array -> slice the
    chunk -> process -> merge the new errors into the JSON error log -> update.
    """

    def __init__(self, path: Path) -> None:
        self.conn = _connect(path)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL,"
            " entity_ids TEXT NOT NULL, chunk_size INTEGER NOT NULL, processed_count INTEGER NOT NULL,"
            " total_count INTEGER NOT NULL, error_log TEXT NOT NULL, created_at REAL NOT NULL,"
            " updated_at REAL NOT NULL)"
        )

    def enqueue(self, ids: Sequence[str], chunk_size: int = 50) -> int:
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO jobs (status, entity_ids, chunk_size, processed_count, total_count, error_log,"
            " created_at, updated_at) VALUES ('pending', ?, ?, 0, ?, '[]', ?, ?)",
            (json.dumps(list(ids)), chunk_size, len(ids), now, now),
        )
        return int(cur.lastrowid or 0)

    def process_next_chunk(self, fn: Callable[[str], Any]) -> int:
        row = self.conn.execute(
            "SELECT id, entity_ids, chunk_size, processed_count, total_count FROM jobs"
            " WHERE status = 'pending' ORDER BY created_at LIMIT 1"
        ).fetchone()
        if row is None:
            return 0
        job_id, entity_ids, chunk_size, processed, total = row
        self.conn.execute("UPDATE jobs SET status = 'running', updated_at = ? WHERE id = ?", (time.time(), job_id))
        chunk = json.loads(entity_ids)[processed:processed + chunk_size]
        errors = []
        for eid in chunk:
            try:
                fn(eid)
            except Exception as exc:
                errors.append({"entityId": eid, "error": str(exc)})
        done = processed + len(chunk)
        log = self.conn.execute("SELECT error_log FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        merged = json.loads(log) + errors
        self.conn.execute(
            "UPDATE jobs SET processed_count = ?, status = ?, error_log = ?, updated_at = ? WHERE id = ?",
            (done, "complete" if done >= total else "pending", json.dumps(merged), time.time(), job_id),
        )
        return len(chunk)

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- the raw floor


FLOOR_SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT NOT NULL, priority INTEGER NOT NULL,
                   chunk_size INTEGER NOT NULL, next_pos INTEGER NOT NULL, next_chunk INTEGER NOT NULL,
                   total INTEGER NOT NULL, processed INTEGER NOT NULL);
CREATE TABLE entities (job_id INTEGER NOT NULL, pos INTEGER NOT NULL, entity_id TEXT NOT NULL,
                       PRIMARY KEY (job_id, pos)) WITHOUT ROWID;
CREATE TABLE chunks (job_id INTEGER NOT NULL, chunk_index INTEGER NOT NULL, start_pos INTEGER NOT NULL,
                     end_pos INTEGER NOT NULL, state TEXT NOT NULL, lease_expires_at REAL,
                     ok INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (job_id, chunk_index)) WITHOUT ROWID;
CREATE INDEX ix_jobs_claim ON jobs (status, priority, id);
"""


def floor_setup(path: Path, ids: Sequence[str], chunk_size: int) -> None:
    conn = _connect(path)
    conn.executescript(FLOOR_SCHEMA)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO jobs VALUES (1, 'pending', 0, ?, 0, 0, ?, 0)", (chunk_size, len(ids)))
    conn.executemany("INSERT INTO entities VALUES (1, ?, ?)", enumerate(ids))
    conn.execute("COMMIT")
    conn.close()


def floor_loop(path: Path, fn: Callable[[str, Any], Any], max_seconds: float) -> tuple[int, float]:
    """The least a correct chunk loop does; returns (entities, seconds) when done or out of time.

    Correct means what chunkq promises: the claim (advance the job, record the
    chunk's lease, read its IDs) and the mark (chunk done, job counters) are two
    short transactions, and the callback runs between them, outside any lock.
    """
    conn = _connect(path)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_seconds:
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        claimed = conn.execute(
            "UPDATE jobs SET next_pos = next_pos + chunk_size, next_chunk = next_chunk + 1, status = 'running'"
            " WHERE id = (SELECT id FROM jobs WHERE status IN ('pending', 'running') AND next_pos < total"
            " ORDER BY priority DESC, id LIMIT 1)"
            " RETURNING id, next_chunk - 1, next_pos - chunk_size, min(next_pos, total)"
        ).fetchone()
        if claimed is None:
            conn.execute("COMMIT")
            break
        job_id, index, start, end = claimed
        conn.execute(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, 'leased', ?, 0)", (job_id, index, start, end, now + 30)
        )
        chunk = conn.execute(
            "SELECT entity_id FROM entities WHERE job_id = ? AND pos >= ? AND pos < ? ORDER BY pos",
            (job_id, start, end),
        ).fetchall()
        conn.execute("COMMIT")
        for (eid,) in chunk:
            fn(eid, None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE chunks SET state = 'done', ok = ? WHERE job_id = ? AND chunk_index = ? AND state = 'leased'",
            (len(chunk), job_id, index),
        )
        conn.execute(
            "UPDATE jobs SET processed = processed + ?,"
            " status = CASE WHEN next_pos >= total THEN 'complete' ELSE 'pending' END WHERE id = ?",
            (len(chunk), job_id),
        )
        conn.execute("COMMIT")
        n += len(chunk)
    elapsed = time.perf_counter() - t0
    conn.close()
    return n, elapsed


# --------------------------------------------------------------------------- huey


def huey_run(path: Path, n: int) -> tuple[int, float]:
    """``n`` entities through huey end to end: enqueue one task per entity, then one worker drains them.

    SqliteHuey with its defaults (what a user would pick); the draining loop is what
    a huey consumer's worker does (dequeue, execute) without its polling sleeps.
    """
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(path))

    @huey.task()
    def enrich(entity_id: str) -> None:
        return None

    t0 = time.perf_counter()
    for i in range(n):
        enrich(f"company-{i:08d}")
    done = 0
    while True:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        done += 1
    elapsed = time.perf_counter() - t0
    huey.storage.close()  # type: ignore[attr-defined]
    return done, elapsed
