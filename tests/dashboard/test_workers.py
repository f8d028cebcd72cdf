"""The Workers screen, driven with Pilot against a real database (SQLite file and PostgreSQL).

Workers are registered for real (``core.registry.Registration`` writing
``chunkq_workers``); the stop buttons must write a stop request that the
worker's own next heartbeat acts on.
"""

from __future__ import annotations

import pytest
from chunkq.core import Queue
from chunkq.core.registry import Registration
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from chunkq.tui.dashboard.screens.workers import WorkersScreen
from chunkq.tui.dashboard.widgets.workers_table import WorkersTable
from textual.widgets import Button

from tests.dashboard.conftest import FIXED_NOW, NEVER, fixed_clock, settle
from tests.dashboard.workers_seed import FakeRun

SIZE = (160, 45)
NOW = FIXED_NOW.timestamp()


async def workers_screen(pilot) -> WorkersScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("w")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, WorkersScreen)
    screen.poll()
    await settle(pilot)
    return screen


@pytest.mark.slow
async def test_a_registered_worker_appears_and_is_asked_to_stop_after_its_chunk(db_url: str) -> None:
    run = FakeRun()
    async with Queue(db_url, clock=lambda: NOW) as q:
        job = await q.enqueue_job(["a", "b"], entity_type="company", provider="clearbit")
        run.in_flight = [(job.id, 0)]
        async with Registration(q, run, kind="worker", processor_name="myapp.enrich:[b]enrich",
                                interval=1000) as reg:
            await reg._beat_once()  # busy, holding chunk 0 of the job
            app = ChunkqApp(db_url, clock=fixed_clock, refresh_interval=NEVER)
            async with app.run_test(size=SIZE) as pilot:
                screen = await workers_screen(pilot)
                table = screen.query_one(WorkersTable)
                assert table.row_count == 1
                row = [c.plain for c in table.get_row(reg.id)]
                assert row[:5] == [reg_label(reg), "busy", "0s", f"#{job.id}", "1"]
                assert "myapp.enrich:[b]enrich" in row  # plain text: the brackets are not markup
                detail = str(screen.query_one("#worker-detail").render())
                assert "job 1 chunk 0" in detail and "myapp.enrich:[b]enrich" in detail

                await pilot.press("s")
                await settle(pilot)
                dialog = pilot.app.screen
                assert isinstance(dialog, ConfirmScreen)
                assert pilot.app.focused is dialog.query_one("#choice-back", Button)  # enter changes nothing
                await pilot.press("enter")
                await settle(pilot)
                assert isinstance(pilot.app.screen, WorkersScreen)
                assert (await q.list_workers())[0].stop_request is None

                await pilot.press("s")
                await settle(pilot)
                await pilot.click("#choice-finish")
                await settle(pilot)
                assert (await q.list_workers())[0].stop_request == "finish"
                await reg._beat_once()  # the worker's next heartbeat reads the request
                assert run.asked == ["stop"]
                screen.poll()
                await settle(pilot)
                assert table.get_row(reg.id)[1].plain == "stopping"

                await pilot.press("escape")
                await settle(pilot)
                assert isinstance(pilot.app.screen, JobsScreen)


def reg_label(reg: Registration) -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"[:20]


@pytest.mark.slow
async def test_release_now_is_written_and_a_lost_worker_cannot_be_stopped(db_url: str) -> None:
    run, gone = FakeRun(), FakeRun()
    async with Queue(db_url, clock=lambda: NOW) as q, Queue(db_url, clock=lambda: NOW - 30) as old, \
            Registration(old, gone, kind="process", interval=5) as lost_reg, \
            Registration(q, run, kind="dashboard", processor_name="demo", interval=1000) as reg:
        app = ChunkqApp(db_url, clock=fixed_clock, refresh_interval=NEVER)
        async with app.run_test(size=SIZE) as pilot:
            screen = await workers_screen(pilot)
            table = screen.query_one(WorkersTable)
            states = {key.value: table.get_row(key)[1].plain for key in table.rows}
            assert states == {reg.id: "idle", lost_reg.id: "lost"}
            assert next(iter(table.rows)).value == reg.id, "the live one first, the lost one after"
            assert table.get_row(lost_reg.id)[2].plain == "30s"
            summary = str(screen.query_one("#workers-summary").render())
            assert "2 workers" in summary and "1 idle" in summary and "1 lost" in summary

            table.move_cursor(row=1)
            await pilot.pause()
            await pilot.press("x")
            await settle(pilot)
            assert isinstance(pilot.app.screen, WorkersScreen), "no dialog for a lost worker"
            assert any("lost" in n.message for n in pilot.app._notifications)

            table.move_cursor(row=0)
            await pilot.pause()
            await pilot.press("x")
            await settle(pilot)
            await pilot.click("#choice-release")
            await settle(pilot)
            stored = {w.id: w.stop_request for w in await q.list_workers()}
            assert stored == {reg.id: "release", lost_reg.id: None}
            await reg._beat_once()
            assert run.asked == ["abort"]
            assert gone.asked == []


