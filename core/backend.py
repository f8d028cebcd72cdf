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
  would hand over every cursor call (~15 for a claim).
* **PostgreSQL** runs the same function on the async engine (asyncpg). Rows are
  locked, not the database, so claims skip rows other workers hold
  (``SKIP LOCKED``), and advisory locks serialise what has no row to lock yet.

Adding a backend means one subclass here; nothing else in core asks which
database it talks to.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select

from . import schema as s
from .db import DEFAULT_DB_FILE, display_url, normalize_url, with_retries
from .errors import InvalidInput

T = TypeVar("T")
Rows = Sequence[tuple[int, int, str]]  # (job_id, pos, entity_id)

SQLITE_BUSY_TIMEOUT_MS = 60_000
PING_IDLE_SECONDS = 1.0


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

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the queue is not open: use 'async with Queue(...)' or 'await queue.open()'")
        return self._engine

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    async def open(self) -> None:
        """Create the engines and the schema (retrying a database that is still starting)."""
        self._create_engines()

        def create(conn: Connection) -> None:
            self.lock_schema(conn)
            s.ensure_schema(conn)

        await self.write(create, f"opening {self.display_url}", attempts=3)

    def _create_engines(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # ------------------------------------------------------------------ transactions

    async def write(
        self,
        fn: Callable[[Connection], T],
        what: str,
        *,
        undo: Callable[[T], Awaitable[Any]] | None = None,
        attempts: int = 8,
    ) -> T:
        """Run ``fn`` in one write transaction, again on transient errors (``what`` names it in messages).

        A cancelled caller gets the transaction rolled back; if it had already
        committed, ``undo`` gets its result (a claim is released at once).
        """

        async def once() -> T:
            async with self.write_connection() as conn:
                return await conn.run_sync(fn)

        return await with_retries(once, attempts=attempts, what=what)

    async def write_once(self, fn: Callable[[Connection], T]) -> T:
        """``write`` run exactly once, errors raised as they are: for a transaction fed by a
        stream that cannot be replayed (enqueueing a generator of IDs)."""
        async with self.write_connection() as conn:
            return await conn.run_sync(fn)

    async def read(self, fn: Callable[[Connection], T], what: str) -> T:
        """Run ``fn`` in a read-only transaction on the async engine (one consistent snapshot)."""

        async def once() -> T:
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)

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

    def lock_schema(self, conn: Connection) -> None:
        """Keep two processes from creating the tables at the same moment."""

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
    """One file, many processes: WAL, a long busy timeout, writes in one thread hand-off."""

    name = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.thread_engine: Engine | None = None  # hot transactions run whole in a worker thread

    def _create_engines(self) -> None:
        database = make_url(self.url).database or DEFAULT_DB_FILE
        parent = Path(database).expanduser().resolve().parent
        if not parent.is_dir():
            raise InvalidInput(
                f"cannot create SQLite database {database!r}: folder {str(parent)!r} does not exist", field="url"
            )
        timeout = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        self._engine = create_async_engine(self.url, connect_args=timeout)
        _sqlite_connection_settings(self._engine.sync_engine)

        @event.listens_for(self._engine.sync_engine, "begin")
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
            mode = conn.get_execution_options().get("chunkq_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if mode else "BEGIN")

        # Same file and settings, synchronous driver; the write path says BEGIN IMMEDIATE itself (no
        # "begin" listener: with no engine events SQLAlchemy takes its faster path for every statement).
        self.thread_engine = create_sync_engine(
            make_url(self.url).set(drivername="sqlite+pysqlite"), connect_args=timeout)
        _sqlite_connection_settings(self.thread_engine)

    async def close(self) -> None:
        await super().close()
        if self.thread_engine is not None:
            self.thread_engine.dispose()
            self.thread_engine = None

    async def write(
        self,
        fn: Callable[[Connection], T],
        what: str,
        *,
        undo: Callable[[T], Awaitable[Any]] | None = None,
        attempts: int = 8,
    ) -> T:
        engine = self.thread_engine
        assert engine is not None, "the queue is not open"
        return await with_retries(lambda: _in_thread(engine, fn, undo), attempts=attempts, what=what)

    async def write_once(self, fn: Callable[[Connection], T]) -> T:
        engine = self.thread_engine
        assert engine is not None, "the queue is not open"
        return await _in_thread(engine, fn, None)


async def _in_thread(engine: Engine, fn: Callable[[Connection], T], undo: Callable[[T], Awaitable[Any]] | None) -> T:
    cancelled = threading.Event()
    done = asyncio.get_running_loop().run_in_executor(None, _transaction, engine, fn, cancelled)
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


def _transaction(engine: Engine, fn: Callable[[Connection], T], cancelled: threading.Event) -> T:
    with engine.connect() as conn:
        with conn.begin():
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the file's write lock, taken up front
            result = fn(conn)
            if cancelled.is_set():
                raise _Abandoned  # rolls back: nobody is waiting for the result
        return result


def _sqlite_connection_settings(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        # Take transaction control from the driver so we can say BEGIN IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()


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
        self._engine = create_async_engine(
            self.url,
            pool_size=self.pool_size,
            max_overflow=self.pool_size,
            pool_use_lifo=True,  # the busy connection stays busy; spare ones go idle (and get pinged)
            connect_args={"server_settings": {"application_name": "chunkq"}},
        )
        _ping_when_idle(self._engine)

    def lock_rows(self, query: Select[Any], *, skip_locked: bool, of: Any = None) -> Select[Any]:
        return query.with_for_update(of=of, skip_locked=skip_locked)

    def relax_durability(self, conn: Connection) -> None:
        # A claim lost in a server crash only hands its chunk out again, and the chunk's
        # commit (synchronous) flushes the WAL up to and past it: no need to wait for a flush.
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def lock_schema(self, conn: Connection) -> None:
        # Two processes creating the schema at once would collide on pg_type.
        conn.execute(text("SELECT pg_advisory_xact_lock(7270351)"))

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

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["chunkq_checked_in"] = time.monotonic()


def backend_for(url: str | Any) -> Backend:
    """The backend for what a person typed: a file path, ``sqlite:///…`` or ``postgresql://…``."""
    normalized = normalize_url(url)
    if normalized.startswith("postgresql"):
        return PostgresBackend(normalized)
    return SqliteBackend(normalized)
