"""The revisions themselves: one numbered chain, 0001 = chunkq 0.1.0, the newest = ``schema.py``, reversible."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from chunkq.core import Queue
from chunkq.core import schema as s
from chunkq.core.migrations import runner

from tests.fixtures import schema_dump as sd

from .support import PG_SCHEMA_010, build_to, copy_fixture, legacy_db, rows_of


def test_revisions_are_one_chain_numbered_like_the_schema_version() -> None:
    script = ScriptDirectory.from_config(runner.config())
    assert runner.revisions() == [s.revision_of(n) for n in range(1, s.SCHEMA_VERSION + 1)]
    assert script.get_heads() == [s.revision_of(s.SCHEMA_VERSION)]
    for rev in script.walk_revisions():
        number = int(rev.revision)
        assert rev.down_revision == (s.revision_of(number - 1) if number > 1 else None)
        assert Path(rev.path).name.startswith(f"{rev.revision}_")


def _differences(conn: Any) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return [d for d in compare_metadata(ctx, s.metadata)
            if not (d[0] == "remove_table" and d[1].name == s.VERSION_TABLE)]


async def test_the_newest_revision_builds_exactly_the_tables_schema_py_declares(empty_db_url: str) -> None:
    async with Queue(empty_db_url) as q, q.engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


def test_revision_0001_is_the_schema_chunkq_0_1_0_made_on_sqlite(tmp_path: Path) -> None:
    made = tmp_path / "0001.db"
    asyncio.run(build_to(str(made), "0001"))
    old = copy_fixture(tmp_path)
    assert sd.sqlite_schema(made) == sd.sqlite_schema(old)
    assert len(sd.sqlite_schema(old)) == 7 + 6  # tables and indexes


def test_revision_0001_is_the_schema_chunkq_0_1_0_made_on_postgresql(pg_url: str) -> None:
    asyncio.run(build_to(pg_url, "0001"))
    made = json.loads(json.dumps(asyncio.run(sd.pg_structure(pg_url))))
    assert made == json.loads(PG_SCHEMA_010.read_text())


def test_downgrading_0002_gives_back_0001_and_every_row(db_url: str, tmp_path: Path) -> None:
    url = legacy_db(db_url, tmp_path)
    before = rows_of(url)
    asyncio.run(build_to(url, s.revision_of(s.SCHEMA_VERSION)))
    assert rows_of(url) != before
    asyncio.run(build_to(url, "0001"))
    assert rows_of(url) == before
    if not url.startswith("postgres"):
        fresh = tmp_path / "0001.db"
        asyncio.run(build_to(str(fresh), "0001"))
        assert sd.sqlite_schema(url) == sd.sqlite_schema(fresh)


@pytest.mark.parametrize("bad", ["abc", "", "1.5", "-1"])
def test_a_schema_version_chunkq_did_not_write_is_refused(bad: str, tmp_path: Path) -> None:
    import sqlite3

    path = copy_fixture(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE chunkq_meta SET value = ?", (bad,))
    state = asyncio.run(_status(str(path)))
    assert state.kind == "foreign" and "not a version number" in (state.problem or "")


async def _status(url: str) -> Any:
    from chunkq.core import schema_status

    return await schema_status(url)


def test_downgrading_on_an_sqlite_without_drop_column_rebuilds_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite before 3.35 has no DROP COLUMN: the batch rebuild must keep every row (no cascade on the
    rebuilt parent table), the WITHOUT ROWID layout and the indexes."""
    import sqlite3

    url = legacy_db(f"sqlite:///{tmp_path / 'unused.db'}", tmp_path)
    before = rows_of(url)
    asyncio.run(build_to(url, s.revision_of(s.SCHEMA_VERSION)))
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    asyncio.run(build_to(url, "0001"))
    assert rows_of(url) == before
    fresh = tmp_path / "0001.db"
    asyncio.run(build_to(str(fresh), "0001"))
    unquoted = [(t, n, sql.replace(f'"{n}"', n)) for t, n, sql in sd.sqlite_schema(url)]
    assert unquoted == sd.sqlite_schema(fresh)
