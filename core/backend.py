"""The database behind the queue: engines, the transaction executor, and every SQLite/PostgreSQL difference.

The rest of core writes each transaction once, as a plain function of a
synchronous SQLAlchemy ``Connection``, and hands it to ``backend.write`` (or
``backend.read``). How it runs is this module's business:

* **SQLite** is the embedded default, shared by many worker *processes* on one
  file. Every connection gets WAL (readers never wait for the writer), a long
  ``busy_timeout`` (a writer waits for the lock instead of failing), and a write
  transaction starts with ``BEGIN IMMEDIATE`` (the lock is taken up front, so two
  writers never deadlock upgrading a read lock). A write runs whole in a worker
  thread on a synchronous engine: one hand-off per transaction, where aiosqlite
  would hand over every cursor call (~15 for a claim). A claim and a commit first
  try to run at once, with no hand-off, when the write lock is free (``_at_once``).
* **PostgreSQL** runs the same function on the async engine (asyncpg). Rows are
  locked, not the database, so claims skip rows other workers hold
  (``SKIP LOCKED``), and advisory locks serialise what has no row to lock yet.
  A row lock is only as good as its holder's network: every session is bounded
  by settings derived from the lease (``pg_session_bounds``: idle in transaction,
  lock waits, statements, TCP keepalives on both ends), so a worker whose
  connection goes silent mid-transaction holds the others for about a lease, not
  for the two hours of the kernel's keepalive (issue 24). The URL's libpq
  parameters (``?sslmode=require``) are mapped to asyncpg in ``db.pg_connect_params``.

Opening reads the schema first, without writing (SQLite: through a read-only
connection), and changes it only when asked to create or upgrade; the change
runs in one process at a time, in one transaction (``migration``; the steps
themselves are in ``migrations/``).

Adding a backend means one subclass here; nothing else in core asks which
database it talks to (which is why this module is longer than most: every
difference, opening and schema changes included, is here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, func, text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Select

from . import schema as s
from .db import (
    DEFAULT_DB_FILE,
    current_deadline,
    display_url,
    normalize_url,
    pg_connect_params,
    with_retries,
)
from .errors import InvalidInput

T = TypeVar("T")
Rows = Sequence[tuple[int, int, str]]  # (job_id, pos, entity_id)

SQLITE_BUSY_TIMEOUT_MS = 60_000
#: the SQLite backend's own transaction threads (a process rarely has more than 3 transactions in flight)
TRANSACTION_THREADS = 4
PING_IDLE_SECONDS = 1.0
#: PostgreSQL: the range the lease is kept within to bound a silent session (``pg_session_bounds``)
BOUND_SECONDS = (2.0, 60.0)
#: PostgreSQL: the range of ``statement_timeout`` (4 × the lease)
STATEMENT_SECONDS = (60.0, 600.0)
#: the longest closing connections may take (a silent server never answers the goodbye)
CLOSE_SECONDS = 2.0
#: a transaction thread waits for SQLite's write lock in slices this long, so that a caller that gave
#: up (a deadline) frees its thread within one (``sqlite3``'s busy wait cannot be interrupted)
BUSY_SLICE_MS = 250
#: the advisory lock that serialises schema changes on PostgreSQL (chunkq 0.1.0 took the same one
#: to create its tables, so an 0.1.0 process opening mid-migration waits, then refuses the newer schema)
SCHEMA_LOCK = 7270351
#: SQLite's answers when a read-only connection cannot set up WAL's shared memory (read-only folder)
_SQLITE_READONLY_WAL = {1288, 1544}  # SQLITE_READONLY_CANTINIT, SQLITE_READONLY_DIRECTORY
_SQLITE_BUSY = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED

log = logging.getLogger("chunkq.db")


def _sqlite_has_json() -> bool:
    """Whether this Python's SQLite has the JSON functions (built in since 3.38; an option before)."""
    try:
        with contextlib.closing(sqlite3.connect(":memory:")) as conn:
            conn.execute("SELECT json_group_array(1)").fetchone()
        return True
    except sqlite3.Error:
        return False


_HAS_JSON = _sqlite_has_json()


async def _dropped_if_given_up(conn: AsyncConnection, work: Awaitable[T]) -> T:
    """``work`` on ``conn``; if a deadline gives it up (``db.deadline``), the connection is closed at once.

    Cancelling SQLAlchemy's ``run_sync`` rolls the transaction back on the same
    connection before it lets go, and on a server that stopped answering that
    rollback waits as long as the statement did: the cancellation would never
    land, and the pool would keep a wedged connection. Closing the socket first
    fails both at once; the pool then replaces the connection. Outside a
    deadline nothing gives a transaction up, and it runs without the extra task.
    """
    if current_deadline() is None:
        return await work
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            conn.sync_connection.connection.dbapi_connection.terminate()  # type: ignore[union-attr]
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, CLOSE_SECONDS)
        raise


