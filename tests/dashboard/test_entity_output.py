"""Issue 28 in the dashboard: auto-run off the interface's loop, in batches, and each entity's own output.

Key latency under load is measured by the benchmark suite (``tests/benchmarks/dashboard_section.py``),
never asserted on wall-clock time here.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import threading
from collections.abc import Callable

import pytest
from chunkq.tui.dashboard.background import EntityBatcher
from chunkq.tui.dashboard.messages import EntityBatch
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.dry_run import DryRunScreen
from chunkq.tui.dashboard.widgets.activity_log import BATCH_LINES
from rich.console import Console
from textual.widgets import DataTable, Static

from tests.dashboard.conftest import refresh, settle, wait_auto_run_over
from tests.dashboard.test_app import SIZE, make_app
from tests.dashboard.test_app_processing import activity, enqueue, recorder
from tests.dashboard.test_detail import open_detail

NOISY = """
import logging
log = logging.getLogger("provider")
def process(entity_id, job):
    print(f"asked the provider about {entity_id}")
    log.warning("rate limit header: 3 left")
    if entity_id.endswith("3"):
        raise LookupError(f"no match for {entity_id}")
"""


def text_of(static: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(static.content)
    return console.export_text()


@pytest.mark.slow
async def test_auto_run_runs_on_its_own_thread_and_loop(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor("""
        import asyncio, threading
        seen = set()
        async def process(entity_id, job):
            seen.add((threading.current_thread().name, id(asyncio.get_running_loop())))
    """)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 20, 5)
        await refresh(pilot, full=True)
        ui = (threading.current_thread().name, id(asyncio.get_running_loop()))
        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        assert app.auto_worker is None
        assert mod.seen and ui not in mod.seen, "the callback never ran on the interface's loop"
        assert {name for name, _loop in mod.seen} == {"chunkq-auto-run"}
        assert (await app.queue.get_job(job_id)).status == "complete"


@pytest.mark.slow
async def test_auto_run_reports_failures_in_batches_with_a_bounded_log(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor("""
        def process(entity_id, job):
            if entity_id != "id-000":  # one success: the circuit breaker stays shut
                raise ValueError("down")
    """)
    app = make_app(sqlite_url, processor=path)
    seen, hook = recorder()
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await enqueue(app, 100, 100)
        await refresh(pilot, full=True)
        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        batches = [m for m in seen if isinstance(m, EntityBatch)]
        assert sum(len(b.entities) for b in batches) == 99, "every failure reported, none twice"
        assert len(batches) < 99, "in batches, not one message each"
        lines = activity(app)
        assert sum("✗" in line for line in lines) <= BATCH_LINES * len(batches)
        assert any("more results" in line for line in lines)
        summary = next(i for i, line in enumerate(lines) if "auto-run: job" in line)
        assert all(i < summary for i, line in enumerate(lines) if "✗" in line), "entity lines before the chunk's"


async def test_the_batcher_flushes_on_a_timer_and_on_demand() -> None:
    posted: list[EntityBatch] = []
    batcher = EntityBatcher(posted.append, interval=0.05, failures_only=True)
    from chunkq.core import EntityResult

    batcher(EntityResult("ok", True))
    batcher(EntityResult("bad", False, error_type="E", message="m"))
    assert posted == []
    await asyncio.sleep(0.2)
    assert [[e.result.entity_id for e in b.entities] for b in posted] == [["bad"]]
    batcher(EntityResult("bad2", False))
    batcher.flush()
    batcher.flush()
    assert [[e.result.entity_id for e in b.entities] for b in posted] == [["bad"], ["bad2"]]


@pytest.mark.slow
async def test_the_error_detail_shows_the_entitys_output_beside_its_traceback(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor(NOISY)
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=(160, 45)) as pilot:
        job_id = await enqueue(app, 5, 5)
        await refresh(pilot, full=True)
        await pilot.press("s")
        await settle(pilot)
        screen = await open_detail(pilot, job_id)
        assert isinstance(screen, JobDetailScreen)
        table = screen.query_one("#detail-errors", DataTable)
        table.focus()
        await settle(pilot)
        output = screen.query_one("#detail-output", Static)
        for _ in range(100):
            if "asked the provider" in text_of(output):
                break
            await settle(pilot)
            await asyncio.sleep(0.01)
        shown = text_of(output)
        assert "Output (what the callback printed and logged)" in shown
        assert "asked the provider about id-003" in shown
        assert "WARNING provider: rate limit header: 3 left" in shown
        assert "id-002" not in shown, "only that entity's output"


@pytest.mark.slow
async def test_a_step_shows_each_entitys_last_output_lines(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    app = make_app(sqlite_url, processor=make_processor(NOISY))
    async with app.run_test(size=SIZE) as pilot:
        await enqueue(app, 2, 2)
        await refresh(pilot, full=True)
        await pilot.press("s")
        await settle(pilot)
        lines = activity(app)
        at = next(i for i, line in enumerate(lines) if "✓" in line and "id-000" in line)
        assert "│ asked the provider about id-000" in lines[at + 1]
        assert "│ WARNING provider: rate limit header: 3 left" in lines[at + 2]


@pytest.mark.slow
async def test_a_dry_runs_success_shows_its_output(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    app = make_app(sqlite_url, processor=make_processor(NOISY))
    async with app.run_test(size=(160, 45)) as pilot:
        job_id = await enqueue(app, 4, 4)
        await refresh(pilot, full=True)
        await pilot.press("S")
        await settle(pilot)
        assert app.last_dry_run is not None and app.last_dry_run[0] == job_id
        app.action_show_dry_run()
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DryRunScreen)
        output = screen.query_one("#detail-output", Static)
        assert "asked the provider about id-003" in text_of(output), "the failure first, with its output"
        screen.query_one(DataTable).action_cursor_down()
        await settle(pilot)
        assert "succeeded" in text_of(screen.query_one("#detail-traceback", Static))
        assert "asked the provider about id-000" in text_of(output)


@pytest.mark.slow
async def test_leaving_without_the_quit_dialog_releases_auto_runs_chunk(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    """The app goes away (not through the dialog): auto-run, on its own loop, still gives its chunk back."""
    path = make_processor("""
        import threading
        gate = threading.Event()
        started = threading.Event()
        def process(entity_id, job):
            started.set()
            gate.wait(20)
    """)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            job_id = await enqueue(app, 10, 5)
            await refresh(pilot, full=True)
            await pilot.press("a")
            assert await asyncio.to_thread(mod.started.wait, 10)
            app.exit()
            await pilot.pause()
    finally:
        mod.gate.set()
    async with app.queue.__class__(sqlite_url) as q:
        job = await q.get_job(job_id)
        assert job.processed_count == 0, "nothing committed"
        assert job.released_by and job.released_at is not None, "a deliberate release, recorded as one"
        assert await q.has_claimable(), "another worker can redo the chunk at once"
