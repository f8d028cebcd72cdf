"""Databases chunkq did not make, cannot write, or that are not there: refused in one line, left as they were.

Each case was once reproduced against a real `chunkq` process: a ``schema_version``
holding garbage ended in "unexpected ValueError" (exit 1); a SQLite file with an
unrelated ``chunkq_jobs`` table got chunkq's other tables and a schema version
written before the command failed; a read-only database refused even `chunkq
jobs`; and every read command on a mistyped path silently created an empty
database. Now: exit 2, one line that says what to do, and not a byte changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue, upgrade_schema
from chunkq.core.schema import SCHEMA_VERSION

from tests.cli.helpers import CHUNKQ, one_line_error, run_chunkq
from tests.migrations.support import copy_fixture, full_dump

pytestmark = pytest.mark.slow

DEMO = "chunkq.core.demo:processor"
#: commands that must not create a database (`enqueue`, `demo` and `db upgrade` do): as real processes ...
READERS = [["jobs"], ["worker", "--processor", DEMO]]
#: ... and in-process (the same code path; processes cost a second each)
MORE_READERS = [["show", "1"], ["errors", "1"], ["process", "--processor", DEMO], ["pause", "1"], ["tui"]]


@pytest.fixture
def env(python_env: dict[str, str]) -> dict[str, str]:
    return {**python_env, "PYTHONUNBUFFERED": "1"}


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


async def _exec(url: str, *statements: str) -> None:
    from sqlalchemy import text

    async with Queue(url) as q, q.engine.begin() as conn:
        for sql in statements:
            await conn.execute(text(sql))


def _refused(args: list[str], env: dict[str, str], cwd: Path, fragment: str) -> str:
    res = run_chunkq(args, env, cwd, input=b"a\nb\n")
    assert res.returncode == 2, (args, res.stdout, res.stderr)
    line = one_line_error(res.stderr)
    assert fragment in line, (args, line)
    return line


# ---------------------------------------------------------------------- not chunkq's schema


def test_a_schema_version_holding_garbage_is_refused_and_nothing_changes(
    db_url: str, env: dict[str, str], tmp_path: Path,
) -> None:
    asyncio.run(upgrade_schema(db_url))
    asyncio.run(_exec(db_url, "UPDATE chunkq_meta SET value = 'v2-beta' WHERE key = 'schema_version'"))
    before = full_dump(db_url)
    for args in (["jobs"], ["enqueue", "-", "-t", "x", "-p", "y"], ["db", "upgrade"]):
        line = _refused(["--db", db_url, *args], env, tmp_path, "chunkq_meta.schema_version holds 'v2-beta', "
                        "not a version number")
        assert line.endswith("nothing was changed")
    assert full_dump(db_url) == before


def test_an_unrelated_chunkq_jobs_table_on_sqlite_is_left_byte_for_byte(env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    folder.mkdir()
    path = folder / "app.db"
    with sqlite3.connect(path) as conn:  # someone else's table, in SQLite's default journal mode
        conn.execute("CREATE TABLE chunkq_jobs (ticket TEXT, owner TEXT)")
        conn.execute("INSERT INTO chunkq_jobs VALUES ('T-1', 'ops')")
    conn.close()
    before = _files(folder)
    for args in (["enqueue", "-", "-t", "x", "-p", "y"], ["jobs"], ["db", "upgrade"], ["db", "current"]):
        _refused(["--db", str(path), *args], env, tmp_path,
                 "has tables named like chunkq's (chunkq_jobs) but no chunkq_meta.schema_version")
    assert _files(folder) == before  # not a table added, not a -wal file, not the journal mode


def test_an_unrelated_chunkq_jobs_table_on_postgresql_is_left_alone(
    pg_url: str, env: dict[str, str], tmp_path: Path,
) -> None:
    import asyncpg

    async def setup_and_list(create: bool) -> list[str]:
        conn = await asyncpg.connect(pg_url, timeout=10)
        try:
            if create:
                await conn.execute("CREATE TABLE chunkq_jobs (ticket text, owner text)")
            return [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
        finally:
            await conn.close()

    assert asyncio.run(setup_and_list(True)) == ["chunkq_jobs"]
    before = full_dump(pg_url)
    for args in (["enqueue", "-", "-t", "x", "-p", "y"], ["db", "upgrade"]):
        _refused(["--db", pg_url, *args], env, tmp_path, "but no chunkq_meta.schema_version")
    assert asyncio.run(setup_and_list(False)) == ["chunkq_jobs"]
    assert full_dump(pg_url) == before


# ---------------------------------------------------------------------- no database there


def test_read_commands_refuse_a_missing_database_and_create_none(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "typo.db"
    expected = f"no chunkq database at {path}; `chunkq enqueue` or `chunkq db upgrade` creates one"
    for args in READERS:
        assert _refused(["--db", str(path), *args], env, tmp_path, expected) == f"Error: {expected}"
    serve = run_chunkq(["--db", str(path), "serve", "--port", "0"], {**env, "CHUNKQ_TOKEN": "t" * 20}, tmp_path)
    assert serve.returncode == 2 and one_line_error(serve.stderr) == f"Error: {expected}"
    from chunkq.tui.cli import cli
    from click.testing import CliRunner

    monkeypatch.setattr("chunkq.tui.cli.dashboard._interactive", lambda: True)  # the dashboard needs a terminal
    for args in MORE_READERS:
        result = CliRunner().invoke(cli, ["--db", str(path), *args])
        assert result.exit_code == 2 and one_line_error(result.stderr) == f"Error: {expected}", args
    assert not path.exists() and not list(tmp_path.glob("typo.db*"))
    # the commands that write create it
    made = run_chunkq(["--db", str(path), "enqueue", "-", "-t", "x", "-p", "y"], env, tmp_path, input=b"a\n")
    assert made.returncode == 0 and path.exists()
    assert run_chunkq(["--db", str(path), "jobs"], env, tmp_path).returncode == 0


# ---------------------------------------------------------------------- read-only


@pytest.fixture
def unprivileged() -> Callable[[list[str]], list[str]]:
    """A command prefix under which file permissions apply (root ignores them unless its capabilities go)."""
    if os.geteuid() != 0:
        return lambda argv: argv
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    drop = "-dac_override,-dac_read_search"
    return lambda argv: [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *argv]


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Callable[[Path, bool], None]]:
    """``read_only(db, folder_too)``: the file 0444 (and its folder 0555); restored afterwards."""
    changed: list[tuple[Path, int]] = []

    def make(path: Path, folder_too: bool) -> None:
        for p in [path, *([path.parent] if folder_too else [])]:
            changed.append((p, stat.S_IMODE(p.stat().st_mode)))
            p.chmod(0o555 if p.is_dir() else 0o444)

    yield make
    for p, mode in reversed(changed):
        p.chmod(mode)


def _run(prefix: Callable[[list[str]], list[str]], args: list[str], env: dict[str, str],
         cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(prefix([*CHUNKQ, *args]), env=env, cwd=cwd, capture_output=True, timeout=60,
                          input=b"a\n")
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@pytest.mark.parametrize("folder_too", [False, True], ids=["file-0444", "folder-0555"])
def test_read_commands_work_on_a_read_only_database(
    folder_too: bool, env: dict[str, str], tmp_path: Path, unprivileged: Any, read_only: Any,
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = copy_fixture(folder, "q.db")
    asyncio.run(upgrade_schema(str(db)))
    before = full_dump(str(db))
    for leftover in folder.glob("q.db-*"):  # as a closed database is: no -wal/-shm beside it
        leftover.unlink()
    read_only(db, folder_too)
    assert _run(unprivileged, ["--db", str(db), "enqueue", "-", "-t", "x", "-p", "y"], env, tmp_path).returncode == 2
    jobs = _run(unprivileged, ["--db", str(db), "--json", "jobs"], env, tmp_path)
    assert jobs.returncode == 0, jobs.stderr
    assert len(json.loads(jobs.stdout)["jobs"]) == 8
    for args in (["show", "4"], ["errors", "4"], ["db", "current"]):
        res = _run(unprivileged, ["--db", str(db), *args], env, tmp_path)
        assert res.returncode == 0, (args, res.stderr)
        assert "Error" not in res.stderr, (args, res.stderr)
    assert full_dump(str(db)) == before


def test_an_older_read_only_database_says_who_can_upgrade_it(
    env: dict[str, str], tmp_path: Path, unprivileged: Any, read_only: Any,
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = copy_fixture(folder, "q.db")
    read_only(db, True)
    res = _run(unprivileged, ["--db", str(db), "jobs"], env, tmp_path)
    assert res.returncode == 2
    line = one_line_error(res.stderr)
    assert (f"older than this chunkq (version {SCHEMA_VERSION}); it is read-only for this user: "
            "run `chunkq db upgrade` as one who may write to it") in line
    assert not list(folder.glob("q.db-*"))


@pytest.mark.parametrize(("db", "says"), [
    ("", "Invalid value for '--db'"), ("  ", "Invalid value for '--db'"),
    ("adir", "'adir' is a folder, not a SQLite database file"),
    ("sqlite:///adir", "'adir' is a folder, not a SQLite database file"),
])
@pytest.mark.parametrize("command", [["jobs"], ["enqueue", "ids.txt", "-t", "c", "-p", "p"]])
def test_an_empty_db_or_a_folder_is_a_usage_error_and_creates_nothing(
    tmp_path: Path, db: str, says: str, command: list[str],
) -> None:
    """``--db ''`` opened ./chunkq.db without a word (a variable meant to hold the URL, empty), and a folder
    was "disk I/O error". In-process: the message and the exit status are the contract."""
    from tests.cli.helpers import invoke_chunkq

    (tmp_path / "adir").mkdir()
    (tmp_path / "ids.txt").write_text("a\nb\n")
    r = invoke_chunkq(["--db", db, *command], tmp_path)
    assert r.returncode == 2 and says in one_line_error(r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "ids.txt"]
    assert list((tmp_path / "adir").iterdir()) == []
