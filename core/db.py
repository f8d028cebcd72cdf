"""Database URLs as people type them, and database errors as people read them.

Longer than 500 lines: reaching a database and giving up on one (URLs, errors, deadlines) is one concern.

The engines and everything else that differs between SQLite and PostgreSQL live
in ``backend/``; this module is what both share: turning ``jobs.db`` or
``postgresql://host/db`` into a driver URL, telling a transient error (a lock, a
restarting server) from a real one, and retrying whole transactions on the former.

``with_retries`` is also where every transaction's *wait* is watched (issue 24):
one that has not finished after ``STALL_SECONDS`` is logged while it waits, and
again when it ends, so a stalled database is visible as it happens; and under a
``deadline`` (a run's ``--max-seconds``, an HTTP request's budget) a wait past
it is given up (``DatabaseStalled``) instead of holding the process for as long
as the database stays silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import shlex
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InvalidRequestError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .errors import DatabaseStalled, DatabaseUnavailable, InvalidInput

log = logging.getLogger("chunkq.db")

DEFAULT_DB_FILE = "chunkq.db"
#: seconds a PostgreSQL connection attempt may take (a server that accepts TCP and never answers
#: would otherwise hold every command for asyncpg's 60 s, three times over)
DEFAULT_CONNECT_TIMEOUT = 10.0
CONNECT_TIMEOUT_ENV = "CHUNKQ_CONNECT_TIMEOUT"
CONNECT_TIMEOUT_PARAM = "connect_timeout"  # libpq's name, so a psql URL means the same here
MAX_CONNECT_TIMEOUT = 3600.0

#: a transaction still waiting after this many seconds is logged (once, then once more when it ends);
#: past a ``deadline`` it is the longest a transaction may wait (a healthy one takes milliseconds)
STALL_SECONDS = 5.0
#: once a transaction was given up at a deadline, the longest any other may wait: the database is
#: known not to answer, and what is left (releasing leases, marking the worker stopped) is best effort
AFTER_STALL_SECONDS = 1.0

#: ``scheme://user:PASSWORD@``: greedy to the last ``@`` of the token, since a password may hold one
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"]*(?=@)")

#: a password given as a URL parameter
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&\s'\"]*")

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
        return f"sqlite+aiosqlite:///{_sqlite_file(Path(text).expanduser())}"
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
        _sqlite_file(Path(parsed.database))
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        normalized = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        pg_connect_params(normalized)  # a bad value or an unknown parameter is a usage error now
        return normalized
    raise InvalidInput(
        f"unsupported database {backend!r}: use a SQLite file path or a postgresql:// URL", field="url"
    )


def _sqlite_file(path: Path) -> Path:
    """``path``, refused when it is a folder: SQLite's own word for that is "disk I/O error"."""
    try:
        folder = path.is_dir()
    except (OSError, ValueError):  # a name too long, a NUL in it: opening the file says what is wrong
        folder = False
    if folder:
        raise InvalidInput(f"{str(path)!r} is a folder, not a SQLite database file; give a file path, "
                           f"e.g. {str(path / DEFAULT_DB_FILE)!r}", field="url")
    return path


def display_url(url: str) -> str:
    """The URL without its password, for logs and the dashboard header."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:
        shown = url
    shown = _QUERY_PASSWORD.sub(r"\g<1>***", shown)  # ?password=, ?sslpassword= (libpq parameters)
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
        query: Mapping[str, str | tuple[str, ...]] = make_url(url).query
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


#: libpq's URL parameters asyncpg reads itself from a DSN (``PgConnect.dsn``), with the values it accepts
#: (None: any, checked by asyncpg; a file parameter is checked here, for a message naming it)
_DRIVER_PARAMS: dict[str, frozenset[str] | None] = {
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "sslcert": None, "sslkey": None, "sslrootcert": None, "sslcrl": None, "sslpassword": None,
    "ssl_min_protocol_version": None, "ssl_max_protocol_version": None,
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "target_session_attrs": frozenset({"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}),
    "krbsrvname": None, "gsslib": frozenset({"gssapi", "sspi"}), "passfile": None, "service": None,
}
_FILE_PARAMS = ("sslcert", "sslkey", "sslrootcert", "sslcrl", "passfile")
#: what SQLAlchemy's asyncpg dialect passes on itself (``dbname`` is renamed ``database`` for it)
_DIALECT_PARAMS = frozenset({"host", "port", "user", "password", "dbname", "prepared_statement_cache_size"})
#: the client's TCP keepalives and user timeout (``backend/postgres.py`` sets them on the driver's socket)
SOCKET_PARAMS = ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout")
#: libpq parameters for something asyncpg never does: accepted only with a value that asks for nothing more
_DEFAULT_ONLY = {
    "gssencmode": frozenset({"disable", "prefer"}), "channel_binding": frozenset({"disable", "prefer"}),
    "client_encoding": frozenset({"utf8", "utf-8", "unicode"}), "sslcompression": frozenset({"0"}),
    "sslsni": frozenset({"1"}), "load_balance_hosts": frozenset({"disable"}),
}


@dataclass(frozen=True)
class PgConnect:
    """A ``postgresql://`` URL split the way the driver needs it (``pg_connect_params``)."""

    url: str  # for SQLAlchemy: host(s), port(s), user, password, database
    dsn: str | None  # libpq parameters asyncpg reads itself (TLS, target_session_attrs, …), or None
    settings: dict[str, str]  # session settings: ``application_name``, ``options=-c name=value``
    socket: dict[str, int]  # ``SOCKET_PARAMS`` given in the URL
    timeout: float  # seconds per connection attempt (``connect_timeout``)


