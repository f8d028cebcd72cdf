"""Throughput and failures over time: two sparklines on one line, drawn from ``Queue.history``.

The first thing an operator looks at when a provider degrades is whether
throughput fell and failures rose, and when. Core returns buckets of the last
hour, a minute wide, then finer (ten seconds) for the recent minutes; buckets of
different widths are only comparable as rates, so each is drawn as entities
per second (``series``, pure). The totals beside the lines are counts over the
whole window, which do not depend on the bucket widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chunkq.tui.dashboard import format as fmt
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widgets import Label, Sparkline


@dataclass(frozen=True)
class Series:
    """What the two sparklines draw and what their captions say."""

    throughput: tuple[float, ...]
    failures: tuple[float, ...]
    processed: int
    failed: int
    minutes: int

    @property
    def empty(self) -> bool:
        return self.processed == 0 and self.failed == 0


def series(buckets: Sequence[Any], *, minutes: int = 60) -> Series:
    """Per-second rates of each bucket (oldest first) and the window's totals.

    ``buckets`` are ``core.HistoryBucket``-shaped (``seconds``, ``processed``,
    ``failed``); a bucket with no length counts as one second rather than
    dividing by zero.
    """
    throughput = tuple(b.processed / max(float(b.seconds), 1.0) for b in buckets)
    failures = tuple(b.failed / max(float(b.seconds), 1.0) for b in buckets)
    return Series(throughput, failures, sum(int(b.processed) for b in buckets),
                  sum(int(b.failed) for b in buckets), minutes)


def captions(data: Series) -> tuple[str, str, str]:
    """(label before the first line, after it, after the second) for ``data``."""
    window = f"{data.minutes}m" if data.minutes < 120 else f"{data.minutes // 60}h"
    if data.empty:
        return (f"calls/s {window}", "idle", "none")
    # Attempts, not entities: a transient failure waiting for its retry was a call too. So the second
    # line says "failed calls", never "errors": the header's "errors" and the jobs' Errors column count
    # entities failed for good, a different number, and one word must not name both.
    return (f"calls/s {window}", _calls(data.processed, "call"), _calls(data.failed, "failed call"))


def _calls(n: int, word: str) -> str:
    return f"{fmt.count(n)} {word}" + ("" if n == 1 else "s")


class HistoryLine(Horizontal):
    """Throughput and failures of a job or the whole queue; set ``history`` to the buckets read."""

    DEFAULT_CSS = """
    HistoryLine { height: 1; }
    HistoryLine Label { width: auto; padding: 0 1 0 0; color: $text-muted; }
    HistoryLine .history-total { min-width: 9; }
    HistoryLine Sparkline { width: 1fr; min-width: 8; margin: 0 1 0 0; }
    HistoryLine #history-failures > .sparkline--max-color { color: $error; }
    HistoryLine #history-failures > .sparkline--min-color { color: $error 30%; }
    """

    history: reactive[Series | None] = reactive(None, init=False)
    """The series last read (None until the first read)."""

    def compose(self) -> ComposeResult:
        yield Label("calls/s", id="history-label")
        yield Sparkline([0.0], id="history-throughput")
        yield Label("", id="history-processed", classes="history-total")
        yield Label("failed calls/s", id="history-failures-label")
        yield Sparkline([0.0], id="history-failures")
        yield Label("", id="history-failed", classes="history-total")

    def show(self, buckets: Sequence[Any], *, minutes: int = 60) -> None:
        """Draw ``buckets`` (``Queue.history``'s answer)."""
        self.history = series(buckets, minutes=minutes)

    def watch_history(self, data: Series | None) -> None:
        if data is None:
            return
        label, processed, failed = captions(data)
        self.query_one("#history-label", Label).update(label)
        self.query_one("#history-throughput", Sparkline).data = list(data.throughput) or [0.0]
        self.query_one("#history-processed", Label).update(processed)
        self.query_one("#history-failures", Sparkline).data = list(data.failures) or [0.0]
        self.query_one("#history-failed", Label).update(failed)
