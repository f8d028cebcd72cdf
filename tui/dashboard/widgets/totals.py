"""The line of queue totals above the jobs table (jobs per status, entities, errors, rate)."""

from __future__ import annotations

from chunkq import core
from chunkq.tui.dashboard import format as fmt
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


def totals_text(stats: core.QueueStats, palette: fmt.Palette | None = None) -> Text:
    """One line: every status with its count (zeros dim), then the entity counts and the rate."""
    text = Text(no_wrap=True, overflow="ellipsis")
    total_jobs = sum(stats.jobs_by_status.values())
    text.append(f"{fmt.count(total_jobs)} jobs", style="bold")
    for status in core.Status.by_rank():
        n = stats.jobs_by_status.get(status, 0)
        text.append("  ")
        text.append(f"{fmt.count(n)} {status}", style=fmt.status_style(status, palette) if n else Style(dim=True))
    text.append("   │   ")
    text.append(f"entities {fmt.count(stats.processed_entities)}/{fmt.count(stats.total_entities)}")
    text.append(f"  errors {fmt.count(stats.error_count)}",
                style=Style(color=fmt.theme_color("error", palette)) if stats.error_count else None)
    if stats.waiting_entities:
        text.append(f"  waiting {fmt.count(stats.waiting_entities)}")
    text.append(f"  rate {fmt.rate(stats.entities_per_second)}")
    text.append(f"  workers {fmt.count(stats.active_workers)}")
    return text


class QueueTotals(Widget):
    """Totals over every job, or why they could not be read; drawn from its two attributes only."""

    stats: reactive[core.QueueStats | None] = reactive(None)
    """The last totals read (None until the first poll)."""

    problem: reactive[str | None] = reactive(None)
    """Why the last poll failed; shown instead of the totals until a poll succeeds."""

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.refresh())

    def render(self) -> Text:
        palette = self.app.theme_variables
        if self.problem is not None:
            return fmt.plain(f"⚠ {self.problem} (retrying)", fmt.status_style("failed", palette))
        if self.stats is None:
            return Text("")
        return totals_text(self.stats, palette)
