"""Errors grouped by bug, acted on as a group, searched; auto-run's breakpoint; dry-run failures opened.

Driven with Pilot against a real database (SQLite file and PostgreSQL) and the
callback in ``enrich_example.py``, copied into tmp_path as ``enrich.py`` and run
from there: its provider's messages carry the entity, a URL and a request id,
as real ones do, so grouping by the exact message would make a group per entity.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from chunkq.core import Job, Queue, load_processor
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.dry_run import DryRunScreen
from chunkq.tui.dashboard.screens.export import ExportScreen
from chunkq.tui.dashboard.widgets.error_tables import ErrorGroups
from rich.cells import cell_len
from textual.pilot import Pilot
from textual.widgets import DataTable, Input

from tests.dashboard import enrich_example
from tests.dashboard.conftest import SEED_AT, settle, wait_auto_run_over
from tests.dashboard.test_app import notes
from tests.dashboard.test_detail import column, detail_app, open_detail, reload, static_text, table, wait_loaded

SIZE = (160, 45)
ENRICH = Path(enrich_example.__file__).read_text()


def install_enrich(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``enrich.py`` in tmp_path, run from there: tracebacks read ``enrich.py:<line>`` everywhere."""
    monkeypatch.chdir(tmp_path)
    return make_processor(ENRICH, name="enrich")


@pytest.fixture
def enrich(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_enrich(make_processor, tmp_path, monkeypatch)


def mixed_ids() -> list[str]:
    """40 companies: 10 behind an upstream 500, 5 the provider has never heard of, 5 without an e-mail."""
    kinds = ["down", "down", "gone", "noemail", "ok", "ok", "ok", "ok"]
    return [f"{kinds[i % 8]}-{i:03d}.com" for i in range(40)]


async def seed_mixed(url: str, path: str) -> Job:
    proc = load_processor(path)
    async with Queue(url, clock=lambda: SEED_AT, owner="worker-a:4242:0badcafe") as q:
        job = await q.enqueue_job(mixed_ids(), entity_type="company", provider="clearbit", chunk_size=10,
                                  name="Fortune 500 companies")
        for _ in range(4):
            await q.process_chunk(job.id, proc)
        return await q.get_job(job.id)


@asynccontextmanager
async def running(url: str, processor: str | None, job_id: int
                  ) -> AsyncIterator[tuple[ChunkqApp, Pilot[None], JobDetailScreen]]:
    app = detail_app(url, processor)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job_id)
        yield app, pilot, screen


#: each bug of ``enrich.py`` by the start of its normalised message
BUGS = {"down-": "upstream 500", "gone-": "404 Not Found", "noemail-": "'email'"}


def group_row_of(screen: JobDetailScreen, prefix: str) -> int:
    """The grouped table's row of the bug that entities starting with ``prefix`` hit."""
    return column(table(screen, "detail-groups"), "message").index(
        next(m for m in column(table(screen, "detail-groups"), "message") if m.startswith(BUGS[prefix])))


async def drill_into(pilot: Pilot[None], screen: JobDetailScreen, prefix: str) -> None:
    groups = table(screen, "detail-groups")
    groups.focus()
    groups.move_cursor(row=group_row_of(screen, prefix))
    before = screen.loads
    await pilot.press("enter")
    await wait_loaded(pilot, screen, before)
    assert screen.error_filter is not None


# ---------------------------------------------------------------------- one group per bug


