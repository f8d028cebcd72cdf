"""Engines for the two backends, and the settings that make them safe to share.

SQLite is the embedded default and is shared by many worker *processes* on one
file, so every connection gets WAL (readers never wait for the writer), a long
``busy_timeout`` (a writer waits for the lock instead of failing) and write
transactions that start with ``BEGIN IMMEDIATE`` (the lock is taken up front, so
two writers can never deadlock upgrading a read lock: the error SQLite reports as
"database is locked" no matter how long the timeout).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import create_engine as create_engine_sync
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .models import DatabaseUnavailable, InvalidInput

log = logging.getLogger("chunkq.db")

DEFAULT_DB_FILE = "chunkq.db"
SQLITE_BUSY_TIMEOUT_MS = 60_000
PING_IDLE_SECONDS = 1.0

T = TypeVar("T")


def normalize_url(url: str | os.PathLike[str] | None) -> str:
    """Accept what people type: a file path, ``sqlite:///x.db`` or ``postgresql://…``.

    The async driver is filled in, so users never need to know the SQLAlchemy
    dialect names.
    """
    if url is None or str(url).strip() == "":
        url = DEFAULT_DB_FILE
    text = str(url).strip()
    if "://" not in text:
        return f"sqlite+aiosqlite:///{Path(text).expanduser()}"
    try:
        parsed = make_url(text)
    except Exception as exc:  # SQLAlchemy's ArgumentError carries a terse message
        raise InvalidInput(f"database URL {text!r} is not a valid URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise InvalidInput(
                "an in-memory SQLite database cannot be shared between connections; give a file path"
            )
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise InvalidInput(f"unsupported database {backend!r}: use a SQLite file path or a postgresql:// URL")


def display_url(url: str) -> str:
    """The URL without its password, for logs and the dashboard header."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    try:
        import asyncpg  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidInput(
            "PostgreSQL support is not installed: pip install 'chunkq[postgres]'"
        ) from None
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_use_lifo=True,  # the busy connection stays busy; spare ones go idle (and get pinged)
        connect_args={"server_settings": {"application_name": "chunkq"}},
    )
    _ping_when_idle(engine)
    return engine


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


def _sqlite_engine(url: str) -> AsyncEngine:
    database = make_url(url).database or DEFAULT_DB_FILE
    parent = Path(database).expanduser().resolve().parent
    if not parent.is_dir():
        raise InvalidInput(f"cannot create SQLite database {database!r}: folder {str(parent)!r} does not exist")
    engine = create_async_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    _sqlite_settings(engine.sync_engine)
    return engine


def create_sqlite_thread_engine(url: str) -> Engine:
    """A synchronous engine on the same SQLite file, for transactions run whole in a worker thread.

    aiosqlite hands every cursor call to its own thread and back (a chunk's claim
    costs ~15 hand-offs); a plain function of a synchronous connection, run in a
    worker thread, costs one. Same connection settings as the async engine; the
    caller says ``BEGIN IMMEDIATE`` itself (no "begin" listener: with no engine
    events SQLAlchemy takes its faster path for every statement).
    """
    engine = create_engine_sync(
        make_url(normalize_url(url)).set(drivername="sqlite+pysqlite"),
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    _sqlite_connection_settings(engine)
    return engine


def _sqlite_settings(engine: Engine) -> None:
    _sqlite_connection_settings(engine)

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get("chunkq_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode else "BEGIN")


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


_TRANSIENT_PG_CODES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


def is_transient(exc: BaseException) -> bool:
    """Errors a retry can cure: lock contention, serialization failures, a restarting server."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
        if "database is locked" in text or "database is busy" in text:
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if code in _TRANSIENT_PG_CODES:
            return True
        if any(
            s in text
            for s in ("connection was closed", "connection refused", "cannot connect", "terminating connection",
                      "connection is closed", "server closed the connection", "connection reset")
        ):
            return True
    return isinstance(exc, ConnectionError | OSError)


def describe_db_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if isinstance(exc, OperationalError) and "readonly" in text.replace(" ", "").lower():
        return f"the database is read-only ({text})"
    if "disk is full" in text or "No space left" in text:
        return f"the disk is full ({text})"
    if "unable to open database file" in text:
        return f"{text} (does the folder exist, and may this user write to it?)"
    return text


async def with_retries(
    op: Callable[[], Awaitable[T]], *, attempts: int = 8, what: str = "database operation"
) -> T:
    """Run ``op`` again on transient database errors, with capped exponential backoff.

    Only whole transactions are retried (``op`` opens and commits its own), so a
    retry can never apply half of anything twice.
    """
    delay = 0.05
    for i in range(attempts):
        try:
            return await op()
        except (DBAPIError, OSError) as exc:
            if not is_transient(exc) or i == attempts - 1:
                # A constraint violation is a bug worth its traceback; anything else the
                # database says (gone, dropped, read-only, full, locked too long) is for people.
                if isinstance(exc, IntegrityError):
                    raise
                raise DatabaseUnavailable(f"{what} failed: {describe_db_error(exc)}") from exc
            log.debug("%s: transient error (%s), retrying in %.2fs", what, describe_db_error(exc), delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover
