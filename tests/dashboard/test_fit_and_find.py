"""Issue 28, part 2: finding a traceback at 80x24, copying, dialogs that behave, small things.

Pilot against real SQLite files (the seeded six jobs of ``conftest.seed``: job 1 has
failed entities), at 80x24 (a terminal as it opens) and 160x45.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from chunkq.core import Queue
from chunkq.tui import humanize
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.copy_error import CopyScreen
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.widgets.error_tables import ErrorGroups, distinct_messages
from chunkq.tui.dashboard.widgets.job_rows import count_needs, fit_columns, job_cells
from chunkq.tui.dashboard.widgets.jobs_table import JobsTable
from rich.cells import cell_len
from textual.widgets import DataTable

from tests.dashboard.conftest import NEVER, STEPWISE, fixed_clock, refresh, settle
from tests.dashboard.test_detail import open_detail

NARROW = (80, 24)
ROOMY = (160, 45)
SIZES = [NARROW, ROOMY]


def make_app(url: str, **kwargs: object) -> ChunkqApp:
    kwargs.setdefault("refresh_interval", NEVER)
    kwargs.setdefault("clock", fixed_clock)
    return ChunkqApp(url, **kwargs)  # type: ignore[arg-type]


def notes(app: ChunkqApp) -> list[str]:
    return [n.message for n in app._notifications]


def footer_keys(app: ChunkqApp) -> list[str]:
    """The keys the footer shows, and only those drawn whole on the screen."""
    screen = app.screen.region
    return [k.key for k in app.screen.query("FooterKey")  # type: ignore[attr-defined]
            if k.region.area > 0 and screen.contains_region(k.region)]


async def detail(pilot, app: ChunkqApp, job_id: int = 1) -> JobDetailScreen:
    await refresh(pilot, full=True)
    return await open_detail(pilot, job_id)


# ---------------------------------------------------------------------- fit and find


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_enter_on_an_error_opens_its_traceback_and_esc_returns(seeded_url: str,
                                                                      size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        screen = await detail(pilot, app)
        log = screen.query_one("#detail-errors", DataTable)
        pane = screen.query_one("#traceback-pane")
        assert app.focused is log
        await pilot.press("down", "enter")
        await pilot.pause()
        chosen = screen.selected_error()
        assert chosen is not None and screen.error_view.error == chosen
        assert app.focused is pane, "the traceback takes the keys: they scroll it"
        if size == NARROW:
            assert screen.has_class("-zoom")
            assert pane.region.width >= 76 and log.region.width == 0, "full screen below 110 columns"
        else:
            assert not screen.has_class("-zoom")
            assert pane.region.width > 40 and log.region.width > 40, "beside the lists when they fit"
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen, "esc returns to the log, not to the jobs list"
        assert app.focused is log and not screen.has_class("-zoom") and log.region.width > 0


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_traceback_and_copy_keys_are_in_the_detail_footer(seeded_url: str, size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await detail(pilot, app)
        shown = footer_keys(app)
        assert "z" in shown and "y" in shown, shown
        assert "escape" in shown and "q" in shown, "the footer still fits its other keys"


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_y_copies_the_entity_id_message_or_traceback_and_says_what(seeded_url: str,
                                                                         size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        screen = await detail(pilot, app)
        error = screen.selected_error()
        assert error is not None
        for key, expected, said in [
            ("i", error.entity_id, f"copied the entity ID '{error.entity_id}'"),
            ("m", f"{error.error_type}: {error.message}", "copied the message 'ValueError: no company"),
            ("t", error.traceback, f"copied the traceback of error #{error.id}"),
        ]:
            await pilot.press("y")
            await pilot.pause()
            assert isinstance(app.screen, CopyScreen)
            await pilot.press(key)
            await settle(pilot)
            assert app.screen is screen
            assert app.clipboard == expected
            assert any(n.startswith(said) and "to the clipboard" in n for n in notes(app)), notes(app)
        assert "Traceback" in app.clipboard or "ValueError" in app.clipboard
        app.copy_to_clipboard("")
        await pilot.press("y", "escape")
        await settle(pilot)
        assert app.clipboard == "" and app.screen is screen, "esc copies nothing"


LONG_TAILS = """
def process(entity_id, job):
    if entity_id.endswith("1"):
        raise ValueError("the upstream service refused the request because the account is suspended")
    if entity_id.endswith("2"):
        raise ValueError("the upstream service refused the request because the monthly quota is spent")