@pytest.mark.slow
async def test_messages_with_ids_and_urls_make_one_group_per_bug(db_url: str, enrich: str) -> None:
    job = await seed_mixed(db_url, enrich)
    assert job.failed_count == 20
    async with running(db_url, enrich, job.id) as (_app, pilot, screen):
        groups = table(screen, "detail-groups")
        shown = screen.query_one("#error-groups").groups[0]  # type: ignore[attr-defined]
        rows = sorted((g.entities, g.count, g.error_type, g.message, g.location) for g in shown)
        assert rows == [
            (5, 5, "KeyError", "'email'", "enrich.py:process"),
            (5, 5, "enrich.ProviderError",
             "404 Not Found: https://api.example.com/v2/companies/<id> (request req_<ref>)", "enrich.py:fetch"),
            (10, 10, "enrich.ProviderError",
             "upstream 500 for <id>: GET https://api.example.com/v2/companies/<id>?key=<val>", "enrich.py:fetch"),
        ]
        assert sorted(zip(column(groups, "entities"), column(groups, "count"), column(groups, "type"), strict=True)
                      ) == [("10", "10", "ProviderError"), ("5", "5", "KeyError"), ("5", "5", "ProviderError")]
        assert column(groups, "message")[0].startswith("upstream 500 for <id>: GET https://api.example.com/v2/")
        assert "(3 bugs)" in str(screen.query_one("#groups-caption").render())
        # the highlighted group shows what the provider really said
        groups.focus()
        groups.move_cursor(row=group_row_of(screen, "down-"))
        await settle(pilot)
        samples = static_text(screen, "group-samples")
        assert "in enrich.py:fetch · e.g. upstream 500 for down-000.com: GET https://api.example.com/v2/" in samples

        await drill_into(pilot, screen, "gone-")
        assert column(table(screen, "detail-errors"), "entity") == [f"gone-{i:03d}.com" for i in range(2, 40, 8)]
        assert "(5 entities)" in str(screen.query_one("#errors-caption").render())


# ---------------------------------------------------------------------- acting on one group


async def answer(pilot: Pilot[None], app: ChunkqApp, key: str, screen: JobDetailScreen) -> str:
    """Press ``key``, read the dialog's title, confirm it, wait for the action and the reload."""
    await pilot.press(key)
    await settle(pilot)
    dialog = app.screen
    assert isinstance(dialog, ConfirmScreen)
    title = dialog.title_text
    before = screen.loads
    await pilot.press("y")
    await settle(pilot)
    await wait_loaded(pilot, screen, before)
    return title


@pytest.mark.slow
async def test_requeue_and_retry_in_a_drill_down_touch_only_that_groups_entities(db_url: str, enrich: str) -> None:
    job = await seed_mixed(db_url, enrich)
    down = [i for i in mixed_ids() if i.startswith("down-")]
    gone = [i for i in mixed_ids() if i.startswith("gone-")]
    async with running(db_url, enrich, job.id) as (app, pilot, screen):
        await drill_into(pilot, screen, "down-")
        title = await answer(pilot, app, "u", screen)
        assert title == f"Requeue the 10 entities of this group into job {job.id}?"
        after = await app.queue.get_job(job.id)
        # the 10 entities behind the outage wait again; the 404s and missing e-mails stay failed
        assert (after.status, after.failed_count, after.processed_count) == ("pending", 10, 30)
        assert any(n.startswith("requeued the failed entities of ProviderError: upstream 500") for n in notes(app))

        await pilot.press("escape")  # out of the drill-down
        await wait_loaded(pilot, screen)
        assert screen.error_filter is None
        await drill_into(pilot, screen, "gone-")
        title = await answer(pilot, app, "r", screen)
        assert title == "Retry the 5 entities of this group as a new job?"
        retry = max(await app.queue.list_jobs(limit=10), key=lambda j: j.id)
        assert retry.parent_id == job.id and retry.id != job.id
        assert sorted(await app.queue.entity_ids(retry.id)) == gone
        assert (await app.queue.get_job(job.id)).failed_count == 10  # the job itself is unchanged
    # nothing else was touched: the requeued entities are exactly the outage's
    async with Queue(db_url) as q:
        assert sorted(await q.group_entities(job.id, screen.error_filter.fingerprint)) == gone  # type: ignore[union-attr]
        redo = await q.process_chunk(job.id, load_processor(enrich))
        assert redo is not None and redo.processed == 10
        assert sorted(e.entity_id for e in await q.list_errors(job.id, limit=1000) if e.chunk_index == redo.chunk_index
                      ) == down


