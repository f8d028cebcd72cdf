"""SQLite, the embedded default: one file shared by many worker processes.

Every connection gets WAL (readers never wait for the writer), a long
``busy_timeout`` (a writer waits for the lock instead of failing), and a write
transaction starts with ``BEGIN IMMEDIATE`` (the lock is taken up front, so two
writers never deadlock upgrading a read lock). A write runs whole in a worker
thread on a synchronous engine: one hand-off per transaction, where aiosqlite
would hand over every cursor call (~15 for a claim). A claim and a commit first
try to run at once, with no hand-off, when the write lock is free (``_AtOnce``).

Opening reads the schema through a read-only connection first, so a file that
is not chunkq's (or is newer) is left byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Integer, cast, event, func
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool
from sqlalchemy.sql import Insert

from .. import schema as s
from ..db import DEFAULT_DB_FILE, with_retries
from ..errors import InvalidInput
from .base import Backend, T, log

SQLITE_BUSY_TIMEOUT_MS = 60_000
#: the SQLite backend's own transaction threads (a process rarely has more than 3 transactions in flight)
TRANSACTION_THREADS = 4
#: a transaction thread waits for SQLite's write lock in slices this long, so that a caller that gave
#: up (a deadline) frees its thread within one (``sqlite3``'s busy wait cannot be interrupted)
BUSY_SLICE_MS = 250
#: bytes the write-ahead log is truncated to after a checkpoint resets it (twice what SQLite's default
#: checkpoint, every 1,000 pages, lets it reach)
WAL_SIZE_LIMIT = 8 * 1024 * 1024
#: SQLite's answers when a read-only connection cannot set up WAL's shared memory (read-only folder)
_SQLITE_READONLY_WAL = {1288, 1544}  # SQLITE_READONLY_CANTINIT, SQLITE_READONLY_DIRECTORY
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED


def _sqlite_has_json() -> bool:
    """Whether this Python's SQLite has the JSON functions (built in since 3.38; an option before)."""
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT json_group_array(1)").fetchone()
        return True
    except sqlite3.Error:
        return False


_HAS_JSON = _sqlite_has_json()


class _Abandoned(Exception):
    """The caller of a threaded transaction was cancelled before it committed."""


