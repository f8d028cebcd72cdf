"""SVG snapshots of the Workers screen and of a job's detail with its reason and history.

Deterministic by construction: workers are registered through core with a fixed
host, pid, id and clock (``workers_seed.py``) and never heartbeat on their own;
the dashboard's clock is frozen and its refresh timer never fires.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from textual.clock import MockClock
from textual.pilot import Pilot

from tests.dashboard.conftest import NEVER, fixed_clock, settle
from tests.dashboard.test_detail import wait_loaded
from tests.dashboard.workers_seed import seed_history_job, seed_workers


@pytest.fixture
def workers_file(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'chunkq.db'}"
    asyncio.run(seed_workers(url))
    return url


async def open_workers(pilot: Pilot[None]) -> None:
    await settle(pilot)
    await pilot.press("w")
    await settle(pilot)
    pilot.app.screen.poll()  # type: ignore[attr-defined]
    await settle(pilot)


@pytest.mark.slow
def test_workers_screen_wide(snap_compare, workers_file: str) -> None:
    app = ChunkqApp(workers_file, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, terminal_size=(160, 45), run_before=open_workers)


@pytest.mark.slow
def test_workers_screen_at_80x24(snap_compare, workers_file: str) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await open_workers(pilot)
        await pilot.press("down", "down", "down")  # the lost worker: its detail line says so

    app = ChunkqApp(workers_file, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


@pytest.mark.slow
def test_detail_with_its_reason_and_history(snap_compare, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chunkq.db'}"
    job_id = asyncio.run(seed_history_job(url))

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        screen = JobDetailScreen(job_id, progress_clock=MockClock())
        await pilot.app.push_screen(screen)
        await wait_loaded(pilot, screen)

    app = ChunkqApp(url, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, terminal_size=(160, 45), run_before=run_before)
