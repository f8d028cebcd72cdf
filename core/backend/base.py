"""What every database does the same way: engines, the transaction executor, opening and migrating.

``Backend`` holds the portable behaviour and names each difference as a method
(``lock_rows``, ``gather``, ``insert_entities``, ``floor``, …) that a subclass
overrides for what its database does better or needs in addition
(``sqlite.py``, ``postgres.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

from sqlalchemy import BigInteger, cast, func
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Insert, Select

from .. import schema as s
from ..db import current_deadline, display_url, with_retries

T = TypeVar("T")
Rows = Sequence[tuple[int, int, str]]  # (job_id, pos, entity_id)

#: the longest closing connections may take (a silent server never answers the goodbye)
CLOSE_SECONDS = 2.0

log = logging.getLogger("chunkq.db")


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
            conn.sync_connection.connection.dbapi_connection.terminate()  # type: ignore[union-attr]  # open: it is running work
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, CLOSE_SECONDS)
        raise


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
        from ..migrations.runner import migrate  # Alembic is loaded only when a schema changes

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

    def read_by_key(self, conn: Connection) -> None:
        """Have this transaction's statements find their rows through an index, whatever the planner's
        statistics say (the pruner's deletes by job id: see PostgreSQL). SQLite already does."""

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

    def floor(self, expr: Any) -> Any:
        """``floor(expr)`` as an integer, for an ``expr`` that is never negative (a history bucket's index)."""
        return cast(func.floor(expr), BigInteger)

    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        """``INSERT … ON CONFLICT DO NOTHING`` into ``table``: a row two transactions may both create
        (a tenant's first two jobs enqueued at once, on PostgreSQL). Each database spells it its own way."""
        raise NotImplementedError(f"{self.name} has no INSERT … ON CONFLICT DO NOTHING")

    def insert_entities(self, conn: Connection, rows: Rows) -> None:
        """Insert already-validated entity rows inside the caller's transaction, as fast as the driver can.

        SQLAlchemy's per-row parameter handling would cost more than the insert itself,
        so rows go to the driver as plain tuples.
        """
        conn.exec_driver_sql(f"INSERT INTO {s.entities.name} (job_id, pos, entity_id) VALUES (?, ?, ?)", rows)

    async def clock_offset(self) -> float:
        """Seconds to add to this host's clock to get the database's (0: they are the same clock)."""
        return 0.0