@pytest.mark.slow
async def test_stopped_workers_are_hidden_until_asked_for(db_url: str) -> None:
    async with Queue(db_url, clock=lambda: NOW) as q:
        async with Registration(q, FakeRun(), kind="worker", interval=1000) as reg:
            pass  # registered, then marked stopped on the way out
        app = ChunkqApp(db_url, clock=fixed_clock, refresh_interval=NEVER)
        async with app.run_test(size=SIZE) as pilot:
            screen = await workers_screen(pilot)
            table = screen.query_one(WorkersTable)
            assert table.row_count == 0
            assert "0 workers" in str(screen.query_one("#workers-summary").render())
            await pilot.press("v")
            await settle(pilot)
            assert [k.value for k in table.rows] == [reg.id]
            assert table.get_row(reg.id)[1].plain == "stopped"


@pytest.mark.slow
async def test_the_workers_key_is_in_the_registry_footer_and_help(sqlite_url: str) -> None:
    assert any(c.key == "w" and c.action == "show_workers" and c.scope == commands.APP
               for c in commands.COMMANDS)
    assert "**Workers**" in commands.help_markdown(commands.JOBS)
    text = commands.help_markdown(commands.WORKERS)
    assert "## Workers" in text and "**Stop after chunk**" in text and "**Release now**" in text
    app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shown = app.active_bindings["w"]
        assert shown.binding.action == "show_workers" and shown.binding.show, "in the footer"
        await pilot.press("w")
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert "Stop after chunk" in str(pilot.app.screen.query_one("Markdown").source)  # type: ignore[attr-defined]


async def test_dashboard_auto_run_registers_and_obeys_a_stop_request(db_url: str, make_processor) -> None:
    """The dashboard's own auto-run is a registered worker of kind "dashboard"; "finish" stops it."""
    import asyncio

    path = make_processor("""
        import asyncio
        async def process(entity_id, job):
            await asyncio.sleep(0.05)
    """)
    async with Queue(db_url) as q:
        await q.enqueue_job([f"e{i}" for i in range(400)], entity_type="company", provider="p", chunk_size=5)
        app = ChunkqApp(db_url, processor=path, refresh_interval=NEVER)
        app.heartbeat_interval = 0.5  # lost after two missed beats: 0.1 s read as lost on a loaded machine
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("a")
            mine = []
            for _ in range(100):
                await asyncio.sleep(0.05)
                mine = [w for w in await q.list_workers() if w.kind == "dashboard"]
                if mine:
                    break
            assert len(mine) == 1 and mine[0].processor == path, [n.message for n in app._notifications]
            await q.request_worker_stop(mine[0].id)
            for _ in range(200):
                await asyncio.sleep(0.05)
                if app.auto_worker is None:
                    break
            assert app.auto_worker is None, "auto-run did not stop on the operator's request"
            assert app.stop_requested == "finish"
            assert [w.state for w in await q.list_workers(include_stopped=True)] == ["stopped"]
            job = (await q.list_jobs())[0]
            assert 0 < job.processed_count < 400 and job.leased_chunks == 0, "its chunk finished, no other started"
            assert job.released_by is None, "a finish is not a release"
            assert any("an operator asked it to stop after its chunk" in n.message for n in app._notifications)


