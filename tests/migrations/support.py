"""Shared pieces of the migration tests: the chunkq 0.1.0 fixture, on SQLite and loaded into PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from chunkq.core import Processor, Queue
from chunkq.core import schema as s
from chunkq.core.backend import backend_for

from tests.fixtures import schema_dump as sd

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "chunkq-0.1.0.db"
PG_SCHEMA_010 = ROOT / "tests" / "fixtures" / "chunkq-0.1.0-postgresql-schema.json"
#: the paused job of the fixture (everything else is active or finished)
PAUSED_JOB = 5


def copy_fixture(folder: Path, name: str = "old.db") -> Path:
    """A private copy: reading the committed file in place would leave -wal/-shm files next to it."""
    target = folder / name
    shutil.copyfile(FIXTURE, target)
    return target


def fixture_rows(tmp: Path) -> dict[str, list[dict[str, Any]]]:
    return sd.sqlite_rows(copy_fixture(tmp, "rows-source.db"))


async def build_to(url: str, revision: str) -> None:
    """A fresh database at ``revision`` (through the real migration path)."""
    backend = backend_for(url)
    try:
        await backend.read_schema()
        await backend.migrate(target=revision)
    finally:
        await backend.close()


async def make_pg_legacy(url: str, rows: dict[str, list[dict[str, Any]]]) -> None:
    """An empty PostgreSQL database made into what chunkq 0.1.0 would have left there: revision 0001's
    tables (the 0.1.0 schema, checked against 0.1.0's own in test_revisions), no revision table,
    and the fixture's rows with the id sequences moved past them."""
    import asyncpg

    await build_to(url, "0001")
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    try:
        await conn.execute(f"DROP TABLE {sd.VERSION_TABLE}; DELETE FROM chunkq_meta")
    finally:
        await conn.close()
    await sd.pg_load(url, rows)


def legacy_db(url: str, tmp: Path) -> str:
    """``url`` (SQLite: ignored, a copy of the fixture is made) holding the 0.1.0 fixture's data."""
    if url.startswith("postgres"):
        asyncio.run(make_pg_legacy(url, fixture_rows(tmp)))
        return url
    return str(copy_fixture(tmp))


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def rows_of(url: str) -> dict[str, list[dict[str, Any]]]:
    if url.startswith("postgres"):
        return asyncio.run(sd.pg_rows(url))
    return sd.sqlite_rows(sqlite_path(url))


def full_dump(url: str) -> Any:
    if url.startswith("postgres"):
        return asyncio.run(sd.pg_dump(url))
    return sd.sqlite_dump(sqlite_path(url))


def assert_rows_survived(before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]) -> None:
    """Every row of every 0.1.0 table is there, unchanged in every old column; new columns hold their default."""
    for table, rows in before.items():
        if table == "chunkq_meta":
            continue
        got = after[table]
        assert len(got) == len(rows), table
        for old, new in zip(rows, got, strict=True):
            assert {k: new[k] for k in old} == old, (table, old)
    assert len(before["chunkq_chunks"]) > 0 and len(before["chunkq_jobs"]) > 0
    assert {r["lost_leases"] for r in after["chunkq_chunks"]} == {0}
    assert {r["processor"] for r in after["chunkq_jobs"]} == {None}
    assert {r["key"]: r["value"] for r in before["chunkq_meta"]} == {"schema_version": "1"}
    assert {r["key"]: r["value"] for r in after["chunkq_meta"]} == {"schema_version": str(s.SCHEMA_VERSION)}
    assert {(r["reason_error_id"], r["released_by"], r["released_at"]) for r in after["chunkq_jobs"]} == {
        (None, None, None)}
    # 0003 fingerprinted every error 0.1.0 logged, so they group with the same failures logged after
    assert after["chunkq_errors"] and all(r["fingerprint"] and r["normalized"] is not None
                                          for r in after["chunkq_errors"])


async def process_everything(url: str) -> list[Any]:
    """Run every pending chunk with the current code (the paused job resumed first); the jobs after."""
    ok = Processor(on_process=lambda entity_id, job: None)
    async with Queue(url) as q:
        await q.resume(PAUSED_JOB)
        for _ in range(1000):
            if await q.process_next_chunk(ok) is None:
                break
        return await q.list_jobs(limit=100)
