"""The line of queue totals above the jobs table (jobs per status, entities, errors, rate)."""

from __future__ import annotations

from chunkq import core
from chunkq.tui.dashboard import format as fmt
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


def totals_text(stats: core.QueueStats, palette: fmt.Palette | None = None, width: int | None = None) -> Text:
    """Every status with its count (zeros dim), then the entity counts and the rate.

    One line when it fits ``width``; otherwise statuses without jobs are left out,
    and if it still does not fit, the entity counts go on a second line (each line
    ends in "…" rather than being cut mid-number). The job total leaves out
    cancelled jobs (they are counted on their own): nothing more will happen to them.
    """
    cancelled = stats.jobs_by_status.get(core.CANCELLED, 0)
    live_jobs = sum(stats.jobs_by_status.values()) - cancelled

    def statuses(with_zeros: bool) -> Text:
        line = Text()
        line.append(f"{fmt.count(live_jobs)} {'job' if live_jobs == 1 else 'jobs'}", style="bold")
        for status in core.Status.by_rank():
            n = stats.jobs_by_status.get(status, 0)
            if status == core.RUNNING:  # as the rows say it: a job whose worker went silent is stale
                n -= stats.stale_jobs
            if n or with_zeros:
                line.append("  ")
                line.append(f"{fmt.count(n)} {status}",
                            style=fmt.status_style(status, palette) if n else Style(dim=True))
            if status == core.RUNNING and stats.stale_jobs:
                line.append("  ")
                line.append(f"{fmt.count(stats.stale_jobs)} stale", style=fmt.status_style("stale", palette))
        return line

    entities = Text()
    entities.append(f"entities {fmt.count(stats.processed_entities)}/{fmt.count(stats.total_entities)}")
    # entities failed for good: the number the Errors column and `chunkq jobs` show (not attempts logged)
    entities.append(f"  errors {fmt.count(stats.failed_entities)}",
                    style=Style(color=fmt.theme_color("error", palette)) if stats.failed_entities else None)
    if stats.waiting_entities:
        entities.append(f"  waiting {fmt.count(stats.waiting_entities)}")
    entities.append(f"  rate {fmt.rate(stats.entities_per_second)}")
    # registered processes that heartbeat (the Workers view, w): a killed one stops counting within
    # two heartbeat intervals, as its job turns stale (lease holders would count it until the lease ran out)
    entities.append(f"  workers {fmt.count(stats.workers_alive)}")

    for with_zeros in (True, False):
        text = Text.assemble(statuses(with_zeros), "   │   ", entities, no_wrap=True, overflow="ellipsis")
        if width is None or text.cell_len <= width:
            return text
    return Text("\n", no_wrap=True, overflow="ellipsis").join([statuses(False), entities])


class QueueTotals(Widget):
    """Totals over every job, or why they could not be read; drawn from its two attributes only."""

    stats: reactive[core.QueueStats | None] = reactive(None, layout=True)
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
        return totals_text(self.stats, palette, self.size.width - self.styles.gutter.width)