@pytest.mark.slow
async def test_u_with_the_grouped_table_focused_asks_about_that_group_and_back_changes_nothing(
    sqlite_url: str, enrich: str
) -> None:
    job = await seed_mixed(sqlite_url, enrich)
    async with running(sqlite_url, enrich, job.id) as (app, pilot, screen):
        groups = table(screen, "detail-groups")
        groups.focus()
        groups.move_cursor(row=group_row_of(screen, "noemail-"))
        await pilot.press("u")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text == f"Requeue the 5 entities of this group into job {job.id}?"
        assert "KeyError: 'email'" in app.screen.message
        await pilot.press("enter")  # the focused button is Back
        await settle(pilot)
        assert app.screen is screen
        assert (await app.queue.get_job(job.id)).failed_count == 20
        # with the error log focused, u is about the whole job again
        table(screen, "detail-errors").focus()
        await pilot.press("u")
        await settle(pilot)
        assert app.screen.title_text == f"Requeue the failed entities of job {job.id}?"  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_export_in_a_drill_down_writes_only_that_group(sqlite_url: str, enrich: str, tmp_path: Path) -> None:
    job = await seed_mixed(sqlite_url, enrich)
    async with running(sqlite_url, enrich, job.id) as (app, pilot, screen):
        await drill_into(pilot, screen, "noemail-")
        await pilot.press("x")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ExportScreen) and dialog.count == 5
        assert "one group of job" in str(dialog.query_one("#export-title").render())
        dialog.query_one(Input).value = "noemail.jsonl"
        await pilot.press("enter")
        await settle(pilot)
    lines = [json.loads(line) for line in (tmp_path / "noemail.jsonl").read_text().splitlines()]
    assert sorted(e["entity_id"] for e in lines) == [f"noemail-{i:03d}.com" for i in range(3, 40, 8)]
    assert {e["error_type"] for e in lines} == {"KeyError"}


# ---------------------------------------------------------------------- search


@pytest.mark.slow
async def test_search_by_entity_or_text_and_esc_clears_it(db_url: str, enrich: str) -> None:
    job = await seed_mixed(db_url, enrich)
    async with running(db_url, enrich, job.id) as (_app, pilot, screen):
        await pilot.press("slash")
        await settle(pilot)
        box = screen.query_one("#error-search", Input)
        assert box.has_focus
        before = screen.loads
        await pilot.press(*"GONE-010")  # case-insensitive, part of an entity ID
        await wait_loaded(pilot, screen, before)
        await reload(pilot, screen)
        assert screen.error_search == "GONE-010"
        assert column(table(screen, "detail-errors"), "entity") == ["gone-010.com"]
        assert len(table(screen, "detail-groups").rows) == 1
        assert "matching 'GONE-010'" in str(screen.query_one("#errors-caption").render())

        box.value = "upstream 500"  # message text
        await settle(pilot)
        await reload(pilot, screen)
        assert len(table(screen, "detail-errors").rows) == 10

        await pilot.press("escape")
        await settle(pilot)
        await reload(pilot, screen)
        assert screen.error_search is None and box.value == "" and not box.has_focus
        assert len(table(screen, "detail-errors").rows) == 20 and pilot.app.screen is screen


# ---------------------------------------------------------------------- the breakpoint


def breakpoint_ids() -> list[str]:
    """Chunks of 5: two clean, then an outage (new), a clean one, the outage again (not new) with a 404 (new)."""
    chunk = [f"ok-{i}.com" for i in range(5)]
    return [*chunk, *(f"ok-{i}.com" for i in range(5, 10)),
            "ok-10.com", "down-11.com", "ok-12.com", "down-13.com", "ok-14.com",
            *(f"ok-{i}.com" for i in range(15, 20)),
            "down-20.com", "ok-21.com", "gone-22.com", "ok-23.com", "ok-24.com",
            *(f"ok-{i}.com" for i in range(25, 30))]


def record_notes(app: ChunkqApp) -> list[str]:
    """Every notification the app makes from now on (``notes`` lists only those not expired yet: on a loaded
    machine a run and a reload outlast a notification's 5 s)."""
    said: list[str] = []
    notify = app.notify

    def record(message: str, *args: object, **kwargs: object) -> None:
        said.append(message)
        notify(message, *args, **kwargs)  # type: ignore[arg-type]

    app.notify = record  # type: ignore[method-assign]
    return said


