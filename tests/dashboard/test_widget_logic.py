"""What the detail widgets and the activity log say, as plain functions (no app, no Pilot)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from chunkq import core
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.messages import ActivityNote, ChunkDone, EntityDone
from chunkq.tui.dashboard.widgets.activity_log import chunk_note, entity_line, note_line
from chunkq.tui.dashboard.widgets.chunk_history import chunk_row, chunk_seconds
from chunkq.tui.dashboard.widgets.error_tables import (
    GROUP_COLUMNS,
    ErrorPage,
    error_state,
    errors_caption,
    group_columns,
    group_row,
    group_samples,
    groups_caption,
)
from chunkq.tui.dashboard.widgets.error_view import retry_outcome
from chunkq.tui.dashboard.widgets.job_fields import field_rows
from chunkq.tui.dashboard.widgets.job_summary import counts_text, lease_notice
from chunkq.tui.dashboard.widgets.keyed_table import plain

from tests.dashboard.conftest import FIXED_NOW
from tests.dashboard.test_table_logic import job

NOW = FIXED_NOW


def leased(seconds_since_beat: float, *, lease: float = 30.0, beat: bool = True, chunks: int = 1) -> core.Job:
    at = NOW - timedelta(seconds=seconds_since_beat)
    return job(1, "running", leased_chunks=chunks, lease_owner="host-b:777:deadbeef",
               heartbeat_at=at if beat else None, lease_expires_at=at + timedelta(seconds=lease))


# ---------------------------------------------------------------------- lease notices


def test_no_lease_no_notice() -> None:
    assert lease_notice(job(1), NOW) is None


def test_a_healthy_worker_is_not_a_problem() -> None:
    text, problem = lease_notice(leased(3, chunks=2), NOW)  # type: ignore[misc]
    assert not problem
    assert text == "worker host-b:777:deadbeef holds 2 chunks; last heartbeat 3s ago, lease until 12:00:27 UTC"


def test_a_worker_quiet_for_two_renewals_is_a_problem_before_its_lease_expires() -> None:
    text, problem = lease_notice(leased(25), NOW)  # type: ignore[misc]
    assert problem
    assert text == ("⚠ worker host-b:777:deadbeef silent since 11:59:35 UTC (25s); claimable again at "
                    f"12:00:05 UTC ({fmt.until(NOW + timedelta(seconds=5), NOW)})")
    assert not lease_notice(leased(19), NOW)[1]  # type: ignore[index]


def test_an_expired_lease_says_the_chunks_can_be_claimed_again() -> None:
    text, problem = lease_notice(leased(90), NOW)  # type: ignore[misc]
    assert problem and text.startswith("⚠ worker host-b:777:deadbeef silent since 11:58:30 UTC (1m ago)")
    assert text.endswith("its lease expired at 11:59:00 UTC, so any worker can claim its 1 chunk again now")


def test_a_lease_without_a_heartbeat_yet() -> None:
    text, problem = lease_notice(leased(0, beat=False), NOW)  # type: ignore[misc]
    assert not problem and text == "worker host-b:777:deadbeef holds 1 chunk, lease until 12:00:30 UTC"


def test_a_lease_from_another_day_shows_its_date() -> None:
    text, _ = lease_notice(leased(86_400 + 90), NOW)  # type: ignore[misc]
    assert "expired at 2026-01-14 11:59:00 UTC" in text


# ---------------------------------------------------------------------- summary, fields, chunks


def test_counts_say_when_the_next_retry_is_due_and_that_nothing_moves() -> None:
    waiting = job(1, processed_count=40, waiting_count=5, next_retry_at=NOW + timedelta(seconds=90))
    text = counts_text(waiting, 0.0, NOW).plain
    assert text.startswith("40 of 100 done")
    assert f"⟳ 5 waiting for retry (next due {fmt.until(waiting.next_retry_at, NOW)}, 12:01:30 UTC)" in text
    assert text.endswith("no progress in the last minute")
    assert "ETA" in counts_text(waiting, 2.0, NOW).plain


def test_fields_put_the_progress_before_the_counts() -> None:
    keys = [key for key, _ in field_rows(job(1, processed_count=25), NOW)]
    assert keys.index("progress") == keys.index("total_count") - 1
    assert dict(field_rows(job(1, processed_count=25), NOW))["progress"][1] == "25.0%"


def test_an_expired_lease_in_the_chunk_history() -> None:
    chunk = core.ChunkInfo(job_id=1, chunk_index=3, kind="range", state="leased", size=10, worker="host-b:1",
                           attempt=2, started_at=NOW - timedelta(seconds=60), finished_at=None, duration=None,
                           ok=0, errors=0, lease_expires_at=NOW - timedelta(seconds=1))
    key, cells = chunk_row(chunk, NOW)
    assert key == "3" and str(cells[2]) == "leased, expired" and cells[6] == "11:59:00"
    live = replace(chunk, lease_expires_at=NOW + timedelta(seconds=1))
    assert str(chunk_row(live, NOW)[1][2]) == "leased"
    done = replace(chunk, state="done", finished_at=NOW - timedelta(seconds=48), duration=99.0)
    assert chunk_seconds(done) == 12.0


# ---------------------------------------------------------------------- errors


def error(error_id: int, **changes: object) -> core.ErrorEntry:
    base = core.ErrorEntry(id=error_id, job_id=1, entity_id="acme", error_type="pkg.LookupFailed",
                           message="no match", traceback="", chunk_index=0, attempt=1, created_at=NOW)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_errors_state() -> None:
    assert str(error_state(error(1))) == "failed"
    assert str(error_state(error(1, final=False))) == "retried"
    assert str(error_state(error(1, resolved_at=NOW))) == "resolved"


def group(**changes: object) -> core.ErrorGroup:
    base = core.ErrorGroup(error_type="pkg.LookupFailed", message="no\nmatch for <id>", count=1_234_567,
                           entities=999_999, first_at=NOW - timedelta(hours=2), last_at=NOW - timedelta(minutes=5),
                           fingerprint="4a3eb236b60e09c6", location="enrich.py:lookup",
                           samples=("no match for acme.com", "no match for globex.com"))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_error_captions() -> None:
    assert groups_caption(0) == "Unresolved errors by bug: none"
    assert groups_caption(1) == "Unresolved errors by bug (1 bug) · enter: show them · /: search"
    assert groups_caption(1_200, "acme") == ("Unresolved errors by bug matching 'acme' (1,200 bugs) · enter: show "
                                             "them · /: search")
    # issue 27: more bugs than a page lists: which are listed, and the keys; at any width the range stays whole
    assert groups_caption(103, shown=100) == ("Unresolved errors by bug: 1–100 of 103 bugs  ] next page"
                                              " · enter: show them")
    assert groups_caption(1_234, shown=100, offset=100) == ("Unresolved errors by bug: 101–200 of 1,234 bugs"
                                                            "  ] next page  [ previous · enter: show them")
    for width in (40, 60, 78):
        text = groups_caption(1_234, "a search of thirty characters!", 100, 100, width=width)
        assert len(text) <= width and "101–200 of 1,234 bugs" in text, (width, text)
    assert groups_caption(103, shown=3, offset=100, width=76) == ("Unresolved errors by bug: 101–103 of 103 bugs"
                                                                  "  [ previous · enter: show them")
    assert errors_caption(ErrorPage()) == "Error log: empty, nothing has failed"
    full = ErrorPage(tuple(error(i) for i in range(100)), offset=100, total=250)
    assert errors_caption(full) == "Error log: 101–200 of 250 (every failed attempt)  ] next page  [ previous"
    narrowed = ErrorPage((error(1),), only=group(), total=250)
    assert errors_caption(narrowed) == ("Error log 1–1 · only LookupFailed: no match for <id> (999,999 entities)"
                                        " · esc: all")
    searched = ErrorPage((error(1),), total=250, search="acme")
    assert errors_caption(searched) == "Error log 1–1 matching 'acme' · esc: all"
    assert errors_caption(ErrorPage(offset=100, total=100)).startswith("Error log: nothing past 100 of 100")


def test_a_group_row_keeps_counts_whole_and_messages_plain() -> None:
    key, cells = group_row(group(), NOW)
    assert key == "4a3eb236b60e09c6"
    assert [str(c) for c in cells] == ["999,999", "1.2M", "LookupFailed", "no match for <id>", "5m",
                                       "enrich.py:lookup"]
    widths = {k: w for k, _label, w in GROUP_COLUMNS}
    for n in (999_999, 1_234_567, 12_345_678, 999_999_999, 12_345_678_901):  # never cut, whatever the count
        assert len(fmt.count(n)) <= min(widths["entities"], widths["count"])
    _, cells = group_row(group(message="", location=None), NOW)
    assert (str(cells[3]), str(cells[5])) == ("(no message)", fmt.DASH)
    samples = group_samples(group(samples=("[b]x\x1b]2;pwned",)))
    assert samples.plain == "in enrich.py:lookup · e.g. [b]x\\x1b]2;pwned"


@pytest.mark.parametrize("width", [40, 50, 80, 120, 200])
def test_the_grouped_table_fits_its_width_with_the_message_taking_the_rest(width: int) -> None:
    columns = group_columns(width)
    drawn = sum(w + 2 for _k, _l, w in columns) + 1
    widths = dict((k, w) for k, _l, w in columns)
    assert widths["message"] >= 20 and widths["entities"] == widths["count"] == 8
    assert drawn == width or widths["message"] == 20  # fills the width exactly, unless at its floor
    assert ("location" in widths) == (width >= 115)  # where the message keeps 48 columns beside it


def test_what_a_retry_of_one_entity_did() -> None:
    e = error(1, entity_id="[b]acme")
    ok = retry_outcome(e, result(ok=True))
    assert str(ok).startswith("✓ [b]acme succeeded on retry")
    not_done = retry_outcome(e, core.JobNotFound(1))
    assert str(not_done) == "retry of [b]acme not done: no job with id 1"
    again = retry_outcome(e, result(ok=False, error_type="KeyError", message="'acme'", traceback="Traceback…"))
    first, trace, _stored = again.renderables  # type: ignore[union-attr]
    assert str(first) == "✗ [b]acme failed again: KeyError: 'acme'" and str(trace) == "Traceback…"


def test_string_cells_are_never_markup() -> None:
    cell = plain("[b]acme[/b]")
    assert cell.plain == "[b]acme[/b]" and cell.spans == []


# ---------------------------------------------------------------------- activity log lines


def result(entity_id: str = "acme", ok: bool = True, **kw: object) -> core.EntityResult:
    return core.EntityResult(entity_id=entity_id, ok=ok, duration=0.25, **kw)  # type: ignore[arg-type]


def test_entity_lines() -> None:
    assert entity_line(EntityDone(4, result()), NOW).plain == f"12:00:00 ✓ job 4 acme  {fmt.duration(0.25)}"
    dry = entity_line(EntityDone(None, result("[red]x", ok=False, error_type="ValueError", message="bad"),
                                 dry_run=True), NOW)
    assert dry.plain == "12:00:00 dry ✗ [red]x  ValueError: bad"


def test_will_be_retried_is_cores_decision_and_says_when() -> None:
    """``EntityResult.retry_at``, not the exception's name; the delay shown is the retry's, not the chunk's."""
    due = NOW.timestamp() + 90
    retry = entity_line(EntityDone(4, result(ok=False, error_type="chunkq.Retry", message="429", retry_at=due)), NOW)
    assert retry.plain == "12:00:00 ↻ job 4 acme  chunkq.Retry: 429  to retry in 1m30s"
    retry_on = entity_line(EntityDone(4, result(ok=False, error_type="ConnectionError", message="reset",
                                                retry_at=due)), NOW)
    assert retry_on.plain.startswith("12:00:00 ↻ job 4 acme"), "a retry_on exception is retried too"
    last_try = entity_line(EntityDone(4, result(ok=False, error_type="chunkq.Retry", message="429")), NOW)
    assert last_try.plain == "12:00:00 ✗ job 4 acme  chunkq.Retry: 429", "no attempts left: not retried"


