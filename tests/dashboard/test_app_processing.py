"""Processing from the dashboard: step, auto-run, dry run, reload and quitting mid-chunk.

Processor modules are real files in tmp_path, imported by path like a user's own.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.messages import EntityDone
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from sqlalchemy import insert
from textual.message import Message
from textual.widgets import RichLog

from tests.dashboard.conftest import refresh, settle, wait_auto_run_over
from tests.dashboard.test_app import SIZE, make_app, notes, select_job

FAILS_ON_3 = """
def process(entity_id, job):
    if entity_id.endswith("3"):
        raise ValueError(f"bad {entity_id}")
"""

GATED = """
import threading
gate = threading.Event()
started = threading.Event()
calls = []

def process(entity_id, job):
    started.set()
    calls.append(entity_id)
    if not gate.wait(20):
        raise TimeoutError("the test never opened the gate")
"""


def activity(app: ChunkqApp) -> list[str]:
    log = app.jobs_screen.query_one("#activity", RichLog)  # type: ignore[union-attr]
    return [strip.text for strip in log.lines]


def recorder() -> tuple[list[Message], Callable[[Message], None]]:
    seen: list[Message] = []
    return seen, seen.append


async def enqueue(app: ChunkqApp, n: int, chunk: int, name: str = "work") -> int:
    job = await app.queue.enqueue_job([f"id-{i:03d}" for i in range(n)], entity_type="company",
                                      provider="test", chunk_size=chunk, name=name)
    return job.id


async def test_step_runs_one_chunk_of_the_selected_job_and_shows_each_entity(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    app = make_app(sqlite_url, processor=make_processor(FAILS_ON_3))
    seen, hook = recorder()
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        first = await enqueue(app, 10, 4, "first")
        second = await enqueue(app, 10, 4, "second")
        await refresh(pilot, full=True)
        await select_job(pilot, app, first)
        await pilot.press("s")
        await settle(pilot)
        job = await app.queue.get_job(first)
        assert (job.processed_count, job.error_count) == (4, 1)
        assert (await app.queue.get_job(second)).processed_count == 0
        results = [m for m in seen if isinstance(m, EntityDone)]
        assert [m.result.entity_id for m in results] == ["id-000", "id-001", "id-002", "id-003"]
        assert [m.result.ok for m in results] == [True, True, True, False]
        lines = activity(app)
        assert any("✓ job 1 id-000" in line for line in lines)
        assert any("✗ job 1 id-003  ValueError: bad id-003" in line for line in lines)
        assert any(re.search(r"step: job 1 chunk 0 took \S+: 4 processed, 1 error \(job pending\)", line)
                   for line in lines), lines
        await refresh(pilot)
        assert app.jobs_screen.table.get_cell(str(first), "done").plain == "4/10"
        assert app.stepping is None and "stepping" not in app.sub_title

        # A finished job selected: the step says so and processes nothing, not another job (issue 18).
        await app.queue.cancel(first)
        await refresh(pilot)
        await select_job(pilot, app, first)
        await pilot.press("s")
        await settle(pilot)
        assert (await app.queue.get_job(second)).processed_count == 0
        assert any(f"job {first} is cancelled" in n for n in notes(app))


@pytest.mark.slow
async def test_auto_run_processes_everything_and_keeps_the_ui_responsive(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor("""
        import threading
        gate = threading.Event()
        started = threading.Event()
        def process(entity_id, job):
            started.set()
            gate.wait(20)  # blocks (a sync callback): it must run off the UI's event loop
            if entity_id.endswith("7"):
                raise ValueError("seven")
    """)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        ids = [await enqueue(app, 60, 10, f"job {i}") for i in range(3)]
        await refresh(pilot, full=True)
        await pilot.press("a")
        assert await asyncio.to_thread(mod.started.wait, 10)
        assert "auto-run running" in app.sub_title
        await pilot.press("question_mark")  # the UI answers while the callback blocks
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        mod.gate.set()
        await settle(pilot)
        assert app.auto_worker is None
        assert "auto-run" not in app.sub_title
        for job_id in ids:
            job = await app.queue.get_job(job_id)
            assert (job.status, job.processed_count, job.error_count) == ("complete", 60, 6)
        assert any("auto-run ended: nothing left to claim; 18 chunks, 180 entities" in n for n in notes(app))
        # Only failures are logged per entity during auto-run; each chunk gets a summary line.
        lines = activity(app)
        assert sum("auto-run: job" in line for line in lines) == 18
        assert sum("✗" in line for line in lines) == 18
        assert not any("✓" in line for line in lines)
        await refresh(pilot)
        assert all(app.jobs_screen.table.get_cell(str(i), "status").plain == "complete" for i in ids)


async def test_pressing_a_again_stops_auto_run_after_the_chunk_in_flight(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor(GATED)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 20, 5)
        await refresh(pilot, full=True)
        await pilot.press("a")
        assert await asyncio.to_thread(mod.started.wait, 10)
        await pilot.press("a")
        await pilot.pause()
        assert "auto-run stopping" in app.sub_title
        mod.gate.set()
        await settle(pilot)
        assert app.auto_worker is None
        job = await app.queue.get_job(job_id)
        assert (job.processed_count, job.leased_chunks) == (5, 0), "the chunk in flight committed, no other"


async def test_dry_run_shows_results_and_leaves_the_job_unchanged(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    app = make_app(sqlite_url, processor=make_processor(FAILS_ON_3))
    seen, hook = recorder()
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        job_id = await enqueue(app, 6, 4)
        before = await app.queue.get_job(job_id)
        await refresh(pilot, full=True)
        await pilot.press("S")
        await settle(pilot)
        results = [m for m in seen if isinstance(m, EntityDone)]
        assert [(m.result.entity_id, m.result.ok, m.dry_run) for m in results] == [
            ("id-000", True, True), ("id-001", True, True), ("id-002", True, True), ("id-003", False, True)]
        after = await app.queue.get_job(job_id)
        assert after == before
        assert await app.queue.list_chunks(job_id) == []
        assert await app.queue.list_errors(job_id, limit=10) == []
        assert f"dry run of job {job_id}: 3 ok, 1 failed; the job is unchanged" in notes(app)
        assert any("dry ✗ job 1 id-003" in line for line in activity(app))


def _rewrite(path: Path, body: str) -> None:
    path.write_text(body)
    later = time.time() + 10 + len(body)  # a distinct mtime even on coarse filesystems
    os.utime(path, (later, later))


@pytest.mark.slow
async def test_reload_picks_up_an_edit_and_a_syntax_error_keeps_the_old_callback(
    sqlite_url: str, make_processor: Callable[[str], str], tmp_path: Path
) -> None:
    path = make_processor("def process(entity_id, job):\n    return None\n")
    module_file = tmp_path / f"{path.split(':')[0]}.py"
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 12, 4)
        await refresh(pilot, full=True)
        await pilot.press("s")
        await settle(pilot)
        assert (await app.queue.get_job(job_id)).error_count == 0

        _rewrite(module_file, "def process(entity_id, job):\n    raise RuntimeError('v2 says no')\n")
        await pilot.press("R")
        await settle(pilot)
        assert f"reloaded: {path.split(':')[0]}" in notes(app)
        await pilot.press("s")
        await settle(pilot)
        errors = await app.queue.list_errors(job_id, limit=10)
        assert len(errors) == 4 and {e.message for e in errors} == {"v2 says no"}

        v2 = app.processor_handle.processor  # type: ignore[union-attr]
        _rewrite(module_file, "def process(entity_id, job)\n    return None\n")
        app.clear_notifications()
        await pilot.press("R")
        await settle(pilot)
        (message,) = notes(app)
        assert "reload failed, syntax error in" in message and "The previous callback stays in use." in message
        assert app.processor_handle.processor is v2  # type: ignore[union-attr]
        await pilot.press("s")
        await settle(pilot)
        assert (await app.queue.get_job(job_id)).error_count == 8, "still the v2 callback"
        assert any("syntax error" in line for line in activity(app))


@pytest.mark.slow
async def test_quit_while_a_chunk_is_in_flight_can_release_it(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor(GATED)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 10, 5)
        await refresh(pilot, full=True)
        await pilot.press("s")
        assert await asyncio.to_thread(mod.started.wait, 10)
        assert (await app.queue.get_job(job_id)).leased_chunks == 1
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # keep running: nothing happens
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen) and app.stepping is not None
        await pilot.press("q")
        await pilot.pause()
        await pilot.click("#choice-release")
        for _ in range(200):
            if app.stepping is None:
                break
            await pilot.pause(0.02)
        mod.gate.set()  # let the abandoned thread finish its entity
        await settle(pilot)
    assert app.return_code == 0
    async with app.queue.__class__(sqlite_url) as q:
        job = await q.get_job(job_id)
        assert job.processed_count == 0, "nothing committed"
        assert job.released_by and job.released_at is not None, "a deliberate release, recorded as one"
        assert job.lease_expires_at is None, "no epoch date to misread"
        assert await q.has_claimable(), "another worker can redo the chunk at once"


@pytest.mark.slow
async def test_quit_while_a_chunk_is_in_flight_can_finish_it(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor(GATED)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 10, 5)
        await refresh(pilot, full=True)
        await pilot.press("a")
        assert await asyncio.to_thread(mod.started.wait, 10)
        await pilot.press("q")
        await pilot.pause()
        await pilot.click("#choice-finish")
        await pilot.pause()
        mod.gate.set()
        await settle(pilot)
    assert app.return_code == 0
    async with app.queue.__class__(sqlite_url) as q:
        job = await q.get_job(job_id)
        assert (job.leased_chunks, job.processed_count) == (0, 5), "the chunk committed, no other started"


@pytest.mark.slow
async def test_auto_run_waits_for_retries_that_fall_due_soon(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor("""
        from chunkq.core import Retry
        seen = set()
        def process(entity_id, job):
            if entity_id.endswith("1") and entity_id not in seen:
                seen.add(entity_id)
                raise Retry("429 Too Many Requests", after=0.3)
    """)
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        job_id = await enqueue(app, 30, 10)
        await refresh(pilot, full=True)
        await pilot.press("a")
        await settle(pilot)
        job = await app.queue.get_job(job_id)
        assert (job.status, job.processed_count, job.waiting_count, job.failed_count) == ("complete", 30, 0, 0)
        assert any("auto-run ended: nothing left to claim" in n for n in notes(app))


# ---------------------------------------------------------------------- auto-run is core's Worker

RETRY_R0_ONCE = """
from chunkq.core import Retry
seen = set()
def process(entity_id, job):
    if entity_id == "r0" and entity_id not in seen:
        seen.add(entity_id)
        raise Retry("429 Too Many Requests", after=3.0)  # still ahead when auto-run starts on a loaded machine
