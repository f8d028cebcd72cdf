"""Many processes, one migration: exactly one process migrates, under the backend's lock, in one
transaction; the others wait and find the work done; a failure half-way leaves the database as it was."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chunkq.core import schema as s
from chunkq.core import schema_status, upgrade_schema
from chunkq.core.migrations import runner

from tests import forkserver

from .support import ROOT, assert_rows_survived, full_dump, legacy_db, rows_of

pytestmark = pytest.mark.slow


def _start(url: str, tmp: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    args = [sys.executable, "-m", "tests.migrations.hooked", "--log", str(tmp / "steps.log"),
            "--hold-until", str(tmp / "release"), "--", "--db", url, "--json", "db", "upgrade"]
    with out.open("wb") as o, err.open("wb") as e:
        proc = forkserver.popen(args, cwd=ROOT, env=env, stdout=o, stderr=e)
    return proc, out, err


def _wait_for(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_processes_starting_at_once_migrate_an_old_database_once(
    db_url: str, tmp_path: Path, python_env: dict[str, str],
) -> None:
    url = legacy_db(db_url, tmp_path)
    before = rows_of(url)
    steps = tmp_path / "steps.log"
    procs = [_start(url, tmp_path, python_env, name) for name in ("a", "b")]
    # The first to take the lock stops inside its migration (its transaction open, the lock held) until
    # the other says it is waiting for that lock: both read the old schema, both try to migrate.
    _wait_for(lambda: steps.exists() and steps.read_text().strip(), "a migration step")
    _wait_for(lambda: any("waiting for another process to finish changing the schema" in err.read_text()
                          for _p, _o, err in procs), "the second process to wait for the lock")
    (tmp_path / "release").touch()
    docs = []
    for proc, out, err in procs:
        assert proc.wait(timeout=120) == 0, err.read_text()
        docs.append(json.loads(out.read_text()))
    steps_run = steps.read_text().splitlines()
    assert len({line.split()[0] for line in steps_run}) == 1, "exactly one process ran the migration"
    assert len(steps_run) == s.SCHEMA_VERSION - 1, "each revision once"
    first, second = sorted(docs, key=lambda d: not d["upgraded"])
    assert first["upgraded"] and first["before"]["state"] == "legacy" and first["after"]["state"] == "current"
    # the other read the old schema too, waited for the lock, and found the work done
    assert not second["upgraded"] and second["before"]["state"] == "legacy" and second["after"]["state"] == "current"
    assert_rows_survived(before, rows_of(url))


def test_a_migration_that_fails_half_way_leaves_the_database_as_it_was(db_url: str, tmp_path: Path) -> None:
    url = legacy_db(db_url, tmp_path)
    dump = full_dump(url)
    ran: list[str] = []

    def fail(revision: str) -> None:
        ran.append(revision)
        raise RuntimeError(f"injected failure after revision {revision}")

    runner.step_hooks.append(fail)
    try:
        with pytest.raises(RuntimeError, match="injected failure after revision 0002"):
            asyncio.run(upgrade_schema(url))
    finally:
        runner.step_hooks.remove(fail)
    # the stamp (a revision table, a row), 0002's new columns and its version row were all written before
    # the failure; one transaction took them all back
    assert ran == ["0002"]
    assert full_dump(url) == dump
    assert asyncio.run(schema_status(url)).kind == "legacy"
    assert asyncio.run(upgrade_schema(url)).upgraded
    assert asyncio.run(schema_status(url)).kind == "current"


def test_a_process_that_dies_mid_migration_leaves_the_database_as_it_was(
    db_url: str, tmp_path: Path, python_env: dict[str, str],
) -> None:
    """kill -9 while the lock is held and the steps are written but not committed: nothing of it stays,
    the lock goes with the process, and the next upgrade runs."""
    url = legacy_db(db_url, tmp_path)
    dump = full_dump(url)
    proc, _out, err = _start(url, tmp_path, python_env, "killed")
    steps = tmp_path / "steps.log"
    _wait_for(lambda: steps.exists() and steps.read_text().strip(), "a migration step")
    proc.kill()
    proc.wait(timeout=30)
    assert full_dump(url) == dump, err.read_text()
    assert asyncio.run(upgrade_schema(url)).upgraded
