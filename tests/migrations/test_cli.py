"""`chunkq db current` / `chunkq db upgrade`, and what every other command says about an older or newer schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from chunkq.core import schema as s
from chunkq.core import upgrade_schema
from click.testing import CliRunner, Result

from tests.cli.helpers import one_line_error

from .support import full_dump, legacy_db

Cli = Callable[..., Result]
DEMO = "chunkq.core.demo:processor"
HEAD = s.revision_of(s.SCHEMA_VERSION)
PENDING = [s.revision_of(n) for n in range(1, s.SCHEMA_VERSION + 1)]
NEWER = ("database schema is at revision 0099 (version 99), newer than this chunkq understands "
         f"(version {s.SCHEMA_VERSION}); "
         "upgrade chunkq")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Cli:
    from chunkq.tui.cli import cli as command

    monkeypatch.delenv("CHUNKQ_DB", raising=False)
    runner = CliRunner()
    return lambda db, *args, input=None: runner.invoke(command, ["--db", db, *args], input=input,
                                                       catch_exceptions=False)


def _make_newer(url: str) -> None:
    """What a later chunkq would leave: a revision this one has never heard of, and its version number."""
    asyncio.run(upgrade_schema(url))

    async def stamp() -> None:
        from chunkq.core import Queue
        from sqlalchemy import text

        async with Queue(url) as q, q.engine.begin() as conn:
            await conn.execute(text("UPDATE chunkq_alembic_version SET version_num = '0099'"))
            await conn.execute(text("UPDATE chunkq_meta SET value = '99' WHERE key = 'schema_version'"))

    asyncio.run(stamp())


def test_db_current_and_upgrade_on_a_0_1_0_database(cli: Cli, db_url: str, tmp_path: Path) -> None:
    url = legacy_db(db_url, tmp_path)
    doc = json.loads(cli(url, "db", "current", "--json").stdout)
    assert (doc["state"], doc["revision"], doc["version"], doc["pending"]) == ("legacy", None, 1, PENDING[1:])
    assert (doc["head_revision"], doc["head_version"]) == (HEAD, s.SCHEMA_VERSION)
    human = cli(url, "db", "current")
    assert human.exit_code == 0 and "0.1.0" in human.stdout and "run `chunkq db upgrade`" in human.stdout

    dump = full_dump(url)
    for args in (["jobs"], ["show", "1"], ["errors", "4"], ["pause", "8"], ["process", "--processor", DEMO],
                 ["enqueue", "-", "-t", "x", "-p", "y"]):
        refused = cli(url, *args, input="a\n")
        assert refused.exit_code == 2, args
        line = one_line_error(refused.stderr)
        assert f"older than this chunkq (version {s.SCHEMA_VERSION}); run `chunkq db upgrade`" in line, args
    assert full_dump(url) == dump, "a refused command changed nothing"

    upgraded = cli(url, "db", "upgrade")
    assert upgraded.exit_code == 0
    assert (f"upgraded from version 1 (chunkq 0.1.0, no revision table) to revision {HEAD} "
            f"(version {s.SCHEMA_VERSION})") in upgraded.stdout
    again = json.loads(cli(url, "--json", "db", "upgrade").stdout)
    assert again["upgraded"] is False and again["after"]["state"] == "current"
    assert json.loads(cli(url, "db", "current", "--json").stdout)["state"] == "current"
    assert cli(url, "jobs").exit_code == 0


def test_a_newer_schema_is_refused_by_every_command_with_one_clear_line(cli: Cli, db_url: str) -> None:
    _make_newer(db_url)
    dump = full_dump(db_url)
    current = cli(db_url, "db", "current", "--json")
    assert current.exit_code == 2
    assert json.loads(current.stdout)["state"] == "newer"
    assert one_line_error(current.stderr).endswith(NEWER)
    for args in (["db", "current"], ["db", "upgrade"], ["jobs"], ["process", "--processor", DEMO],
                 ["worker", "--processor", DEMO], ["pause", "1"],
                 ["enqueue", "-", "-t", "x", "-p", "y"]):
        result = cli(db_url, *args, input="a\n")
        assert result.exit_code == 2, args
        assert one_line_error(result.stderr).endswith(NEWER), args
    assert full_dump(db_url) == dump


def test_db_current_never_creates_and_db_upgrade_creates(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    doc = json.loads(cli(str(path), "--json", "db", "current").stdout)
    assert (doc["state"], doc["pending"]) == ("missing", PENDING)
    assert not path.exists()
    created = cli(str(path), "db", "upgrade")
    assert created.exit_code == 0 and f"created at revision {HEAD} (version {s.SCHEMA_VERSION})" in created.stdout
    assert json.loads(cli(str(path), "--json", "db", "current").stdout)["state"] == "current"


def test_db_current_on_an_empty_postgresql_database(cli: Cli, pg_url: str) -> None:
    doc = json.loads(cli(pg_url, "--json", "db", "current").stdout)
    assert doc["state"] == "empty" and doc["database"] == pg_url
    refused = cli(pg_url, "jobs")
    assert refused.exit_code == 2
    assert "has no chunkq tables; `chunkq enqueue` or `chunkq db upgrade` creates them" in one_line_error(
        refused.stderr)
    assert json.loads(cli(pg_url, "--json", "db", "current").stdout)["state"] == "empty"