def pg_connect_params(url: str) -> PgConnect:
    """The libpq parameters of a ``postgresql://`` URL mapped to asyncpg, or ``InvalidInput`` naming the one
    that cannot be (a managed PostgreSQL hands out ``?sslmode=require``; asyncpg takes no such argument).

    Refusing what is not understood, as libpq does, rather than passing it on: asyncpg would take an
    unknown name for a server setting, or fail with a ``TypeError`` at the first connection.
    """
    parsed = make_url(url)
    timeout = connect_timeout(url)
    dsn: dict[str, str] = {}
    settings: dict[str, str] = {}
    sock: dict[str, int] = {}
    drop = [CONNECT_TIMEOUT_PARAM]
    for name, value in parsed.query.items():
        raw = value[-1] if isinstance(value, tuple) else value  # libpq: the last one wins
        if name == CONNECT_TIMEOUT_PARAM or (name in _DIALECT_PARAMS and name != "dbname"):
            continue
        drop.append(name)
        if name == "dbname":
            parsed = parsed.set(database=raw)
        elif name in _DRIVER_PARAMS:
            allowed = _DRIVER_PARAMS[name]
            if allowed is not None and raw not in allowed:
                raise InvalidInput(f"?{name}= in the database URL must be one of {', '.join(sorted(allowed))}; "
                                   f"got {raw!r:.40}", field="url")
            if name == "sslrootcert" and raw == "system":
                raise InvalidInput("?sslrootcert=system (libpq's system CAs) is not something chunkq's PostgreSQL "
                                   "driver (asyncpg) does; name a CA file instead", field="url")
            if name in _FILE_PARAMS and not os.access(Path(raw).expanduser(), os.R_OK):
                raise InvalidInput(f"?{name}= in the database URL names {raw!r:.200}, which does not exist "
                                   "or this user may not read", field="url")
            dsn[name] = raw
        elif name in ("application_name", "fallback_application_name"):
            if name == "application_name" or "application_name" not in settings:
                settings["application_name"] = raw
        elif name == "options":
            settings.update(_server_options(raw))
        elif name in SOCKET_PARAMS:
            try:
                sock[name] = int(raw)
            except ValueError:
                sock[name] = -1
            if not 0 <= sock[name] <= (1 if name == "keepalives" else 2_147_483):
                raise InvalidInput(f"?{name}= in the database URL must be a whole number of "
                                   f"{'milliseconds' if name == 'tcp_user_timeout' else 'seconds'} "
                                   f"({'0 or 1' if name == 'keepalives' else '0 or more'}); got {raw!r:.40}",
                                   field="url")
        elif name in _DEFAULT_ONLY:
            if raw.lower() not in _DEFAULT_ONLY[name]:
                raw = raw if raw.isprintable() else repr(raw)
                raise InvalidInput(f"?{name}={raw:.40} in the database URL asks for what chunkq's PostgreSQL "
                                   f"driver (asyncpg) cannot do; use {' or '.join(sorted(_DEFAULT_ONLY[name]))}, "
                                   "or leave it out", field="url")
        else:
            name = name if name.isprintable() else repr(name)
            raise InvalidInput(f"?{name:.60}= in the database URL is not a connection parameter chunkq knows "
                               "(libpq's sslmode, sslrootcert, application_name, options, target_session_attrs, "
                               "connect_timeout, keepalives… are)", field="url")
    driver_url = parsed.difference_update_query(drop).render_as_string(hide_password=False)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in dsn.items())
    return PgConnect(driver_url, f"postgresql://?{query}" if query else None, settings, sock, timeout)