@pytest.mark.slow
async def test_breakpoint_stops_auto_run_at_the_first_new_kind_of_error(db_url: str, enrich: str) -> None:
    app = detail_app(db_url, enrich)
    said = record_notes(app)
    async with app.run_test(size=SIZE) as pilot:
        job = await app.queue.enqueue_job(breakpoint_ids(), entity_type="company", provider="clearbit",
                                          chunk_size=5)
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert app.breakpoint and "breakpoint: new for job" in app.sub_title

        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        after = await app.queue.get_job(job.id)
        assert after.processed_count == 15, "auto-run stopped right after the chunk with the new error"
        screen = app.screen
        assert isinstance(screen, JobDetailScreen) and screen.job_id == job.id
        await wait_loaded(pilot, screen)
        assert screen.error_filter is not None and screen.error_filter.entities == 2
        assert screen.error_filter.message.startswith("upstream 500 for <id>")
        assert column(table(screen, "detail-errors"), "entity") == ["down-11.com", "down-13.com"]
        # issue 27: the highlighted group is the one opened, as the caption and the list say
        assert screen.query_one(ErrorGroups).selected_group() == screen.error_filter
        assert any("breakpoint: job" in n for n in said), said

        # again: the outage is known now, so only the 404 (new) stops it
        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        assert (await app.queue.get_job(job.id)).processed_count == 25
        await wait_loaded(pilot, screen)
        assert app.screen is screen and screen.error_filter is not None
        assert screen.error_filter.message.startswith("404 Not Found")
        assert screen.query_one(ErrorGroups).selected_group() == screen.error_filter

        # off: auto-run goes through to the end
        await pilot.press("b")
        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        assert (await app.queue.get_job(job.id)).status == "complete"
        assert "breakpoint" not in app.sub_title


@pytest.mark.slow
async def test_breakpoint_new_for_the_processor_goes_past_a_bug_another_job_logged(db_url: str, enrich: str) -> None:
    """``B``: new to the processor. Yesterday's job (routed to none, like today's: one processor) had the
    outage, so auto-run goes past it and stops at the 404; ``B`` again is new to the job, ``b`` turns it off."""
    app = detail_app(db_url, enrich)
    said = record_notes(app)
    async with app.run_test(size=SIZE) as pilot:
        yesterday = await app.queue.enqueue_job(["ok-1.com", "down-2.com"], entity_type="company",
                                                provider="clearbit", chunk_size=5)
        assert (await app.queue.process_chunk(yesterday.id, load_processor(enrich))) is not None
        job = await app.queue.enqueue_job(breakpoint_ids(), entity_type="company", provider="clearbit",
                                          chunk_size=5)
        await settle(pilot)
        await pilot.press("B")
        await settle(pilot)
        assert (app.breakpoint, app.breakpoint_scope) == (True, "processor")
        assert "⏸ breakpoint: new for processor" in app.sub_title
        # what is on before where: at 80 columns the header keeps its first ~60 cells, and a long
        # database path goes before the breakpoint does
        header = app.format_title(app.title, app.sub_title).plain
        assert header.index("breakpoint: new for processor") + 30 <= 60, header
        assert any("new to the job's processor" in n for n in said), said

        await pilot.press("a")
        await wait_auto_run_over(pilot, app)
        assert (await app.queue.get_job(job.id)).processed_count == 25, "past the outage, stopped at the 404"
        screen = app.screen
        assert isinstance(screen, JobDetailScreen) and screen.job_id == job.id
        await wait_loaded(pilot, screen)
        assert screen.error_filter is not None and screen.error_filter.message.startswith("404 Not Found")
        assert screen.query_one(ErrorGroups).selected_group() == screen.error_filter
        assert any("breakpoint: job" in n and "new to the job's processor" in n for n in said), said

        await pilot.press("B")
        await settle(pilot)
        assert (app.breakpoint, app.breakpoint_scope) == (True, "job")
        assert "⏸ breakpoint: new for job" in app.sub_title
        await pilot.press("b")
        await settle(pilot)
        assert not app.breakpoint and "breakpoint" not in app.sub_title
        await pilot.press("b")  # back on: in the scope chosen last
        await settle(pilot)
        assert "⏸ breakpoint: new for job" in app.sub_title


GATED = """
import threading

GATE = threading.Event()


def process(eid, job):
    if eid == "first":
        GATE.wait(30)
    if eid.startswith("bad"):
        raise ValueError(f"bad row {eid}")
"""


