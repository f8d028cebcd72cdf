"""Each job's Rate on the home screen from its own row's counter between polls (issue 25).

Pure logic, scripted polls on an injected clock: no timing, no database.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from chunkq import core
from chunkq.tui.dashboard.widgets.recent_rates import RATE_WINDOW, RecentRates

from .test_table_logic import job


def running(job_id: int, done: int) -> core.Job:
    return replace(job(job_id, "running"), processed_count=done)


def test_two_jobs_sharing_the_workers_each_show_their_own_share() -> None:
    """A fair share of 3:1 shows as 3:1, and the rows add up to what the queue did."""
    rates = RecentRates()
    t = 1000.0
    assert rates.observe([running(1, 0), running(2, 0)], t) == {}  # seen once: no rate yet
    for step in range(1, 31):  # one poll a second: job 1 does 30 entities a second, job 2 10
        got = rates.observe([running(1, 30 * step), running(2, 10 * step)], t + step)
    assert got[1] == pytest.approx(30.0) and got[2] == pytest.approx(10.0)


def test_a_job_that_stops_shows_no_rate_once_the_window_has_passed() -> None:
    rates = RecentRates()
    rates.observe([running(1, 0)], 0.0)
    assert rates.observe([running(1, 50)], 1.0) == {1: pytest.approx(50.0)}
    assert 1 in rates.observe([running(1, 50)], RATE_WINDOW)  # still within the window
    assert rates.observe([running(1, 50)], RATE_WINDOW + 2.0) == {}  # nothing done for a whole window
    done = replace(running(1, 80), status="complete")
    assert rates.observe([done], RATE_WINDOW + 3.0) == {}  # finished: no rate, whatever it did last


def test_a_job_off_the_page_is_forgotten_and_a_requeued_one_counts_afresh() -> None:
    rates = RecentRates()
    rates.observe([running(1, 100), running(2, 0)], 0.0)
    rates.observe([running(2, 5)], 1.0)  # job 1 left the page
    assert rates.observe([running(1, 140)], 2.0) == {}  # back: seen once again, no stale base
    rates.observe([running(1, 10)], 3.0)  # its failures were requeued: the count went down
    assert rates.observe([running(1, 20)], 4.0) == {1: pytest.approx(10.0)}
