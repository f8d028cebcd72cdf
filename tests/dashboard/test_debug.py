"""Post-mortem debugging of a failed entity, with pdb replaced by a stub that records its traceback."""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import pytest
from chunkq.core import Job, Processor
from chunkq.tui.dashboard import debugging
from textual.widgets import TabbedContent

from tests.dashboard.conftest import FIXED_NOW, settle
from tests.dashboard.test_detail import install_processor, running, seed_job, select_error


@pytest.fixture
def proc_path(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_processor(make_processor, tmp_path, monkeypatch)


class RecordingDebugger:
    """Stands in for pdb.post_mortem: keeps what it was handed, returns at once."""

    def __init__(self) -> None:
        self.tracebacks: list[TracebackType] = []

    def __call__(self, tb: TracebackType) -> None:
        self.tracebacks.append(tb)

    def frames(self) -> list[tuple[str, int]]:
        return [(f.name, f.lineno or 0) for f in traceback.extract_tb(self.tracebacks[-1])]


@pytest.fixture
def suspended(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], list[str]]:
    """Headless apps cannot suspend; record that the app stepped aside instead."""

    def install(app: object) -> list[str]:
        events: list[str] = []

        @contextmanager
        def suspend() -> Iterator[None]:
            events.append("suspended")
            yield
            events.append("resumed")

        monkeypatch.setattr(app, "suspend", suspend)
        return events

    return install


@pytest.mark.slow
async def test_post_mortem_hands_the_exception_to_the_debugger(
    sqlite_url: str, proc_path: str, suspended: Callable[[object], list[str]]
) -> None:
    job = await seed_job(sqlite_url, proc_path)
    debugger = RecordingDebugger()
    async with running(sqlite_url, proc_path, job.id, debugger=debugger) as (app, pilot, screen):
        events = suspended(app)
        error = await select_error(pilot, screen, "bad-y")
        await pilot.press("d")
        await settle(pilot)
        assert events == ["suspended", "resumed"]
        assert len(debugger.tracebacks) == 1
        # pdb would stop where the callback raised: the innermost frame is the callback's.
        names = [name for name, _ in debugger.frames()]
        assert names[-1] == "process" and "parse" not in names  # the LookupFailed, raised in process
        cause = debugger.tracebacks[0]
        while cause.tb_next is not None:
            cause = cause.tb_next
        assert cause.tb_frame.f_locals["entity_id"] == "bad-y"
        assert any("debugged bad-y: LookupFailed: provider has no match" in n.message
                   for n in app._notifications)
        # The dashboard came back as it was, and still answers keys.
        assert app.is_running and app.screen is screen and screen.busy is None
        assert screen.selected_error() == error
        await pilot.press("2")
        await settle(pilot)
        assert screen.query_one(TabbedContent).active == "chunks"
        # Nothing was written: a debugging run is not an attempt.
        assert (await app.queue.get_job(job.id)).error_count == 4


@pytest.mark.slow
async def test_post_mortem_of_an_entity_that_now_succeeds(
    sqlite_url: str, proc_path: str, tmp_path: Path, suspended: Callable[[object], list[str]]
) -> None:
    job = await seed_job(sqlite_url, proc_path)
    debugger = RecordingDebugger()
    async with running(sqlite_url, proc_path, job.id, debugger=debugger) as (app, pilot, screen):
        suspended(app)
        await select_error(pilot, screen, "gone-1")
        (tmp_path / "fixed").write_text("")
        await pilot.press("d")
        await settle(pilot)
        assert debugger.tracebacks == []
        assert any("gone-1 succeeded this time; nothing to debug" in n.message for n in app._notifications)


@pytest.mark.slow
async def test_post_mortem_where_the_terminal_cannot_be_handed_over(sqlite_url: str, proc_path: str) -> None:
    job = await seed_job(sqlite_url, proc_path)
    debugger = RecordingDebugger()
    async with running(sqlite_url, proc_path, job.id, debugger=debugger) as (app, pilot, screen):
        await select_error(pilot, screen, "gone-1")
        await pilot.press("d")  # the headless test driver cannot suspend
        await settle(pilot)
        assert debugger.tracebacks == [] and app.is_running and screen.busy is None
        assert any("needs a real terminal" in n.message for n in app._notifications)


@pytest.mark.slow
async def test_post_mortem_without_a_processor(sqlite_url: str, proc_path: str,
                                               suspended: Callable[[object], list[str]]) -> None:
    job = await seed_job(sqlite_url, proc_path)
    debugger = RecordingDebugger()
    async with running(sqlite_url, None, job.id, debugger=debugger) as (app, pilot, screen):
        events = suspended(app)
        await select_error(pilot, screen, "gone-1")
        await pilot.press("d")
        await settle(pilot)
        assert events == [] and debugger.tracebacks == []
        assert any("--processor" in n.message for n in app._notifications)


# ---------------------------------------------------------------------- tui.debugging on its own


def _job() -> Job:
    return Job(id=7, name=None, entity_type="t", provider="p", status="running", chunk_size=1, priority=0,
               total_count=1, processed_count=0, error_count=0, created_at=FIXED_NOW, updated_at=FIXED_NOW,
               started_at=None, finished_at=None, lease_owner=None, lease_expires_at=None, fail_reason=None,
               parent_id=None)


def test_async_callback_runs_on_its_own_loop_and_is_debugged() -> None:
    async def lookup(entity_id: str, job: Job) -> None:
        import asyncio

        await asyncio.sleep(0)
        raise ConnectionError(f"provider down for {entity_id}")

    debugger = RecordingDebugger()
    out = io.StringIO()
    outcome = debugging.post_mortem(Processor(on_process=lookup), "acme", _job(), debugger=debugger, out=out)
    assert outcome.debugged and not outcome.ok
    assert debugger.frames()[-1][0] == "lookup"
    assert "ConnectionError: provider down for acme" in out.getvalue()
    assert "quit it (q) to return to the dashboard" in out.getvalue()


def test_a_hanging_async_callback_is_cut_off_where_it_hangs() -> None:
    async def hangs(entity_id: str, job: Job) -> None:
        import asyncio

        await asyncio.sleep(3600)

    debugger = RecordingDebugger()
    outcome = debugging.post_mortem(Processor(on_process=hangs, timeout=0.05), "slow", _job(),
                                    debugger=debugger, out=io.StringIO())
    assert isinstance(outcome.exception, TimeoutError) and outcome.debugged


def test_batch_callback_failure_for_the_entity_is_debugged() -> None:
    def batch(ids: list[str], job: Job) -> dict[str, BaseException]:
        try:
            {}[ids[0]]
        except KeyError as exc:
            return {ids[0]: exc}
        return {}

    debugger = RecordingDebugger()
    outcome = debugging.post_mortem(Processor(on_chunk=batch), "sku-1", _job(), debugger=debugger,
                                    out=io.StringIO())
    assert outcome.debugged and debugger.frames()[-1][0] == "batch"


def test_a_broken_debugger_does_not_take_the_dashboard_down() -> None:
    def boom(entity_id: str, job: Job) -> None:
        raise ValueError("bad")

    def broken(tb: TracebackType) -> None:
        raise RuntimeError("no tty")

    outcome = debugging.post_mortem(Processor(on_process=boom), "x", _job(), debugger=broken, out=io.StringIO())
    assert not outcome.debugged and "the debugger failed: RuntimeError: no tty" in outcome.summary