"""


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_groups_cut_to_the_same_text_show_where_they_differ(sqlite_url: str, make_processor: Callable,
                                                                  size: tuple[int, int]) -> None:
    from chunkq.core import load_processor

    processor = load_processor(make_processor(LONG_TAILS))
    async with Queue(sqlite_url) as q:
        job = await q.enqueue_job([f"e-{i}" for i in range(10)], entity_type="company", provider="p",
                                  chunk_size=10, max_attempts=1)
        await q.process_chunk(job.id, processor)
    app = make_app(sqlite_url)
    async with app.run_test(size=size) as pilot:
        screen = await detail(pilot, app, job.id)
        groups = screen.query_one(ErrorGroups)
        t = groups.table
        assert t.row_count == 2
        width = t.columns["message"].width  # type: ignore[index]
        at = [str(c.key.value) for c in t.ordered_columns].index("message")
        shown = [str(t.get_row_at(i)[at])[:width] for i in range(2)]
        assert shown[0] != shown[1], f"two bugs, two texts at {size}: {shown}"
        assert any("suspended" in s or "account" in s for s in shown), shown


def test_distinct_messages_keep_what_differs_and_leave_the_rest() -> None:
    a = "quota exceeded for account <n> in region eu-west-1"
    b = "quota exceeded for account <n> in region us-east-2"
    assert distinct_messages([a, b, "short"], 20) == ["… region eu-west-1", "… region us-east-2", "short"]
    assert distinct_messages([a, b], 80) == [a, b], "whole messages already differ"
    assert distinct_messages([a, a], 10) == [a, a], "the same text stays as it is"


# ---------------------------------------------------------------------- the jobs list


@pytest.mark.parametrize("size", SIZES)
async def test_the_sort_column_is_marked_and_never_cut(seeded_url: str, size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await refresh(pilot, full=True)
        t = app.jobs_screen.query_one("#jobs", JobsTable)  # type: ignore[union-attr]

        def header(key: str) -> str:
            column = t.columns[key]  # type: ignore[index]
            label = column.label.plain
            assert cell_len(label) <= column.width, f"{label!r} cut to {column.width} at {size}"
            return label

        assert header("status") == "Status ▲", "core's own order is a sort too"
        t.sort_page("errors", True)
        await settle(pilot)
        assert header("errors") == "Errors ▼" and "▲" not in header("status")


@pytest.mark.parametrize("size", SIZES)
async def test_the_page_position_is_never_cut(seeded_url: str, size: tuple[int, int]) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await refresh(pilot, full=True)
        filters = app.jobs_screen.filters  # type: ignore[union-attr]
        filters.page_info = "1–200 of 10,008  ([ ] page)"
        await pilot.pause()
        await pilot.pause()
        info = filters.query_one("#page-info")
        shown = str(info.render())
        assert "1–200 of 10,008" in shown and info.region.right <= app.size.width
        assert info.size.width >= cell_len(shown.strip()), f"{shown!r} cut to {info.size.width} at {size}"
        assert filters.query_one("#search").size.width >= filters.SEARCH_MIN
        if size == ROOMY:
            assert "([ ] page)" in shown, "the paging hint stays when there is room"


def test_done_is_as_wide_while_a_job_runs_and_names_take_the_spare_room() -> None:
    from tests.dashboard.test_table_logic import job

    start = job(1, processed_count=0, total_count=12_000)
    end = job(1, processed_count=12_000, total_count=12_000)
    assert count_needs([], [start])["done"] == count_needs([], [end])["done"] == len("12,000/12,000")
    roomy = fit_columns(198)
    quiet = fit_columns(198, {"note": 5})
    assert quiet["note"] < roomy["note"] and quiet["name"] > roomy["name"], "an empty note column gives way"


def test_names_take_the_room_a_short_note_and_small_ids_leave() -> None:
    """Issue 28: in the demo at 160x45 "Product URLs (priority)" was cut to "Product URLs (priori…" beside a
    "Worker / retries" column wider than any of its notes, and at 80x24 names were cut while the ID column kept
    room for five digits. The demo's page: IDs 1-4, totals up to 2,000, notes up to "paused by an operator"."""
    from tests.dashboard.test_table_logic import job

    names = ["Fortune 500 companies", "Conference attendees", "Product URLs (priority)", "SKU catalogue"]
    jobs = [job(i + 1, name=n, total_count=2_000) for i, n in enumerate(names)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    needs = count_needs([job_cells(j, now, 0.0) for j in jobs], jobs) | {"note": len("paused by an operator")}
    assert needs["name"] == len("Product URLs (priority)")
    wide = fit_columns(158, needs)  # 160 columns, less the scrollbar
    assert wide["name"] >= needs["name"], "every name whole at 160 columns"
    assert wide["note"] == needs["note"], "the note column as wide as its widest note"
    narrow = fit_columns(78, needs)
    assert narrow["id"] == len("ID") and narrow["name"] == 19, "the ID column's spare cells go to the names"
    assert fit_columns(78, needs) == narrow, "the same page lays out the same (stable columns)"
    quiet = fit_columns(158, needs | {"note": 1})
    assert quiet["note"] == len("Worker / retries"), "an empty note column keeps its header whole"


# ---------------------------------------------------------------------- dialogs


@pytest.mark.slow
async def test_y_answers_every_yes_no_question_and_the_quit_dialog(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        for dialog, expected in [
            (ConfirmScreen("Cancel?", "m"), "yes"),
            (ConfirmScreen("Stop?", "m", choices=[("finish", "Stop after chunk", "warning"),
                                                  ("back", "Back", "default")]), "finish"),
            (ConfirmScreen("Quit?", "m", choices=[("finish", "Finish", "primary"), ("release", "Release", "error"),
                                                 ("stay", "Keep running", "default")], yes="finish"), "finish"),
        ]:
            chosen: list[str | None] = []
            app.push_screen(dialog, chosen.append)
            await pilot.pause()
            await pilot.press("y")
            await settle(pilot)
            assert chosen == [expected]


# ---------------------------------------------------------------------- small things


@pytest.mark.parametrize("mark", ["\u200e", "\u200f", "\u061c", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                  "\u2066", "\u2067", "\u2068", "\u2069"])
def test_every_bidi_control_is_made_visible_the_same_way(mark: str) -> None:
    escaped = f"\\u{ord(mark):04x}"
    assert humanize.printable(f"a{mark}b") == f"a{escaped}b"
    assert humanize.printable(f"a{mark}b\nc", lines=True) == f"a{escaped}b\nc"
    assert humanize.json_text(f"a{mark}b") == f'"a{escaped}b"'
    assert humanize.printable("مرحبا שלום") == "مرحبا שלום", "right-to-left text itself is left alone"


def test_the_palette_and_help_list_quit_once() -> None:
    for scope in (commands.JOBS, commands.DETAIL, commands.WORKERS):
        titles = [c.title for c in commands.available(scope) if not c.alias]
        assert titles.count("Quit") == 1, scope
        assert commands.help_markdown(scope).count("**Quit**") == 1


@pytest.mark.slow
async def test_the_palette_offers_quit_once(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"quit")
        for _ in range(50):
            await pilot.pause(0.02)
        from textual.command import CommandList

        options = app.screen.query_one(CommandList)
        found = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert sum(1 for f in found if f.split("\n")[0].strip().lower() == "quit") == 1, found


@pytest.mark.slow
async def test_a_processor_never_needed_for_copy(seeded_url: str) -> None:
    """Copy works while only watching (no ``--processor``): it reads what is stored."""
    app = make_app(seeded_url)
    async with app.run_test(size=ROOMY) as pilot:
        await detail(pilot, app)
        assert app.processor_handle is None
        await pilot.press("y", "i")
        await settle(pilot)
        assert app.clipboard.startswith("company-")




def test_counts_of_one_are_singular() -> None:
    from chunkq.core import ErrorGroup
    from chunkq.tui.dashboard.widgets.error_tables import ErrorPage, errors_caption
    from chunkq.tui.dashboard.widgets.history import captions, series

    from tests.dashboard.test_workers_logic import bucket

    assert captions(series([bucket(60, 1, 1)]))[1:] == ("1 call", "1 failed call")
    assert captions(series([bucket(60, 2, 2)]))[1:] == ("2 calls", "2 failed calls")
    group = ErrorGroup(fingerprint="f", error_type="ValueError", message="boom", count=1, entities=1,
                       first_at=fixed_clock(), last_at=fixed_clock())
    caption = errors_caption(ErrorPage((), 0, group, 1))
    assert "(1 entity)" in caption and "entities" not in caption


@pytest.mark.slow
async def test_help_scrolls_with_the_keys_it_lists(seeded_url: str) -> None:
    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        body = app.screen.query_one("#help-body")
        assert app.focused is body and body.max_scroll_y > 0
        for key, where in [("j", 1), ("j", 2), ("k", 1), ("G", body.max_scroll_y), ("g", 0), ("end", body.max_scroll_y),
                           ("home", 0)]:
            await pilot.press(key)
            await pilot.pause()
            assert body.scroll_y == where, f"{key} in help"
        await pilot.press("pagedown")
        await pilot.pause()
        assert body.scroll_y > 2


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_the_activity_log_reflows_and_folds_a_long_id_to_one_line(seeded_url: str,
                                                                         size: tuple[int, int]) -> None:
    from chunkq.core import EntityResult
    from chunkq.tui.dashboard.messages import EntityDone
    from chunkq.tui.dashboard.widgets.activity_log import ID_CELLS, ActivityLog, fold_id

    long_id = "https://example.com/" + "x" * 300 + "/end"
    assert cell_len(fold_id(long_id)) == ID_CELLS and fold_id(long_id).endswith("/end")
    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await refresh(pilot, full=True)
        log = app.screen.query_one(ActivityLog)
        log.clear()
        log.show(EntityDone(1, EntityResult(long_id, True, duration=0.01)))
        note = "a note long enough to wrap at eighty columns: " + "word " * 20
        log.note(note)
        await pilot.pause()
        assert "…" in log.lines[0].text and "/end" in log.lines[0].text, "the long ID on one line"
        assert "word" not in log.lines[0].text
        before = len(log.lines)
        await pilot.resize_terminal(200 if size == NARROW else 80, size[1])
        await settle(pilot)
        await pilot.pause()
        after = len(log.lines)
        assert (after < before) if size == NARROW else (after > before), "the note is wrapped again at the new width"
        assert "…" in log.lines[0].text and "/end" in log.lines[0].text


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_esc_on_a_filled_enqueue_form_asks_before_discarding(seeded_url: str, size: tuple[int, int]) -> None:
    from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
    from textual.widgets import Input

    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.jobs_screen, "an untouched form closes at once"
        await pilot.press("n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, EnqueueScreen)
        form.query_one("#provider", Input).value = "clearbit"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "Discard" in app.screen.title_text
        assert app.focused is not None and app.focused.id == "choice-no", "Enter keeps the form"
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is form and form.query_one("#provider", Input).value == "clearbit"
        await pilot.press("escape", "y")
        await settle(pilot)
        assert app.screen is app.jobs_screen
        assert await app.queue.count_jobs() == 6, "nothing was enqueued"


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
async def test_the_chunks_tab_and_the_workers_table_fit_their_key_columns(seeded_url: str,
                                                                          size: tuple[int, int]) -> None:
    from chunkq.tui.dashboard.widgets.chunk_history import ChunkHistory

    app = make_app(seeded_url)
    async with app.run_test(size=size) as pilot:
        screen = await detail(pilot, app)
        await pilot.press("2")
        await settle(pilot)
        chunks = screen.query_one(ChunkHistory)
        assert chunks.row_count > 0

        def fitting(table: DataTable) -> list[str]:
            """The columns drawn whole inside the table's visible width."""
            room, x, shown = table.scrollable_content_region.width, 0, []
            for column in table.ordered_columns:
                x += column.get_render_width(table)
                if x <= room:
                    shown.append(str(column.key.value))
            return shown

        assert {"index", "state", "ok", "errors", "size", "duration", "worker"} <= set(fitting(chunks))
        await pilot.press("escape", "w")
        await settle(pilot)
        workers = app.screen.query_one(DataTable)
        assert {"worker", "state", "beat", "job", "chunks", "done", "failed"} <= set(fitting(workers))


@pytest.mark.slow
async def test_a_status_filter_that_hides_auto_runs_job_says_so(sqlite_url: str, make_processor) -> None:
    import asyncio
    import importlib

    path = make_processor(STEPWISE)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=NARROW) as pilot:
        job = await app.queue.enqueue_job([f"id-{i}" for i in range(8)], entity_type="company", provider="t",
                                          chunk_size=2)
        await refresh(pilot, full=True)
        await pilot.press("a")
        for _ in range(2):
            mod.gate.release()
        screen = app.jobs_screen
        for _ in range(500):
            if screen.auto_run_job == job.id:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.02)
        assert screen.auto_run_job == job.id  # type: ignore[union-attr]
        await pilot.press("f", "f", "f", "f")  # all -> pending -> running -> paused -> failed

        def said() -> list[str]:
            return [n for n in notes(app) if "auto-run works on job" in n]

        for _ in range(500):  # the filter's own poll (settle() would wait for auto-run to end)
            if any("status failed" in n for n in said()):
                break
            await pilot.pause(0.02)
        last = said()[-1]
        assert f"job {job.id}" in last and "(status failed)" in last, notes(app)
        assert len(said()) == len(set(said())), "once per filter"
        count = len(said())
        polls = screen.polls  # type: ignore[union-attr]
        screen.poll(full=True)  # type: ignore[union-attr]
        for _ in range(500):
            if screen.polls > polls:  # type: ignore[union-attr]
                break
            await pilot.pause(0.02)
        assert len(said()) == count, "said once per filter, not at every poll"
        for _ in range(10):
            mod.gate.release()
        app.stop_auto_run() if hasattr(app, "stop_auto_run") else app.action_toggle_auto_run()
        for _ in range(500):
            if not app.processing:
                break
            await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_the_moving_keys_type_in_a_text_area(seeded_url: str) -> None:
    """j/k/g/G scroll panes (help, a traceback), but the IDs box is a text area: there they are letters."""
    from textual.widgets import TextArea

    app = make_app(seeded_url)
    async with app.run_test(size=NARROW) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pilot.pause()
        box = app.screen.query_one("#ids", TextArea)
        box.focus()
        await pilot.pause()
        await pilot.press("j", "k", "g", "G", "home", "x")
        await pilot.pause()
        assert box.text == "xjkgG", "Home went to the line's start, the letters were typed"


@pytest.mark.slow
async def test_auto_run_claims_nothing_while_the_quit_dialog_is_open(sqlite_url: str, make_processor) -> None:
    import asyncio
    import importlib

    path = make_processor(STEPWISE)
    mod = importlib.import_module(path.split(":")[0])
    app = make_app(sqlite_url, processor=path)
    async with app.run_test(size=NARROW) as pilot:
        job = await app.queue.enqueue_job([f"id-{i}" for i in range(8)], entity_type="company", provider="t",
                                          chunk_size=2)
        await refresh(pilot, full=True)
        await pilot.press("a")
        assert await asyncio.to_thread(mod.started.wait, 10)
        await pilot.press("q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen) and "claims no other chunk" in dialog.message
        for _ in range(20):  # enough for every entity: only the chunk in flight may use any
            mod.gate.release()
        for _ in range(250):
            if "1 chunk done so far" in dialog.message:
                break
            await pilot.pause(0.02)
        assert "1 chunk done so far" in dialog.message
        await asyncio.sleep(0.5)  # time for a claim, were one to come
        held = await app.queue.get_job(job.id)
        assert (held.processed_count, held.leased_chunks) == (2, 0), "nothing claimed behind the question"
        await pilot.press("escape")  # keep running: claims go on
        for _ in range(500):
            if (await app.queue.get_job(job.id)).processed_count > 2:
                break
            await pilot.pause(0.02)
        assert (await app.queue.get_job(job.id)).processed_count > 2
        app.stop_auto_run()
        for _ in range(500):
            if not app.processing:
                break
            await pilot.pause(0.02)
