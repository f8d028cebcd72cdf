"""Fixtures for the `chunkq` command tests."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result


@pytest.fixture
def write_processor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a processor module into tmp_path (importable here and in subprocesses); returns its stem.

    Each module gets a unique name, so in-process tests never see another test's
    cached module. ``LOG`` in the module is a file every call can append to.
    """
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str) -> str:
        name = f"cliproc_{uuid.uuid4().hex[:10]}"
        header = textwrap.dedent(f"""
            import asyncio, os, time
            LOG = {str(tmp_path / (name + ".log"))!r}
            def record(entity_id):
                fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, (entity_id + "\\n").encode())
                finally:
                    os.close(fd)
        """)
        (tmp_path / f"{name}.py").write_text(header + textwrap.dedent(body))
        return name

    return write


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """``cli("jobs", "--json")`` runs `chunkq --db <db_url> jobs --json` in-process."""
    from chunkq.tui.cli import cli as command

    monkeypatch.delenv("CHUNKQ_DB", raising=False)
    monkeypatch.delenv("CHUNKQ_PROCESSOR", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, db: str | None = None) -> Result:
        return runner.invoke(command, ["--db", db or db_url, *args], input=input, catch_exceptions=False)

    yield invoke


@pytest.fixture
def env(python_env: dict[str, str]) -> dict[str, str]:
    e = dict(python_env)
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.fixture
def bare_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Result]]:
    """``bare_cli("demo", "--no-ui")``: no --db given, no CHUNKQ_* variables set."""
    from chunkq.tui.cli import cli as command

    monkeypatch.delenv("CHUNKQ_DB", raising=False)
    monkeypatch.delenv("CHUNKQ_PROCESSOR", raising=False)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None) -> Result:
        return runner.invoke(command, list(args), input=input, catch_exceptions=False)

    yield invoke
