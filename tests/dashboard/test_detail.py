"""The job detail screen, driven with Pilot against a real SQLite file.

Each test writes its processor module into tmp_path (on sys.path), seeds a job
through core's API with a fixed clock and worker name, opens the real
``ChunkqApp`` with a frozen clock and pushes ``JobDetailScreen`` on it.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from chunkq.core import ErrorEntry, Job, Processor, ProcessorOptions, Queue, load_processor
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.detail import PAGE_SIZE, JobDetailScreen
from chunkq.tui.dashboard.screens.export import ExportScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.dashboard.traceback_view import render_error
from chunkq.tui.dashboard.widgets.job_summary import lease_notice
from rich.console import Console
from textual.clock import MockClock
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, TabbedContent

from tests.dashboard.conftest import FIXED_NOW, NEVER, SEED_AT, fixed_clock, settle

SIZE = (160, 45)
WORKER = "worker-a:4242:0badcafe"

#: A callback whose failures depend on a file: create ``fixed`` next to it and every entity succeeds.
PROCESSOR = '''
from pathlib import Path

HERE = Path(__file__).parent


class LookupFailed(Exception):
    """What a provider client raises for an ID it has no record of."""


def parse(entity_id):
    return int(entity_id.rsplit("-", 1)[1])


def process(entity_id, job):
    if (HERE / "fixed").exists():
        return None
    if entity_id.startswith("bad"):
        try:
            parse(entity_id)
        except ValueError as exc:
            raise LookupFailed("provider has no match") from exc
    if entity_id.startswith("gone"):
        raise KeyError(entity_id)
'''

def line_of(fragment: str) -> int:
    """The line number of ``fragment`` in the processor module as written."""
    return next(i for i, line in enumerate(PROCESSOR.splitlines(), 1) if fragment in line)


PARSE_LINE = line_of("return int(")
RAISE_LINE = line_of("raise LookupFailed")

IDS = ["ok-1", "bad-x", "ok-2", "ok-3", "bad-y", "ok-4", "gone-1", "ok-5", "bad-z", "ok-6"]


async def seed_job(url: str, path: str, *, capture_locals: bool = False) -> Job:
    """One job of 10 IDs in chunks of 4, all run: 3 LookupFailed (chained), 1 KeyError."""
    proc = load_processor(path)
    proc.capture_locals = capture_locals
    async with Queue(url, clock=lambda: SEED_AT, owner=WORKER) as q:
        job = await q.enqueue_job(IDS, entity_type="company", provider="clearbit", chunk_size=4,
                                  name="Fortune 500 companies")
        for _ in range(3):
            await q.process_chunk(job.id, proc)
        return await q.get_job(job.id)


def install_processor(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Write PROCESSOR as ``detailproc`` and run from tmp_path, so tracebacks read the same everywhere."""
    monkeypatch.chdir(tmp_path)
    return make_processor(PROCESSOR, name="detailproc")


@pytest.fixture
def proc_path(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_processor(make_processor, tmp_path, monkeypatch)


def detail_app(url: str, processor: str | None, *, capture_locals: bool = False) -> ChunkqApp:
    options = ProcessorOptions(capture_locals=capture_locals or None)
    return ChunkqApp(url, processor=processor, options=options, clock=fixed_clock, refresh_interval=NEVER)


async def open_detail(pilot: Pilot[None], job_id: int, **kwargs: object) -> JobDetailScreen:
    await settle(pilot)
    screen = JobDetailScreen(job_id, progress_clock=MockClock(), **kwargs)  # type: ignore[arg-type]
    await pilot.app.push_screen(screen)
    await settle(pilot)
    await wait_loaded(pilot, screen)
    return screen


async def wait_loaded(pilot: Pilot[None], screen: JobDetailScreen, after: int = 0) -> None:
    for _ in range(200):
        await settle(pilot)
        if screen.loads > after and not screen.poller.busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the detail screen never finished loading")


async def reload(pilot: Pilot[None], screen: JobDetailScreen) -> None:
    before = screen.loads
    screen.reload(force=True)
    await wait_loaded(pilot, screen, before)


@asynccontextmanager
async def running(url: str, processor: str | None, job_id: int, **kwargs: object
                  ) -> AsyncIterator[tuple[ChunkqApp, Pilot[None], JobDetailScreen]]:
    app = detail_app(url, processor, capture_locals=bool(kwargs.pop("capture_locals", False)))
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job_id, **kwargs)
        yield app, pilot, screen


