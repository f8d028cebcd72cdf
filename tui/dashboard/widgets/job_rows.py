"""One job as a row of the jobs table: its cells, its rank, and which cells changed.

Pure functions of a ``core.Job``, the clock and the theme's colours (no widget, no
app), so the table's rendering is unit-tested without Pilot. A ``ProgressBar``
widget per row would cost a widget each: the bar is drawn as ``Text`` in the cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.keyed_table import same_cell
from rich.style import Style
from rich.text import Text

# (key, label, width, right-aligned); fixed widths: DataTable re-measures auto widths on every update
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "ID", 5, True),
    ("name", "Name", 20, False),
    ("type", "Type", 8, False),
    ("provider", "Provider", 11, False),
    ("status", "Status", 9, False),
    ("progress", "Progress", 19, False),
    ("done", "Done", 15, True),
    ("errors", "Errors", 6, True),
    ("rate", "Rate", 7, True),
    ("eta", "ETA", 6, True),
    ("age", "Age", 4, True),
    ("note", "Worker / retries", 22, False),
)
COLUMN_KEYS = tuple(c[0] for c in COLUMNS)
#: cells that change with the clock alone (stale leases, ages, retry countdowns)
TIME_COLUMNS = ("status", "age", "note")
#: cells that change when the rates are re-read
RATE_COLUMNS = ("rate", "eta")

Cells = dict[str, Text]


def rank(job: core.Job) -> int:
    """The status's place in the list (``core.Status.rank``: running first, history last)."""
    return core.Status(job.status).rank


def sort_key(job: core.Job) -> tuple[int, int]:
    """Where a job sits in the list: by status rank, newest first within a status (as core lists them)."""
    return (rank(job), -job.id)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def job_cells(
    job: core.Job,
    now: datetime,
    rate: float,
    palette: fmt.Palette | None = None,
    only: tuple[str, ...] | None = None,
) -> Cells:
    """Every cell of ``job``'s row (``only=TIME_COLUMNS``: just those); user text stays plain ``Text``."""
    shown_status = humanize.status(job.status, stale=job.lease_is_stale(now))  # the CLI's word too
    stale = shown_status == "stale"
    muted = Style(color=fmt.theme_color("foreground-darken-3", palette))
    note, note_style = job_note(job, now, stale, palette)
    timed = {
        "status": fmt.status_text(shown_status, palette),
        "age": Text(fmt.table_age(job.created_at, now), justify="right", end="", style=muted),
        "note": Text(clip(fmt.printable(note), 22), end="", style=note_style or muted),
    }
    if only is not None:
        return {k: timed[k] for k in only}
    if job.status not in core.ACTIVE_STATUSES:
        rate = 0.0
    bar = fmt.progress_bar(job.progress, 12, palette, job.status)
    bar.append(f" {fmt.percent(job.progress):>6}")
    errors = Text(fmt.count(job.error_count), justify="right", end="")
    if job.error_count:
        errors.stylize(Style(color=fmt.theme_color("error", palette)))
    return {
        "id": Text(str(job.id), justify="right", end=""),
        "name": Text(clip(fmt.printable(job.name or "—"), 20), end=""),
        "type": Text(clip(fmt.printable(job.entity_type), 8), end=""),
        "provider": Text(clip(fmt.printable(job.provider), 11), end=""),
        "status": timed["status"],
        "progress": bar,
        "done": Text(f"{fmt.count(job.processed_count)}/{fmt.count(job.total_count)}", justify="right",
                     end=""),
        "errors": errors,
        "rate": Text(fmt.rate(rate), justify="right", end=""),
        "eta": Text(fmt.eta(job, rate, now), justify="right", end=""),
        "age": timed["age"],
        "note": timed["note"],
    }


def job_note(job: core.Job, now: datetime, stale: bool, palette: fmt.Palette | None = None
             ) -> tuple[str, Style | None]:
    """The "Worker / retries" cell: who holds it, what waits, or why it failed."""
    if stale:
        quiet = job.heartbeat_at or job.lease_expires_at
        return (f"quiet {fmt.age(quiet, now)}: {fmt.short_worker(job.lease_owner)}",
                fmt.status_style("stale", palette))
    parts = []
    if job.leased_chunks > 0 and job.lease_owner:
        more = f" +{job.leased_chunks - 1}" if job.leased_chunks > 1 else ""
        parts.append(f"{fmt.short_worker(job.lease_owner)}{more}")
    if job.waiting_count:
        parts.append(f"{fmt.count(job.waiting_count)} wait, {fmt.until(job.next_retry_at, now)}")
    if parts:
        return " · ".join(parts), Style(color=fmt.theme_color("foreground", palette))
    if job.status == core.FAILED and job.fail_reason:
        return job.fail_reason, fmt.status_style("failed", palette)
    if job.parent_id:
        return f"retry of #{job.parent_id}", None
    return fmt.DASH, None


def changed_cells(old: Mapping[str, Text], new: Mapping[str, Text]) -> Cells:
    """The cells of ``new`` that differ from ``old``: the only ones worth an ``update_cell``."""
    return {k: v for k, v in new.items() if k not in old or not same_cell(old[k], v)}
