"""Every screen at 80x24 (a terminal as it opens) and at 200x50 (issue 18), as SVG snapshots.

Same determinism as ``test_app_snapshots.py``: seeded data without randomness, a
frozen clock, no refresh timer, no blinking cursors. Update with
``pytest tests/dashboard/test_fit_snapshots.py --snapshot-update`` after looking
at ``snapshot_report.html``.
"""

from __future__ import annotations

import pytest
from chunkq.tui.dashboard.screens import job_actions
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from textual.clock import MockClock
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from tests.dashboard.conftest import no_blink, settle, snapshot_app

SIZES = {"80x24": (80, 24), "200x50": (200, 50)}


@pytest.mark.parametrize("size", SIZES)
def test_fit_jobs(snap_compare, seeded_file: str, size: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("down")

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_enqueue(snap_compare, seeded_file: str, size: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        no_blink(pilot)
        screen = pilot.app.screen
        screen.query_one("#provider", Input).value = "clearbit"
        screen.query_one("#ids", TextArea).text = "\n".join(f"acme-{i:03d}" for i in range(1, 13))
        screen.update_count()  # type: ignore[attr-defined]
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_help(snap_compare, seeded_file: str, size: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_cancel_dialog(snap_compare, seeded_file: str, size: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("down", "c")
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_bulk_dialog_with_a_big_count(snap_compare, seeded_file: str, size: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        pilot.app.push_screen(job_actions.bulk_dialog(1_532, "status paused"))
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_detail(snap_compare, seeded_file: str, size: str) -> None:
    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=_open_detail)


async def _open_detail(pilot: Pilot[None]) -> JobDetailScreen:
    await settle(pilot)
    screen = JobDetailScreen(1, progress_clock=MockClock())
    await pilot.app.push_screen(screen)
    for _ in range(100):
        if screen.loads:
            break
        await pilot.pause(0.02)
    await settle(pilot)
    return screen


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
def test_fit_traceback_on_enter(snap_compare, seeded_file: str, size: str) -> None:
    """Issue 28: Enter on an error opens its traceback, the whole screen at 80 columns, beside the lists wide."""
    async def run_before(pilot: Pilot[None]) -> None:
        await _open_detail(pilot)
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES[size], run_before=run_before)


@pytest.mark.slow
def test_fit_copy_dialog_at_80(snap_compare, seeded_file: str) -> None:
    """Issue 28: y asks what to copy of the selected error."""
    async def run_before(pilot: Pilot[None]) -> None:
        await _open_detail(pilot)
        await pilot.press("y")
        await settle(pilot)

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZES["80x24"], run_before=run_before)
