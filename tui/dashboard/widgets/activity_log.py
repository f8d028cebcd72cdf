"""The activity log under the jobs table: what processing did, one line per event.

Each line is built by a pure function of the message, the time and the theme's
colours (unit-tested without Pilot); the widget only writes them. Entity IDs and
provider messages are user text: they go in as plain ``Text``, never as markup.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.messages import ActivityNote, ChunkDone, EntityBatch, EntityDone, ProcessingMessage
from rich.cells import cell_len, set_cell_size
from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual import events
from textual.notifications import SeverityLevel
from textual.widgets import RichLog

MAX_LINES = 1000
#: entity lines written from one batch; past it, one line says how many more (the chunk's
#: summary counts them, the job's errors list has them all): writing every one kept keys waiting
BATCH_LINES = 8


def _stamp(now: datetime) -> Text:
    return Text(f"{now:%H:%M:%S} ", style=Style(dim=True))


def note_line(text: str, severity: SeverityLevel, now: datetime, palette: fmt.Palette | None = None) -> Text:
    """A line of prose: errors in the failed colour, warnings in the paused one."""
    style = {"error": fmt.status_style("failed", palette), "warning": fmt.status_style("paused", palette)}.get(
        severity, Style())
    line = _stamp(now)
    line.append(fmt.printable(text), style=style)  # notes quote exceptions and paths
    return line


#: lines of an entity's captured output shown under its line (a step's, a dry run's): the last ones
OUTPUT_LINES = 3


def output_tail(output: str | None) -> Text:
    """The last ``OUTPUT_LINES`` of what the callback printed and logged, dim and indented ("" if none)."""
    if not output:
        return Text("")
    tail = Text("", style=Style(dim=True))
    for line in output.splitlines()[-OUTPUT_LINES:]:
        tail.append("\n    │ ")
        tail.append(fmt.printable(line))
    return tail


#: an entity ID longer than this is shown as its head and tail around "…": one line per entity, even
#: for a URL or a JSON key hundreds of characters long (the error view shows it whole)
ID_CELLS = 40


def fold_id(entity_id: str, limit: int = ID_CELLS) -> str:
    """``entity_id`` made printable, and cut in the middle when longer than ``limit`` cells (the start and
    the end are what tell IDs apart: a common prefix, a distinguishing suffix)."""
    text = fmt.printable(entity_id)
    if cell_len(text) <= limit:
        return text
    head = set_cell_size(text, (limit - 1) // 2).rstrip(" ")  # a wide character cut in half leaves a space
    tail_cells = limit - 1 - cell_len(head)
    tail = text[-tail_cells:]
    while cell_len(tail) > tail_cells:
        tail = tail[1:]
    return f"{head}…{tail}"


def entity_line(message: EntityDone, now: datetime, palette: fmt.Palette | None = None, *,
                with_output: bool = True) -> Text:
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
        line.append(f"{job}{fold_id(r.entity_id)}")
        line.append(f"  {fmt.duration(r.duration)}", style=Style(dim=True))
        if with_output:
            line.append_text(output_tail(r.output))
        return line
    transient = r.retry_at is not None
    style = fmt.status_style("paused" if transient else "failed", palette)
    line.append(f"{prefix}{'↻ ' if transient else '✗ '}", style=style)
    line.append(f"{job}{fold_id(r.entity_id)}  ")
    line.append(fmt.printable(f"{r.error_type}: {r.message}"), style=style)
    if r.retry_at is not None:
        delay = max(r.retry_at - now.timestamp(), 0.0)
        line.append(f"  to retry in {fmt.duration(delay)}", style=Style(dim=True))
    if with_output:
        line.append_text(output_tail(r.output))
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
        #: what was written, to lay out again at a new width (RichLog keeps only lines cut to the old one)
        self._kept: deque[RenderableType] = deque(maxlen=MAX_LINES)
        self._laid_out_at = 0
        self._replaying = False

    def write(self, content: RenderableType | object, *args: Any, **kwargs: Any) -> Self:
        if self._size_known and not self._replaying:  # before that RichLog defers, then writes again
            self._kept.append(content)  # type: ignore[arg-type]  # what RichLog.write takes
        return super().write(content, *args, **kwargs)

    def clear(self) -> Self:
        if not self._replaying:
            self._kept.clear()
        return super().clear()

    def on_resize(self, event: events.Resize) -> None:
        """Reflow: every kept line wrapped again at the new width (a wider pane holds them on fewer lines,
        a narrower one never cuts them). At most ``MAX_LINES``, and only when the width changes."""
        width = event.size.width
        if width == self._laid_out_at:
            return
        previous, self._laid_out_at = self._laid_out_at, width
        if not self._size_known or not previous or not self._kept:
            return  # the first size: RichLog writes what it deferred at this width itself
        self._replaying = True
        try:
            with self.app.batch_update():
                self.clear()
                for content in self._kept:
                    self.write(content, scroll_end=False)
                self.scroll_end(animate=False)
        finally:
            self._replaying = False

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
        elif isinstance(message, EntityBatch):
            now, palette = self._clock(), self.app.theme_variables
            for entity in message.entities[:BATCH_LINES]:
                self.write(entity_line(entity, now, palette, with_output=False))  # the error view has it
            more = len(message.entities) - BATCH_LINES
            if more > 0:
                self.write(fmt.plain(f"… and {humanize.plural(more, 'more result')} "
                                     "(the job's errors list has every failure)", "dim"))
        elif isinstance(message, ChunkDone):
            self.note(*chunk_note(message))
        elif isinstance(message, ActivityNote):
            self.note(message.text, message.severity)
