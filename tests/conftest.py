"""Shared fixtures: every queue test runs on a real SQLite file and on the real PostgreSQL.

PostgreSQL: each pytest process creates its own throw-away database (so two test
runs on one machine never collide) and every test starts from empty tables.
Locally the PostgreSQL cases skip when no server answers; with
``CHUNKQ_REQUIRE_PG=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("CHUNKQ_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
PG_ADMIN_DB = os.environ.get("CHUNKQ_TEST_PG_ADMIN_DB", "test")
REQUIRE_PG = os.environ.get("CHUNKQ_REQUIRE_PG") == "1"

_pg_state: dict[str, str | None] = {}

# The suite starts hundreds of Python processes (`chunkq` commands, workers, dashboards, browsers' servers).
# With bytecode off (PYTHONDONTWRITEBYTECODE, set in some containers and CI images) each compiles chunkq
# and the tests' helpers from source again: 0.3-0.5 s of CPU a start on this 2-core machine. Written once
# into the checkout's __pycache__ (ignored by git), every later start reads it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Property tests explore new examples on every run of a person's machine, and keep what fails in
# .hypothesis/ to try first next time. CI (``.ci/run`` sets CHUNKQ_CI=1) runs the same examples every
# time: a bug a random draw finds is found where someone can shrink and fix it, not as a red landing.
if os.environ.get("CHUNKQ_CI") == "1":
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    _hypothesis_settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _no_cli_log_handler_left_behind() -> Iterator[None]:
    """A command run in-process (click's runner) installs chunkq's log handler on the root logger, as a
    real run does; a real run then exits. Here the process goes on to the next test: take it off, so that
    a later test's logging (the per-entity output capture) does not see a handler it never set up."""
    before = set(logging.root.handlers)
    yield
    for handler in list(logging.root.handlers):
        if handler not in before and getattr(handler, "_chunkq_cli_handler", False):
            logging.root.removeHandler(handler)


def _pg_connect_args() -> dict[str, object]:
    from sqlalchemy.engine import make_url

    u = make_url(PG_SERVER)
    return {"host": u.host or "127.0.0.1", "port": u.port or 5432, "user": u.username or "postgres",
            "password": u.password}


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(database=PG_ADMIN_DB, timeout=5, **_pg_connect_args())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _drop_orphans() -> None:
    """Drop test databases left by runs that were killed before they could clean up."""
    import asyncpg

    conn = await asyncpg.connect(database=PG_ADMIN_DB, timeout=5, **_pg_connect_args())
    try:
        names = [r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'chunkq_t_%'")]
        for name in names:
            try:
                pid = int(name.split("_")[2])
                os.kill(pid, 0)  # that pytest process is still running: leave its database alone
            except ProcessLookupError:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except (ValueError, IndexError, PermissionError):
                continue
    finally:
        await conn.close()


def _pg_database() -> str | None:
    """Create this process's PostgreSQL test database once; None (with the reason kept) if impossible."""
    if "url" in _pg_state:
        return _pg_state["url"]
    name = f"chunkq_t_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        asyncio.run(_drop_orphans())
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server, no driver, no permission
        _pg_state["url"] = None
        _pg_state["why"] = f"PostgreSQL at {PG_SERVER} is not usable: {type(exc).__name__}: {exc}"
        return None
    _pg_state["name"] = name
    _pg_state["url"] = f"{PG_SERVER.rstrip('/')}/{name}"
    return _pg_state["url"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    name = _pg_state.get("name")
    if name:
        try:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception:
            pass


async def _reset_pg(url: str) -> None:
    import asyncpg

    db = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(database=db, timeout=5, **_pg_connect_args())
    try:
        await _drop_chunkq_tables(conn)
    finally:
        await conn.close()


async def _drop_chunkq_tables(conn: Any) -> None:
    # every chunkq table, whatever revision made it (the revision table included)
    names = [r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'chunkq%'")]
    if names:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(names)} CASCADE")


#: what a test may change of the schema (a migration test downgrades, drops, alters): read before reusing it, from
#: the catalogs (information_schema's views cost a new session 15 ms a test)
_PG_SIGNATURE = """
SELECT (SELECT string_agg(version_num, ',') FROM chunkq_alembic_version),
       (SELECT string_agg(key || '=' || value, ',' ORDER BY key) FROM chunkq_meta),
       (SELECT string_agg(c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
                          || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ',' ORDER BY c.relname, a.attname)
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'chunkq%' AND c.relkind = 'r'
            AND a.attnum > 0 AND NOT a.attisdropped),
       (SELECT string_agg(pg_get_indexdef(i.indexrelid), ',' ORDER BY pg_get_indexdef(i.indexrelid))
          FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
          WHERE c.relnamespace = current_schema()::regnamespace AND c.relname LIKE 'chunkq%'),
       (SELECT string_agg(t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          WHERE c.relname LIKE 'chunkq%' AND NOT t.tgisinternal),
       (SELECT string_agg(md5(prosrc), ',' ORDER BY proname) FROM pg_proc WHERE proname LIKE 'chunkq%')
"""
#: tables whose rows are the schema's, not a test's (the revision, the schema version)
_PG_KEEP = ("chunkq_alembic_version", "chunkq_meta")


async def _fresh_pg(url: str, *, truncated: bool = False) -> None:
    """Empty tables at the newest revision, without migrating for every test.

    Migrating an empty database runs every revision (about half a second on PostgreSQL, the
    largest single cost of the suite). The first test of a process migrates and the schema's
    signature and seed rows are kept; later tests find the same signature, truncate the tables
    (identities restarted) and put the seed rows back. A test that changed the schema (the
    migration tests) leaves another signature: the tables are dropped, and the next test migrates.
    """
    import asyncpg

    db = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(database=db, timeout=5, **_pg_connect_args())
    try:
        if "signature" in _pg_template:
            try:
                signature = tuple(await conn.fetchrow(_PG_SIGNATURE))
            except asyncpg.PostgresError:
                signature = None
            if signature == _pg_template["signature"]:
                await _empty_pg_tables(conn, truncated=truncated)
                for table, rows in _pg_template["seeds"].items():
                    await conn.copy_records_to_table(table, records=rows)
                return
        await _drop_chunkq_tables(conn)
        if "signature" in _pg_template:
            return
        from chunkq.core import Queue

        async with Queue(url):
            pass  # migrated to the newest revision
        _pg_template["signature"] = tuple(await conn.fetchrow(_PG_SIGNATURE))
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'chunkq%'")]
        _pg_template["tables"] = tables
        _pg_template["seeds"] = {t: rows for t in tables if t not in _PG_KEEP
                                 and (rows := [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t}")])}
        _pg_template["delete_order"] = _delete_order(
            [t for t in tables if t not in _PG_KEEP],
            [tuple(r) for r in await conn.fetch(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
                "AND connamespace = current_schema()::regnamespace")])
        _pg_template["sequences"] = [r[0] for r in await conn.fetch(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema() "
            "AND sequencename LIKE 'chunkq%'")]
    finally:
        await conn.close()


#: a table (with its indexes) past this is emptied by TRUNCATE, which gives its pages back; below it DELETE
_PG_DELETE_BELOW = 4 << 20


async def _empty_pg_tables(conn: Any, *, truncated: bool = False) -> None:
    """Empty every table and restart the ids, as ``TRUNCATE ... RESTART IDENTITY`` would, cheaply.

    TRUNCATE makes new files for every table, index and sequence it touches: 40 ms and as much of the
    server's CPU a test, most of the fixture's cost over 600 PostgreSQL tests. DELETE of a few rows and
    a sequence restart take 5. A table some test filled (a million IDs) is truncated instead, so its dead
    pages are given back. DELETE leaves pages and statistics behind, and on a tiny table they decide which
    index the planner takes: a test that reads plans (marked ``plans``) gets truncated tables, with no
    page or statistic of an earlier test's left."""
    tables = _pg_template["delete_order"]
    truncated = truncated or await conn.fetchval(
        "SELECT coalesce(max(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND c.relname = ANY($1::text[])",
        tables) >= _PG_DELETE_BELOW
    async with conn.transaction():
        if truncated:
            await conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
            return
        for table in tables:
            await conn.execute(f"DELETE FROM {table}")
        for sequence in _pg_template["sequences"]:
            await conn.execute(f"ALTER SEQUENCE {sequence} RESTART")


def _delete_order(tables: list[str], references: list[tuple[str, str]]) -> list[str]:
    """The tables in an order DELETE can empty them one by one: each before those it references, and the
    tables no key ties to (the counts that chunkq_jobs' triggers keep) after the ones whose deletes write
    them."""
    refs = {t: {b for a, b in references if a == t and b != t and b in tables} for t in tables}
    tied = {a for a, _ in references} | {b for _, b in references}
    order: list[str] = []
    left = [t for t in tables if t in tied]
    while left:
        free = [t for t in left if not any(t in refs[other] for other in left if other != t)]
        if not free:
            raise AssertionError(f"foreign keys in a cycle among {left}: empty them with TRUNCATE")
        order += free
        left = [t for t in left if t not in free]
    return order + [t for t in tables if t not in tied]


_pg_template: dict[str, Any] = {}


def pg_url_or_skip(*, migrated: bool = False, truncated: bool = False) -> str:
    url = _pg_database()
    if url is None:
        why = _pg_state.get("why") or "PostgreSQL unavailable"
        if REQUIRE_PG:
            pytest.fail(f"CHUNKQ_REQUIRE_PG=1 but {why}", pytrace=False)
        pytest.skip(why)
    asyncio.run(_fresh_pg(url, truncated=truncated) if migrated else _reset_pg(url))
    return url


_sqlite_template: dict[str, Path] = {}


def fresh_sqlite(path: Path) -> Path:
    """A SQLite file at the newest revision with empty tables: a copy of one migrated once per process."""
    template = _sqlite_template.get("path")
    if template is None:
        import tempfile

        from chunkq.core import Queue

        template = Path(tempfile.mkdtemp(prefix="chunkq-template-")) / "template.db"

        async def make() -> None:
            async with Queue(f"sqlite:///{template}"):
                pass

        asyncio.run(make())
        con = sqlite3.connect(template)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself: one copy is whole
        con.close()
        _sqlite_template["path"] = template
    shutil.copyfile(template, path)
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the newest revision with empty tables: a SQLite file in tmp_path, or PostgreSQL.

    Not migrated per test (see ``_fresh_pg``, ``fresh_sqlite``); ``empty_db_url`` is a database
    with no schema at all, for tests of what creates it.
    """
    if request.param == "sqlite":
        return f"sqlite:///{fresh_sqlite(tmp_path / 'chunkq.db')}"
    return pg_url_or_skip(migrated=True, truncated=request.node.get_closest_marker("plans") is not None)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema: a SQLite file that does not exist yet, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chunkq.db'}"
    return pg_url_or_skip()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{fresh_sqlite(tmp_path / 'chunkq.db')}"


@pytest.fixture
def pg_url() -> str:
    """An emptied PostgreSQL database with no schema (the PostgreSQL-only tests are mostly about making it)."""
    return pg_url_or_skip()


@pytest.fixture
async def queue(db_url: str) -> AsyncIterator[object]:
    from chunkq.core import Queue

    async with Queue(db_url) as q:
        yield q


@pytest.fixture
def python_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for subprocesses: the project importable, tmp_path holding processor modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(tmp_path), env.get("PYTHONPATH", "")])
    env.pop("CHUNKQ_DB", None)
    env.pop("CHUNKQ_PROCESSOR", None)
    yield env


PYTHON = sys.executable
