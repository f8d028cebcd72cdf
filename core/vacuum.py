"""Space comes back after a prune: SQLite's incremental vacuum, ``chunkq db vacuum``, PostgreSQL's dead rows.

Deleting rows frees pages inside a SQLite file but never shrinks it (issue 26: a
111 MB file stayed 111 MB), and leaves dead tuples in PostgreSQL's tables until a
vacuum passes. The choices, and why:

* **SQLite, new databases: ``auto_vacuum = INCREMENTAL``.** It must be set before
  the first table exists, so the backend's connection settings say it before
  anything else (before WAL, whose first write fixes the header). The file then
  keeps a map of its pages, and ``PRAGMA incremental_vacuum`` moves pages from the
  end of the file into the free ones and truncates it. The pruner does that after
  its batches (``reclaim``), ``VACUUM_PAGES`` pages per transaction: about 25 µs a
  page measured here, so a step holds the write lock for about 12 ms, then leaves
  it to workers' claims and commits at least as long, as the delete batches do.
  ``FULL`` auto-vacuum would do it inside every delete transaction instead (the
  pruner's batches would hold the lock longer, and every commit pays for it).
* **SQLite, databases created before: one ``chunkq db vacuum``.** Switching an
  existing file to incremental takes a full ``VACUUM``, which rewrites the file
  and holds the write lock for as long as that takes (seconds per hundred MB):
  workers would wait on every claim, so it refuses while a worker is alive.
  Afterwards the pruner keeps the file small by itself. Python's sqlite3 steps a
  statement that returns no columns once, and one step of ``incremental_vacuum``
  frees one page: hence one ``incremental_vacuum(1)`` per page.
* **PostgreSQL: batched deletes, autovacuum, and ``VACUUM (ANALYZE)`` on demand.**
  A plain ``VACUUM`` takes no lock that blocks reads or writes, so ``chunkq db
  vacuum`` runs it while workers run; it makes the dead rows' space reusable (the
  files do not shrink: ``VACUUM FULL`` would, under an exclusive lock, and is
  never run for you). The README lists the autovacuum settings for chunkq's tables.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from . import schema as s
from .errors import InvalidTransition
from .registry import Registry

if TYPE_CHECKING:
    from .queue import Queue

#: pages one incremental-vacuum transaction gives back at most (2 MB at SQLite's 4 KiB pages)
VACUUM_PAGES = 500
#: SQLite's ``PRAGMA auto_vacuum`` values
AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}
INCREMENTAL = 2
#: the tables a PostgreSQL vacuum and the dead-row report cover
TABLES = (s.jobs.name, s.entities.name, s.chunks.name, s.retries.name, s.errors.name)


@dataclass
class SpaceReport:
    """How much room the database takes, and how much of it is waiting to be given back."""

    backend: str
    where: str
    #: SQLite: the file and its write-ahead log, in bytes
    file_bytes: int | None = None
    page_size: int | None = None
    page_count: int | None = None
    #: SQLite: pages inside the file that hold nothing (an incremental vacuum gives them back)
    free_pages: int | None = None
    auto_vacuum: str | None = None
    #: PostgreSQL: ``pg_stat_user_tables.n_dead_tup`` / ``n_live_tup`` per chunkq table
    dead_rows: dict[str, int] = field(default_factory=dict)
    live_rows: dict[str, int] = field(default_factory=dict)
    #: PostgreSQL: bytes of the tables with their indexes and TOAST
    table_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "where": self.where, "file_bytes": self.file_bytes,
                "page_size": self.page_size, "page_count": self.page_count, "free_pages": self.free_pages,
                "auto_vacuum": self.auto_vacuum, "dead_rows": self.dead_rows, "live_rows": self.live_rows,
                "table_bytes": self.table_bytes}


@dataclass
class VacuumResult:
    before: SpaceReport
    after: SpaceReport

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before.to_dict(), "after": self.after.to_dict()}


def _is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


def reclaim_step(conn: Connection, pages: int = VACUUM_PAGES) -> int:
    """Give up to ``pages`` free pages back to the file system, inside the caller's write transaction.

    Returns how many went; 0 on PostgreSQL (autovacuum's business) and on a SQLite
    file not in incremental mode (it needs one ``chunkq db vacuum`` first).
    """
    if not _is_sqlite(conn) or conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != INCREMENTAL:
        return 0
    n = min(int(conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0), max(0, pages))
    for _ in range(n):
        conn.exec_driver_sql("PRAGMA incremental_vacuum(1)")
    return n


async def reclaim(
    queue: Queue,
    *,
    pages: int = VACUUM_PAGES,
    max_steps: int | None = None,
    pause: float = 0.0,
    stop: Callable[[], bool] | None = None,
    each: Callable[[Connection], None] | None = None,
) -> int:
    """``reclaim_step`` in short transactions until nothing is left (or ``max_steps``/``stop``); pages freed.

    ``each`` runs first in every transaction (the pruner renews its lease there).
    """
    total = steps = 0
    if queue.backend.name != "sqlite":
        return 0

    def tx(conn: Connection) -> int:
        if each is not None:
            each(conn)
        return reclaim_step(conn, pages)

    took = 0.0
    while max_steps is None or steps < max_steps:
        if stop is not None and stop():
            break
        if steps:  # the write lock left to the workers at least as long as the step held it
            await asyncio.sleep(max(pause, took))
        steps += 1
        started = time.monotonic()
        n = await queue.backend.write(tx, "giving pruned pages back to the file system")
        took = time.monotonic() - started
        total += n
        if n < pages:
            break
    return total


async def space(queue: Queue) -> SpaceReport:
    """The database's size and what a vacuum could give back (reads only)."""
    backend = queue.backend

    def read(conn: Connection) -> SpaceReport:
        report = SpaceReport(backend.name, backend.where)
        if _is_sqlite(conn):
            pragma = conn.exec_driver_sql
            report.page_size = int(pragma("PRAGMA page_size").scalar() or 0)
            report.page_count = int(pragma("PRAGMA page_count").scalar() or 0)
            report.free_pages = int(pragma("PRAGMA freelist_count").scalar() or 0)
            report.auto_vacuum = AUTO_VACUUM.get(int(pragma("PRAGMA auto_vacuum").scalar() or 0), "unknown")
            report.file_bytes = sqlite_file_bytes(Path(backend.where))
            return report
        rows = conn.execute(text(
            "SELECT relname, n_dead_tup, n_live_tup, pg_total_relation_size(relid) AS size "
            "FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY(:names)"
        ), {"names": list(TABLES)}).all()
        report.dead_rows = {r.relname: int(r.n_dead_tup) for r in rows}
        report.live_rows = {r.relname: int(r.n_live_tup) for r in rows}
        report.table_bytes = sum(int(r.size) for r in rows)
        return report

    return await backend.read(read, "measuring the database's size")


def sqlite_file_bytes(path: Path) -> int:
    """The database file and its write-ahead log, as the disk sees them."""
    total = 0
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            total += os.stat(p).st_size
        except FileNotFoundError:
            pass
    return total


async def vacuum(queue: Queue, *, force: bool = False) -> VacuumResult:
    """``chunkq db vacuum``: SQLite, rewrite the file compactly in incremental mode; PostgreSQL, ``VACUUM (ANALYZE)``.

    SQLite's ``VACUUM`` holds the write lock until the whole file is rewritten, so
    it refuses (``InvalidTransition``) while a worker is alive unless ``force``.
    """
    before = await space(queue)
    backend = queue.backend
    if backend.name == "sqlite":
        alive = await backend.read(lambda conn: Registry.count_alive(conn, queue.now()), "counting live workers")
        if alive and not force:
            raise InvalidTransition(
                f"{alive} worker{'s are' if alive != 1 else ' is'} alive on this database: VACUUM rewrites the "
                "whole file and holds the write lock until it is done, so their claims and commits would wait. "
                "Stop them first (`chunkq workers`), or pass --force to accept the wait")
        await asyncio.get_running_loop().run_in_executor(None, _sqlite_vacuum, backend.url)
    else:
        async with backend.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            # a big table's vacuum may run past the session's statement_timeout (a bound for the hot path)
            await conn.exec_driver_sql("SET statement_timeout = 0")
            for table in TABLES:
                await conn.exec_driver_sql(f'VACUUM (ANALYZE) "{table}"')
    return VacuumResult(before, await space(queue))


def _sqlite_vacuum(url: str) -> None:
    """``VACUUM`` in incremental mode on a connection of its own (VACUUM cannot run inside a transaction)."""
    engine = create_engine(make_url(url).set(drivername="sqlite+pysqlite"), poolclass=NullPool,
                           connect_args={"timeout": 60.0}, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect with the VACUUM
            conn.exec_driver_sql("VACUUM")
            # the rewritten pages went through the write-ahead log: put them in the file and empty the log
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()
    finally:
        engine.dispose()
