"""What the workers view, the honest job rows and the history lines say, as pure functions of plain values."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from chunkq import core
from chunkq.tui.dashboard.widgets.history import captions, series
from chunkq.tui.dashboard.widgets.job_rows import job_cells, job_note, rate_cell
from chunkq.tui.dashboard.widgets.job_summary import lease_notice, reason_text
from chunkq.tui.dashboard.widgets.totals import totals_text
from chunkq.tui.dashboard.widgets.workers_table import worker_cells, worker_detail, worker_rows

from tests.dashboard.conftest import FIXED_NOW
from tests.dashboard.test_table_logic import job

NOW = FIXED_NOW


def worker(wid: str = "w1", state: str = "busy", **changes: object) -> core.WorkerInfo:
    base = core.WorkerInfo(id=wid, host="worker-a", pid=4101, kind="worker", processor="myapp:enrich",
                           version="0.1.0", started_at=NOW - timedelta(minutes=10),
                           heartbeat_at=NOW - timedelta(seconds=2), heartbeat_interval=5.0, state=state)
    return replace(base, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- workers


def test_a_worker_row_says_who_what_and_how_fresh() -> None:
    cells = [c.plain for c in worker_cells(worker(job_id=7, chunks=2, done=1_200, failed=27), NOW)]
    assert cells == ["worker-a:4101", "busy", "2s", "#7", "2", "1,200", "27", "worker", "myapp:enrich", "0.1.0"]


def test_a_lost_worker_reads_lost_in_the_error_colour_and_a_stop_request_reads_stopping() -> None:
    lost = worker_cells(worker(state="lost", heartbeat_at=NOW - timedelta(seconds=40)), NOW)
    assert lost[1].plain == "lost" and lost[2].plain == "40s"
    assert lost[1].style.color is not None and lost[1].style.color.name.lower() == "#b93c5b"  # theme error
    assert worker_cells(worker(stop_request="finish"), NOW)[1].plain == "stopping"
    assert worker_cells(worker(state="lost", stop_request="finish"), NOW)[1].plain == "lost", "it cannot obey"


def test_rows_are_keyed_by_id_and_ordered_busy_idle_stopping_lost_stopped() -> None:
    rows = worker_rows([worker("d", "stopped"), worker("c", "lost"), worker("b", "idle", stop_request="release"),
                        worker("a", "idle", pid=1), worker("e", "busy")], NOW)
    assert [key for key, _ in rows] == ["e", "a", "b", "c", "d"]


def test_text_from_other_hosts_is_plain_and_printable() -> None:
    nasty = worker(host="[b]evil\x1b]2;x", processor="[/x] mod:fn", version="1\x9b2")
    cells = worker_cells(nasty, NOW)
    assert cells[0].plain.startswith("[b]evil\\x1b]2") and not cells[0].spans
    assert cells[8].plain == "[/x] mod:fn"


def test_the_detail_line_says_what_was_asked_and_why_lost() -> None:
    text = worker_detail(worker(state="lost", detail="job 3 chunk 4", stop_request=None), NOW)
    assert "no heartbeat for over two intervals" in text and "last seen holding job 3 chunk 4" in text
    assert "stop after its chunk" in worker_detail(worker(stop_request="finish"), NOW)
    assert "release its chunks and stop now" in worker_detail(worker(stop_request="release"), NOW)
    assert "processor any (not routed)" in worker_detail(worker(processor=None), NOW)


# ---------------------------------------------------------------------- history


def bucket(seconds: float, processed: int, failed: int = 0) -> core.HistoryBucket:
    return core.HistoryBucket(NOW, seconds, processed, failed, 1)


def test_history_compares_buckets_of_different_widths_as_rates() -> None:
    data = series([bucket(60, 120, 6), bucket(10, 20, 10), bucket(0, 0)])
    assert data.throughput == (2.0, 2.0, 0.0) and data.failures == (0.1, 1.0, 0.0)
    assert (data.processed, data.failed) == (140, 16)
    assert captions(data) == ("calls/s 60m", "140 calls", "16 failed calls")


def test_an_empty_history_says_idle() -> None:
    data = series([bucket(60, 0), bucket(10, 0)])
    assert data.empty and captions(data)[1:] == ("idle", "none")


# ---------------------------------------------------------------------- honest job rows


def test_the_errors_column_counts_entities_failed_for_good_not_attempts() -> None:
    cells = job_cells(job(1, "running", failed_count=27, error_count=145, processed_count=50), NOW, 1.0)
    assert cells["errors"].plain == "27"


def test_an_idle_job_shows_no_rate_and_no_eta() -> None:
    started = job(1, "running", processed_count=50, started_at=NOW - timedelta(minutes=5))
    assert rate_cell(started, 0.0).plain == "idle"
    cells = job_cells(started, NOW, 0.0)
    assert cells["rate"].plain == "idle" and cells["eta"].plain == "–"
    assert rate_cell(job(2), 0.0).plain == "–", "never started: nothing to be idle about"
    assert rate_cell(started, 2.5).plain == "2.5/s"


def test_the_row_says_why_a_job_is_paused_or_failed() -> None:
    paused = job(1, "paused", fail_reason="circuit breaker: the last 5 chunks failed for every entity")
    note, _ = job_note(paused, NOW, stale=False)
    assert note.startswith("circuit breaker")
    assert job_note(job(2, "paused"), NOW, stale=False)[0] == "paused by an operator"
    assert job_note(job(3, "failed", fail_reason="JobFailed: key revoked"), NOW, stale=False)[0] == (
        "JobFailed: key revoked")


def test_a_release_reads_as_one_never_as_a_silent_worker() -> None:
    released = job(1, "running", leased_chunks=1, lease_owner="host-b:777:dead", released_by="host-b:777",
                   released_at=NOW - timedelta(seconds=5), heartbeat_at=NOW - timedelta(seconds=60),
                   lease_expires_at=NOW - timedelta(seconds=30))
    note, _ = job_note(released, NOW, stale=released.lease_is_stale(NOW))
    assert note == "released by host-b:777 at 11:59:55"
    text, problem = lease_notice(released, NOW)  # type: ignore[misc]
    assert not problem and text.startswith("released by host-b:777 at 11:59:55 UTC (5s ago)")
    assert "1970" not in text and "silent" not in text


def test_the_detail_labels_the_reason_by_status_with_the_entity_that_raised_it() -> None:
    paused = job(1, "paused", fail_reason="circuit breaker: the last 5 chunks failed")
    assert reason_text(paused, None).plain == "paused: circuit breaker: the last 5 chunks failed"
    failed = job(2, "failed", fail_reason="JobFailed: 401", reason_error_id=9)
    error = core.ErrorEntry(9, 2, "acme[b].com", "JobFailed", "401", "", 3, 1, NOW)
    text = reason_text(failed, error).plain
    assert text.startswith("failed: JobFailed: 401\nraised by entity acme[b].com (JobFailed, chunk 3, attempt 1)")
    assert "e: its traceback" in text
    assert reason_text(job(3, "running"), None) is None


def test_the_header_agrees_with_the_rows() -> None:
    stats = core.QueueStats({"running": 3, "pending": 1}, 100, 50, 145, 0, 0.0, 2, failed_entities=27,
                            stale_jobs=1, workers_alive=0)
    line = totals_text(stats).plain
    assert "2 running  1 stale" in line, "a job whose worker went silent is counted as the rows show it"
    assert "errors 27" in line and "workers 0" in line, "a killed worker stops counting; leases do not count"
