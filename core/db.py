"""Database URLs as people type them, and database errors as people read them.

The engines and everything else that differs between SQLite and PostgreSQL live
in ``backend.py``; this module is what both share: turning ``jobs.db`` or
``postgresql://host/db`` into a driver URL, telling a transient error (a lock, a
restarting server) from a real one, and retrying whole transactions on the former.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .errors import DatabaseUnavailable, InvalidInput

log = logging.getLogger("chunkq.db")

DEFAULT_DB_FILE = "chunkq.db"

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
        raise InvalidInput(f"database URL {text!r} is not a valid URL: {exc}", field="url") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise InvalidInput(
                "an in-memory SQLite database cannot be shared between connections; give a file path", field="url"
            )
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise InvalidInput(
        f"unsupported database {backend!r}: use a SQLite file path or a postgresql:// URL", field="url"
    )


def display_url(url: str) -> str:
    """The URL without its password, for logs and the dashboard header."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


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