def _server_options(raw: str) -> dict[str, str]:
    """libpq's ``options``: ``-c name=value`` (or ``--name=value``) pairs, as session settings."""
    try:
        words = shlex.split(raw)  # a backslash escapes a space, as libpq has it
    except ValueError:
        words = [""]
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            i += 1
            word = words[i]
        elif word.startswith("-c"):
            word = word[2:]
        elif word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            word = name.replace("-", "_") + eq + value
        else:
            word = ""
        name, eq, value = word.partition("=")
        if not (eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name)):
            raise InvalidInput(f"?options= in the database URL must be '-c name=value' settings; got {raw!r:.60}",
                               field="url")
        out[name] = value
        i += 1
    return out


_TRANSIENT_PG_CODES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "08000", "08003", "08006",
                       # a bound of the session settings (backend/postgres.py) ended it: the transaction is redone
                       "25P03", "57014"}


#: raised by SQLAlchemy's pool, not the driver, when it cannot hand out a connection: every one busy past
#: ``pool_timeout``, a dropped one found on checkout, and, dropped twice in a row, "This connection is
#: closed" (an ``InvalidRequestError``, a class that otherwise means a programming error)
_POOL_ERRORS = (DisconnectionError, PoolTimeout, InvalidRequestError)


def is_transient(exc: BaseException) -> bool:
    """Errors a retry can cure: lock contention, serialization failures, a restarting server, a pool
    that found its connections dropped (``_POOL_ERRORS``)."""
    if isinstance(exc, DisconnectionError | PoolTimeout):
        return True
    if isinstance(exc, InvalidRequestError):
        return "connection is closed" in str(exc).lower()
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
    if "rejected ssl upgrade" in str(exc).lower():  # ?sslmode=require against a server without TLS
        return False
    return isinstance(exc, ConnectionError | OSError)


def describe_db_error(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, TimeoutError):
        return (f"the server did not answer in time (connect timeout: {CONNECT_TIMEOUT_ENV} or "
                f"?{CONNECT_TIMEOUT_PARAM}=, default {DEFAULT_CONNECT_TIMEOUT:g} s a try)")
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    text = mask_password(text)
    if isinstance(exc, OperationalError) and "readonly" in text.replace(" ", "").lower():
        return f"the database is read-only ({text})"
    if "disk is full" in text or "No space left" in text:
        return f"the disk is full ({text})"
    if "unable to open database file" in text:
        return f"{text} (does the folder exist, and may this user write to it?)"
    if "rejected SSL upgrade" in text:
        return f"{text} (the server does not offer TLS; ?sslmode= in the URL, or PGSSLMODE, asks for it)"
    return text


@dataclass(eq=False)
class Deadline:
    """When the database work of a run (or of an HTTP request) must be over (``deadline``).

    A transaction is given up once ``at`` (``time.monotonic()``) has passed *and*
    it has waited ``grace`` seconds: a commit that starts a moment before the
    deadline on a healthy database still lands, one stalled for long is given up
    at the deadline. After the first one given up (``stalled``), ``grace`` drops
    to ``AFTER_STALL_SECONDS`` for every other, so releasing what can be released
    costs a second, not another stall.
    """

    at: float
    grace: float = STALL_SECONDS
    stalled: DatabaseStalled | None = None

    def give_up_at(self, started: float) -> float:
        return max(self.at, started + self.grace)