@pytest.mark.slow
async def test_b_and_B_reach_an_auto_run_already_going(sqlite_url: str, make_processor: Callable[..., str]) -> None:
    """Turned on while auto-run runs its first chunk: the worker takes it (on its own loop) and stops after
    the chunk with the new kind of error (a sync callback: one chunk at a time)."""
    app = detail_app(sqlite_url, make_processor(GATED))
    async with app.run_test(size=SIZE) as pilot:
        ids = ["first", "ok-1", "bad-2", *(f"ok-{i}" for i in range(3, 13))]
        job = await app.queue.enqueue_job(ids, entity_type="row", provider="p", chunk_size=1)
        await settle(pilot)
        await pilot.press("a")
        worker = app.auto_worker
        assert worker is not None and not worker.stop_on_new_error
        await pilot.press("B")
        for _ in range(500):  # not settle(): it waits for auto-run to end
            await pilot.pause(0.01)
            if worker.stop_on_new_error:
                break
        assert (worker.stop_on_new_error, worker.new_error_scope) == (True, "processor")
        assert worker.summary.chunks == 0, "armed while the first chunk still ran"
        assert app.processor_handle is not None
        app.processor_handle.processor.on_process.__globals__["GATE"].set()  # type: ignore[union-attr]
        await wait_auto_run_over(pilot, app)
        (group,) = await app.queue.group_errors(job.id)
        assert app.breakpoint_hit == (job.id, group.fingerprint)
        assert (await app.queue.get_job(job.id)).processed_count == 3


# ---------------------------------------------------------------------- dry-run failures


@pytest.mark.slow
async def test_dry_run_failures_open_like_stored_errors(sqlite_url: str, enrich: str) -> None:
    app = detail_app(sqlite_url, enrich)
    async with app.run_test(size=SIZE) as pilot:
        job = await app.queue.enqueue_job(["ok-1.com", "org-2", "blank-3", "multi-4"], entity_type="company",
                                          provider="clearbit", chunk_size=10)
        screen = await open_detail(pilot, job.id)
        await pilot.press("S")
        await settle(pilot)
        await pilot.press("D")
        await settle(pilot)
        dry = app.screen
        assert isinstance(dry, DryRunScreen)
        results = dry.query_one("#dry-run-results", DataTable)
        assert column(results, "entity") == ["org-2", "blank-3", "multi-4", "ok-1.com"]  # failures first
        text = static_text(dry, "detail-traceback")  # type: ignore[arg-type]
        assert "dry-run failure  entity org-2  ·  nothing was stored" in text
        assert "more calls of walk" in text and "RecursionError: org chart deeper than 60 levels" in text
        results.move_cursor(row=1)
        await settle(pilot)
        assert "ValueError (no message)" in static_text(dry, "detail-traceback")  # type: ignore[arg-type]
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen
        assert await app.queue.list_errors(job.id) == []


async def seed_103_bugs(url: str) -> Job:
    """One job, 103 bugs of two entities each: a page of groups (100) and three more. Cheap: the fingerprint is
    set by the callback (``fingerprint_as``), so no message template has to be learnt."""
    from chunkq.core import fingerprint_as

    def bugs(entity_id: str, _job: object) -> None:
        n = int(entity_id.split("-")[1])
        raise fingerprint_as(ValueError(f"case {n}"), f"bug-{n % 103}")

    async with Queue(url, clock=lambda: SEED_AT, breaker_chunks=10**6) as q:
        job = await q.enqueue_job([f"e-{i}" for i in range(206)], entity_type="company", provider="p",
                                  chunk_size=103)
        for _ in range(2):
            await q.process_chunk(job.id, bugs)
        assert (await q.error_group_page(job.id, limit=1)).total == 103
        return await q.get_job(job.id)


def group_keys(screen: JobDetailScreen) -> list[str]:
    return [str(key.value) for key in table(screen, "detail-groups").rows]


def caption_fits(screen: JobDetailScreen) -> str:
    """The grouped table's caption, asserted whole on screen (never cut)."""
    label = screen.query_one("#groups-caption")
    text = str(label.render())
    assert cell_len(text) <= label.content_region.width, f"{text!r} cut to {label.content_region.width}"
    return text


