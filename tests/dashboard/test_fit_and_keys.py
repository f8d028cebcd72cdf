"""Issue 18: the dashboard fits the terminal and the hand (Pilot, real SQLite files).

Layouts from 80x24 to wide, the keys people expect in tables, dialogs where Enter
never destroys, retry that never makes a second job, and words and numbers that
are never cut.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens import job_actions
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
from chunkq.tui.dashboard.screens.export import ExportScreen
from chunkq.tui.dashboard.widgets.activity_log import ActivityLog
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter, fit_rows
from chunkq.tui.dashboard.widgets.job_rows import CELL_PAD, COLUMN_KEYS, count_needs, fit_columns, job_cells
from chunkq.tui.dashboard.widgets.jobs_table import JobsTable
from chunkq.tui.dashboard.widgets.totals import totals_text
from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Button, DataTable, Input

from tests.dashboard.conftest import NEVER, STEPWISE, fixed_clock, refresh, settle

NARROW = (80, 24)
WIDE = (200, 50)


def make_app(url: str, **kwargs: object) -> ChunkqApp:
    kwargs.setdefault("refresh_interval", NEVER)
    kwargs.setdefault("clock", fixed_clock)
    return ChunkqApp(url, **kwargs)  # type: ignore[arg-type]


def jobs_table(app: ChunkqApp) -> JobsTable:
    return app.jobs_screen.query_one("#jobs", JobsTable)  # type: ignore[union-attr]


def notes(app: ChunkqApp) -> list[str]:
    return [n.message for n in app._notifications]


def visible(app: ChunkqApp, widget: object) -> bool:
    """On screen, whole: inside the terminal and not clipped by a scrolling parent."""
    region = widget.region  # type: ignore[attr-defined]
    screen = app.screen.region
    return region.area > 0 and screen.contains_region(region)


async def select(pilot, app: ChunkqApp, job_id: int) -> None:
    t = jobs_table(app)
    t.move_cursor(row=t.get_row_index(str(job_id)))
    await pilot.pause()


# ---------------------------------------------------------------------- columns that fit


def test_columns_drop_by_priority_and_widen_on_wide_terminals() -> None:
    narrow = fit_columns(78)
    assert list(narrow)[:4] == ["id", "name", "status", "progress"]
    assert {"done", "errors"} <= set(narrow) and "age" not in narrow
    assert sum(w + CELL_PAD for w in narrow.values()) <= 78
    wide = fit_columns(298)
    assert list(wide) == [k for k in COLUMN_KEYS if k != "tenant"], "every column on a wide terminal (Tenant: \
when a job has one, tests/dashboard/test_tenants.py)"
    assert wide["name"] > 40 and wide["note"] > 40, "names and notes take the room"
    assert sum(w + CELL_PAD for w in wide.values()) <= 298


def test_count_columns_are_sized_for_millions() -> None:
    cells = [{"id": Text("12345"), "done": Text("1,234,567/2,000,000"), "errors": Text("40,000,000")}]
    needs = count_needs(cells)
    assert needs == {"id": 5, "done": 19, "errors": 10}
    for width in (78, 118, 158, 298):
        widths = fit_columns(width, needs)
        for key, need in needs.items():
            assert key not in widths or widths[key] >= need, f"{key} cut at {width} columns"


def test_zwj_emoji_never_shift_a_row() -> None:
    from tests.dashboard.test_table_logic import job

    family = "👩\u200d👩\u200d👧\u200d👦 team"
    cells = job_cells(job(1, name=family), datetime(2026, 1, 1, tzinfo=UTC), 0.0)
    shown = cells["name"].plain
    assert "\u200d" not in shown, "joined sequences are split into what every terminal draws alike"
    assert cell_len(shown) == sum(2 if ord(c) > 0x1F000 else 1 for c in shown)


def test_totals_fit_80_columns_and_leave_cancelled_out_of_the_job_total() -> None:
    from chunkq.core import QueueStats

    stats = QueueStats({"pending": 2_111, "paused": 1, "failed": 1, "complete": 1, "cancelled": 1},
                       8_000_000, 1_998_000, 70_000, 12_000, 123.4, 3, failed_entities=62_857)
    text = totals_text(stats, width=78)
    lines = text.plain.split("\n")
    assert all(cell_len(line) <= 78 for line in lines), lines
    assert lines[0].startswith("2,114 jobs") and "2,111 pending" in lines[0] and "1 cancelled" in lines[0]
    assert f"entities {fmt.count(1_998_000)}/{fmt.count(8_000_000)}" in text.plain
    assert "errors 62,857" in text.plain
    assert "0 running" not in text.plain, "zeros go first when it does not fit"
    assert "\n" not in totals_text(stats, width=300).plain


def test_footer_rows_fit_the_width() -> None:
    assert fit_rows([10] * 12, 200) == (1, [10] * 12)
    assert fit_rows([10] * 12, 78) == (2, [10] * 6)
    rows, sizes = fit_rows([10, 8, 16, 12, 16, 10, 17, 12, 14, 11, 8, 8], 78)
    assert rows == 3 and sum(sizes) <= 78
    assert fit_rows([50] * 12, 78)[0] == 3, "never more than three rows"


async def test_jobs_screen_at_80x24_shows_counts_totals_and_every_footer_key(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await refresh(pilot, full=True)
        t = jobs_table(app)
        shown = [str(c.key.value) for c in t.ordered_columns]
        assert shown[:4] == ["id", "name", "status", "progress"] and "done" in shown and "errors" in shown
        assert sum(c.get_render_width(t) for c in t.ordered_columns) <= 80
        footer = app.screen.query_one(FitFooter)
        assert footer.compact and footer.outer_size.height >= 2
        assert all(visible(app, key) for key in footer.query("FooterKey")), "no key runs off the footer"
        totals = app.screen.query_one("#totals")
        assert totals.outer_size.height == 2, "the totals wrap instead of being cut"


@pytest.mark.slow
async def test_the_footer_rebuilds_its_keys_only_when_they_change(seeded_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A dialog opened and closed, a refresh asked for: Textual's footer removed and mounted every key again."""
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await refresh(pilot, full=True)
        footer = app.screen.query_one(FitFooter)
        keys = list(footer.query("FooterKey"))
        app.screen.refresh_bindings()
        await pilot.press("question_mark", "escape")  # help over it, and back: two more signals
        await settle(pilot)
        assert list(footer.query("FooterKey")) == keys and all(k.is_attached for k in keys), "the same widgets"
        restyled: list[str] = []
        restyle = type(keys[0]).update_node_styles

        def counting(key: Any, animate: bool = True) -> None:
            restyled.append(key.key)
            restyle(key, animate)

        monkeypatch.setattr(type(keys[0]), "update_node_styles", counting)
        await pilot.press("tab")  # the activity log takes the focus, and its enter key shows
        await settle(pilot)
        assert [k.key for k in footer.query("FooterKey")] == ["enter", *(k.key for k in keys)]
        assert all(k.has_class("-compact") for k in footer.query("FooterKey"))
        assert restyled == [], "a compact footer's new keys are born compact, not restyled once mounted"
        app.update_keymap({"jobs.step": "ctrl+t"})  # a key rebound
        await settle(pilot)
        rebuilt = [k.key for k in footer.query("FooterKey")]
        assert "ctrl+t" in rebuilt and "s" not in rebuilt
        assert all(visible(app, key) for key in footer.query("FooterKey")), "no key runs off the footer"


