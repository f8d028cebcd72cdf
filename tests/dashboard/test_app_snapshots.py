"""SVG snapshots of the jobs screen and its dialogs (pytest-textual-snapshot).

Deterministic by construction: seeded data without randomness, a frozen clock for
the dashboard and the queue, no refresh timer, no blinking cursors. Update with
``pytest tests/dashboard/test_app_snapshots.py --snapshot-update`` after looking
at ``snapshot_report.html``.
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from tests.dashboard.conftest import no_blink, snapshot_app

SIZE = (160, 40)


async def loaded(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.slow
def test_jobs_screen(snap_compare, seeded_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("down")  # cursor on the second job

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_enqueue_form_filled_in(snap_compare, seeded_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("n")
        await pilot.pause()
        no_blink(pilot)
        screen = pilot.app.screen
        screen.query_one("#entity-type", Input).value = "company"
        screen.query_one("#provider", Input).value = "clearbit"
        screen.query_one("#name", Input).value = "Q3 prospects"
        screen.query_one("#chunk-size", Input).value = "100"
        screen.query_one("#ids", TextArea).text = "\n".join(f"acme-{i:03d}" for i in range(1, 13))
        screen.update_count()  # type: ignore[attr-defined]
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_enqueue_form_with_errors(snap_compare, seeded_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("n")
        await pilot.pause()
        no_blink(pilot)
        screen = pilot.app.screen
        screen.query_one("#provider", Input).value = "clearbit"
        screen.query_one("#chunk-size", Input).value = "0"
        await pilot.press("ctrl+s")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_help_screen(snap_compare, seeded_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZE, run_before=run_before)


@pytest.mark.slow
def test_cancel_confirmation(snap_compare, seeded_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await loaded(pilot)
        await pilot.press("down", "c")
        await pilot.pause()

    assert snap_compare(snapshot_app(seeded_file), terminal_size=SIZE, run_before=run_before)