@pytest.mark.slow
async def test_the_caption_counts_every_bug_not_the_page(db_url: str) -> None:
    """Issue 27: 103 bugs read "103 bugs" and which are listed, never "100 bugs"."""
    job = await seed_103_bugs(db_url)
    async with running(db_url, None, job.id) as (_app, _pilot, screen):
        assert "Unresolved errors by bug: 1–100 of 103 bugs  ] next page" in caption_fits(screen)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_the_grouped_table_pages_through_every_bug(db_url: str, size: tuple[int, int]) -> None:
    """Issue 27, "counts are whole": ] and [ on the grouped table page through all 103 groups, as they page the
    log; the caption says which are listed and is never cut; enter on a row of the next page opens that group."""
    job = await seed_103_bugs(db_url)
    app = detail_app(db_url, None)
    async with app.run_test(size=size) as pilot:
        screen = await open_detail(pilot, job.id)
        first = group_keys(screen)
        assert len(first) == 100
        table(screen, "detail-groups").focus()
        before = screen.loads
        await pilot.press("right_square_bracket")
        await wait_loaded(pilot, screen, before)
        second = group_keys(screen)
        assert len(second) == 3 and not set(first) & set(second)
        assert len(set(first) | set(second)) == 103, "every bug is on one page or the other"
        assert "101–103 of 103 bugs" in caption_fits(screen)
        assert screen.page_offset == 0 and screen.error_filter is None

        # the highlighted row is the group enter opens: the log below shows its errors and only them
        groups = table(screen, "detail-groups")
        groups.move_cursor(row=1)
        await settle(pilot)
        highlighted = screen.query_one(ErrorGroups).selected_group()
        assert highlighted is not None and highlighted.fingerprint == second[1]
        before = screen.loads
        await pilot.press("enter")
        await wait_loaded(pilot, screen, before)
        assert screen.error_filter is not None and screen.error_filter.fingerprint == second[1]
        shown_errors = screen.error_log.page.errors
        assert len(shown_errors) == 2 and {e.fingerprint for e in shown_errors} == {second[1]}
        assert screen.query_one(ErrorGroups).selected_group() == screen.error_filter
        assert group_keys(screen) == second, "the drill-down stays on the page it was opened from"

        # back: the first page again, from its top; the drill-down ends with the page
        groups.focus()
        before = screen.loads
        await pilot.press("left_square_bracket")
        await wait_loaded(pilot, screen, before)
        assert group_keys(screen) == first and screen.error_filter is None
        assert groups.cursor_row == 0
        assert "1–100 of 103 bugs" in caption_fits(screen)
        await pilot.press("left_square_bracket")  # on the first page: nothing to go back to
        await settle(pilot)
        assert group_keys(screen) == first

        # with the log focused the same keys page the log (206 errors), not the groups
        screen.errors_pane.focus_log()
        before = screen.loads
        await pilot.press("right_square_bracket")
        await wait_loaded(pilot, screen, before)
        assert screen.page_offset == 100 and group_keys(screen) == first


@pytest.mark.slow
async def test_a_group_opened_by_fingerprint_shows_the_page_that_lists_it(db_url: str) -> None:
    """The breakpoint opens a group by fingerprint: on whichever page of groups it is, that page is shown with
    its row highlighted, and the log lists its errors (issue 27: caption, row and list describe one group)."""
    job = await seed_103_bugs(db_url)
    async with running(db_url, None, job.id) as (_app, pilot, screen):
        async with Queue(db_url) as q:
            last = (await q.error_group_page(job.id, offset=100)).groups[-1].fingerprint
        assert last not in group_keys(screen)
        before = screen.loads
        screen.open_group = last
        screen.reload(force=True)
        await wait_loaded(pilot, screen, before)
        assert last in group_keys(screen) and len(group_keys(screen)) == 3
        assert screen.error_filter is not None and screen.error_filter.fingerprint == last
        assert screen.query_one(ErrorGroups).selected_group() == screen.error_filter
        assert {e.fingerprint for e in screen.error_log.page.errors} == {last}
        assert "101–103 of 103 bugs" in caption_fits(screen)