@pytest.mark.parametrize(("chunk", "expected"), [
    (core.ChunkResult(job_id=1, chunk_index=2, processed=10, errors=1, status="running", duration=2.0, retried=3),
     ("step: job 1 chunk 2 took 2.0s: 10 processed, 1 error, 3 to retry (job running)", "error")),
    (core.ChunkResult(job_id=1, chunk_index=2, processed=1200, errors=0, status="complete", duration=2.0),
     ("step: job 1 chunk 2 took 2.0s: 1,200 processed, 0 errors (job complete)", "information")),
    (core.ChunkResult(job_id=1, chunk_index=2, processed=0, errors=0, status="running", duration=2.0,
                      committed=False),
     ("step: job 1 chunk 2: lease lost, results discarded (another worker redoes it)", "warning")),
])
def test_chunk_notes(chunk: core.ChunkResult, expected: tuple[str, str]) -> None:
    assert chunk_note(ChunkDone(chunk, source="step")) == expected


def test_note_lines_colour_by_severity() -> None:
    note = ActivityNote("auto-run stopped", severity="error")
    line = note_line(note.text, note.severity, NOW)
    assert line.plain == "12:00:00 auto-run stopped"
    assert line.spans[-1].style != note_line("slow", "warning", NOW).spans[-1].style
    assert note_line("fine", "information", NOW).spans == [], "plain news takes the line's dim style"