def table(screen: JobDetailScreen, wid: str) -> DataTable:
    return screen.query_one(f"#{wid}", DataTable)


def column(t: DataTable, key: str) -> list[str]:
    return [str(t.get_cell(row, key)) for row in t.rows]


def static_text(screen: JobDetailScreen, wid: str) -> str:
    widget = screen.query_one(f"#{wid}", Static)
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(widget.content)
    return console.export_text()


async def select_error(pilot: Pilot[None], screen: JobDetailScreen, entity: str) -> ErrorEntry:
    t = table(screen, "detail-errors")
    t.focus()
    row = column(t, "entity").index(entity)
    t.move_cursor(row=row)
    await settle(pilot)
    error = screen.selected_error()
    assert error is not None and error.entity_id == entity
    return error


# ---------------------------------------------------------------------- showing a job


@pytest.mark.slow
async def test_detail_shows_fields_progress_chunks_and_errors(db_url: str, proc_path: str) -> None:
    job = await seed_job(db_url, proc_path)
    async with running(db_url, proc_path, job.id) as (_app, _pilot, screen):
        title = static_text(screen, "detail-title")
        assert f"Job #{job.id}" in title and "Fortune 500 companies" in title and "complete" in title
        counts = static_text(screen, "detail-counts")
        assert "10 of 10 done" in counts and "6 succeeded" in counts and "4 failed" in counts
        assert "0 waiting for retry" in counts
        bar = screen.query_one("#detail-progress")
        assert (bar.progress, bar.total) == (10, 10)  # type: ignore[attr-defined]

        chunks = table(screen, "detail-chunks")
        assert column(chunks, "index") == ["0", "1", "2"]
        assert set(column(chunks, "worker")) == {WORKER}
        assert column(chunks, "ok") == ["3", "2", "1"] and column(chunks, "errors") == ["1", "2", "1"]

        errors = table(screen, "detail-errors")
        assert column(errors, "entity") == ["bad-x", "bad-y", "gone-1", "bad-z"]
        assert column(errors, "type") == ["LookupFailed", "LookupFailed", "KeyError", "LookupFailed"]
        assert set(column(errors, "state")) == {"failed"}

        fields = table(screen, "detail-fields")
        names = column(fields, "field")
        for name in ("id", "status", "total_count", "failed_count", "lease_expires_at", "heartbeat_at",
                     "max_attempts", "params", "created_at"):
            assert name in names
        values = dict(zip(names, column(fields, "value"), strict=True))
        assert values["created_at"] == "2026-01-15 11:00:00 UTC (1h ago)"
        assert values["failed_count"] == "4"