@pytest.mark.slow
async def test_the_last_column_ages_while_nothing_changes(db_url: str, enrich: str) -> None:
    """Issue 27: an idle job's groups said "0s" for nine minutes; each poll now measures from the poll's time."""
    from datetime import timedelta

    from chunkq.core import ProcessorOptions

    from tests.dashboard.conftest import FIXED_NOW, NEVER

    job = await seed_mixed(db_url, enrich)
    now = [FIXED_NOW]
    app = ChunkqApp(db_url, processor=enrich, options=ProcessorOptions(), clock=lambda: now[0],
                    refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(pilot, job.id)
        before = set(column(table(screen, "detail-groups"), "last"))
        assert before == {"1h"}
        now[0] = FIXED_NOW + timedelta(hours=2)
        loads = screen.loads
        screen.reload()  # not forced, the job unchanged: no group is read again
        await wait_loaded(pilot, screen, loads)
        assert set(column(table(screen, "detail-groups"), "last")) == {"3h"}


@pytest.mark.slow
async def test_m_merges_two_groups_and_shift_m_splits_them_again(db_url: str, enrich: str) -> None:
    """Issue 27: the operator says two groups are one bug from the dashboard, and undoes it."""
    job = await seed_mixed(db_url, enrich)
    async with running(db_url, enrich, job.id) as (_app, pilot, screen):
        groups = table(screen, "detail-groups")
        groups.focus()
        groups.move_cursor(row=group_row_of(screen, "gone-"))
        await pilot.press("m")
        groups.move_cursor(row=group_row_of(screen, "noemail-"))
        await pilot.press("m")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        for _ in range(100):
            await settle(pilot)
            if "(2 bugs)" in str(screen.query_one("#groups-caption").render()):
                break
            await asyncio.sleep(0.02)
        assert "(2 bugs)" in str(screen.query_one("#groups-caption").render())
        async with Queue(db_url) as q:
            merged = [g for g in await q.group_errors(job.id) if g.merged]
        assert len(merged) == 1 and merged[0].error_type == "KeyError" and merged[0].count == 10
        groups.focus()
        groups.move_cursor(row=column(groups, "type").index("KeyError"))
        await pilot.press("M")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("y")
        for _ in range(100):
            await settle(pilot)
            if "(3 bugs)" in str(screen.query_one("#groups-caption").render()):
                break
            await asyncio.sleep(0.02)
        assert "(3 bugs)" in str(screen.query_one("#groups-caption").render())


@pytest.mark.slow
async def test_the_errors_pane_posts_one_query_changed_per_change_and_none_for_a_read(sqlite_url: str) -> None:
    """Issue 30: the Errors tab owns its query and says when the operator changes it (one typed message per
    change, which the screen reads on); the screen's own reads - counts moving on, a page read - ask for nothing."""
    from chunkq.tui.dashboard.widgets.errors_pane import ErrorsPane

    job = await seed_103_bugs(sqlite_url)
    seen: dict[int, ErrorsPane.QueryChanged] = {}

    def hook(message: object) -> None:
        if isinstance(message, ErrorsPane.QueryChanged):
            seen[id(message)] = message  # (a message bubbling up is posted again: count it once)

    app = detail_app(sqlite_url, None)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # opened by the app (a screen pushed from the test's task escapes the hook)
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, JobDetailScreen) and screen.job_id == job.id
        await wait_loaded(pilot, screen)
        await reload(pilot, screen)
        assert not seen, "reads ask for no other read"
        groups = table(screen, "detail-groups")
        groups.focus()
        groups.move_cursor(row=2)
        before = screen.loads
        await pilot.press("enter")
        await wait_loaded(pilot, screen, before)
        chosen = screen.error_filter
        assert chosen is not None and chosen.fingerprint == group_keys(screen)[2]
        assert [m.query.fingerprint for m in seen.values()] == [chosen.fingerprint]
        assert all(m.control is screen.errors_pane for m in seen.values())

        seen.clear()
        await pilot.press("slash", "4")
        await settle(pilot)
        assert [(m.query.search, m.query.offset, m.query.group_offset) for m in seen.values()] == [("4", 0, 0)]
        assert screen.error_search == "4"
