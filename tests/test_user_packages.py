"""A user's project may have its own top-level ``core`` (Django's usual layout) or ``tui`` package.

chunkq installs its folders as ``chunkq.core`` and ``chunkq.tui``, so a processor at
``core.enrichment:run`` is the user's, found, run, reloaded and named as theirs, from
the command line and from the dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT

V1 = '''
class EnrichmentError(Exception):
    """The user's own exception type: shown with its full module name."""


def run(entity_id, job):
    if entity_id.endswith("3"):
        raise EnrichmentError(f"v1 cannot enrich {entity_id}")
    with open(__file__ + ".log", "a") as f:
        f.write(entity_id + "\\n")
'''

V2 = V1.replace("v1 cannot", "v2 cannot").replace('endswith("3")', 'endswith(("3", "8"))')


def _project(root: Path) -> Path:
    """A user project: ``core/__init__.py`` and ``core/enrichment.py``, plus a ``tui`` package of its own."""
    (root / "core").mkdir(parents=True)
    (root / "core" / "__init__.py").write_text('"""The user\'s own core package."""\n')
    (root / "core" / "enrichment.py").write_text(textwrap.dedent(V1))
    (root / "tui").mkdir()
    (root / "tui" / "__init__.py").write_text("RAISE_IF_CHUNKQ_IMPORTS_ME = 1\n")
    return root / "core" / "enrichment.py"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return _project(tmp_path / "proj")


def _env(project_dir: Path) -> dict[str, str]:
    """The user's environment: their project on the path, not chunkq's source folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHUNKQ_DB", "CHUNKQ_PROCESSOR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(project_dir)
    return env


def _chunkq(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("chunkq")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "chunkq.tui.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_runs_a_processor_from_the_users_own_core_package(project: Path) -> None:
    proj = project.parent.parent
    assert proj != ROOT
    (proj / "ids.txt").write_text("".join(f"acme-{i}\n" for i in range(10)))
    enq = _chunkq(["--db", "q.db", "enqueue", "ids.txt", "-t", "company", "-p", "clearbit"], proj)
    assert enq.returncode == 0, enq.stderr
    run = _chunkq(["--db", "q.db", "--json", "process", "--until-empty", "--processor", "core.enrichment:run"], proj)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["entities"] == 10
    done = (project.parent / "enrichment.py.log").read_text().split()
    assert sorted(done) == sorted(f"acme-{i}" for i in range(10) if i != 3)
    errors = _chunkq(["--db", "q.db", "--json", "errors", "1"], proj)
    assert errors.returncode == 0, errors.stderr
    (only,) = json.loads(errors.stdout)["errors"]
    # the user's class keeps its full name: chunkq shortens only its own exception types
    assert only["error_type"] == "core.enrichment.EnrichmentError"
    assert only["message"] == "v1 cannot enrich acme-3"


@pytest.fixture
def user_core_on_path(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """In this process: the user's project first on sys.path, no module named core/tui imported yet."""
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in ("core", "tui")}
    for name in saved:
        del sys.modules[name]
    monkeypatch.syspath_prepend(str(project.parent.parent))
    monkeypatch.chdir(project.parent.parent)
    yield project
    for name in [n for n in sys.modules if n.split(".")[0] in ("core", "tui")]:
        del sys.modules[name]
    sys.modules.update(saved)


@pytest.mark.slow
async def test_dashboard_loads_steps_and_reloads_a_processor_under_the_users_core(
    sqlite_url: str, user_core_on_path: Path
) -> None:
    from chunkq.core import Queue
    from chunkq.tui.dashboard.app import ChunkqApp

    async with Queue(sqlite_url) as q:
        job = await q.enqueue_job([f"acme-{i}" for i in range(10)], entity_type="company", provider="clearbit",
                                  chunk_size=5)
    app = ChunkqApp(sqlite_url, processor="core.enrichment:run")
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        assert sys.modules["core"].__file__ == str(user_core_on_path.parent / "__init__.py")
        await pilot.press("s")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        first = await app.queue.list_errors(job.id)
        assert [(e.error_type, e.message) for e in first] == [
            ("core.enrichment.EnrichmentError", "v1 cannot enrich acme-3")]

        user_core_on_path.write_text(textwrap.dedent(V2))
        later = time.time() + 10
        os.utime(user_core_on_path, (later, later))
        await pilot.press("R")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("s")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        errors = await app.queue.list_errors(job.id)
        assert [e.message for e in errors] == ["v1 cannot enrich acme-3", "v2 cannot enrich acme-8"]
    assert "tui" not in sys.modules or sys.modules["tui"].__file__ == str(
        user_core_on_path.parent.parent / "tui" / "__init__.py")