@pytest.mark.slow
async def test_grouped_errors_and_drill_down(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (_app, pilot, screen):
        groups = table(screen, "detail-groups")
        assert column(groups, "type") == ["LookupFailed", "KeyError"]
        assert column(groups, "count") == ["3", "1"] and column(groups, "entities") == ["3", "1"]
        assert column(groups, "message")[0] == "provider has no match"

        groups.focus()
        groups.move_cursor(row=0)
        before = screen.loads
        await pilot.press("enter")
        await wait_loaded(pilot, screen, before)
        assert screen.error_filter is not None
        assert (screen.error_filter.error_type, screen.error_filter.message) == (
            "detailproc.LookupFailed", "provider has no match")
        assert column(table(screen, "detail-errors"), "entity") == ["bad-x", "bad-y", "bad-z"]
        assert "only LookupFailed: provider has no match (3 entities)" in str(
            screen.query_one("#errors-caption").render())

        before = screen.loads
        await pilot.press("escape")  # first escape clears the filter, the screen stays
        await wait_loaded(pilot, screen, before)
        assert screen.error_filter is None and pilot.app.screen is screen
        assert len(table(screen, "detail-errors").rows) == 4
        await pilot.press("escape")  # second one goes back
        await settle(pilot)
        assert pilot.app.screen is not screen


@pytest.mark.slow
async def test_tabs_switch_by_key(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (_app, pilot, screen):
        tabs = screen.query_one(TabbedContent)
        for key, tab in (("2", "chunks"), ("3", "fields"), ("1", "errors")):
            await pilot.press(key)
            await settle(pilot)
            assert tabs.active == tab


@pytest.mark.slow
async def test_traceback_of_a_stored_chained_error(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (_app, pilot, screen):
        await select_error(pilot, screen, "bad-y")
        text = static_text(screen, "detail-traceback")
        assert "entity bad-y" in text and "attempt 1" in text
        # Both exceptions of the chain, cause first, joined the way Python says it.
        assert text.index("ValueError: invalid literal for int()") < text.index(
            "The above exception was the direct cause of the following exception")
        assert "detailproc.LookupFailed: provider has no match" in text
        # File, line, function, and the source around the line (the file is readable here).
        assert f"detailproc.py:{PARSE_LINE} in parse" in text
        assert f"detailproc.py:{RAISE_LINE} in process" in text
        assert "return int(entity_id.rsplit" in text
        assert 'raise LookupFailed("provider has no match") from exc' in text
        assert "core/runner.py" not in text  # chunkq's own frames are left out

        await select_error(pilot, screen, "gone-1")
        text = static_text(screen, "detail-traceback")
        assert "KeyError: 'gone-1'" in text and "direct cause" not in text


@pytest.mark.slow
async def test_locals_only_when_captured_and_opted_in(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path, capture_locals=True)
    async with running(sqlite_url, proc_path, job.id) as (_app, pilot, screen):
        await select_error(pilot, screen, "bad-x")
        text = static_text(screen, "detail-traceback")
        assert "entity_id = 'bad-x'" not in text
        assert "start the dashboard with --capture-locals" in text
    async with running(sqlite_url, proc_path, job.id, capture_locals=True) as (_app, pilot, screen):
        await select_error(pilot, screen, "bad-x")
        text = static_text(screen, "detail-traceback")
        assert "entity_id = 'bad-x'" in text


async def test_traceback_when_the_source_is_gone(sqlite_url: str, proc_path: str, tmp_path: Path) -> None:
    """An error recorded on another machine: no file here, the recorded lines still show."""
    import linecache

    job = await seed_job(sqlite_url, proc_path)
    (tmp_path / "detailproc.py").unlink()
    linecache.clearcache()
    async with Queue(sqlite_url) as q:
        error = (await q.list_errors(job.id, limit=1))[0]
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_error(error))
    text = console.export_text()
    assert "file not on this machine; the lines as recorded" in text
    assert f"detailproc.py:{PARSE_LINE} in parse" in text and "return int(entity_id.rsplit" in text
    assert "def parse(entity_id):" in text  # the context recorded around the line, not just the line


@pytest.mark.slow
async def test_error_log_pages(sqlite_url: str, make_processor: Callable[..., str]) -> None:
    path = make_processor("""
        def process(entity_id, job):
            raise ValueError("always")
    """)
    async with Queue(sqlite_url, clock=lambda: SEED_AT) as q:
        job = await q.enqueue_job([f"e-{i:03d}" for i in range(PAGE_SIZE + 20)], entity_type="t", provider="p",
                                  chunk_size=PAGE_SIZE + 20)
        await q.process_chunk(job.id, load_processor(path))
    async with running(sqlite_url, path, job.id) as (_app, pilot, screen):
        errors = table(screen, "detail-errors")
        assert len(errors.rows) == PAGE_SIZE and column(errors, "entity")[0] == "e-000"
        assert "1–100 of 120" in str(screen.query_one("#errors-caption").render())
        before = screen.loads
        await pilot.press("right_square_bracket")
        await wait_loaded(pilot, screen, before)
        assert column(errors, "entity") == [f"e-{i:03d}" for i in range(PAGE_SIZE, PAGE_SIZE + 20)]
        assert "101–120 of 120" in str(screen.query_one("#errors-caption").render())
        await pilot.press("right_square_bracket")  # past the end: says so, stays
        await settle(pilot)
        assert screen.page_offset == PAGE_SIZE
        before = screen.loads
        await pilot.press("left_square_bracket")
        await wait_loaded(pilot, screen, before)
        assert len(errors.rows) == PAGE_SIZE and screen.page_offset == 0


# ---------------------------------------------------------------------- keys: help and the palette


@pytest.mark.slow
async def test_help_and_the_palette_offer_this_screens_commands(sqlite_url: str, proc_path: str,
                                                                   tmp_path: Path) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (app, pilot, screen):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.markdown
        assert text.index("## Job detail") < text.index("`t` **Retry entity**") < text.index("`R` **Reload")
        assert "New job" not in text
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"export")
        from textual.command import CommandList

        for _ in range(200):  # the palette searches in a worker of its own: until it is done and has hits
            await settle(pilot)
            if app.screen.query_one(CommandList).option_count > 0:
                break
            await asyncio.sleep(0.01)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ExportScreen), "the detail screen's command ran on the detail screen"


