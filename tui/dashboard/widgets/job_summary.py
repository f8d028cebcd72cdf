"""The head of the job detail screen: title, progress bar, counts and what its worker is doing.

``lease_notice`` says honestly whether the worker holding the job's chunks is alive
(pure: unit-tested with plain ``Job`` values); the widget draws from one
``Summary`` (job, rate, time) and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chunkq import core
from chunkq.core import Job
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.detail_text import utc_time
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.clock import Clock
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import ProgressBar, Static


def lease_notice(job: Job, now: datetime) -> tuple[str, bool] | None:
    """What the job's worker is doing, said honestly; (text, is_a_problem).

    A worker renews its lease every third of the lease; two missed renewals
    mean it has gone quiet (stuck in the callback, paused, or dead), and once
    the lease has expired any worker may take the chunk over.
    """
    if job.is_released and job.released_at is not None:
        # given back on purpose (a quit with "Release now", a second Ctrl-C, an operator's stop): not silence
        return (f"released by {job.released_by or 'a worker'} at {utc_time(job.released_at, now)} UTC "
                f"({fmt.age(job.released_at, now)} ago); any worker can claim its "
                f"{fmt.plural(job.leased_chunks, 'chunk')} now", False)
    if job.leased_chunks <= 0 or job.lease_expires_at is None:
        return None
    owner = job.lease_owner or "unknown worker"
    chunks = fmt.plural(job.leased_chunks, "chunk")
    beat = job.heartbeat_at
    if job.lease_is_stale(now) and job.lease_expires_at < now:
        since = f" since {utc_time(beat, now)} UTC ({fmt.age(beat, now)} ago)" if beat else ""
        return (
            f"⚠ worker {owner} silent{since}: its lease expired at {utc_time(job.lease_expires_at, now)} "
            f"UTC, so any worker can claim its {chunks} again now",
            True,
        )
    if beat is not None:
        lease_len = (job.lease_expires_at - beat).total_seconds()
        silent = (now - beat).total_seconds()
        if silent > max(lease_len * 2 / 3, 1.0):
            return (
                f"⚠ worker {owner} silent since {utc_time(beat, now)} UTC ({fmt.age(beat, now)}); "
                f"claimable again at {utc_time(job.lease_expires_at, now)} UTC "
                f"({fmt.until(job.lease_expires_at, now)})",
                True,
            )
        return (
            f"worker {owner} holds {chunks}; last heartbeat {fmt.age(beat, now)} ago, "
            f"lease until {utc_time(job.lease_expires_at, now)} UTC",
            False,
        )
    return (f"worker {owner} holds {chunks}, lease until {utc_time(job.lease_expires_at, now)} UTC", False)


def title_text(job: Job, palette: fmt.Palette | None = None) -> Text:
    return Text.assemble(
        (f"Job #{job.id}", "bold"),
        (f"  {fmt.printable(job.name)}" if job.name else "", "bold"),
        "   ",
        fmt.status_text(job.status, palette),
        (f"   {fmt.printable(job.entity_type)} via {fmt.printable(job.provider)}", "dim"),
        (f"   → {fmt.printable(job.processor)}" if job.processor else "   → any processor", "dim"),
        (f"   for {fmt.printable(job.tenant)}" if job.tenant else "", "dim"),  # fair scheduling's tenant
        (f"   retry of job #{job.parent_id}" if job.parent_id else "", "dim"),
    )


def reason_text(job: Job, error: core.ErrorEntry | None, palette: fmt.Palette | None = None) -> Text | None:
    """Why the job is paused or failed, labelled by what it is (never "failed:" on a paused job), with
    the entity whose error stopped it and the key that opens that error's traceback."""
    reason = job.reason
    if reason is None:
        return None
    variable = "warning" if job.status == core.PAUSED else "error"
    text = Text(f"{job.status}: ", style=Style(color=fmt.theme_color(variable, palette), bold=True))
    text.append(fmt.printable(reason, lines=False), style=fmt.theme_color(variable, palette))
    if error is not None:
        text.append(f"\nraised by entity {fmt.printable(error.entity_id)} "
                    f"({fmt.printable(error.error_type)}, chunk {error.chunk_index}, attempt {error.attempt})",
                    style="dim")
        text.append("  e: its traceback", style="dim italic")
    elif job.reason_error_id is not None:
        text.append(f"\nraised by error #{job.reason_error_id}  e: its traceback", style="dim")
    return text


