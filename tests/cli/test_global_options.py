"""The group's options (--db, --json, -v, -q) work after the subcommand too (issue 18).

People type `chunkq tui --db X` and `chunkq jobs --db X --json`; click only knows
them before the subcommand, so the group moves them there. A subcommand's own
option of the same name (`chunkq demo --db PATH`) stays its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from chunkq.tui.cli import cli as command
from click.testing import CliRunner, Result

from tests.cli.helpers import create_db, list_jobs


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    monkeypatch.delenv("CHUNKQ_DB", raising=False)
    monkeypatch.delenv("CHUNKQ_PROCESSOR", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(command, list(args), input=input, catch_exceptions=False)

    yield invoke


def test_db_after_the_subcommand_reaches_it(run: Callable[..., Result], db_url: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)  # the default chunkq.db would land here if --db were ignored
    made = run("enqueue", "-", "--db", db_url, "--entity-type", "company", "--provider", "p", input="a\nb\n")
    assert made.exit_code == 0, made.output
    assert [j.total_count for j in list_jobs(db_url)] == [2]
    listed = run("jobs", "--db", db_url, "--json")
    assert listed.exit_code == 0, listed.output
    assert [j["total_count"] for j in json.loads(listed.stdout)["jobs"]] == [2]
    assert not (here / "chunkq.db").exists()


def test_db_equals_form_and_group_json_after_the_subcommand(run: Callable[..., Result], db_url: str) -> None:
    create_db(db_url)
    result = run("jobs", f"--db={db_url}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["jobs"] == []


def test_db_after_a_sub_subcommand(run: Callable[..., Result], db_url: str) -> None:
    result = run("db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    current = run("db", "current", "--db", db_url, "--json")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout)["state"] == "current"


def test_tui_db_after_the_subcommand_opens_that_database(run: Callable[..., Result], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`chunkq tui --db X` is no longer "No such option": X (missing here) is the one refused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("chunkq.tui.cli.dashboard._interactive", lambda: True)
    missing = tmp_path / "typo.db"
    result = run("tui", "--db", str(missing))
    assert result.exit_code == 2
    assert "No such option" not in result.output
    assert "typo.db" in result.output
    assert not missing.exists()


def test_a_subcommands_own_db_option_stays_its_own() -> None:
    ctx = click.Context(command)
    args = ["demo", "--db", "mine.db", "--no-ui"]
    assert command._hoist_global_options(ctx, list(args)) == args  # type: ignore[attr-defined]


def test_nothing_after_a_double_dash_is_moved() -> None:
    group = command
    assert isinstance(group, click.Group)
    ctx = click.Context(group)
    args = group._hoist_global_options(ctx, ["enqueue", "--", "--db", "x"])  # type: ignore[attr-defined]
    assert args == ["enqueue", "--", "--db", "x"]
    moved = group._hoist_global_options(ctx, ["-v", "jobs", "--db", "x", "--json"])  # type: ignore[attr-defined]
    assert moved == ["-v", "--db", "x", "jobs", "--json"]


def test_a_missing_value_is_a_usage_error(run: Callable[..., Result]) -> None:
    result = run("jobs", "--db")
    assert result.exit_code == 2
    assert "--db" in result.output
    assert "requires an argument" in result.output
