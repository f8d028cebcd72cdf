"""The test fork server (``tests/forkserver.py``) makes children that behave as fresh `chunkq` processes.

Each check runs a command both ways and compares what a test can see: the exit status, stdout,
stderr, the files it wrote, and how it dies of a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import forkserver
from tests.cli.helpers import CHUNKQ

pytestmark = pytest.mark.skipif(not forkserver.ENABLED, reason="CHUNKQ_TEST_FORK=0")

PROCESSOR = """
import os, sys
def go(entity_id, job):
    print(f"{entity_id} in {os.getcwd()} with {os.environ.get('MARK')}", flush=True)
    sys.stderr.write(f"stderr {entity_id}\\n")
"""


@pytest.fixture
def env(python_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    extra = tmp_path / "lib"
    extra.mkdir()
    (extra / "forked_proc.py").write_text(PROCESSOR)  # written after the server started: found all the same
    return {**python_env, "PYTHONPATH": str(extra), "MARK": "m\u00e9", "PYTHONUNBUFFERED": "1"}


def _both(args: list[str], env: dict[str, str], cwd: Path, **kw: object) -> tuple[object, object]:
    forked = forkserver.run([*CHUNKQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, **kw)
    fresh = subprocess.run([*CHUNKQ, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, **kw)
    return forked, fresh


def _same(forked: object, fresh: object) -> None:
    assert isinstance(forked, subprocess.CompletedProcess) and isinstance(fresh, subprocess.CompletedProcess)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_forked_command_answers_as_a_fresh_one(env: dict[str, str], tmp_path: Path) -> None:
    assert forkserver._forkable([*CHUNKQ, "jobs"], {"env": env}) == (True, CHUNKQ[0] == sys.executable)
    _same(*_both(["process", "--concurrency", "0"], env, tmp_path))  # usage error: exit 2, one line
    _same(*_both(["--db", str(tmp_path / "none.db"), "jobs"], env, tmp_path))  # no database
    for db in ("a.db", "b.db"):  # the same work, through each
        made = (forkserver.run if db == "a.db" else subprocess.run)(
            [*CHUNKQ, "--db", db, "enqueue", "-", "-t", "x", "-p", "y"], input="e1\ne2\n", env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60)
        assert (made.returncode, made.stdout) == (0, "1\n"), made.stderr
    forked = forkserver.run([*CHUNKQ, "--db", "a.db", "-q", "process", "--processor", "forked_proc:go"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    fresh = subprocess.run([*CHUNKQ, "--db", "b.db", "-q", "process", "--processor", "forked_proc:go"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert forked.returncode == fresh.returncode == 0, forked.stderr
    assert forked.stderr == fresh.stderr  # the callback's output, on stderr with its entity: the same lines
    assert f"in {tmp_path} with m\u00e9" in forked.stderr


def test_a_forked_command_dies_of_its_signal(env: dict[str, str], tmp_path: Path) -> None:
    made = forkserver.run([*CHUNKQ, "--db", "w.db", "enqueue", "-", "-t", "x", "-p", "y"], input=b"e1\n", env=env,
                          cwd=tmp_path, capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr
    proc = forkserver.popen([*CHUNKQ, "--db", "w.db", "worker", "--processor", "forked_proc:go"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert isinstance(proc, forkserver.ForkedProcess) and proc.pid != os.getpid()
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def test_what_a_fork_cannot_redo_is_started_fresh(env: dict[str, str]) -> None:
    assert forkserver._forkable([*CHUNKQ, "jobs"], {"env": {**env, "PYTHONIOENCODING": "latin-1"}}) == (False, False)
    assert forkserver._forkable(["ip", "link"], {"env": env}) == (False, False)
    assert forkserver._forkable([*CHUNKQ, "jobs"], {"env": env, "preexec_fn": print}) == (False, False)
