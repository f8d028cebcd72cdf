"""PostgreSQL, a server shared by many hosts: row locks, advisory locks, COPY, the server's clock.

Rows are locked, not the database, so claims skip rows other workers hold
(``SKIP LOCKED``), and advisory locks serialise what has no row to lock yet.
A row lock is only as good as its holder's network: every session is bounded
by settings derived from the lease (``pg_session_bounds``: idle in transaction,
lock waits, statements, TCP keepalives on both ends), so a worker whose
connection goes silent mid-transaction holds the others for about a lease, not
for the two hours of the kernel's keepalive (issue 24). The URL's libpq
parameters (``?sslmode=require``) are mapped to asyncpg in ``db.pg_connect_params``.
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, func, text
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import AdaptedConnection, Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql import Insert, Select

from .. import schema as s
from ..db import pg_connect_params
from ..errors import InvalidInput
from .base import Backend, Rows, T, log

PING_IDLE_SECONDS = 1.0
#: PostgreSQL: the range the lease is kept within to bound a silent session (``pg_session_bounds``)
BOUND_SECONDS = (2.0, 60.0)
#: PostgreSQL: the range of ``statement_timeout`` (4 × the lease)
STATEMENT_SECONDS = (60.0, 600.0)
#: the advisory lock that serialises schema changes on PostgreSQL (chunkq 0.1.0 took the same one
#: to create its tables, so an 0.1.0 process opening mid-migration waits, then refuses the newer schema)
SCHEMA_LOCK = 7270351


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

    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        return pg_insert(table).on_conflict_do_nothing()

    def relax_durability(self, conn: Connection) -> None:
        # A claim lost in a server crash only hands its chunk out again, and the chunk's
        # commit (synchronous) flushes the WAL up to and past it: no need to wait for a flush.
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def read_by_key(self, conn: Connection) -> None:
        # A table no ANALYZE has seen yet (bulk-loaded or restored, autovacuum off or not there yet) has no
        # statistics: the planner takes each value of ``job_id IN (...)`` for 0.5% of the table, so a list of
        # 60 job ids is a third of it, and it reads the whole table instead of the index (measured: a million
        # jobs' entities, 530 ms a transaction, the prune at ~300 jobs/s). This transaction only.
        conn.exec_driver_sql("SET LOCAL enable_seqscan TO OFF")

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
        await_only(raw.copy_records_to_table(  # type: ignore[union-attr]  # a live connection's: asyncpg's
            s.entities.name, records=rows, columns=("job_id", "pos", "entity_id")))

    async def clock_offset(self) -> float:
        """Hosts agree on lease expiry by all reading the server's clock (less half a round trip)."""
        async with self.engine.connect() as conn:
            t0 = time.time()
            server = (await conn.execute(text("SELECT extract(epoch from clock_timestamp())"))).scalar_one()
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
    def _on_connect(dbapi_conn: AdaptedConnection, _record: ConnectionPoolEntry) -> None:
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
            try:
                dbapi_conn.run_async(lambda conn: conn.execute(sql, *values))
            except OSError:
                raise  # lost on the way: transient as it is
            except Exception as exc:
                # The driver's own error, raised inside the pool's connect, where SQLAlchemy does not wrap
                # it: it escaped the retries and ``DatabaseUnavailable`` and ended a worker (a connection
                # dropped while being set up, 08003). Wrapped, it is read as any other: a connection that
                # went away is retried, a setting the server refuses is said.
                raise OperationalError(sql, values, exc) from exc


def _ping_when_idle(engine: AsyncEngine) -> None:
    """``pool_pre_ping``, but only for connections idle longer than PING_IDLE_SECONDS.

    A ping is a round trip, a fifth of a chunk's on PostgreSQL. A connection in
    constant use was alive milliseconds ago; one that sat idle may have been dropped
    by a server restart or a firewall, and is replaced before anyone gets it.
    """

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection) -> None:
        # a connection never checked in was made just now (the pool clears ``info`` when it replaces one):
        # pinging it too would only give a second failure, and two in a row end the checkout
        last = record.info.get("chunkq_checked_in")
        if last is not None and time.monotonic() - last > PING_IDLE_SECONDS:
            try:
                engine.dialect.do_ping(dbapi_conn)
            except Exception:
                raise DisconnectionError("connection dropped while idle") from None
            except BaseException:
                # cancelled (a deadline gave the wait up: a silent server): close the socket now; the
                # pool's own invalidation would first wait 2 s for the server to answer a goodbye
                with contextlib.suppress(Exception):
                    record.driver_connection.terminate()  # type: ignore[union-attr]  # checked out: it has one
                raise

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(_dbapi_conn: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info["chunkq_checked_in"] = time.monotonic()

