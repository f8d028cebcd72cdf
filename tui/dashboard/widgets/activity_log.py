"""The activity log under the jobs table: what processing did, one line per event.

Each line is built by a pure function of the message, the time and the theme's
colours (unit-tested without Pilot); the widget only writes them. Entity IDs and
provider messages are user text: they go in as plain ``Text``, never as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.messages import ActivityNote, ChunkDone, EntityDone, ProcessingMessage
from rich.style import Style
from rich.text import Text
from textual.notifications import SeverityLevel
from textual.widgets import RichLog

MAX_LINES = 1000


def _stamp(now: datetime) -> Text:
    return Text(f"{now:%H:%M:%S} ", style=Style(dim=True))


def note_line(text: str, severity: SeverityLevel, now: datetime, palette: fmt.Palette | None = None) -> Text:
    """A line of prose: errors in the failed colour, warnings in the paused one."""
    style = {"error": fmt.status_style("failed", palette), "warning": fmt.status_style("paused", palette)}.get(
        severity, Style())
    line = _stamp(now)
    line.append(fmt.printable(text), style=style)  # notes quote exceptions and paths
    return line


def entity_line(message: EntityDone, now: datetime, palette: fmt.Palette | None = None) -> Text:
    """✓ for a success, ↻ for a failure that will be retried, ✗ for one that will not.

    "Will be retried" is core's decision (``EntityResult.retry_at``), not a guess
    from the exception's name: a ``retry_on`` exception is retried too, and a
    ``Retry`` on the last attempt is not. ``now`` is on the queue's clock.
    """
    r = message.result
    prefix = "dry " if message.dry_run else ""
    job = f"job {message.job_id} " if message.job_id else ""
    line = _stamp(now)
    if r.ok:
        line.append(f"{prefix}✓ ", style=fmt.status_style("complete", palette))
        line.append(f"{job}{fmt.printable(r.entity_id)}")
        line.append(f"  {fmt.duration(r.duration)}", style=Style(dim=True))
        return line
    transient = r.retry_at is not None
    style = fmt.status_style("paused" if transient else "failed", palette)
    line.append(f"{prefix}{'↻ ' if transient else '✗ '}", style=style)
    line.append(f"{job}{fmt.printable(r.entity_id)}  ")
    line.append(fmt.printable(f"{r.error_type}: {r.message}"), style=style)
    if r.retry_at is not None:
        delay = max(r.retry_at - now.timestamp(), 0.0)
        line.append(f"  to retry in {fmt.duration(delay)}", style=Style(dim=True))
    return line


def chunk_note(message: ChunkDone) -> tuple[str, SeverityLevel]:
    """A committed chunk's counts, or the news that its results were thrown away."""
    r = message.result
    if not r.committed:
        return (f"{message.source}: job {r.job_id} chunk {r.chunk_index}: lease lost, results "
                "discarded (another worker redoes it)", "warning")
    # The chunk's duration comes first: "3 to retry in 2.0s" would read as the retries' delay.
    retried = f", {humanize.number(r.retried)} to retry" if r.retried else ""
    return (f"{message.source}: job {r.job_id} chunk {r.chunk_index} took {fmt.duration(r.duration)}: "
            f"{humanize.number(r.processed)} processed, {humanize.plural(r.errors, 'error')}{retried} "
            f"(job {r.status})", "error" if r.errors else "information")


class ActivityLog(RichLog):
    """Processing as it happens: entity results, chunk summaries and notes, newest at the bottom.

    ``size_mode`` is the operator's choice (``l`` cycles it): "auto" (its usual
    height, or everything a short table leaves), "tall", or "hidden". The screen
    applies it (``JobsScreen.fit_activity``): the heights depend on the table.
    """

    #: its height in "auto" mode when the table needs the room (border included)
    USUAL_HEIGHT = 9
    SIZE_MODES: tuple[str, ...] = ("auto", "tall", "hidden")

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_LINES, wrap=True, min_width=20, markup=False, auto_scroll=True)
        self._clock = clock
        self.size_mode = "auto"

    def cycle_size(self) -> str:
        """The next size mode (auto, tall, hidden); returns it."""
        self.size_mode = self.SIZE_MODES[(self.SIZE_MODES.index(self.size_mode) + 1) % len(self.SIZE_MODES)]
        return self.size_mode

    def on_mount(self) -> None:
        self.border_title = "Activity"

    def hint(self, text: str) -> None:
        """A dim line of guidance (what the keys do), without a time."""
        self.write(fmt.plain(text, "dim"))

    def note(self, text: str, severity: SeverityLevel = "information") -> None:
        self.write(note_line(text, severity, self._clock(), self.app.theme_variables))

    def show(self, message: ProcessingMessage) -> None:
        """Log one processing message (``ProcessingChanged`` has nothing to say)."""
        if isinstance(message, EntityDone):
            self.write(entity_line(message, self._clock(), self.app.theme_variables))
        elif isinstance(message, ChunkDone):
            self.note(*chunk_note(message))
        elif isinstance(message, ActivityNote):
            self.note(message.text, message.severity)
