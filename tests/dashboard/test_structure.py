"""The dashboard's shape: no import cycle, one command registry, the app keeps its promise to screens.

The layers (app > screens > widgets > shared parts) are an import-linter contract in
pyproject.toml (checked by tests/test_boundaries.py); here each screen and widget
module is imported on its own in a fresh interpreter, which fails if any of them
still needs the app.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.protocol import Dashboard, ProcessingListener
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from chunkq.tui.dashboard.screens.workers import WorkersScreen

from tests.conftest import ROOT

DASHBOARD = ROOT / "tui" / "dashboard"
SCREEN_AND_WIDGET_MODULES = sorted(
    "chunkq.tui.dashboard." + ".".join(p.relative_to(DASHBOARD).with_suffix("").parts)
    for folder in ("screens", "widgets") for p in (DASHBOARD / folder).glob("*.py") if p.stem != "__init__"
)


@pytest.mark.slow
def test_screens_and_widgets_import_without_the_app(python_env: dict[str, str]) -> None:
    """Every screen and widget module imported in turn in one interpreter, asking after each whether the
    app is loaded yet: the first module that loads it is named exactly as a process of its own would name
    it (what the modules before it loaded did not include the app), at one interpreter start, not one a module."""
    assert len(SCREEN_AND_WIDGET_MODULES) > 10
    code = ("import importlib, sys\n"
            f"for m in {SCREEN_AND_WIDGET_MODULES!r}:\n"
            "    importlib.import_module(m)\n"
            "    if 'chunkq.tui.dashboard.app' in sys.modules:\n"
            "        print(m)\n"
            "        break\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env,
                         timeout=60, check=True).stdout
    assert out.strip() == "", f"importing {out.strip()} loaded the app"


def test_the_app_is_what_screens_are_promised(tmp_path) -> None:
    app = ChunkqApp(f"sqlite:///{tmp_path / 'q.db'}")
    assert isinstance(app, Dashboard)
    for name in ("queue", "processor_handle", "capture_locals", "refresh_interval", "processing", "now",
                 "require_processor", "step", "dry_run"):
        assert hasattr(app, name), name
    assert issubclass(JobsScreen, ProcessingListener)


# ---------------------------------------------------------------------- the command registry


def _action_name(action: str) -> str:
    return re.match(r"\w+", action).group(0)  # type: ignore[union-attr]


@pytest.mark.parametrize(("scope", "owner"), [
    (commands.APP, ChunkqApp), (commands.JOBS, JobsScreen), (commands.DETAIL, JobDetailScreen),
    (commands.WORKERS, WorkersScreen)])
def test_every_command_has_its_action(scope: commands.Scope, owner: type) -> None:
    for c in commands.commands(scope):
        assert hasattr(owner, f"action_{_action_name(c.action)}"), f"{c.id} has no action on {owner.__name__}"


def test_screens_bind_exactly_their_scope() -> None:
    assert [b.id for b in JobsScreen.BINDINGS] == [c.id for c in commands.commands(commands.JOBS)]  # type: ignore[union-attr]
    assert [b.id for b in JobDetailScreen.BINDINGS] == [c.id for c in commands.commands(commands.DETAIL)]  # type: ignore[union-attr]
    assert [b.id for b in ChunkqApp.BINDINGS] == [c.id for c in commands.commands(commands.APP)]  # type: ignore[union-attr]
    assert JobsScreen.COMMAND_SCOPE == commands.JOBS and JobDetailScreen.COMMAND_SCOPE == commands.DETAIL
    assert [b.id for b in WorkersScreen.BINDINGS] == [c.id for c in commands.commands(commands.WORKERS)]  # type: ignore[union-attr]
    assert WorkersScreen.COMMAND_SCOPE == commands.WORKERS


@pytest.mark.parametrize("scope", [commands.JOBS, commands.DETAIL, commands.WORKERS])
def test_no_key_means_two_things_on_one_screen(scope: commands.Scope) -> None:
    keys = [c.key for c in commands.available(scope)]
    assert len(keys) == len(set(keys))
    ids = [c.id for c in commands.COMMANDS]
    assert len(ids) == len(set(ids))


def test_help_on_the_detail_screen_lists_its_keys_first_then_the_app_wide_ones() -> None:
    text = commands.help_markdown(commands.DETAIL)
    listed = re.findall(r"^- `([^`]+)` \*\*([^*]+)\*\*", text.split("## Everywhere")[0], re.M)
    detail = [(c.display, c.title) for c in commands.commands(commands.DETAIL) if not c.alias]
    app = [(c.display, c.title) for c in commands.commands(commands.APP) if not c.alias]
    assert listed == detail + app
    assert "## Job detail" in text and "`R` **Reload processor**" in text and "`t` **Retry entity**" in text
    assert "**New job**" not in text, "the jobs list's keys do not work here"


def test_help_on_the_jobs_list_keeps_the_app_wide_keys_among_its_own() -> None:
    screen_section = commands.help_markdown(commands.JOBS).split("## Everywhere")[0]
    listed = re.findall(r"^- `([^`]+)` \*\*", screen_section, re.M)
    assert listed == ["enter", "n", "s", "a", "D", "b", "B", "p", "c", "r", "/", "f", "ctrl+a", "P", "S", "R", "]", "[",
                      "h", "w", "o", "O", "l", "Home/g", "End/G", "j/k", "?", "q"]