class SqliteBackend(Backend):
    """One file, many processes: WAL, a long busy timeout, writes in one thread hand-off.

    Those threads are the backend's own executor, not asyncio's default pool: a
    user's callback (or anything else on the default pool) can never keep a
    claim or a commit waiting for a thread.
    """

    name = "sqlite"
    blocking_writes = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.thread_engine: Engine | None = None  # hot transactions run whole in a worker thread
        self._executor: ThreadPoolExecutor | None = None
        self._at_once: _AtOnce | None = None  # the event loop thread's short transactions
        self.path = Path(make_url(url).database or DEFAULT_DB_FILE).expanduser()
        #: read-only in a read-only folder: WAL's shared memory cannot be set up, so the file is read
        #: as immutable (changes another process makes meanwhile may not be seen)
        self._immutable = False

    @property
    def where(self) -> str:
        return str(self.path)

    def _create_engines(self) -> None:
        url = make_url(self.url)
        if self.readonly:
            url = _readonly_url(url, self.path, immutable=self._immutable)
        else:
            parent = self.path.resolve().parent
            if not parent.is_dir():
                raise InvalidInput(f"cannot create SQLite database {str(self.path)!r}: folder {str(parent)!r} "
                                   "does not exist", field="url")
        timeout = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        self._engine = create_async_engine(url, connect_args=timeout)
        _sqlite_connection_settings(self._engine.sync_engine, readonly=self.readonly)

        @event.listens_for(self._engine.sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("chunkq_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if mode else "BEGIN")

        # Same file and settings, synchronous driver; the write path says BEGIN IMMEDIATE itself (no
        # "begin" listener: with no engine events SQLAlchemy takes its faster path for every statement).
        self.thread_engine = create_sync_engine(url.set(drivername="sqlite+pysqlite"), connect_args=timeout)
        _sqlite_connection_settings(self.thread_engine, readonly=self.readonly)
        # A claim, a commit, a heartbeat's renewal and a rate-limit token can be in flight at once.
        self._executor = ThreadPoolExecutor(max_workers=TRANSACTION_THREADS, thread_name_prefix="chunkq-db")

    async def read_schema(self) -> s.SchemaState:
        # Not through the engines: their connections switch the file to WAL, and a file that is not
        # chunkq's (or is newer) must be left byte for byte as it was. A missing file stays missing.
        if self.path.exists():
            state, self._immutable = await asyncio.get_running_loop().run_in_executor(
                None, _read_file_schema, self.path)
        else:
            state = s.SchemaState("missing")
        if self._engine is None:
            self._create_engines()
        return state

    def gather(self, column: Any, order_by: Any) -> Any:
        # JSON: SQLite has no arrays. ``json_group_array`` takes no ORDER BY before SQLite 3.44, so the
        # order is the scan's; the caller gathers the positions alongside and checks (``claims.py``).
        return func.json_group_array(column) if _HAS_JSON else None

    def gathered(self, value: Any) -> list[Any]:
        return json.loads(value) if value else []

    def floor(self, expr: Any) -> Any:
        # CAST truncates, which is floor() for a number that is never negative; SQLite's own floor()
        # exists only where it was built with the math functions (3.35+, an option)
        return cast(expr, Integer)

    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        return sqlite_insert(table).on_conflict_do_nothing()

    def writable(self) -> bool:
        folder = self.path.resolve().parent
        return not self._immutable and os.access(folder, os.W_OK) and (
            not self.path.exists() or os.access(self.path, os.W_OK))

    async def migration(self, fn: Callable[[Connection], T]) -> T:
        _engine, executor = self._threaded()
        return await asyncio.get_running_loop().run_in_executor(executor, _sqlite_migration, self, fn)

    async def close(self) -> None:
        await super().close()
        self.close_idle_connection()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        if self.thread_engine is not None:
            self.thread_engine.dispose()
            self.thread_engine = None

    def close_idle_connection(self) -> None:
        """Close the connection short transactions keep between them (``_AtOnce``); the next takes a new one.
        ``Engine.dispose`` closes only the pool's idle connections, and a file that stays open
        keeps, for one, Linux from remounting its filesystem read-only."""
        if self._at_once is not None:
            self._at_once.close()

    async def write(
        self,
        fn: Callable[[Connection], T],
        what: str,
        *,
        undo: Callable[[T], Awaitable[Any]] | None = None,
        attempts: int = 8,
        short: bool = False,
    ) -> T:
        engine, executor = self._threaded()
        if short:
            if self._at_once is None or self._at_once.engine is not engine:
                self._at_once = _AtOnce(engine)
            ran, result = self._at_once.run(fn)
            if ran:
                return result  # type: ignore[return-value]  # it ran: the result is fn's
        return await with_retries(lambda: _in_thread(executor, engine, fn, undo), attempts=attempts, what=what)

    async def write_once(self, fn: Callable[[Connection], T]) -> T:
        engine, executor = self._threaded()
        return await _in_thread(executor, engine, fn, None)

    def write_blocking(self, fn: Callable[[Connection], T]) -> T:
        engine, _executor = self._threaded()
        return _transaction(engine, fn, threading.Event())

    def _threaded(self) -> tuple[Engine, ThreadPoolExecutor]:
        engine, executor = self.thread_engine, self._executor
        if engine is None or executor is None:
            raise RuntimeError("the queue is not open: use 'async with Queue(...)' or 'await queue.open()'")
        return engine, executor


async def _in_thread(
    executor: ThreadPoolExecutor, engine: Engine, fn: Callable[[Connection], T],
    undo: Callable[[T], Awaitable[Any]] | None,
) -> T:
    cancelled = threading.Event()
    done = asyncio.get_running_loop().run_in_executor(executor, _transaction, engine, fn, cancelled)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        cancelled.set()
        try:
            committed = await done
        except BaseException:
            raise asyncio.CancelledError from None
        if undo is not None:
            await undo(committed)
        raise


class _Locked(Exception):
    """Another connection holds the file's write lock."""


class _AtOnce:
    """Short transactions run on the calling (event loop) thread if the write lock is free right now.

    A hand-off to the writer thread and back costs more than a claim or a commit
    itself (~80 us each way on a 2-core VM: measured, issue 14). When the lock is
    free, which it is for a worker most of the time, the transaction runs here and
    holds the loop for its own few statements only (and, every 1,000 pages written,
    for SQLite's automatic checkpoint); when it is taken (busy timeout 0: SQLite
    answers at once) or anything goes wrong, ``run`` says (False, None): the
    caller runs it in the writer thread, which waits for the lock and retries
    transient errors, as before. Nothing is ever half-applied: a failed attempt
    rolls back whole.

    The connection is kept between transactions (only this thread uses it):
    checking one out of the pool and back in cost a tenth of a no-op chunk.
    After an error it is closed and a fresh one taken next time.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    def run(self, fn: Callable[[Connection], T]) -> tuple[bool, T | None]:
        try:
            conn = self.conn
            if conn is None or conn.closed or conn.invalidated:
                conn = self.conn = self.engine.connect()
            driver: Any = conn.connection.dbapi_connection
            with conn.begin():
                driver.execute("PRAGMA busy_timeout = 0")
                try:
                    driver.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY or "locked" in str(exc):
                        raise _Locked from None
                    raise
                finally:
                    driver.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                result = fn(conn)
            return True, result
        except _Locked:
            return False, None
        except (DBAPIError, sqlite3.Error, OSError):
            self.close()
            return False, None
        except BaseException:
            self.close()  # rolled back; but what state an unexpected error left the connection in is unknown
            raise

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()  # closed for good: a connection an error went through goes back into no pool
            with contextlib.suppress(Exception):
                conn.close()


def _transaction(engine: Engine, fn: Callable[[Connection], T], cancelled: threading.Event) -> T:
    with engine.connect() as conn:
        with conn.begin():
            _begin_immediate(conn, cancelled)  # the file's write lock, taken up front
            result = fn(conn)
            if cancelled.is_set():
                raise _Abandoned  # rolls back: nobody is waiting for the result
        return result


def _begin_immediate(conn: Connection, cancelled: threading.Event) -> None:
    """``BEGIN IMMEDIATE``, waiting for the lock up to ``SQLITE_BUSY_TIMEOUT_MS`` as before, but in
    slices: a holder that never lets go (a process stopped while it holds it) keeps this thread only
    until its caller gives up (``cancelled``), not for the whole busy timeout. Free, it is one statement."""
    give_up = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_SLICE_MS}")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if getattr(exc.orig, "sqlite_errorcode", None) not in _SQLITE_BUSY or time.monotonic() >= give_up:
                    raise
                if cancelled.is_set():
                    raise _Abandoned from None
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _sqlite_connection_settings(engine: Engine, *, readonly: bool = False, foreign_keys: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so we can say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not readonly:  # both are writes (to the file's header, to the connection's journal)
            # First: a new file takes the mode only before anything is written to it, WAL's header
            # included; on an existing file it changes nothing until a VACUUM (``core/vacuum.py``)
            # and would wait for the write lock (up to the busy timeout, past any deadline), so it is
            # said to empty files only (a read: never waits in WAL mode).
            cur.execute("PRAGMA page_count")
            if cur.fetchone()[0] == 0:  # type: ignore[index]  # a PRAGMA's one row
                cur.execute("PRAGMA auto_vacuum = INCREMENTAL")
            cur.execute("PRAGMA journal_mode = WAL")
            # A log that grew while readers kept a checkpoint from resetting it (a prune beside busy
            # workers: 28 MB) is cut back to this after the next reset, instead of staying that big
            # for as long as any connection is open.
            cur.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cur.close()


def _readonly_url(url: Any, path: Path, *, immutable: bool) -> Any:
    """``file:PATH?mode=ro`` as a SQLAlchemy URL: SQLite itself refuses every write on it."""
    query = {"mode": "ro", "uri": "true"} | ({"immutable": "1"} if immutable else {})
    return url.set(database="file:" + quote(str(path.resolve()), safe="/"), query=query)


def _read_file_schema(path: Path) -> tuple[s.SchemaState, bool]:
    """The schema of a SQLite file, read on a read-only connection; and whether it had to be immutable."""
    for immutable in (False, True):
        url = _readonly_url(make_url("sqlite+pysqlite://"), path, immutable=immutable)
        engine = create_sync_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        try:
            with engine.connect() as conn:
                return s.read_state(conn), immutable
        except OperationalError as exc:
            if immutable or getattr(exc.orig, "sqlite_errorcode", None) not in _SQLITE_READONLY_WAL:
                raise
            log.debug("%s: read-only folder, reading the database as immutable", path)
        finally:
            engine.dispose()
    raise AssertionError("unreachable")  # pragma: no cover


def _sqlite_migration(backend: SqliteBackend, fn: Callable[[Connection], T]) -> T:
    """``fn`` in one ``BEGIN IMMEDIATE`` transaction (the file's write lock: one migrating process at a time).

    SQLite's own recipe for schema changes: foreign keys off for the connection
    (a table rebuilt by a batch migration must not cascade-delete its children),
    checked before the commit. A connection of its own, closed after, so no
    pooled connection keeps them off.
    """
    engine = create_sync_engine(make_url(backend.url).set(drivername="sqlite+pysqlite"), poolclass=NullPool,
                                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    _sqlite_connection_settings(engine, foreign_keys=False)
    try:
        with engine.connect() as conn:
            with conn.begin():
                # Say so when another process holds the lock (it may be migrating), then wait for it.
                conn.exec_driver_sql("PRAGMA busy_timeout = 0")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlite_errorcode", None) != 5:  # SQLITE_BUSY
                        raise
                    log.info("waiting for another process to finish changing the schema of %s", backend.where)
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                result = fn(conn)
                orphans = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if orphans:
                    raise RuntimeError(f"the migration left rows whose parent row is gone: {orphans[:3]}")
            return result
    finally:
        engine.dispose()

