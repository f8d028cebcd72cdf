"""Helpers for driving `chunkq` in-process (click's CliRunner) and as real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import forkserver

_SCRIPT = Path(sys.executable).parent / "chunkq"
#: the installed console script when there is one (CI installs the project), else the module
CHUNKQ: list[str] = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "chunkq.tui.cli"]


def run_async(coro: Any) -> Any:
    """CliRunner tests are synchronous (each command runs its own event loop); read the DB like this."""
    return asyncio.run(coro)


async def _jobs(url: str) -> list[Any]:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return await q.list_jobs(limit=1000)


def list_jobs(url: str) -> list[Any]:
    return run_async(_jobs(url))


def create_db(url: str) -> None:
    """What `chunkq db upgrade` does: commands that only read or process refuse a missing database."""
    from chunkq.core import upgrade_schema

    run_async(upgrade_schema(url))


async def _job(url: str, job_id: int) -> Any:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return await q.get_job(job_id)


def get_job(url: str, job_id: int) -> Any:
    return run_async(_job(url, job_id))


async def _chunks(url: str, job_id: int) -> list[Any]:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return await q.list_chunks(job_id, limit=10_000)


def list_chunks(url: str, job_id: int) -> list[Any]:
    return run_async(_chunks(url, job_id))


def one_line_error(stderr: str) -> str:
    """The error contract: exactly one non-empty line, starting 'Error:', no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("Error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def log_lines(tmp_path: Path, module: str) -> list[str]:
    path = tmp_path / f"{module}.log"
    return path.read_text().splitlines() if path.exists() else []


def run_chunkq(
    args: list[str], env: dict[str, str], cwd: Path, *, timeout: float = 60, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """One real `chunkq` process, bounded in time."""
    proc = forkserver.run(
        [*CHUNKQ, *args], env=env, cwd=cwd, input=input, capture_output=True, timeout=timeout,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def invoke_chunkq(
    args: list[str], cwd: Path, *, input: bytes | str | None = None
) -> subprocess.CompletedProcess[str]:
    """The same command in this process through click's CliRunner (the same ``cli.main`` that turns
    errors into one line and an exit status), run from ``cwd`` without CHUNKQ_DB and CHUNKQ_PROCESSOR
    (as ``python_env`` does); for checks that are not about the process itself."""
    import contextlib

    from chunkq.tui.cli import cli
    from click.testing import CliRunner

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(cli, args, input=input, prog_name="chunkq",
                                    env={"CHUNKQ_DB": None, "CHUNKQ_PROCESSOR": None})
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def popen_chunkq(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    return forkserver.popen([*CHUNKQ, *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