# ---------------------------------------------------------------------- totals, bulk results, the enqueue form


def test_totals_count_every_status_with_separators() -> None:
    """``2111 pending`` stood next to ``2,111 jobs``: every number in the line is humanize's now."""
    from chunkq.tui.dashboard.widgets.totals import totals_text

    stats = core.QueueStats({"pending": 2111, "running": 1, "paused": 0, "complete": 1_234_567, "failed": 0,
                             "cancelled": 0}, 10_000, 5_000, 12_345, 0, 2.5, 1, failed_entities=1_234)
    line = totals_text(stats).plain
    assert line.startswith("1.2M jobs  1 running  2,111 pending  0 paused  0 failed  1.2M complete")
    assert "errors 1,234" in line and "12,345" not in line, "entities failed for good, as the rows count them"


def test_bulk_result_says_what_changed_and_why_the_rest_did_not() -> None:
    from chunkq.tui.dashboard.screens.job_actions import bulk_summary

    assert bulk_summary(core.BulkResult("pause", 2, 2, {})) == "paused 2 of 2 jobs"
    assert bulk_summary(core.BulkResult("cancel", 1_300, 1_200, {"cancelled": 40, "complete": 60})) == (
        "cancelled 1,200 of 1,300 jobs (skipped: 40 cancelled, 60 complete)")
    assert bulk_summary(core.BulkResult("retry", 3, 1, {"no failed entities": 2}, (9,))) == (
        "retried 1 of 3 jobs (skipped: 2 no failed entities)")


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("chunk_size", " 20 ", 20), ("priority", "-5", -5), ("max_workers", "1000", 1000),
    ("entity_type", " company ", "company"), ("name", "   ", None),
])
def test_the_form_reads_its_boxes_with_cores_limits(name: str, raw: str, expected: object) -> None:
    from chunkq.tui.dashboard.screens.enqueue import check_setting

    assert check_setting(name, raw) == expected


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("chunk_size", "0", f"chunk_size must be between 1 and {core.limits.CHUNK_SIZE.hi:,}, got 0"),
    ("max_workers", "", "max_workers must be a whole number, got ''"),
    ("priority", "1e3", "priority must be a whole number, got '1e3'"),
    ("provider", " ", "provider is required"),
    ("name", "x" * 201, "name must be at most 200 characters"),
])
def test_the_forms_errors_are_cores_and_name_their_field(name: str, raw: str, message: str) -> None:
    from chunkq.tui.dashboard.screens.enqueue import SETTINGS, check_setting

    assert set(SETTINGS) <= set(core.limits.JOB_SETTINGS), "every box is one of core's job settings"
    with pytest.raises(core.InvalidInput) as err:
        check_setting(name, raw)
    assert str(err.value).startswith(message) and err.value.field == name


def test_short_worker_reads_an_owner_as_core_does() -> None:
    """One rule for ``host:pid`` (``core.short_owner``): a host with colons of its own keeps them."""
    for owner in ("web-1:4242:0badcafe", "[::1]:12:ab", "someone", "a:b:c"):
        assert fmt.short_worker(owner) == core.short_owner(owner)
    assert fmt.short_worker("[::1]:12:ab") == "[::1]:12"
    assert fmt.short_worker("a:b:c") == "a:b:c"  # not made by make_owner: shown as it is
    assert fmt.short_worker(None) == fmt.short_worker("") == fmt.DASH
