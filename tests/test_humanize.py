"""chunkq.tui.humanize: one set of plain-text rules, and both front ends really use it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from chunkq.tui import humanize as h

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("seconds", "expected"), [
    (None, "–"), (float("nan"), "–"), (float("inf"), "–"), (-1.0, "–"),
    (0.0, "0ms"), (0.012, "12ms"),
    (0.5, "500ms"),            # the CLI said 500ms, the dashboard 0.5s
    (0.9994, "999ms"), (0.9996, "1.0s"),  # rounding never gives "1000ms"
    (2.5, "2.5s"), (9.94, "9.9s"), (9.96, "10s"),
    (42.4, "42s"), (59.6, "1m00s"), (245, "4m05s"), (3599.6, "1h00m"), (7380, "2h03m"),
    (86399, "23h59m"),  # 23h59m59s, shown in whole minutes
    (90_000, "1d01h"),         # the CLI said 25h00m, the dashboard 1d01h
    (3 * 86400 + 4 * 3600, "3d04h"),
])
def test_duration(seconds: float | None, expected: str) -> None:
    assert h.duration(seconds) == expected


@pytest.mark.parametrize(("n", "expected"), [
    (None, "–"), (0, "0"), (7, "7"), (2111, "2,111"), (999_999, "999,999"),
    (1_000_000, "1.0M"), (1_234_567, "1.2M"), (1_999_999, "1.9M"),  # rounded down: never done early
    (12_345_678, "12.3M"), (99_999_999, "99.9M"), (123_456_789, "123M"), (999_999_999, "999M"),
    (1_000_000_000, "1.0G"), (4_500_000_000_000, "4.5T"), (-2_500_000, "-2.5M"),
])
def test_count(n: int | None, expected: str) -> None:
    assert h.count(n) == expected


@pytest.mark.parametrize(("n", "expected"), [
    (None, "–"), (0, "0"), (2111, "2,111"), (1_234_567, "1,234,567"), (3_000_000_000, "3,000,000,000"),
])
def test_number_is_exact(n: int | None, expected: str) -> None:
    assert h.number(n) == expected


@pytest.mark.parametrize(("args", "expected"), [
    ((0, "job"), "0 jobs"), ((1, "job"), "1 job"), ((2, "job"), "2 jobs"), ((2111, "job"), "2,111 jobs"),
    ((1_500_000, "entity", "entities"), "1,500,000 entities"), ((1, "entity", "entities"), "1 entity"),
])
def test_plural(args: tuple[object, ...], expected: str) -> None:
    assert h.plural(*args) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("fraction", "expected"), [
    (None, "–"), (math.nan, "–"), (0.0, "0.0%"), (0.0004, "<0.1%"), (0.123, "12.3%"),
    (0.99999, "99.9%"), (1.0, "100%"), (1.5, "100%"), (-0.2, "0.0%"),
])
def test_percent(fraction: float | None, expected: str) -> None:
    assert h.percent(fraction) == expected


@pytest.mark.parametrize(("delta", "expected"), [
    (timedelta(seconds=0), "0s"), (timedelta(seconds=12.9), "12s"), (timedelta(minutes=5, seconds=59), "5m"),
    (timedelta(hours=3, minutes=59), "3h"), (timedelta(days=2, hours=23), "2d"),
    (timedelta(seconds=-30), "0s"),  # a clock a little ahead is not "in the future" for an age
])
def test_age_is_coarse(delta: timedelta, expected: str) -> None:
    assert h.age(NOW - delta, NOW) == expected


def test_ago_until_and_missing_times() -> None:
    assert h.ago(NOW - timedelta(minutes=5, seconds=30), NOW) == "5m ago"
    assert h.ago(NOW + timedelta(minutes=4, seconds=5), NOW) == "in 4m05s"
    assert h.until(NOW + timedelta(seconds=90_000), NOW) == "in 1d01h"
    assert h.until(NOW - timedelta(seconds=1), NOW) == "now"
    assert h.until(NOW, NOW) == "now"
    assert h.age(None, NOW) == h.ago(None, NOW) == h.until(None, NOW) == h.timestamp(None) == h.DASH


@pytest.mark.parametrize(("per_second", "expected"), [
    (None, "–"), (0, "–"), (-1, "–"), (math.inf, "–"), (2.5, "2.5/s"), (9.96, "10/s"), (1234.4, "1,234/s"),
    (0.1, "0.1/s"), (0.02, "1.2/m"), (0.0001, "<0.1/m"),
])
def test_rate(per_second: float | None, expected: str) -> None:
    assert h.rate(per_second) == expected


def test_timestamp_is_utc() -> None:
    assert h.timestamp(NOW) == "2024-05-01 12:00:00 UTC"
    berlin = NOW.astimezone(timezone(timedelta(hours=2)))
    assert h.timestamp(berlin) == "2024-05-01 12:00:00 UTC"


def test_status_word() -> None:
    assert h.status("running", stale=True) == "stale"
    assert h.status("running") == "running"
    assert h.status("paused", stale=True) == "paused"  # only a running job's worker can go silent


@pytest.mark.parametrize(("text", "expected"), [
    ("plain [b]name[/b]", "plain [b]name[/b]"),          # markup is the renderer's business, kept as is
    ("two\nlines\tand\r\nmore", "two lines and more"),  # CRLF is one break
    ("lone \ud800 surrogate, bidi \u202eoverride", "lone \\ud800 surrogate, bidi \\u202eoverride"),
    # a joined family shows as its members: terminals disagree on the width of the joined form
    ("emoji 👩\u200d👩\u200d👧 and مرحبا stay", "emoji 👩👩👧 and مرحبا stay"),
    ("skin tone 👍🏽 and ❤\ufe0f", "skin tone 👍 and ❤"),
    ("\x1b]2;pwned\x07title", "\\x1b]2;pwned\\x07title"),  # OSC: would retitle the terminal
    ("a\u2028b\x7f\x9b", "a b\\x7f\\x9b"),
    (42, "42"),
])
def test_printable(text: object, expected: str) -> None:
    assert h.printable(text) == expected


# ------------------------------------------------------------- one formatter for both front ends


SHARED = ("count", "duration", "age", "until", "rate", "percent", "number", "plural", "timestamp", "DASH")


@pytest.mark.parametrize("name", SHARED)
def test_dashboard_formats_with_the_same_functions(name: str) -> None:
    pytest.importorskip("textual")
    from chunkq.tui.dashboard import format as dashboard_format

    assert getattr(dashboard_format, name) is getattr(h, name)


def test_cli_and_dashboard_print_the_same_strings() -> None:
    """The table the issue found diverging, through each front end's own module."""
    pytest.importorskip("textual")
    from chunkq.tui.cli import output
    from chunkq.tui.dashboard import format as dashboard_format

    for seconds in (0.012, 0.5, 2.5, 42, 245, 7380, 90_000):
        assert output.duration(seconds) == dashboard_format.duration(seconds) == h.duration(seconds)
    assert (output.duration(0.5), output.duration(90_000)) == ("500ms", "1d01h")
    then = NOW - timedelta(hours=3)
    assert output.ago(then, NOW) == f"{dashboard_format.age(then, NOW)} ago" == "3h ago"


def test_cli_output_keeps_no_formatter_of_its_own() -> None:
    """output.py imports humanize's functions rather than defining look-alikes (the old drift)."""
    from chunkq.tui.cli import output

    for name in ("duration", "ago", "timestamp", "number", "plural"):
        assert getattr(output, name) is getattr(h, name)
    assert not hasattr(output, "stamp") and not hasattr(output, "job_label")


def test_the_dashboard_defines_no_formatter_of_its_own() -> None:
    """format.py styles (colours, bars); every plain-text rule it offers is humanize's, re-exported."""
    pytest.importorskip("textual")
    import inspect

    from chunkq.tui.dashboard import format as dashboard_format

    own = {name for name, fn in inspect.getmembers(dashboard_format, inspect.isfunction)
           if fn.__module__ == dashboard_format.__name__}
    assert own.isdisjoint(set(SHARED) | {"ago", "status", "printable"}), own