@pytest.mark.slow
async def test_idle_jobs_show_no_rate_and_reasons_are_shown_in_the_row_and_the_detail(seeded_url: str) -> None:
    from chunkq.tui.dashboard.screens.detail import JobDetailScreen
    from textual.clock import MockClock

    from tests.dashboard.test_detail import wait_loaded

    app = ChunkqApp(seeded_url, clock=fixed_clock, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = app.jobs_screen.table  # type: ignore[union-attr]
        # job 1 ran three chunks an hour ago and nothing since: no rate, no ETA
        assert table.get_cell("1", "rate").plain == "idle" and table.get_cell("1", "eta").plain == "–"
        assert table.get_cell("1", "errors").plain == "15"  # entities failed for good
        assert table.get_cell("4", "note").plain == "paused by an operator"
        assert table.get_cell("5", "note").plain.startswith("JobFailed: 401")
        totals = str(app.jobs_screen.query_one("#totals").render())  # type: ignore[union-attr]
        assert "errors 40" in totals and "workers 0" in totals

        screen = JobDetailScreen(5, progress_clock=MockClock())
        await pilot.app.push_screen(screen)
        await wait_loaded(pilot, screen)
        reason = str(screen.query_one("#detail-reason").render())
        assert reason.startswith("failed: JobFailed: 401 Unauthorized: API key revoked")
        assert "raised by entity person-00000" in reason
        await pilot.press("e")
        await settle(pilot)
        shown = screen.error_view.error
        assert shown is not None and shown.error_type.endswith("JobFailed") and shown.entity_id == "person-00000"
        assert screen.query_one("#job-history").history is not None  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_the_enqueue_form_routes_the_job_to_a_processor(sqlite_url: str) -> None:
    from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
    from textual.widgets import Input, TextArea

    app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, EnqueueScreen)
        form.query_one("#entity-type", Input).value = "company"
        form.query_one("#provider", Input).value = "clearbit"
        form.query_one("#ids", TextArea).text = "acme\nglobex\n"
        form.query_one("#processor", Input).value = "x" * 501
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is form, "a bad processor name creates nothing"
        assert "at most 500 characters" in str(form.query_one("#processor-error").render())
        assert form.query_one("#processor", Input).has_class("invalid")
        assert await app.queue.count_jobs() == 0

        form.query_one("#processor", Input).value = "  myapp.enrich:enrich_company "
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is not form
        [job] = await app.queue.list_jobs()
        assert job.processor == "myapp.enrich:enrich_company"

        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        form.query_one("#entity-type", Input).value = "company"
        form.query_one("#provider", Input).value = "clearbit"
        form.query_one("#ids", TextArea).text = "initech\n"
        await pilot.press("ctrl+s")
        await settle(pilot)
        unrouted = [j for j in await app.queue.list_jobs() if j.id != job.id]
        assert [j.processor for j in unrouted] == [None], "left empty: any worker runs it, as before"


@pytest.mark.slow
async def test_the_queue_history_line_is_drawn_and_gives_way_on_a_short_terminal(seeded_url: str) -> None:
    from chunkq.tui.dashboard.widgets.history import HistoryLine

    from tests.dashboard.conftest import refresh

    app = ChunkqApp(seeded_url, clock=fixed_clock, refresh_interval=NEVER)
    async with app.run_test(size=(160, 45)) as pilot:
        await refresh(pilot, full=True)
        line = app.jobs_screen.query_one(HistoryLine)  # type: ignore[union-attr]
        assert line.display and not line.has_class("-hidden")
        assert line.history is not None and line.history.minutes == 60

    app = ChunkqApp(seeded_url, clock=fixed_clock, refresh_interval=NEVER)
    async with app.run_test(size=(80, 24)) as pilot:
        await refresh(pilot, full=True)
        line = app.jobs_screen.query_one(HistoryLine)  # type: ignore[union-attr]
        assert line.has_class("-hidden") and line.history is None, "not even read while hidden"
        await pilot.press("h")
        await refresh(pilot)
        assert not line.has_class("-hidden") and line.history is not None
        await pilot.press("h")
        await settle(pilot)
        assert line.has_class("-hidden")


@pytest.mark.slow
async def test_a_wide_jobs_table_shows_where_each_job_is_routed(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        routed = await q.enqueue_job(["a"], entity_type="company", provider="p", processor="myapp:[b]enrich")
        anyone = await q.enqueue_job(["b"], entity_type="company", provider="p")
    for width, shown in ((220, True), (100, False)):
        app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
        async with app.run_test(size=(width, 30)) as pilot:
            await settle(pilot)
            table = app.jobs_screen.table  # type: ignore[union-attr]
            assert ("processor" in table.widths) is shown
            if shown:
                assert table.get_cell(str(routed.id), "processor").plain == "myapp:[b]enrich"
                assert table.get_cell(str(anyone.id), "processor").plain == "any"