@pytest.mark.slow
async def test_columns_follow_a_resize_and_the_cursor_stays(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await refresh(pilot, full=True)
        await select(pilot, app, 4)
        narrow = len(jobs_table(app).columns)
        await pilot.resize_terminal(*WIDE)
        await settle(pilot)
        t = jobs_table(app)
        assert len(t.columns) > narrow and t.widths["name"] > 20
        assert app.jobs_screen.selected_job_id() == 4  # type: ignore[union-attr]
        assert t.get_cell("1", "done").plain == "150/500"


async def test_a_count_in_the_millions_widens_its_column(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        await q.enqueue_job(["a"], entity_type="company", provider="p")
    app = make_app(sqlite_url)
    async with app.run_test(size=NARROW) as pilot:
        await refresh(pilot, full=True)
        t = jobs_table(app)
        t.jobs[1] = dataclasses.replace(t.jobs[1], processed_count=1_234_567, total_count=2_000_000)
        t._cells[1] = t._cells_for(t.jobs[1], fixed_clock())
        t.fit()
        shown = t.get_cell("1", "done").plain
        assert shown == f"{fmt.count(1_234_567)}/{fmt.count(2_000_000)}"
        assert "done" in t.widths and t.widths["done"] >= cell_len(shown), "never cut"
        t.jobs[1] = dataclasses.replace(t.jobs[1], error_count=40_000, failed_count=22_857)
        t._cells[1] = t._cells_for(t.jobs[1], fixed_clock())
        t.fit()
        assert t.widths["errors"] >= t.get_cell("1", "errors").cell_len  # type: ignore[union-attr]


# ---------------------------------------------------------------------- keys


@pytest.mark.slow
async def test_home_end_g_G_j_k_move_in_the_table(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=WIDE) as pilot:
        await refresh(pilot, full=True)
        t = jobs_table(app)
        await pilot.press("end")
        assert t.cursor_row == t.row_count - 1
        await pilot.press("home")
        assert t.cursor_row == 0
        await pilot.press("G")
        assert t.cursor_row == t.row_count - 1
        await pilot.press("g")
        assert t.cursor_row == 0
        await pilot.press("j", "j")
        assert t.cursor_row == 2
        await pilot.press("k")
        assert t.cursor_row == 1
        # in the search box the keys are text, and Home goes to the start of the line
        await pilot.press("slash", "g", "j", "home")
        box = app.screen.query_one("#search", Input)
        assert box.value == "gj" and box.cursor_position == 0
        assert t.cursor_row == 1


@pytest.mark.slow
async def test_escape_clears_the_search_and_leaves_the_box(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=WIDE) as pilot:
        await refresh(pilot, full=True)
        await pilot.press("slash", *"press", "enter")
        await refresh(pilot, full=True)
        assert app.jobs_screen.filters.search == "press"  # type: ignore[union-attr]
        assert list(jobs_table(app).jobs) == [5]
        await pilot.press("slash", "escape")
        await refresh(pilot, full=True)
        assert app.screen.query_one("#search", Input).value == ""
        assert app.jobs_screen.filters.search == ""  # type: ignore[union-attr]
        assert app.focused is jobs_table(app)
        assert len(jobs_table(app).jobs) == 6


@pytest.mark.slow
async def test_sort_by_key_and_by_clicking_a_header(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=WIDE) as pilot:
        await refresh(pilot, full=True)
        t = jobs_table(app)

        def order() -> list[int]:
            return [int(str(r.key.value)) for r in t.ordered_rows]

        assert order() == [2, 1, 4, 5, 3, 6]
        await pilot.press("o")  # ID, descending first
        assert t.sort_by == ("id", True) and order() == [6, 5, 4, 3, 2, 1]
        await pilot.press("O")
        assert order() == [1, 2, 3, 4, 5, 6]
        assert any("sorted by ID" in n for n in notes(app))
        t.post_message(DataTable.HeaderSelected(t, t.columns["errors"].key, 7, Text("Errors")))  # type: ignore[index]
        await settle(pilot)
        assert t.sort_by == ("errors", True) and order()[:2] == [4, 1]  # 20 errors, then 15
        assert "▼" in t.columns["errors"].label.plain  # type: ignore[index]


async def test_help_on_the_detail_screen_lists_detail_keys_first_and_reload() -> None:
    md = commands.help_markdown(commands.DETAIL)
    body = md.split("## Job detail", 1)[1]
    first = body.strip().splitlines()[0]
    assert "**Back**" in first
    assert "`R` **Reload processor**" in md
    assert md.index("**Retry entity**") < md.index("**New job**") if "**New job**" in md else True
    assert "`Home/g` **First row**" in md and "`j/k` **Down**" in md


# ---------------------------------------------------------------------- dialogs


@pytest.mark.slow
async def test_every_confirm_dialog_focuses_the_safe_button(seeded_url: str) -> None:
    from tests.dashboard.test_table_logic import job

    j = job(3, "complete", failed_count=4)
    # One dashboard for all five: each dialog is pushed over the jobs screen as it opened, and its
    # own mount decides the focus (a new screen starts with none; the last dialog is gone, checked).
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        base = app.screen
        for dialog, safe in [(job_actions.cancel_from_list(job(1)), "back"), (job_actions.cancel_from_detail(1), "no"),
                             (job_actions.failed_dialog(j, "retry"), "no"),
                             (job_actions.failed_dialog(j, "requeue"), "no"),
                             (job_actions.bulk_dialog(1_532, "status paused"), "back")]:
            chosen: list[str | None] = []
            app.push_screen(dialog, chosen.append)
            await pilot.pause()
            assert app.screen is dialog
            assert app.focused is not None and app.focused.id == f"choice-{safe}"
            labels = [str(b.label) for b in dialog.query(Button)]
            assert "Cancel" not in labels, f"'Cancel' is ambiguous next to cancelling a job: {labels}"
            await pilot.press("enter")
            await settle(pilot)
            assert chosen == [None], "Enter on the focused button changes nothing"
            assert app.screen is base


@pytest.mark.slow
async def test_bulk_dialog_fits_a_big_count_at_80_and_160_with_back_visible(seeded_url: str) -> None:
    for size in (NARROW, (160, 45)):
        app = make_app(seeded_url)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            dialog = job_actions.bulk_dialog(1_532, "status paused")
            app.push_screen(dialog)
            await pilot.pause()
            assert "1,532" in dialog.title_text
            for button in dialog.query(Button):
                assert visible(app, button), f"{button.label} off screen at {size}"
                assert button.region.width >= cell_len(str(button.label)), f"{button.label} cut at {size}"
            await pilot.press("y")
            await pilot.pause()
            assert app.screen is dialog, "y does not guess between several actions"


@pytest.mark.slow
async def test_r_asks_and_never_makes_a_second_retry_job(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=WIDE) as pilot:
        await refresh(pilot, full=True)
        await select(pilot, app, 3)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("enter")  # Back has the focus
        await settle(pilot)
        assert await app.queue.count_jobs() == 6
        await pilot.press("r")
        await settle(pilot)
        await pilot.press("y")
        await refresh(pilot, full=True)
        assert await app.queue.count_jobs() == 7
        await select(pilot, app, 3)
        await pilot.press("r")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen), "no question: the retry job exists"
        assert any("job 7 already retries job 3" in n for n in notes(app))
        assert await app.queue.count_jobs() == 7
        assert (await app.queue.pending_retry_job(3)).id == 7  # type: ignore[union-attr]


async def test_pending_retry_job_ignores_finished_retries(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await q.enqueue_job(["a", "b"], entity_type="company", provider="p")
        await q.cancel(job.id)
        assert await q.pending_retry_job(job.id) is None
        retry = await q.retry_failed(job.id)
        assert (await q.pending_retry_job(job.id)).id == retry.id  # type: ignore[union-attr]
        await q.pause(retry.id)
        assert (await q.pending_retry_job(job.id)).id == retry.id  # type: ignore[union-attr]
        await q.cancel(retry.id)
        assert await q.pending_retry_job(job.id) is None


async def test_s_on_a_finished_job_says_so_and_steps_nothing(seeded_url: str) -> None:
    app = make_app(seeded_url, processor="chunkq.core.demo:processor")
    async with app.run_test(size=WIDE) as pilot:
        await refresh(pilot, full=True)
        before = {j.id: j.processed_count for j in await app.queue.list_jobs()}
        await select(pilot, app, 3)
        await pilot.press("s")
        await settle(pilot)
        assert any("job 3 is complete" in n for n in notes(app))
        assert {j.id: j.processed_count for j in await app.queue.list_jobs()} == before


@pytest.mark.slow
async def test_export_asks_before_replacing_a_file(tmp_path: Path, seeded_url: str) -> None:
    target = tmp_path / "errors.jsonl"
    target.write_text("keep me\n")
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        results: list[Path | None] = []
        app.push_screen(ExportScreen(1, 15, str(target)), results.append)
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "already exists" in app.screen.message
        await pilot.press("enter")  # Back
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen) and results == []
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert results == [target]
    assert target.read_text() == "keep me\n", "the dialog only chooses; the export writes"


# ---------------------------------------------------------------------- layouts


@pytest.mark.slow
async def test_enqueue_form_at_80x24_shows_its_buttons_and_submit_key(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, EnqueueScreen)
        for selector in ("#submit", "#cancel", "#entity-type"):
            assert visible(app, app.screen.query_one(selector)), selector
        assert str(app.screen.query_one("#cancel", Button).label) == "Back"
        keys = [k.key for k in app.screen.query("FooterKey")]
        assert "ctrl+s" in keys and "escape" in keys
        file_box = app.screen.query_one("#file", Input)
        file_box.focus()
        await pilot.pause()
        assert visible(app, file_box), "the form scrolls to the file field"


@pytest.mark.slow
async def test_activity_log_cycles_and_grows_when_the_table_is_short(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=(160, 45)) as pilot:
        await refresh(pilot, full=True)
        log = app.screen.query_one(ActivityLog)
        assert log.outer_size.height > ActivityLog.USUAL_HEIGHT, "six jobs leave it the room"
        await pilot.press("l")
        await settle(pilot)
        assert log.size_mode == "tall"
        await pilot.press("l")
        await settle(pilot)
        assert log.size_mode == "hidden" and not log.display
        assert jobs_table(app).outer_size.height > 30
        await pilot.press("l")
        await settle(pilot)
        assert log.size_mode == "auto" and log.display


@pytest.mark.slow
@pytest.mark.parametrize("size", [NARROW, WIDE])
async def test_detail_screen_gives_the_error_log_rows(seeded_url: str, size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await refresh(pilot, full=True)
        await select(pilot, app, 1)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.pause(0.1)
        await settle(pilot)
        log = app.screen.query_one("#detail-errors", DataTable)
        assert log.row_count > 0
        assert log.region.height >= (7 if size == NARROW else 4), f"the error log shows rows at {size}"


@pytest.mark.slow
async def test_a_narrow_detail_shows_the_traceback_full_width_on_z_and_esc_returns(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await refresh(pilot, full=True)
        await select(pilot, app, 1)
        await pilot.press("enter")
        await settle(pilot)
        pane = app.screen.query_one("#traceback-pane")
        log = app.screen.query_one("#detail-errors", DataTable)
        assert not pane.display or pane.region.width == 0, "no room beside the lists at 80 columns"
        await pilot.press("z")
        await pilot.pause()
        assert pane.region.width >= 76 and log.region.width == 0, "the traceback takes the whole width"
        await pilot.press("escape")
        await pilot.pause()
        assert log.region.width >= 76 and app.screen is not app.jobs_screen, "esc leaves the zoom, not the job"


@pytest.mark.slow
async def test_the_quit_dialog_follows_auto_run_while_open(sqlite_url: str, make_processor) -> None:
    import asyncio
    import importlib

    path = make_processor(STEPWISE)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=NARROW) as pilot:
        await app.queue.enqueue_job([f"id-{i}" for i in range(6)], entity_type="company", provider="t",
                                    chunk_size=2)
        await refresh(pilot, full=True)
        await pilot.press("a")
        assert await asyncio.to_thread(mod.started.wait, 10)
        await pilot.press("q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen) and "0 chunks done so far" in dialog.message
        assert app.focused is not None and app.focused.id == "choice-stay", "Enter keeps running"
        mod.gate.release()
        mod.gate.release()  # the first chunk (2 entities) commits behind the dialog
        for _ in range(250):
            if "1 chunk done so far" in dialog.message:
                break
            await pilot.pause(0.02)
        assert "1 chunk done so far" in dialog.message
        for _ in range(10):
            mod.gate.release()
        await pilot.click("#choice-finish")
        await settle(pilot)
    assert app.return_code == 0
