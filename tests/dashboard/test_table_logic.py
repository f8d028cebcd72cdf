"""The jobs table's logic as plain functions: row diffs, page diffs, paging maths, cells.

No app, no Pilot: each function is fed values and its answer checked.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from chunkq import core
from chunkq.tui.dashboard.widgets.job_page import (
    belongs_on_page,
    diff_page,
    matching_total,
    next_offset,
    page_info,
    prev_offset,
)
from chunkq.tui.dashboard.widgets.job_rows import TIME_COLUMNS, changed_cells, job_cells, sort_key
from chunkq.tui.dashboard.widgets.keyed_table import RowDiff, diff_rows, same_cell
from rich.console import Console
from rich.text import Text

from tests.dashboard.conftest import FIXED_NOW

NOW = FIXED_NOW


def job(job_id: int, status: str = "pending", **changes: object) -> core.Job:
    base = core.Job(id=job_id, name=f"job {job_id}", entity_type="company", provider="clearbit",
                    status=status, chunk_size=10, priority=0, total_count=100, processed_count=0,
                    error_count=0, created_at=NOW - timedelta(hours=1), updated_at=NOW, started_at=None,
                    finished_at=None, lease_owner=None, lease_expires_at=None, fail_reason=None,
                    parent_id=None)
    return replace(base, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- diff_rows (keyed tables)


def test_same_rows_change_nothing() -> None:
    rows = [("1", ("a", "b")), ("2", ("c", "d"))]
    diff = diff_rows(rows, list(rows))
    assert diff == RowDiff() and not diff.changed


def test_a_changed_cell_is_one_update() -> None:
    diff = diff_rows([("1", ("a", "b")), ("2", ("c", "d"))], [("1", ("a", "b")), ("2", ("c", "D"))])
    assert diff == RowDiff(updates=(("2", 1, "D"),))


def test_a_style_change_alone_is_an_update() -> None:
    # Text equality ignores the base style, and the style is what colours a status.
    old, new = Text("failed", style="red"), Text("failed", style="green")
    assert old == new and not same_cell(old, new)
    assert diff_rows([("1", (old,))], [("1", (new,))]).updates == (("1", 0, new),)


def test_rows_that_leave_are_removed_and_new_ones_appended() -> None:
    old = [("1", ("a",)), ("2", ("b",)), ("3", ("c",))]
    new = [("1", ("a",)), ("3", ("c",)), ("4", ("d",))]
    assert diff_rows(old, new) == RowDiff(removes=("2",), adds=(("4", ("d",)),))


@pytest.mark.parametrize("new", [
    [("2", ("b",)), ("1", ("a",))],                   # rows that stay swap places
    [("1", ("a",)), ("9", ("z",)), ("2", ("b",))],    # a row arrives in the middle
])
def test_a_new_order_rebuilds(new: list[tuple[str, tuple[str, ...]]]) -> None:
    diff = diff_rows([("1", ("a",)), ("2", ("b",))], new)
    assert diff.rebuild and diff.adds == tuple(new) and not diff.removes and not diff.updates


# ---------------------------------------------------------------------- diff_page (the jobs page)


def page(*jobs: core.Job) -> dict[int, core.Job]:
    return {j.id: j for j in jobs}


def test_a_full_poll_replaces_the_page() -> None:
    current = page(job(1), job(2))
    diff = diff_page(current, [job(2), job(3)], full=True, total=7, status=None, offset=0)
    assert diff.removes == (1,) and [j.id for j in diff.puts] == [2, 3]
    assert diff.total == 7 and diff.order_changed


def test_a_full_poll_of_the_same_page_keeps_the_order() -> None:
    current = page(job(1), job(2))
    diff = diff_page(current, [job(2, processed_count=5), job(1)], full=True, total=2, status=None, offset=0)
    assert diff.removes == () and not diff.order_changed


def test_a_changed_job_is_updated_and_reordered_only_when_its_rank_moves() -> None:
    current = page(job(1), job(2))
    same_rank = diff_page(current, [job(1, processed_count=10)], full=False, total=2, status=None, offset=0)
    assert [j.processed_count for j in same_rank.puts] == [10] and not same_rank.order_changed
    paused = diff_page(current, [job(1, "paused")], full=False, total=2, status=None, offset=0)
    assert paused.order_changed and paused.total == 2


def test_a_job_leaving_the_filter_leaves_the_page() -> None:
    current = page(job(1), job(2))
    diff = diff_page(current, [job(1, "paused")], full=False, total=2, status="pending", offset=0)
    assert diff.removes == (1,) and diff.puts == () and diff.total == 1


def test_a_new_job_joins_a_first_page_with_room() -> None:
    diff = diff_page(page(job(1)), [job(5)], full=False, total=1, status=None, offset=0)
    assert [j.id for j in diff.puts] == [5] and diff.total == 2 and diff.order_changed


def test_a_new_job_outside_the_filter_is_ignored() -> None:
    diff = diff_page(page(job(1)), [job(5, "complete")], full=False, total=1, status="pending", offset=0)
    assert diff == diff_page(page(job(1)), [], full=False, total=1, status="pending", offset=0)


def test_a_new_job_that_ranks_within_a_full_page_asks_for_a_reread() -> None:
    current = page(job(1), job(2, "complete"))
    diff = diff_page(current, [job(9)], full=False, total=50, status=None, offset=0, page_size=2)
    assert diff.puts == () and diff.outranked
    # On a later page, a job ranking before the page's first row belongs to an earlier page.
    later = diff_page(page(job(3, "paused"), job(2, "complete")), [job(9, "running")], full=False, total=50,
                      status=None, offset=2, page_size=2)
    assert not later.outranked


def test_too_many_changes_ask_for_a_full_read() -> None:
    current = page(job(1))
    diff = diff_page(current, [job(i) for i in range(10, 14)], full=False, total=1, status=None, offset=0,
                     max_changes=3)
    assert diff.overflow and len(diff.puts) == 3


def test_belongs_on_page_uses_the_list_order() -> None:
    current = page(job(5, "pending"), job(2, "complete"))
    assert belongs_on_page(current, job(3, "failed"), offset=10)
    assert not belongs_on_page(current, job(1, "cancelled"), offset=10)
    assert belongs_on_page({}, job(1), offset=10)
    assert sort_key(job(1, "running")) < sort_key(job(9, "pending")) < sort_key(job(3, "pending"))


# ---------------------------------------------------------------------- paging and totals


def test_paging_maths() -> None:
    assert next_offset(0, 230, 200) == 200 and next_offset(200, 230, 200) is None
    assert next_offset(0, 200, 200) is None
    assert prev_offset(0, 200) is None and prev_offset(200, 200) == 0 and prev_offset(150, 200) == 0
    assert page_info(0, 200, 230, filtered=False, page_size=200) == "1–200 of 230  ([ ] page)"
    assert page_info(200, 31, 231, filtered=False, page_size=200) == "201–231 of 231  ([ ] page)"
    assert page_info(0, 6, 6, filtered=False, page_size=200) == "1–6 of 6"
    assert page_info(0, 0, 0, filtered=True) == "no jobs match"
    assert page_info(0, 0, 0, filtered=False) == "no jobs yet: press n"


def test_matching_total_trusts_the_queue_totals_unless_searching() -> None:
    stats = core.QueueStats(jobs_by_status={"pending": 3, "failed": 2}, total_entities=0, processed_entities=0,
                            error_count=0, waiting_entities=0, entities_per_second=0.0, active_workers=0)
    assert matching_total(1, stats, None, "") == 5
    assert matching_total(1, stats, "failed", "") == 2
    assert matching_total(1, stats, "failed", "acme") == 1
    assert matching_total(4, None, None, "") == 4


# ---------------------------------------------------------------------- cells


def test_cells_show_user_text_plainly_and_clip_it() -> None:
    cells = job_cells(job(1, name="[b]import[/b] of a very long name"), NOW, 0.0)
    assert cells["name"].plain == "[b]import[/b] of a very long name" and cells["name"].spans == []
    # the column's width cuts it when drawn (it widens on a wide terminal)
    lines = Console(width=20).render_lines(cells["name"], Console(width=20).options.update_width(20))
    assert "".join(seg.text for seg in lines[0]).rstrip() == "[b]import[/b] of a …"
    assert cells["done"].plain == "0/100" and cells["age"].plain == "1h"


def test_a_silent_worker_shows_as_stale() -> None:
    stuck = job(1, "running", leased_chunks=1, lease_owner="host:7:nonce",
                lease_expires_at=NOW - timedelta(seconds=5), heartbeat_at=NOW - timedelta(seconds=95))
    cells = job_cells(stuck, NOW, 2.0, only=TIME_COLUMNS)
    assert list(cells) == list(TIME_COLUMNS)
    assert cells["status"].plain == "stale" and cells["note"].plain == "quiet 1m: host:7"


def test_notes_say_who_holds_the_job_what_waits_and_why_it_failed() -> None:
    held = job(1, "running", leased_chunks=2, lease_owner="host:7:nonce",
               lease_expires_at=NOW + timedelta(seconds=20), waiting_count=3,
               next_retry_at=NOW + timedelta(seconds=30))
    assert job_cells(held, NOW, 0.0)["note"].plain == "host:7 +1 · 3 wait, in 30s"
    assert job_cells(job(2, "failed", fail_reason="401"), NOW, 0.0)["note"].plain == "401"
    assert job_cells(job(3, parent_id=1), NOW, 0.0)["note"].plain == "retry of #1"


def test_a_finished_job_has_no_rate() -> None:
    def rate(j: core.Job, per_second: float) -> str:
        return job_cells(j, NOW, per_second)["rate"].plain

    assert rate(job(1, "complete"), 5.0) == rate(job(1, "complete"), 0.0)
    assert rate(job(1), 5.0) != rate(job(1), 0.0)


def test_changed_cells_are_only_those_that_differ() -> None:
    before = job_cells(job(1), NOW, 0.0)
    after = job_cells(job(1, processed_count=50), NOW, 0.0)
    assert set(changed_cells(before, after)) == {"progress", "done"}
    assert changed_cells(before, job_cells(job(1), NOW, 0.0)) == {}
    other_theme = {"foreground-darken-3": "#123456", "primary": "#654321"}
    assert set(changed_cells(before, job_cells(job(1), NOW, 0.0, other_theme))) == {"progress", "age", "note"}