# ---------------------------------------------------------------------- export


@pytest.mark.slow
async def test_export_writes_jsonl_and_csv(sqlite_url: str, proc_path: str, tmp_path: Path) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (app, pilot, _screen):
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ExportScreen)
        field = app.screen.query_one(Input)
        assert field.value == f"job-{job.id}-errors.jsonl"
        await pilot.press("enter")
        await settle(pilot)
        out = tmp_path / f"job-{job.id}-errors.jsonl"
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["entity_id"] for r in rows] == ["bad-x", "bad-y", "gone-1", "bad-z"]
        assert rows[0]["error_type"] == "detailproc.LookupFailed" and "Traceback" in rows[0]["traceback"]

        await pilot.press("x")
        await settle(pilot)
        app.screen.query_one(Input).value = str(tmp_path / "errors.csv")
        await pilot.press("enter")
        await settle(pilot)
        with open(tmp_path / "errors.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["entity_id"] for r in rows] == ["bad-x", "bad-y", "gone-1", "bad-z"]
        assert rows[2]["message"] == "'gone-1'"
        assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


@pytest.mark.slow
async def test_export_to_a_missing_folder_says_so_and_writes_nothing(
    sqlite_url: str, proc_path: str, tmp_path: Path
) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (app, pilot, _screen):
        await pilot.press("x")
        await settle(pilot)
        dialog = app.screen
        dialog.query_one(Input).value = str(tmp_path / "nowhere" / "errors.jsonl")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is dialog  # still asking
        assert "does not exist" in str(dialog.query_one("#export-problem", Static).render())
        await pilot.press("escape")
        await settle(pilot)
        assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------------- retrying


@pytest.mark.slow
async def test_retry_one_entity_turns_its_error_resolved(db_url: str, proc_path: str, tmp_path: Path) -> None:
    job = await seed_job(db_url, proc_path)
    async with running(db_url, proc_path, job.id) as (app, pilot, screen):
        error = await select_error(pilot, screen, "gone-1")
        # Still broken: the retry fails again, the new traceback shows inline, nothing resolves.
        before = screen.loads
        await pilot.press("t")
        await wait_loaded(pilot, screen, before)
        note = static_text(screen, "detail-retry-result")
        assert "gone-1 failed again: KeyError" in note and "Traceback" in note
        assert (await app.queue.get_error(error.id)).resolved_at is None

        (tmp_path / "fixed").write_text("")  # the developer fixed the callback
        before = screen.loads
        await pilot.press("t")
        await wait_loaded(pilot, screen, before)
        assert "gone-1 succeeded on retry" in static_text(screen, "detail-retry-result")
        assert (await app.queue.get_error(error.id)).resolved_at is not None
        errors = table(screen, "detail-errors")
        states = dict(zip(column(errors, "entity"), column(errors, "state"), strict=False))
        assert states["gone-1"] == "resolved" and states["bad-x"] == "failed"
        assert column(table(screen, "detail-groups"), "type") == ["LookupFailed"]  # unresolved only
        done = await app.queue.get_job(job.id)
        assert (done.succeeded_count, done.failed_count) == (7, 3)


@pytest.mark.slow
async def test_retry_without_a_processor_says_what_to_pass(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, None, job.id) as (app, pilot, screen):
        await select_error(pilot, screen, "gone-1")
        await pilot.press("t")
        await settle(pilot)
        assert any("--processor" in n.message for n in app._notifications)
        assert screen.retry_note is None


@pytest.mark.slow
async def test_requeue_failed_in_place_after_confirming(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (app, pilot, screen):
        await pilot.press("u")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "4 entities" in str(app.screen.query_one("#dialog-message", Static).render())
        before = screen.loads
        await pilot.press("y")
        await wait_loaded(pilot, screen, before)
        again = await app.queue.get_job(job.id)
        assert (again.status, again.failed_count, again.waiting_count) == ("pending", 0, 4)
        assert "4 waiting for retry" in static_text(screen, "detail-counts")


@pytest.mark.slow
async def test_retry_failed_as_a_new_job_and_escape_changes_nothing(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    async with running(sqlite_url, proc_path, job.id) as (app, pilot, _screen):
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert len(await app.queue.list_jobs()) == 1

        await pilot.press("r")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        jobs = await app.queue.list_jobs()
        new = next(j for j in jobs if j.id != job.id)
        assert new.parent_id == job.id and new.total_count == 4
        assert sorted(await app.queue.entity_ids(new.id)) == ["bad-x", "bad-y", "bad-z", "gone-1"]
        assert (await app.queue.get_job(job.id)).failed_count == 4  # the original is untouched


# ---------------------------------------------------------------------- a worker gone quiet


@asynccontextmanager
async def held_lease(url: str, seconds_before_now: float, lease: float = 30.0) -> AsyncIterator[Job]:
    """A worker that claimed a chunk ``seconds_before_now`` ago and has not been heard of since."""
    stamp = (FIXED_NOW - timedelta(seconds=seconds_before_now)).timestamp()
    release = asyncio.Event()

    async def stuck(entity_id: str, job: Job) -> None:
        await release.wait()

    async with Queue(url, clock=lambda: stamp, owner="host-b:777:deadbeef", lease_seconds=lease) as q:
        job = await q.enqueue_job([f"e-{i}" for i in range(6)], entity_type="company", provider="clearbit",
                                  chunk_size=3, name="stuck job")
        task = asyncio.create_task(q.process_chunk(job.id, Processor(on_process=stuck)))
        for _ in range(200):
            job = await q.get_job(job.id)
            if job.leased_chunks:
                break
            await asyncio.sleep(0.01)
        try:
            yield job
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.slow
async def test_stale_worker_notice(sqlite_url: str) -> None:
    async with (
        held_lease(sqlite_url, seconds_before_now=90) as job,
        running(sqlite_url, None, job.id) as (_app, _pilot, screen),
    ):
            text = static_text(screen, "detail-lease")
            assert "worker host-b:777:deadbeef silent since 11:58:30" in text
            assert "its lease expired at 11:59:00 UTC" in text and "claim its 1 chunk again now" in text
            assert screen.query_one("#detail-lease").has_class("-problem")
            assert column(table(screen, "detail-chunks"), "state") == ["leased, expired"]


@pytest.mark.slow
async def test_quiet_worker_before_its_lease_expires(sqlite_url: str) -> None:
    async with (
        held_lease(sqlite_url, seconds_before_now=25) as job,
        running(sqlite_url, None, job.id) as (_app, _pilot, screen),
    ):
            text = static_text(screen, "detail-lease")
            assert "worker host-b:777:deadbeef silent since 11:59:35 UTC (25s)" in text
            assert "claimable again at 12:00:05 UTC (in 5.0s)" in text


def test_lease_notice_for_a_healthy_worker() -> None:
    beat = FIXED_NOW - timedelta(seconds=3)
    job = Job(id=1, name=None, entity_type="t", provider="p", status="running", chunk_size=1, priority=0,
              total_count=5, processed_count=1, error_count=0, created_at=beat, updated_at=beat,
              started_at=beat, finished_at=None, lease_owner="h:1:a", lease_expires_at=beat + timedelta(seconds=30),
              fail_reason=None, parent_id=None, heartbeat_at=beat, leased_chunks=1)
    text, problem = lease_notice(job, FIXED_NOW)  # type: ignore[misc]
    assert not problem and text.startswith("worker h:1:a holds 1 chunk; last heartbeat 3s ago")


# ---------------------------------------------------------------------- live refresh


@pytest.mark.slow
async def test_live_refresh_picks_up_progress_without_overlapping(sqlite_url: str, proc_path: str) -> None:
    async with Queue(sqlite_url, clock=lambda: SEED_AT) as q:
        job = await q.enqueue_job(IDS, entity_type="company", provider="clearbit", chunk_size=4)
    app = ChunkqApp(sqlite_url, processor=proc_path, clock=fixed_clock, refresh_interval=0.05)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job.id)
        assert "0 of 10 done" in static_text(screen, "detail-counts")
        async with Queue(sqlite_url) as q:
            await q.process_chunk(job.id, load_processor(proc_path))
        for _ in range(100):
            await pilot.pause(0.05)
            if "4 of 10 done" in static_text(screen, "detail-counts"):
                break
        assert "4 of 10 done" in static_text(screen, "detail-counts")
        assert len(table(screen, "detail-chunks").rows) == 1
        # One read at a time, ever: the refresh worker group never holds two.
        assert len([w for w in app.workers if w.group == "detail-refresh" and w.is_running]) <= 1
        # A dialog on top stops the reads.
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ExportScreen)
        loads = screen.loads
        await pilot.pause(0.3)
        assert screen.loads == loads
        await pilot.press("escape")
        for _ in range(40):
            await pilot.pause(0.05)
            if screen.loads > loads:
                break
        assert screen.loads > loads


class HeldRead:
    """The detail screen's next read of its job, held in flight until released; what happened to it, in order.

    A read in flight when the dashboard quits used to be cancelled by Textual twice (the screen's workers,
    then the app's), halfway through SQLAlchemy; aiosqlite's thread could then stop under the connection's
    close, which waited forever, and so did the event loop's end (a hang at quit, seen once in CI). The hold
    stands in for the statement: a cancellation is noted, and the clean-up after it (SQLAlchemy closing the
    connection) takes a little while, as it does there.
    """

    def __init__(self, app: ChunkqApp, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.events: list[str] = []
        get_job = app.queue.get_job
        close = app.queue.close

        async def held_get_job(job_id: int) -> Job:
            if not self.armed:
                return await get_job(job_id)
            self.armed = False
            self.started.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.events.append("read cancelled")
                try:
                    await asyncio.sleep(0.2)  # the connection's clean-up
                except asyncio.CancelledError:
                    self.events.append("clean-up cancelled")
                    raise
                self.events.append("read over")
                raise
            try:
                return await get_job(job_id)
            finally:  # a read let go of after the queue closed fails: it is over all the same
                self.events.append("read over")

        async def noted_close() -> None:
            self.events.append("queue closed")
            await close()

        monkeypatch.setattr(app.queue, "get_job", held_get_job)
        monkeypatch.setattr(app.queue, "close", noted_close)


@pytest.mark.slow
async def test_quit_lets_the_read_in_flight_end_before_the_queue_closes(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from chunkq.tui.dashboard import processing

    monkeypatch.setattr(processing, "READ_GRACE", 60.0, raising=False)  # the release below comes well within it
    async with Queue(sqlite_url, clock=lambda: SEED_AT) as q:
        job = await q.enqueue_job(IDS, entity_type="company", provider="clearbit", chunk_size=4)
    app = detail_app(sqlite_url, None)
    hold = HeldRead(app, monkeypatch)
    released: asyncio.Task[None] | None = None
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job.id)
        hold.armed = True
        screen.reload()
        await asyncio.wait_for(hold.started.wait(), 30)

        async def release_once_the_screen_is_gone() -> None:
            # quitting has begun (Textual has closed the screen and cancelled its workers): the read ends now
            for _ in range(3000):
                if not screen.is_attached:
                    break
                await asyncio.sleep(0.01)
            hold.release.set()

        released = asyncio.create_task(release_once_the_screen_is_gone())
    await released
    # never cut in half by the screen's or the app's workers being cancelled; the queue closed after it
    assert hold.events == ["read over", "queue closed"]


@pytest.mark.slow
async def test_quit_never_waits_on_a_read_that_does_not_end(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from chunkq.tui.dashboard import processing

    monkeypatch.setattr(processing, "READ_GRACE", 0.1, raising=False)  # the dashboard's bound, shortened
    async with Queue(sqlite_url, clock=lambda: SEED_AT) as q:
        job = await q.enqueue_job(IDS, entity_type="company", provider="clearbit", chunk_size=4)
    app = detail_app(sqlite_url, None)
    hold = HeldRead(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job.id)
        hold.armed = True
        screen.reload()
        await asyncio.wait_for(hold.started.wait(), 30)
    # quitting went on after the grace, without cancelling the read (only the event loop's end may, once)
    assert hold.events == ["queue closed"]
    hold.release.set()
    for _ in range(3000):
        if "read over" in hold.events:
            break
        await asyncio.sleep(0.01)
    assert hold.events == ["queue closed", "read over"]


@pytest.mark.slow
async def test_missing_job_is_said_plainly(sqlite_url: str) -> None:
    async with Queue(sqlite_url):
        pass
    async with running(sqlite_url, None, 99) as (_app, _pilot, screen):
        assert "no job with id 99" in static_text(screen, "detail-counts")

