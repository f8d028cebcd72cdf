"""The last dry run's results, each failure opened like a stored error.

A dry run (``S``) writes nothing, so its failures are not in any error log; the
activity log shows one line each. Here they get what a stored error gets: the
same ``ErrorView`` (the traceback as recorded, locals only when opted in), fed
with ``debugging.dry_run_entry``. The screen holds what it was given: a dry run
is an experiment, not state to refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import debugging
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.detail_text import short_type
from chunkq.tui.dashboard.widgets.error_tables import message_text
from chunkq.tui.dashboard.widgets.error_view import ErrorView
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter
from chunkq.tui.dashboard.widgets.keyed_table import selected_key, sync_rows
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label


class DryRunScreen(Screen[None]):
    """A dry run's entities (failures first), and the traceback of the one under the cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", id="dry_run.back")]

    def __init__(self, job_id: int, results: Sequence[core.EntityResult], at: datetime, *,
                 show_locals: bool = False) -> None:
        super().__init__()
        self.job_id = job_id
        self.at = at
        self.show_locals = show_locals
        ordered = sorted(enumerate(results, 1), key=lambda item: item[1].ok)  # failures first, in run order
        #: row key -> the failure shaped as an error (successes have no entry)
        self.entries = {str(i): debugging.dry_run_entry(job_id, r, i, at) for i, r in ordered if not r.ok}
        self.results = [(str(i), r) for i, r in ordered]

    def compose(self) -> ComposeResult:
        yield Header()
        failed = len(self.entries)
        caption = (f"Dry run of job {self.job_id} at {self.at:%H:%M:%S} UTC: "
                   f"{humanize.number(len(self.results) - failed)} ok, {humanize.number(failed)} failed · "
                   "nothing was written")
        with Horizontal(id="dry-run-split"):
            with Vertical(id="dry-run-left"):
                yield Label(fmt.plain(caption), classes="caption", id="dry-run-caption")
                yield DataTable(id="dry-run-results", cursor_type="row", zebra_stripes=True)
            yield ErrorView(show_locals=self.show_locals, id="dry-run-traceback")
        yield FitFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label, width in (("entity", "Entity", 16), ("result", "", 1), ("type", "Type", 14),
                                  ("message", "Message", 30), ("took", "Took", 6)):
            table.add_column(label, key=key, width=width)
        palette = self.app.theme_variables
        rows = []
        for key, r in self.results:
            mark = (Text("✓", style=fmt.theme_color("success", palette)) if r.ok
                    else Text("✗", style=fmt.theme_color("error", palette)))
            rows.append((key, (r.entity_id, mark, short_type(r.error_type or "") if not r.ok else "",
                               "" if r.ok else message_text(r.message), fmt.duration(r.duration))))
        sync_rows(table, rows)
        table.focus()
        self._show()

    def selected_entry(self) -> core.ErrorEntry | None:
        """The failure under the cursor (None on a success)."""
        key = selected_key(self.query_one(DataTable))
        return self.entries.get(key) if key is not None else None

    def _show(self) -> None:
        view = self.query_one(ErrorView)
        entry = self.selected_entry()
        key = selected_key(self.query_one(DataTable))
        success = dict(self.results).get(key) if entry is None and key is not None else None
        if success is not None:
            view.show_success(success)  # what it printed and logged, though nothing failed
        else:
            view.show(entry)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show()

    def action_back(self) -> None:
        self.dismiss()
