"""The right half of the Errors tab: one error's traceback, and the outcome of retrying it.

Shows the error the log's cursor is on (``error``) with, above it, what the last
``t`` (retry entity) did (``note``); moving to another error clears that note.
Below the traceback: what the callback printed and logged for that entity
(``ErrorEntry.output``, issue 28), read for the one error shown - a page of the
log does not carry it.
"""

from __future__ import annotations

from chunkq import core
from chunkq.core import ErrorEntry, describe_error
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.debugging import DRY_RUN_CHUNK
from chunkq.tui.dashboard.protocol import dashboard
from chunkq.tui.dashboard.traceback_view import render_error, render_stacks
from chunkq.tui.dashboard.widgets.error_tables import error_state
from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

PLACEHOLDER = "Select an error to see its traceback."


def error_heading(error: ErrorEntry, state: Text) -> Text:
    """Which error, which entity and attempt, where it happened and where it stands now."""
    if error.chunk_index == DRY_RUN_CHUNK:
        return Text.assemble(("dry-run failure", "bold"), f"  entity {fmt.printable(error.entity_id)}",
                             "  ·  nothing was stored", f"  ·  {fmt.timestamp(error.created_at)}")
    head = Text.assemble(
        (f"error #{error.id}", "bold"),
        f"  entity {fmt.printable(error.entity_id)}  ·  attempt {error.attempt}",
        f"  ·  chunk {error.chunk_index}" if error.chunk_index >= 0 else "  ·  manual retry",
        f"  ·  {fmt.timestamp(error.created_at)}",
    )
    head.append("  ·  ")
    head.append_text(state)
    if error.resolved_at is not None:
        head.append(f" at {error.resolved_at:%H:%M:%S} UTC")
    return head


def output_block(output: str | None, palette: fmt.Palette | None = None) -> RenderableType:
    """The callback's captured output for the entity, as plain text under a heading ("" when none)."""
    if not output:
        return ""
    return Group(Text(""), Text("Output (what the callback printed and logged)", style="bold"),
                 fmt.plain(output, lines=True))


def retry_outcome(error: ErrorEntry, outcome: core.EntityResult | core.ChunkqError, *, show_locals: bool = False,
                  palette: fmt.Palette | None = None) -> RenderableType:
    """What retrying ``error``'s entity did: succeeded, failed again (with the new traceback), or not done."""
    if isinstance(outcome, core.ChunkqError):
        return fmt.plain(f"retry of {error.entity_id} not done: {outcome}", fmt.theme_color("error", palette),
                         lines=True)
    if outcome.ok:
        return fmt.plain(f"✓ {error.entity_id} succeeded on retry ({fmt.duration(outcome.duration)}); "
                         "its errors are marked resolved, the log keeps them",
                         f"bold {fmt.theme_color('success', palette)}")
    said = describe_error(outcome.error_type or "Error", outcome.message or "")
    head = fmt.plain(f"✗ {error.entity_id} failed again: {said}",
                     f"bold {fmt.theme_color('error', palette)}", lines=True)
    trace = (render_stacks(outcome.stacks, show_locals=show_locals) if outcome.stacks
             else fmt.plain(outcome.traceback or "", lines=True))
    return Group(head, trace, Text("─" * 20 + " the stored error:", style="dim"))


class ErrorView(VerticalScroll):
    """A stored error drawn like a live traceback (locals only when ``show_locals``)."""

    error: reactive[ErrorEntry | None] = reactive(None, init=False)
    """The error shown (None: the placeholder)."""

    note: reactive[RenderableType | None] = reactive(None, init=False, always_update=True)
    """What retrying the shown error's entity did, above its traceback."""

    def __init__(self, *, show_locals: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.show_locals = show_locals

    def compose(self) -> ComposeResult:
        yield Static("", id="detail-retry-result")
        yield Static(Text(PLACEHOLDER, style="dim"), id="detail-traceback")
        yield Static("", id="detail-output").set_styles("display: none;")

    def show(self, error: ErrorEntry | None) -> None:
        """Show ``error``; the retry note stays only while it is the same error."""
        if error == self.error:
            return
        if (error is None or self.error is None or error.id != self.error.id) and self.note is not None:
            self.note = None  # (only when there is one: each update re-lays out the screen)
        self.error = error

    def show_success(self, result: core.EntityResult) -> None:
        """A success (a dry run's): no traceback, only what the callback printed and logged."""
        self.show(None)
        said = f"✓ {fmt.printable(result.entity_id)} succeeded in {fmt.duration(result.duration)}"
        self.query_one("#detail-traceback", Static).update(
            Text(said + ("" if result.output else "; it wrote no output"), style="dim"))
        self._set_output(result.output)

    def _set_output(self, output: str | None) -> None:
        pane = self.query_one("#detail-output", Static)
        if not output and not pane.display:
            return  # nothing shown, nothing to show: no re-layout
        pane.update(output_block(output))
        pane.display = bool(output)  # no blank line under a traceback when nothing was written

    def watch_note(self, note: RenderableType | None) -> None:
        self.query_one("#detail-retry-result", Static).update(note or "")

    def watch_error(self, error: ErrorEntry | None) -> None:
        pane = self.query_one("#detail-traceback", Static)
        self._set_output(error.output if error else None)
        if error is not None and error.output is None and error.id > 0:
            self._read_output(error.id)
        if error is None:
            pane.update(Text(PLACEHOLDER, style="dim"))
            return
        state = error_state(error, self.app.theme_variables)
        pane.update(Group(error_heading(error, state), Text(""), render_error(error, show_locals=self.show_locals)))

    @work(group="error-output", exclusive=True, exit_on_error=False)
    async def _read_output(self, error_id: int) -> None:
        """The shown error's output, read on its own (one row): the log's pages leave it out."""
        try:
            stored = await dashboard(self).queue.get_error(error_id)
        except core.ChunkqError:
            return  # pruned meanwhile, or the database is away: the traceback stands alone
        if self.error is not None and self.error.id == error_id:
            self._set_output(stored.output)