"""


class HeldClock:
    """The dashboard's clock, standing still until ``go()``, then running at the wall clock's rate.

    Called from the UI's loop and auto-run's thread; a float read and a float write need no lock.
    """

    def __init__(self) -> None:
        self.held_at = time.time()
        self.went_at: float | None = None

    def go(self) -> None:
        if self.went_at is None:
            self.went_at = time.time()

    def __call__(self) -> datetime:
        now = self.held_at if self.went_at is None else self.held_at + time.time() - self.went_at
        return datetime.fromtimestamp(now, tz=UTC)


async def _jobs_held_by_another_worker(q: Queue, n: int) -> None:
    """``n`` running jobs whose one chunk another worker holds under a live lease: nothing to claim.

    Written in one transaction (enqueueing and claiming 1,499 jobs one by one would take long). The
    holder is alive in the workers registry: a chunk of a worker that is gone would be waited for
    (``core/orphans.py``), not left to it.
    """
    from chunkq.core import schema as s
    from chunkq.core.enqueue import new_job_row

    def tx(conn: Any) -> None:
        now = q.now()
        lease = {"lease_owner": "elsewhere:1:abc", "lease_expires_at": now + 3600}
        ids = conn.execute(insert(s.jobs).returning(s.jobs.c.id), [
            new_job_row(now, entity_type="company", provider="p", chunk_size=1, priority=0, max_workers=1,
                        max_attempts=3, total_count=1, params={}, status="running", next_pos=1, next_chunk=1,
                        leased_chunks=1, started_at=now, heartbeat_at=now, **lease) for _ in range(n)
        ]).scalars().all()
        conn.execute(insert(s.entities), [{"job_id": i, "pos": 0, "entity_id": f"x{i}"} for i in ids])
        conn.execute(insert(s.workers).values(
            id="elsewhere1", host="elsewhere", pid=1, kind="worker", version="t", started_at=now, heartbeat_at=now,
            heartbeat_interval=3600.0, state="busy", chunks=n, done=0, failed=0))
        conn.execute(insert(s.chunks), [
            {"job_id": i, "chunk_index": 0, "kind": "range", "start_pos": 0, "end_pos": 1, "size": 1,
             "state": "leased", "owner": lease["lease_owner"], "attempt": 1,
             "lease_expires_at": lease["lease_expires_at"], "started_at": now} for i in ids
        ])

    await q.backend.write(tx, "test jobs")


@pytest.mark.slow
async def test_auto_run_finds_a_retry_due_on_the_1500th_active_job(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    """The dashboard's own loop looked at the first 1,000 active jobs and said "nothing left".

    The clock stands still until auto-run first waits: the retry is 3 s ahead of it however long
    the setup took on a loaded machine (CI once took longer than 3 s and auto-run never waited).
    """
    clock = HeldClock()
    app = make_app(sqlite_url, processor=make_processor(RETRY_R0_ONCE), clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        waiting = await app.queue.enqueue_job(["r0"], entity_type="company", provider="p")
        await _jobs_held_by_another_worker(app.queue, 1_499)
        await app.queue.process_chunk(waiting.id, app.processor_handle.processor)  # type: ignore[union-attr]
        assert (await app.queue.get_job(waiting.id)).waiting_count == 1
        assert await app.queue.count_jobs(["pending", "running"]) == 1_500
        first_1000 = await app.queue.list_jobs(["pending", "running"], limit=1000)
        assert waiting.id not in {j.id for j in first_1000}, "the waiting job lies beyond the first 1,000"
        await refresh(pilot, full=True)
        waits: list[float | None] = []
        wait_hook = app._auto_waiting
        app._auto_waiting = lambda due: (waits.append(due), clock.go(), wait_hook(due))  # type: ignore[method-assign]
        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        job = await app.queue.get_job(waiting.id)
        assert (job.status, job.succeeded_count, job.waiting_count) == ("complete", 1, 0)
        assert waits and waits[0] is not None and waits[-1] is None, "auto-run waited for the retry"
        assert any("auto-run ended: nothing left to claim; 1 chunk, 1 entity" in n for n in notes(app))


async def test_auto_run_stops_when_the_next_retry_is_too_far_off(
    sqlite_url: str, make_processor: Callable[[str], str]
) -> None:
    path = make_processor("""
        from chunkq.core import Retry
        def process(entity_id, job):
            raise Retry("429 Too Many Requests", after=3600)
    """)
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=SIZE) as pilot:
        await enqueue(app, 2, 2)
        await refresh(pilot, full=True)
        await pilot.press("a")
        await settle(pilot)
        assert app.auto_worker is None
        an_hour = r"(1h00m|59m5\ds)"  # the retry's delay, not how long the chunk took
        assert any(re.search(f"auto-run ended: the next retry is due in {an_hour}; press a again then", n)
                   for n in notes(app)), notes(app)
        retried = [line for line in activity(app) if "↻ " in line]
        assert len(retried) == 2 and all(re.search(f"429 Too Many Requests  to retry in {an_hour}$", line)
                                         for line in retried), activity(app)


@pytest.mark.slow
async def test_quit_gives_up_a_step_in_flight_once(sqlite_url: str, make_processor: Callable[[str], str]) -> None:
    """A chunk stepped and still running at quit is cancelled once, by the dashboard (core then releases
    its lease), never a second time by Textual cancelling the worker that waits for it: cancelled twice
    inside SQLAlchemy's aiosqlite adapter, a clean-up waited for ever and quitting hung."""
    app = make_app(sqlite_url, processor=make_processor(FAILS_ON_3))
    events: list[str] = []
    started = asyncio.Event()

    async def held_step(_job_id: int | None, _processor: object) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            events.append("cancelled")
            try:
                await asyncio.sleep(0.3)  # releasing the lease takes a moment, as core's does
            except asyncio.CancelledError:
                events.append("cancelled again, while releasing")
                raise
            events.append("released")
            raise

    async with app.run_test(size=SIZE) as pilot:
        first = await enqueue(app, 10, 4)
        await refresh(pilot, full=True)
        await select_job(pilot, app, first)
        app._step_once = held_step  # type: ignore[method-assign]  # the step's work, held in flight
        await pilot.press("s")
        await asyncio.wait_for(started.wait(), 30)
    assert events == ["cancelled", "released"]