_DEADLINE: ContextVar[Deadline | None] = ContextVar("chunkq_db_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None, *, grace: float = STALL_SECONDS) -> Iterator[Deadline | None]:
    """Bound every transaction run in this context (and in tasks started from it) by a ``Deadline``.

    ``at`` is a ``time.monotonic()`` value (None: no bound). An earlier deadline
    already in force is kept: a run inside a request does not outlive the request.
    """
    current = _DEADLINE.get()
    if at is None or (current is not None and current.at <= at):
        yield current
        return
    bound = Deadline(at, grace)
    token = _DEADLINE.set(bound)
    try:
        yield bound
    finally:
        _DEADLINE.reset(token)


def current_deadline() -> Deadline | None:
    """The ``Deadline`` transactions run under here, if any."""
    return _DEADLINE.get()


class _Watch:
    """One transaction's wait: said once it passes ``STALL_SECONDS``, and again when it ends (``how``)."""

    __slots__ = ("how", "started", "warned", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self.warned = False
        self.how = "answered"

    def warn(self) -> None:
        self.warned = True
        log.warning("the database has not answered for %.1f s (%s); still waiting", self.waited(), self.what)

    def waited(self) -> float:
        return time.monotonic() - self.started


class _Watches:
    """The transactions in flight on one event loop, looked at once a second while there are any.

    One ticking timer per loop rather than one timer per transaction: a set's add
    and discard are what a transaction pays (a timer armed and cancelled for each
    cost ~1.5 us, measured; a PostgreSQL commit is a few hundred).
    """

    TICK_SECONDS = 1.0

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.live: set[_Watch] = set()
        self.ticking = False

    def add(self, watch: _Watch) -> None:
        self.live.add(watch)
        if not self.ticking:
            self.ticking = True
            self.loop.call_later(self.TICK_SECONDS, self.tick)

    def tick(self) -> None:
        if not self.live:
            self.ticking = False
            return
        late = time.monotonic() - STALL_SECONDS
        for watch in list(self.live):
            if not watch.warned and watch.started <= late:
                watch.warn()
        self.loop.call_later(self.TICK_SECONDS, self.tick)


_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watches] = weakref.WeakKeyDictionary()
_LAST: _Watches | None = None


def _watches() -> _Watches:
    global _LAST
    loop = asyncio.get_running_loop()
    last = _LAST
    if last is not None and last.loop is loop:  # nearly always: one loop per process
        return last
    watches = _WATCHES.get(loop)
    if watches is None:
        watches = _WATCHES[loop] = _Watches(loop)
    _LAST = watches
    return watches


async def with_retries(
    op: Callable[[], Awaitable[T]], *, attempts: int = 8, what: str = "database operation"
) -> T:
    """Run ``op`` again on transient database errors, with capped exponential backoff.

    Only whole transactions are retried (``op`` opens and commits its own), so a
    retry can never apply half of anything twice. The whole wait, retries
    included, is watched: logged once it has lasted ``STALL_SECONDS`` (give or
    take the second ``_Watches`` ticks), while it lasts, and again when it ends;
    and given up (``DatabaseStalled``) past the ``deadline`` it runs under, if
    any. Giving up cancels ``op``: the backend rolls its transaction back or
    closes its connection.
    """
    watch = _Watch(what)
    watches = _watches()
    watches.add(watch)
    try:
        bound = _DEADLINE.get()
        if bound is None:
            return await _retrying(op, attempts, what)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (bound.give_up_at(watch.started) - time.monotonic())
        try:
            async with asyncio.timeout_at(give_up) as cm:
                return await _retrying(op, attempts, what)
        except TimeoutError:
            if not cm.expired():
                raise
            watch.how = "was given up"
            stalled = DatabaseStalled(what, watch.waited())
            if bound.stalled is None:
                bound.stalled = stalled
                bound.grace = min(bound.grace, AFTER_STALL_SECONDS)
            raise stalled from None
    except asyncio.CancelledError:
        watch.how = "was no longer waited for (its caller stopped)"
        raise
    except BaseException:
        if watch.how == "answered":
            watch.how = "failed"
        raise
    finally:
        watches.live.discard(watch)
        if watch.warned:
            log.warning("the database %s after %.1f s (%s)", watch.how, watch.waited(), what)


async def _retrying(op: Callable[[], Awaitable[T]], attempts: int, what: str) -> T:
    delay = 0.05
    for i in range(attempts):
        try:
            return await op()
        except (DBAPIError, OSError, *_POOL_ERRORS) as exc:
            transient = is_transient(exc)
            if not transient or i == attempts - 1:
                # A constraint violation or a misused API is a bug worth its traceback; anything else the
                # database says (gone, dropped, read-only, full, locked too long) is for people.
                if isinstance(exc, IntegrityError) or (isinstance(exc, InvalidRequestError) and not transient):
                    raise
                # How many tries: three of a 10 s connect timeout are 30 s, which one "10 s" misled about.
                tries = f" after {i + 1} tries" if i else ""
                raise DatabaseUnavailable(f"{what} failed{tries}: {describe_db_error(exc)}") from exc
            log.debug("%s: transient error (%s), retrying in %.2fs", what, describe_db_error(exc), delay)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover
