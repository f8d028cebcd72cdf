"""The jobs screen and its dialogs, driven with Pilot against a real SQLite file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chunkq.core import Queue
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens import jobs as jobs_module
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.dashboard.screens.jobs import PAGE_SIZE, JobsScreen
from textual.widgets import DataTable, Input, Select, TextArea

from tests.dashboard.conftest import NEVER, fixed_clock, refresh, settle

SIZE = (160, 45)


def make_app(url: str, **kwargs: object) -> ChunkqApp:
    kwargs.setdefault("refresh_interval", NEVER)
    return ChunkqApp(url, **kwargs)  # type: ignore[arg-type]


def table(app: ChunkqApp) -> DataTable:
    return app.jobs_screen.query_one("#jobs", DataTable)  # type: ignore[union-attr]


def shown_ids(app: ChunkqApp) -> list[int]:
    t = table(app)
    return [int(t.coordinate_to_cell_key((r, 0)).row_key.value) for r in range(t.row_count)]  # type: ignore[arg-type]


def notes(app: ChunkqApp) -> list[str]:
    return [n.message for n in app._notifications]


async def select_job(pilot, app: ChunkqApp, job_id: int) -> None:
    t = table(app)
    t.move_cursor(row=t.get_row_index(str(job_id)))
    await pilot.pause()
    assert app.jobs_screen.selected_job_id() == job_id  # type: ignore[union-attr]


async def test_jobs_table_shows_every_job_active_first(seeded_url: str) -> None:
    app = make_app(seeded_url, clock=fixed_clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        # pending (newest first), then paused, failed, complete, cancelled
        assert shown_ids(app) == [2, 1, 4, 5, 3, 6]
        t = table(app)
        assert t.get_cell("1", "done").plain == "150/500"
        assert t.get_cell("1", "errors").plain == "15"
        assert t.get_cell("5", "note").plain.startswith("JobFailed: 401")
        assert t.get_cell("3", "status").plain == "complete"
        assert t.get_cell("1", "age").plain == "1h"
        totals = str(app.jobs_screen.query_one("#totals").render())  # type: ignore[union-attr]
        assert "5 jobs" in totals and "2 pending" in totals and "1 failed" in totals


@pytest.mark.slow
async def test_enqueue_through_the_form(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, EnqueueScreen)
        await pilot.press(*"company")
        form.query_one("#provider", Input).value = "clearbit"
        form.query_one("#chunk-size", Input).value = "2"
        form.query_one("#priority", Input).value = "3"
        form.query_one("#max-workers", Input).value = "2"
        form.query_one("#name", Input).value = "Prospects"
        form.query_one("#ids", TextArea).text = "acme\n\n  globex  \ninitech\numbrella\n"
        form.update_count()
        await pilot.pause()
        assert str(form.query_one("#id-count").render()) == "4 IDs"
        await pilot.click("#submit")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        jobs = await app.queue.list_jobs()
        assert len(jobs) == 1
        job = jobs[0]
        assert (job.entity_type, job.provider, job.chunk_size, job.priority, job.max_workers, job.name) == (
            "company", "clearbit", 2, 3, 2, "Prospects")
        assert await app.queue.entity_ids(job.id) == ["acme", "globex", "initech", "umbrella"]
        await refresh(pilot)
        assert shown_ids(app) == [job.id]
        assert app.jobs_screen.selected_job_id() == job.id  # type: ignore[union-attr]
        assert any(f"job {job.id} enqueued: 4 company IDs" in n for n in notes(app))


@pytest.mark.slow
async def test_enqueue_from_a_file(sqlite_url: str, tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"sku-{i}\n" for i in range(250)) + "\n")
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#entity-type", Input).value = "sku"
        form.query_one("#provider", Input).value = "pricing"
        form.query_one("#file", Input).value = str(ids)
        form.update_count()
        await settle(pilot)
        assert str(form.query_one("#id-count").render()) == "250 IDs in ids.txt"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        (job,) = await app.queue.list_jobs()
        assert job.total_count == 250


@pytest.mark.slow
async def test_invalid_form_shows_every_problem_and_creates_nothing(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        form.query_one("#provider", Input).value = "clearbit"
        form.query_one("#chunk-size", Input).value = "0"
        form.query_one("#max-workers", Input).value = ""
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is form, "the form stays open"

        def error(fid: str) -> str:
            return str(form.query_one(f"#{fid}-error").render())

        assert error("entity-type") == "entity_type is required"
        assert error("provider") == ""
        assert error("chunk-size") == "chunk_size must be between 1 and 10,000, got 0"
        assert error("max-workers") == "max_workers must be a whole number, got ''"
        assert error("ids") == "no entity IDs: a job needs at least one"
        assert form.query_one("#entity-type").has_class("invalid")
        assert await app.queue.count_jobs() == 0

        # A missing file and IDs that the queue rejects: still nothing created.
        form.query_one("#entity-type", Input).value = "company"
        form.query_one("#chunk-size", Input).value = "10"
        form.query_one("#max-workers", Input).value = "1"
        form.query_one("#file", Input).value = "/nonexistent/ids.txt"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert error("file") == "no such file: /nonexistent/ids.txt"
        form.query_one("#file", Input).value = ""
        form.query_one("#ids", TextArea).text = "ok-1\n" + "x" * 3000 + "\n"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert error("ids") == "entity ID #2 is 3,000 characters long; the limit is 2,048"
        assert error("entity-type") == ""
        assert await app.queue.count_jobs() == 0
        await pilot.press("escape")  # a filled form asks before discarding (issue 28)
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)
        assert await app.queue.count_jobs() == 0


@pytest.mark.slow
async def test_pause_and_resume_the_selected_job(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_job(pilot, app, 1)
        await pilot.press("p")
        await refresh(pilot)
        assert (await app.queue.get_job(1)).status == "paused"
        assert table(app).get_cell("1", "status").plain == "paused"
        assert app.jobs_screen.selected_job_id() == 1, "the cursor follows the job when it moves"
        await pilot.press("p")
        await refresh(pilot)
        assert (await app.queue.get_job(1)).status == "pending"
        # A finished job cannot be paused: the queue's message is shown, nothing changes.
        await select_job(pilot, app, 3)
        await pilot.press("p")
        await settle(pilot)
        assert "cannot pause job 3: it is complete" in notes(app)
        assert (await app.queue.get_job(3)).status == "complete"


@pytest.mark.slow
async def test_cancel_asks_first(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_job(pilot, app, 2)
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "1,200 of 1,200 entities are not processed yet" in app.screen.message
        await pilot.press("escape")
        await settle(pilot)
        assert (await app.queue.get_job(2)).status == "pending", "escape changes nothing"
        await pilot.press("c")
        await pilot.pause()
        await pilot.click("#choice-cancel")
        await refresh(pilot)
        assert (await app.queue.get_job(2)).status == "cancelled"
        assert table(app).get_cell("2", "status").plain == "cancelled"


@pytest.mark.slow
async def test_retry_failed_entities_as_a_new_job(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_job(pilot, app, 3)  # complete, 4 failed entities
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen), "r asks first"
        await pilot.press("y")
        await refresh(pilot, full=True)
        new = (await app.queue.list_jobs(limit=1))[0]
        assert new.id == 7 and new.parent_id == 3 and new.total_count == 4
        assert await app.queue.entity_ids(7) == ["url-00007", "url-00017", "url-00027", "url-00037"]
        assert app.jobs_screen.selected_job_id() == 7
        assert table(app).get_cell("7", "note").plain == "retry of #3"
        # nothing failed in job 2: the queue says so
        await select_job(pilot, app, 2)
        await pilot.press("r")
        await settle(pilot)
        assert "job 2 has no failed entities to retry" in notes(app)
        assert await app.queue.count_jobs() == 7


@pytest.mark.slow
async def test_filter_by_status_and_search(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.jobs_screen
        await pilot.press("f")  # all -> pending
        await refresh(pilot)
        assert screen.query_one("#status-filter", Select).value == "pending"
        assert shown_ids(app) == [2, 1]
        # A job leaving the filter leaves the table on the next (incremental) refresh.
        await app.queue.pause(1)
        await refresh(pilot)
        assert shown_ids(app) == [2]
        await pilot.press("f", "f", "f")  # running, paused, failed
        await refresh(pilot)
        assert shown_ids(app) == [5]
        screen.query_one("#status-filter", Select).value = "all"
        await pilot.press("slash")
        assert screen.focused is screen.query_one("#search", Input)
        await pilot.press(*"PROSPEO", "enter")
        await refresh(pilot)
        assert shown_ids(app) == [2]
        assert screen.focused is table(app)
        await pilot.press("slash", *"hunter", "enter")  # focusing selects the old text: replaced
        await refresh(pilot)
        assert shown_ids(app) == [5]
        await pilot.press("slash", *"zzz", "enter")
        await refresh(pilot)
        assert shown_ids(app) == []
        assert "no jobs match" in str(screen.query_one("#page-info").render())


@pytest.mark.slow
async def test_an_over_long_search_is_refused_not_sent(seeded_url: str) -> None:
    """Issue 24: a 100,000-character search reached SQLite as a LIKE pattern ("too complex"). The box
    holds at most ``limits.SEARCH_LENGTH`` characters (a longer paste is refused whole), and a longer
    search set some other way is core's ``InvalidInput``, shown in the totals line: the app goes on."""
    from chunkq.core import limits
    from chunkq.tui.dashboard.widgets.totals import QueueTotals
    from textual import events

    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.jobs_screen
        before = shown_ids(app)
        screen.filters._search = "z" * 100_000  # as if the box had no limit
        await refresh(pilot, full=True)
        assert screen.query_one(QueueTotals).problem == "search must be at most 1,000 characters, got 100,000"
        screen.filters._search = ""
        await refresh(pilot, full=True)
        assert shown_ids(app) == before and screen.query_one(QueueTotals).problem is None
        box = screen.query_one("#search", Input)
        await pilot.press("slash")
        box.post_message(events.Paste("x" * 100_000))
        await settle(pilot)
        assert box.value == ""
        box.post_message(events.Paste("y" * limits.SEARCH_LENGTH))
        await settle(pilot)
        assert box.value == "y" * limits.SEARCH_LENGTH


async def bulk(pilot, app: ChunkqApp, question: str, choice: str) -> None:
    """ctrl+a, check the dialog's question, choose, and show the result."""
    await pilot.press("ctrl+a")
    await settle(pilot)
    assert isinstance(app.screen, ConfirmScreen)
    assert app.screen.title_text == question
    await pilot.click(f"#choice-{choice}")
    await refresh(pilot, full=True)


@pytest.mark.slow
async def test_bulk_action_applies_to_every_matching_job_after_saying_how_many(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+a")
        await settle(pilot)
        assert any("set a status filter" in n for n in notes(app)), "no filter: nothing to apply to"
        await pilot.press("f")  # pending: jobs 1 and 2
        await refresh(pilot)
        await bulk(pilot, app, "Apply to all 2 matching jobs?", "pause")
        assert [(await app.queue.get_job(i)).status for i in (1, 2)] == ["paused", "paused"]
        assert "paused 2 of 2 jobs" in notes(app)
        assert shown_ids(app) == []


@pytest.mark.slow
async def test_bulk_action_reaches_every_match_beyond_the_page_and_says_what_it_skipped(sqlite_url: str) -> None:
    """The bulk action is core's ``Queue.bulk`` over the filter, not a walk over what the table holds."""
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        for i in range(PAGE_SIZE + 50):
            await app.queue.enqueue_job([f"e{i}"], entity_type="company", provider="p", name=f"bulk {i}")
        for i in range(2):
            job = await app.queue.enqueue_job(["x"], entity_type="company", provider="p", name=f"bulk done {i}")
            await app.queue.cancel(job.id)
        await app.queue.enqueue_job(["y"], entity_type="company", provider="p", name="other")
        await refresh(pilot, full=True)
        await pilot.press("slash", *"bulk", "enter")
        await refresh(pilot, full=True)
        assert len(shown_ids(app)) == PAGE_SIZE, "the table holds one page of the 252 matches"
        await bulk(pilot, app, "Apply to all 252 matching jobs?", "pause")
        assert await app.queue.count_jobs("paused", search="bulk") == PAGE_SIZE + 50
        assert await app.queue.count_jobs("cancelled") == 2
        assert [j.status for j in await app.queue.list_jobs(search="other")] == ["pending"]
        assert "paused 250 of 252 jobs (skipped: 2 cancelled)" in notes(app)


@pytest.mark.slow
async def test_open_the_selected_job(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_job(pilot, app, 4)
        await pilot.press("enter")
        await pilot.pause()
        from chunkq.tui.dashboard.screens.detail import JobDetailScreen

        assert isinstance(app.screen, JobDetailScreen)
        assert app.screen.job_id == 4


@pytest.mark.slow
async def test_help_lists_every_command_of_the_jobs_list(sqlite_url: str) -> None:
    from chunkq.tui.dashboard.commands import JOBS, available

    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        for c in available(JOBS):
            if not c.alias:  # another key of a command listed already
                assert f"`{c.display}` **{c.title}**" in app.screen.markdown
        assert "Retry entity" not in app.screen.markdown, "the detail screen's keys are its own help's"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, JobsScreen)


async def test_processing_keys_say_what_to_pass_without_a_processor(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in ("s", "a", "S", "R"):
            app.clear_notifications()
            await pilot.press(key)
            await settle(pilot)
            assert notes(app) == ["start with --processor module:function to process from the dashboard"], key
        assert (await app.queue.get_job(1)).processed_count == 150


@pytest.mark.slow
async def test_cursor_stays_on_its_job_across_refreshes(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select_job(pilot, app, 5)
        row_before = table(app).cursor_row
        # Something else changes a job above the cursor, and a new job arrives.
        async with Queue(seeded_url) as other:
            await other.pause(2)
            new = await other.enqueue_job(["a", "b"], entity_type="x", provider="y")
        await refresh(pilot)
        assert new.id in shown_ids(app)
        assert shown_ids(app)[0] == new.id, "a new pending job sorts to the top"
        assert app.jobs_screen.selected_job_id() == 5
        assert shown_ids(app) == [new.id, 1, 4, 2, 5, 3, 6]
        assert table(app).cursor_row == row_before + 1
        polls = app.jobs_screen.polls
        await refresh(pilot)
        await refresh(pilot)
        assert app.jobs_screen.polls == polls + 2
        assert app.jobs_screen.selected_job_id() == 5


@pytest.mark.slow
async def test_table_holds_one_page_and_refresh_reads_only_changes(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stamped a minute ago, outside the refresh's overlap window.
    async with Queue(sqlite_url, clock=lambda: time.time() - 60) as q:
        for i in range(PAGE_SIZE + 30):
            await q.enqueue_job([f"e{i}"], entity_type="t", provider="p", name=f"job {i}")
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert table(app).row_count == PAGE_SIZE
        assert "1–200 of 230" in str(app.jobs_screen.query_one("#page-info").render())
        await refresh(pilot)
        assert app.jobs_screen.last_poll_size == 0, "nothing changed: nothing read"
        await app.queue.pause(230)
        await refresh(pilot)
        assert app.jobs_screen.last_poll_size == 1
        # A new job ranks first on a full page: the page is re-read (at most every few seconds).
        monkeypatch.setattr(jobs_module, "FULL_RELOAD_EVERY", 0.0)
        new = await app.queue.enqueue_job(["z"], entity_type="t", provider="p")
        await refresh(pilot)
        await refresh(pilot)
        assert table(app).row_count == PAGE_SIZE
        assert shown_ids(app)[0] == new.id
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert table(app).row_count == 31
        assert "201–231 of 231" in str(app.jobs_screen.query_one("#page-info").render())
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert table(app).row_count == PAGE_SIZE


@pytest.mark.slow
async def test_command_palette_runs_registry_commands(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"reload")
        await pilot.pause(0.3)  # the palette searches in a worker of its own
        await pilot.press("enter")
        await settle(pilot)
        assert "start with --processor module:function to process from the dashboard" in notes(app)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"status")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await refresh(pilot)
        assert app.jobs_screen.query_one("#status-filter", Select).value == "pending"
        assert shown_ids(app) == [2, 1]


async def test_status_colours_follow_the_theme(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)

        def complete_colour() -> str:
            cell = table(app).get_cell("3", "status")
            return cell.style.color.get_truecolor().hex.upper()  # type: ignore[union-attr]

        assert complete_colour() == app.theme_variables["success"].upper()
        app.theme = "gruvbox"
        await refresh(pilot)
        assert complete_colour() == app.theme_variables["success"].upper()


async def test_a_database_that_cannot_be_opened_is_reported_not_crashed(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
    assert app.return_code == 1
    assert app.startup_error is not None
    assert "folder" in str(app.startup_error) and "does not exist" in str(app.startup_error)