def counts_text(job: Job, rate: float, now: datetime, palette: fmt.Palette | None = None) -> Text:
    """Done, succeeded, failed, waiting (and when the next retry is due), errors, rate and ETA."""
    counts = Text.assemble(
        (f"{fmt.count(job.processed_count)} of {fmt.count(job.total_count)} done", "bold"),
        "  ·  ",
        (f"✓ {fmt.count(job.succeeded_count)} succeeded", fmt.theme_color("success", palette)),
        "  ·  ",
        (f"✗ {fmt.count(job.failed_count)} failed", fmt.theme_color("error", palette) if job.failed_count else ""),
        "  ·  ",
        (
            f"⟳ {fmt.count(job.waiting_count)} waiting for retry",
            fmt.theme_color("warning", palette) if job.waiting_count else "",
        ),
    )
    if job.waiting_count and job.next_retry_at is not None:
        counts.append(f" (next due {fmt.until(job.next_retry_at, now)}, {utc_time(job.next_retry_at, now)} UTC)")
    counts.append(f"  ·  {fmt.count(job.error_count)} {'error' if job.error_count == 1 else 'errors'} logged")
    if job.status in core.ACTIVE_STATUSES:
        if rate > 0:
            counts.append(f"  ·  {fmt.rate(rate)}  ·  ETA {fmt.eta(job, rate, now)}")
        else:  # an old rate would promise an ETA that is not coming
            counts.append("  ·  idle, no rate or ETA: no progress in the last minute", style="dim")
    return counts


@dataclass(frozen=True)
class Summary:
    """Everything the summary shows: the job, its recent rate (entities/s) and the time it was read."""

    job: Job
    rate: float
    now: datetime
    #: the error row named by ``job.reason_error_id`` (the entity that paused or failed the job), if read
    reason_error: core.ErrorEntry | None = None


class JobSummary(Vertical):
    """Title, progress bar, counts and the lease notice of one job."""

    summary: reactive[Summary | None] = reactive(None, init=False)
    """What to show; the widget redraws when it changes."""

    problem: reactive[str | None] = reactive(None, init=False)
    """Why the job could not be read (shown in place of the counts)."""

    def __init__(self, job_id: int, *, progress_clock: Clock | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.job_id = job_id
        self._progress_clock = progress_clock

    def compose(self) -> ComposeResult:
        yield Static(f"Job #{self.job_id}", id="detail-title")
        yield ProgressBar(total=None, show_eta=False, id="detail-progress", clock=self._progress_clock)
        yield Static("loading…", id="detail-counts")
        yield Static("", id="detail-reason", classes="-empty")
        yield Static("", id="detail-lease", classes="-empty")

    def watch_problem(self, problem: str | None) -> None:
        if problem is not None:
            self.query_one("#detail-counts", Static).update(
                fmt.plain(problem, f"bold {fmt.theme_color('error', self.app.theme_variables)}"))

    def watch_summary(self, summary: Summary | None) -> None:
        if summary is None:
            return
        job, now, palette = summary.job, summary.now, self.app.theme_variables
        self.query_one("#detail-title", Static).update(title_text(job, palette))
        self.query_one("#detail-progress", ProgressBar).update(
            total=max(job.total_count, 1), progress=job.processed_count)
        self.query_one("#detail-counts", Static).update(counts_text(job, summary.rate, now, palette))
        reason = reason_text(job, summary.reason_error, palette)
        reason_box = self.query_one("#detail-reason", Static)
        reason_box.update(reason or "")
        reason_box.set_class(reason is None, "-empty")
        notice = lease_notice(job, now)
        if notice is None and job.status == core.RUNNING:
            notice = ("running; no chunk is leased right now", False)
        lease = self.query_one("#detail-lease", Static)
        lease.update(fmt.plain(notice[0]) if notice else "")  # the worker name is not markup
        lease.set_class(notice is None, "-empty")
        lease.set_class(bool(notice and notice[1]), "-problem")
