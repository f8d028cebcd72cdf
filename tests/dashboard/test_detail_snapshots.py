"""SVG snapshots of the job detail screen (pytest-textual-snapshot).

Deterministic by construction: the data is seeded through core with a fixed
clock and worker name, the dashboard's clock is frozen, the refresh timer never
fires, the progress bar has a mock clock, and tracebacks show paths relative
to tmp_path (the test runs from there). Look at the report before running
``--snapshot-update``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from chunkq.core import Job, Processor, Queue
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from textual.clock import MockClock
from textual.pilot import Pilot

from tests.dashboard.conftest import FIXED_NOW, NEVER, fixed_clock, settle
from tests.dashboard.test_detail import install_processor, seed_job, wait_loaded

SIZE = (160, 45)


@pytest.fixture
def proc_path(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_processor(make_processor, tmp_path, monkeypatch)


def open_detail(job_id: int, then: Callable[[Pilot[None], JobDetailScreen], object] | None = None
                ) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        screen = JobDetailScreen(job_id, progress_clock=MockClock())
        await pilot.app.push_screen(screen)
        await wait_loaded(pilot, screen)
        if then is not None:
            await then(pilot, screen)  # type: ignore[misc]
            await settle(pilot)

    return run_before


@pytest.mark.slow
def test_snapshot_errors_tab_with_a_chained_traceback(sqlite_url: str, proc_path: str, snap_compare) -> None:
    job = asyncio.run(seed_job(sqlite_url, proc_path))

    async def select_second(pilot: Pilot[None], screen: JobDetailScreen) -> None:
        await pilot.press("down")

    app = ChunkqApp(sqlite_url, processor=proc_path, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, terminal_size=SIZE, run_before=open_detail(job.id, select_second))


@pytest.mark.slow
def test_snapshot_drill_down_into_a_group(sqlite_url: str, proc_path: str, snap_compare) -> None:
    job = asyncio.run(seed_job(sqlite_url, proc_path))

    async def drill(pilot: Pilot[None], screen: JobDetailScreen) -> None:
        screen.query_one("#detail-groups").focus()
        before = screen.loads
        await pilot.press("enter")
        await wait_loaded(pilot, screen, before)

    app = ChunkqApp(sqlite_url, processor=proc_path, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, terminal_size=SIZE, run_before=open_detail(job.id, drill))


@pytest.mark.slow
def test_snapshot_chunks_tab(sqlite_url: str, proc_path: str, snap_compare) -> None:
    job = asyncio.run(seed_job(sqlite_url, proc_path))
    app = ChunkqApp(sqlite_url, processor=proc_path, clock=fixed_clock, refresh_interval=NEVER)
    assert snap_compare(app, press=["2"], terminal_size=SIZE, run_before=open_detail(job.id))


@contextmanager
def lease_held_in_a_thread(url: str, seconds_before_now: float) -> Iterator[int]:
    """A worker (its own thread and loop) stuck in its callback since ``seconds_before_now``."""
    stamp = (FIXED_NOW - timedelta(seconds=seconds_before_now)).timestamp()
    leased, go = threading.Event(), threading.Event()
    box: dict[str, int] = {}

    def stuck(entity_id: str, job: Job) -> None:
        leased.set()
        go.wait(30)

    async def hold() -> None:
        async with Queue(url, clock=lambda: stamp, owner="host-b:777:deadbeef", lease_seconds=30) as q:
            job = await q.enqueue_job([f"e-{i}" for i in range(6)], entity_type="company", provider="clearbit",
                                      chunk_size=3, name="stuck job")
            box["job"] = job.id
            await q.process_chunk(job.id, Processor(on_process=stuck))

    thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    thread.start()
    try:
        assert leased.wait(30), "the worker never claimed its chunk"
        yield box["job"]
    finally:
        go.set()
        thread.join(30)


@pytest.mark.slow
def test_snapshot_stale_worker(sqlite_url: str, snap_compare, tmp_path: Path) -> None:
    with lease_held_in_a_thread(sqlite_url, seconds_before_now=90) as job_id:
        app = ChunkqApp(sqlite_url, clock=fixed_clock, refresh_interval=NEVER)
        assert snap_compare(app, press=["2"], terminal_size=SIZE, run_before=open_detail(job_id))
