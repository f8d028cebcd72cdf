"""Database URLs as people type them, and database errors as people read them.

The engines and everything else that differs between SQLite and PostgreSQL live
in ``backend.py``; this module is what both share: turning ``jobs.db`` or
``postgresql://host/db`` into a driver URL, telling a transient error (a lock, a
restarting server) from a real one, and retrying whole transactions on the former.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .errors import DatabaseUnavailable, InvalidInput

log = logging.getLogger("chunkq.db")

DEFAULT_DB_FILE = "chunkq.db"
#: seconds a PostgreSQL connection attempt may take (a server that accepts TCP and never answers
#: would otherwise hold every command for asyncpg's 60 s, three times over)
DEFAULT_CONNECT_TIMEOUT = 10.0
CONNECT_TIMEOUT_ENV = "CHUNKQ_CONNECT_TIMEOUT"
CONNECT_TIMEOUT_PARAM = "connect_timeout"  # libpq's name, so a psql URL means the same here
MAX_CONNECT_TIMEOUT = 3600.0

#: ``scheme://user:PASSWORD@``: greedy to the last ``@`` of the token, since a password may hold one
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"]*(?=@)")

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
    except Exception as exc:  # SQLAlchemy's ArgumentError carries a terse message (and the URL)
        raise InvalidInput(
            f"database URL {mask_password(text)!r} is not a valid URL: {mask_password(str(exc))}", field="url"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise InvalidInput(
                "an in-memory SQLite database cannot be shared between connections; give a file path", field="url"
            )
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        connect_timeout(parsed.render_as_string(hide_password=False))  # a bad value is a usage error now
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise InvalidInput(
        f"unsupported database {backend!r}: use a SQLite file path or a postgresql:// URL", field="url"
    )


def display_url(url: str) -> str:
    """The URL without its password, for logs and the dashboard header."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = url
    return mask_password(shown)  # also what SQLAlchemy leaves of a password holding an '@'


def mask_password(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` in it replaced by ``***``.

    Works on any text, not only on a URL that parses: the message saying a URL
    is malformed, a driver's error, a value echoed back. Masks more rather than
    less (up to the last ``@`` of the token).
    """
    return _PASSWORD.sub(lambda m: m.group("head") + "***", text)


def connect_timeout(url: str) -> float:
    """Seconds one connection attempt may take: ``?connect_timeout=`` in the URL, else
    ``CHUNKQ_CONNECT_TIMEOUT``, else ``DEFAULT_CONNECT_TIMEOUT``."""
    raw: str | None = None
    where = CONNECT_TIMEOUT_ENV
    try:
        query = make_url(url).query
    except Exception:
        query = {}
    if CONNECT_TIMEOUT_PARAM in query:
        value = query[CONNECT_TIMEOUT_PARAM]
        raw = value[-1] if isinstance(value, tuple) else value
        where = f"?{CONNECT_TIMEOUT_PARAM}= in the database URL"
    elif os.environ.get(CONNECT_TIMEOUT_ENV, "").strip():
        raw = os.environ[CONNECT_TIMEOUT_ENV]
    if raw is None:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        seconds = float(raw.strip())
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_CONNECT_TIMEOUT):
        raise InvalidInput(
            f"{where} must be a number of seconds above 0 and at most {MAX_CONNECT_TIMEOUT:g}, got {raw!r:.40}",
            field="connect_timeout",
        )
    return seconds


def without_connect_timeout(url: str) -> str:
    """The URL for the driver: ``connect_timeout`` is chunkq's setting, not an asyncpg argument."""
    parsed = make_url(url)
    if CONNECT_TIMEOUT_PARAM not in parsed.query:
        return url
    return parsed.difference_update_query([CONNECT_TIMEOUT_PARAM]).render_as_string(hide_password=False)


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
    if isinstance(orig, TimeoutError):
        return (f"the server did not answer in time (connect timeout: {CONNECT_TIMEOUT_ENV} or "
                f"?{CONNECT_TIMEOUT_PARAM}=, default {DEFAULT_CONNECT_TIMEOUT:g} s)")
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    text = mask_password(text)
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