class _Abandoned(Exception):
    """The caller of a threaded transaction was cancelled before it committed."""


class Backend:
    """One database: its engines, how a transaction runs on it, and what it does differently.

    The defaults below are the portable behaviour; a subclass overrides what its
    database does better or needs in addition.
    """

    name: ClassVar[str]
    #: row-level locks exist (claims skip locked candidates, then wait for them)
    row_locks: ClassVar[bool] = False
    #: ``write_blocking`` works: a transaction can run from a plain thread, off the event loop
    blocking_writes: ClassVar[bool] = False

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None
        #: never create nor change the schema; on SQLite the file is opened read-only
        self.readonly = False
        #: the schema found (and brought up to date, if asked) by ``open``
        self.schema: s.SchemaState | None = None
        #: the schema this process migrated from, under the lock (None: it changed nothing)
        self.migrated_from: s.SchemaState | None = None
        #: the queue's lease: what PostgreSQL's session bounds are derived from (``pg_session_bounds``)
        self.lease_seconds = 30.0

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def where(self) -> str:
        """The database as messages name it: a file path, or the URL without password or driver."""
        return self.display_url.replace("+asyncpg", "")

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the queue is not open: use 'async with Queue(...)' or 'await queue.open()'")
        return self._engine

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    async def open(self, *, create: bool = True, upgrade: bool = False, readonly: bool = False) -> s.SchemaState:
        """Create the engines and check the schema; create it (``create``: a missing or empty
        database) or migrate it (``upgrade``: an older one) only where asked.

        Anything else that is not the current schema raises ``NoDatabase`` or
        ``SchemaMismatch`` before a single write, leaving the database as it was.
        """
        self.readonly = readonly
        state = await self.read_schema()
        s.refuse(state, self.where, create=create, upgrade=upgrade, readonly=readonly, writable=self.writable())
        if state.needs_upgrade:
            state = await self.migrate(create=create, upgrade=upgrade)
        self.schema = state
        return state

    async def read_schema(self) -> s.SchemaState:
        """The schema as it is, read without writing anything (creates the engines, connects)."""
        if self._engine is None:
            self._create_engines()

        async def once() -> s.SchemaState:
            async with self.engine.connect() as conn:
                return await conn.run_sync(s.read_state)

        return await with_retries(once, attempts=3, what=f"reading the schema of {self.where}")

    def writable(self) -> bool:
        """Whether this user may write the database at all (advice in messages; never a permission check)."""
        return True

    async def migrate(self, *, create: bool = True, upgrade: bool = True, target: str | None = None) -> s.SchemaState:
        """Bring the schema to ``target`` (default: the newest revision): one process at a time, one transaction.

        Whoever gets the lock reads the schema again, so a process that waited
        finds the work done and changes nothing.
        """
        from .migrations.runner import migrate  # Alembic is loaded only when a schema changes

        def run(conn: Connection) -> tuple[s.SchemaState, s.SchemaState]:
            return migrate(conn, self.where, create=create, upgrade=upgrade, target=target)

        before, after = await with_retries(lambda: self.migration(run), attempts=3,
                                           what=f"upgrading the schema of {self.where}")
        if before.kind != after.kind or before.revision != after.revision:
            self.migrated_from = before
        return after

    async def migration(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` alone: under the schema lock, in one transaction that a failure rolls back whole."""
        raise NotImplementedError

    def _create_engines(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            try:
                # closing a connection says goodbye to the server and waits for it: a silent one
                # would hold the process's exit for as long as it stays silent
                await asyncio.wait_for(engine.dispose(), CLOSE_SECONDS)
            except Exception as exc:  # TimeoutError included
                log.debug("closing the connections to %s: %s; dropping them", self.where, exc)
                with contextlib.suppress(Exception):
                    await engine.dispose(close=False)

    # ------------------------------------------------------------------ transactions

    async def write(
        self,
        fn: Callable[[Connection], T],
        what: str,
        *,
        undo: Callable[[T], Awaitable[Any]] | None = None,
        attempts: int = 8,
        short: bool = False,
    ) -> T:
        """Run ``fn`` in one write transaction, again on transient errors (``what`` names it in messages).

        A cancelled caller gets the transaction rolled back; if it had already
        committed, ``undo`` gets its result (a claim is released at once).
        ``short``: a transaction of a few statements (a claim, a commit), that a
        backend may run without a hand-off when it can start at once (SQLite).
        """

        def whole(conn: Connection) -> T:
            with conn.begin():
                return fn(conn)

        async def once() -> T:
            # Begin, statements and commit in one hand-over to the sync layer: each ``await`` on
            # an async connection (options, begin, commit) is a greenlet switch of its own, and
            # those cost more than the claim's statements themselves (issue 14, PostgreSQL).
            async with self.engine.connect() as conn:
                return await _dropped_if_given_up(conn, conn.run_sync(whole))

        return await with_retries(once, attempts=attempts, what=what)

    async def write_once(self, fn: Callable[[Connection], T]) -> T:
        """``write`` run exactly once, errors raised as they are: for a transaction fed by a
        stream that cannot be replayed (enqueueing a generator of IDs)."""
        async with self.write_connection() as conn:
            return await conn.run_sync(fn)

    def write_blocking(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction from the calling (non-loop) thread; once, errors raised."""
        raise NotImplementedError(f"{self.name} has no blocking writes")

    async def read(self, fn: Callable[[Connection], T], what: str) -> T:
        """Run ``fn`` in a read-only transaction on the async engine (one consistent snapshot)."""

        async def once() -> T:
            async with self.engine.connect() as conn:
                return await _dropped_if_given_up(conn, conn.run_sync(fn))

        return await with_retries(once, what=what)

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction on the async engine (on SQLite: its write lock, taken up front)."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(chunkq_write=True)
            async with conn.begin():
                yield conn

    # ------------------------------------------------------------------ differences (portable defaults)

    def lock_rows(self, query: Select[Any], *, skip_locked: bool, of: Any = None) -> Select[Any]:
        """``FOR UPDATE [SKIP LOCKED]`` where rows can be locked; as is where the whole file is."""
        return query

    def relax_durability(self, conn: Connection) -> None:
        """Let this transaction commit without waiting for its flush to disk (a claim: see PostgreSQL)."""

    def gather(self, column: Any, order_by: Any) -> Any:
        """An aggregate of ``column`` into one value (ordered by ``order_by`` where the database
        promises an order), or None where there is none: a chunk's entity IDs read as one value
        instead of a row each, the claim's one per-entity read (issue 14; ``claims.range_items``).
        ``gathered`` turns the value into a list."""
        return None

    def gathered(self, value: Any) -> list[Any]:
        return list(value or ())

    def lock_bucket(self, conn: Connection, provider: str) -> None:
        """Serialise updates of one provider's token bucket (its row may not exist yet)."""

    def insert_entities(self, conn: Connection, rows: Rows) -> None:
        """Insert already-validated entity rows inside the caller's transaction, as fast as the driver can.

        SQLAlchemy's per-row parameter handling would cost more than the insert itself,
        so rows go to the driver as plain tuples.
        """
        conn.exec_driver_sql(f"INSERT INTO {s.entities.name} (job_id, pos, entity_id) VALUES (?, ?, ?)", rows)

    async def clock_offset(self) -> float:
        """Seconds to add to this host's clock to get the database's (0: they are the same clock)."""
        return 0.0


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
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
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
                return result  # type: ignore[return-value]
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
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Take transaction control from the driver so we can say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not readonly:  # both are writes (to the file's header, to the connection's journal)
            cur.execute("PRAGMA journal_mode = WAL")
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


class PostgresBackend(Backend):
    """A server shared by many hosts: row locks, advisory locks, COPY, and the server's clock."""

    name = "postgresql"
    row_locks = True

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        super().__init__(url)
        self.pool_size = pool_size

    def _create_engines(self) -> None:
        try:
            import asyncpg  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the environment
            raise InvalidInput("PostgreSQL support is not installed: pip install 'chunkq[postgres]'") from None
        params = pg_connect_params(self.url)
        settings = {"application_name": "chunkq"} | params.settings
        connect_args: dict[str, Any] = {"server_settings": settings, "timeout": params.timeout}
        if params.dsn is not None:
            connect_args["dsn"] = params.dsn  # TLS and the like: asyncpg's own libpq handling; the URL's host wins
        self._engine = create_async_engine(
            params.url,
            pool_size=self.pool_size,
            max_overflow=self.pool_size,
            pool_use_lifo=True,  # the busy connection stays busy; spare ones go idle (and get pinged)
            # a server that accepts TCP but never answers must not hold a command for asyncpg's 60 s;
            # waiting for a free pooled connection is not connecting, so it keeps its own (longer) bound
            pool_timeout=max(30.0, params.timeout),
            connect_args=connect_args,
        )
        _ping_when_idle(self._engine)
        # the URL's own settings (options=-c …) win over chunkq's bounds
        bounds = {k: v for k, v in pg_session_bounds(self.lease_seconds).items() if k not in params.settings}
        _bound_sessions(self._engine, bounds, pg_socket_options(self.lease_seconds, params.socket))

    def lock_rows(self, query: Select[Any], *, skip_locked: bool, of: Any = None) -> Select[Any]:
        return query.with_for_update(of=of, skip_locked=skip_locked)

    def gather(self, column: Any, order_by: Any) -> Any:
        return func.array_agg(aggregate_order_by(column, order_by))

    def relax_durability(self, conn: Connection) -> None:
        # A claim lost in a server crash only hands its chunk out again, and the chunk's
        # commit (synchronous) flushes the WAL up to and past it: no need to wait for a flush.
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    async def migration(self, fn: Callable[[Connection], T]) -> T:
        # A session-level advisory lock on one connection, held across the whole migration; the
        # migration itself is one transaction there (PostgreSQL's DDL is transactional).
        # Whatever goes wrong before the unlock (an error, a cancellation mid-statement), the
        # connection is closed rather than pooled: ending the session is what releases the lock then.
        async with self.engine.connect() as conn:
            try:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEMA_LOCK})).scalar()
                if not got:
                    log.info("waiting for another process to finish changing the schema of %s", self.where)
                    await conn.run_sync(_unbounded)  # waiting for another migration is no stall
                    await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SCHEMA_LOCK})
                await conn.commit()
                async with conn.begin():
                    await conn.run_sync(_unbounded)  # a table rewrite may take long, and wait for workers
                    result = await conn.run_sync(fn)
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEMA_LOCK})
                await conn.commit()
            except BaseException:
                await conn.invalidate()
                raise
            return result

    async def write_once(self, fn: Callable[[Connection], T]) -> T:
        # Enqueueing a stream: a COPY of a million IDs may outlast ``statement_timeout``, and the
        # transaction waits (idle) for the caller's generator between batches. The rows it
        # inserts are invisible until it commits, so it holds nobody while it waits.
        def unbounded(conn: Connection) -> T:
            _unbounded(conn)
            return fn(conn)

        return await super().write_once(unbounded)

    def lock_bucket(self, conn: Connection, provider: str) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": "chunkq:" + provider})

    def insert_entities(self, conn: Connection, rows: Rows) -> None:
        # COPY: the fastest way in. The function runs under ``run_sync``, where an
        # awaitable of the driver is awaited with SQLAlchemy's ``await_only``.
        from sqlalchemy.util import await_only

        raw = conn.connection.driver_connection
        await_only(raw.copy_records_to_table(  # type: ignore[union-attr]
            s.entities.name, records=rows, columns=("job_id", "pos", "entity_id")))

    async def clock_offset(self) -> float:
        """Hosts agree on lease expiry by all reading the server's clock (less half a round trip)."""
        async with self.engine.connect() as conn:
            t0 = time.time()
            server = (await conn.execute(text("SELECT extract(epoch from clock_timestamp())"))).scalar()
            t1 = time.time()
        return float(server) - (t0 + t1) / 2


def pg_session_bounds(lease_seconds: float) -> dict[str, str]:
    """PostgreSQL session settings that bound what one silent or stalled connection can hold (issue 24).

    ``D`` is the lease kept within ``BOUND_SECONDS`` (2–60 s): a transaction of chunkq's never waits
    for user code, so a session idle inside one for ``D`` has lost its peer (and, past a lease, its
    worker has lost its chunks anyway):

    * ``idle_in_transaction_session_timeout`` = D: the server ends that session, which releases its
      row locks (a job row, held by a frozen claim or commit, used to hold every worker of the job);
    * ``lock_timeout`` = D / 2: a waiter gives up (55P03, transient: the transaction is retried)
      instead of queueing behind a holder, so waits never chain into a stall longer than D;
    * ``statement_timeout`` = 4 × the lease within 60–600 s: a backstop for a statement that runs
      on (the longest legitimate ones, enqueueing and migrations, lift it for their transaction);
    * server-side TCP keepalives (idle D / 2, interval D / 6, 3 probes) and ``tcp_user_timeout`` = D:
      a peer gone from the network is noticed in about D when idle too, not after two hours.

    The client's sockets get the same keepalives (``pg_socket_options``). A URL's ``options=-c …``
    overrides any of them.
    """
    d = min(max(lease_seconds, BOUND_SECONDS[0]), BOUND_SECONDS[1])
    statement = min(max(4 * lease_seconds, STATEMENT_SECONDS[0]), STATEMENT_SECONDS[1])
    idle, interval, count = _keepalives(d)
    return {
        "idle_in_transaction_session_timeout": f"{round(d * 1000)}ms",
        "lock_timeout": f"{round(d * 500)}ms",
        "statement_timeout": f"{round(statement * 1000)}ms",
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
        "tcp_user_timeout": f"{round(d * 1000)}ms",
    }


def pg_socket_options(lease_seconds: float, url_params: dict[str, int]) -> list[tuple[int, int, int]]:
    """``setsockopt`` triples for the client's side of each connection: the keepalives of
    ``pg_session_bounds``, or libpq's ``keepalives*``/``tcp_user_timeout`` given in the URL."""
    if url_params.get("keepalives", 1) == 0:
        return []
    d = min(max(lease_seconds, BOUND_SECONDS[0]), BOUND_SECONDS[1])
    idle, interval, count = _keepalives(d)
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, default, attr in (("keepalives_idle", idle, "TCP_KEEPIDLE"),
                                ("keepalives_interval", interval, "TCP_KEEPINTVL"),
                                ("keepalives_count", count, "TCP_KEEPCNT"),
                                ("tcp_user_timeout", round(d * 1000), "TCP_USER_TIMEOUT")):
        value = url_params.get(name) or default  # libpq: 0 means the system default, here ours
        if hasattr(socket, attr):  # Linux has all four
            opts.append((socket.IPPROTO_TCP, getattr(socket, attr), value))
    return opts


def _keepalives(d: float) -> tuple[int, int, int]:
    return max(1, math.ceil(d / 2)), max(1, math.ceil(d / 6)), 3


def _unbounded(conn: Connection) -> None:
    """Lift ``pg_session_bounds``' time limits for the rest of this transaction (a long one on purpose)."""
    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    conn.exec_driver_sql("SET LOCAL lock_timeout = 0")
    conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")


def _bound_sessions(engine: AsyncEngine, settings: dict[str, str], options: list[tuple[int, int, int]]) -> None:
    """Each new connection: ``settings`` for its session, ``options`` on its TCP socket (not a Unix one).

    The settings are set once connected rather than sent as startup parameters: a pooler
    such as PgBouncer refuses a startup parameter it does not know. asyncpg sets no
    keepalive of its own, and the kernel's default is two hours: a server host that
    vanished would hold a worker waiting for an answer that long.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        raw = dbapi_conn.driver_connection
        transport = getattr(raw, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for level, option, value in options:
                try:
                    sock.setsockopt(level, option, value)
                except OSError as exc:  # an option this kernel lacks: the others still hold
                    log.debug("cannot set socket option %s=%s: %s", option, value, exc)
        names = [n for n in settings if n != "tcp_user_timeout" or raw.get_server_version().major >= 12]
        if names:
            sql = "SELECT " + ", ".join(f"set_config(${2 * i + 1}, ${2 * i + 2}, false)" for i in range(len(names)))
            values = [v for n in names for v in (n, settings[n])]
            dbapi_conn.run_async(lambda conn: conn.execute(sql, *values))


def _ping_when_idle(engine: AsyncEngine) -> None:
    """``pool_pre_ping``, but only for connections idle longer than PING_IDLE_SECONDS.

    A ping is a round trip, a fifth of a chunk's on PostgreSQL. A connection in
    constant use was alive milliseconds ago; one that sat idle may have been dropped
    by a server restart or a firewall, and is replaced before anyone gets it.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        idle = time.monotonic() - record.info.get("chunkq_checked_in", 0.0)
        if idle > PING_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except Exception:
                raise DisconnectionError("connection dropped while idle") from None
            except BaseException:
                # cancelled (a deadline gave the wait up: a silent server): close the socket now; the
                # pool's own invalidation would first wait 2 s for the server to answer a goodbye
                with contextlib.suppress(Exception):
                    record.driver_connection.terminate()
                raise

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["chunkq_checked_in"] = time.monotonic()


def backend_for(url: str | Any) -> Backend:
    """The backend for what a person typed: a file path, ``sqlite:///…`` or ``postgresql://…``."""
    normalized = normalize_url(url)
    if normalized.startswith("postgresql"):
        return PostgresBackend(normalized)
    return SqliteBackend(normalized)
