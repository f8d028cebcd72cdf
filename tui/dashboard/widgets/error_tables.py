"""The Errors tab's two tables: unresolved failures grouped, and the error log page by page.

Each is a caption over a keyed table. Choosing a group posts ``ErrorGroups.Chosen``
(the screen filters the log by it); moving through the log posts
``ErrorLog.Highlighted`` (the screen shows that error's traceback). Both draw from
their one reactive attribute only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chunkq.core import ErrorEntry, ErrorGroup
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.detail_text import one_line, short_type
from chunkq.tui.dashboard.widgets.keyed_table import Row, selected_key, sync_rows
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Label

#: errors per page of the log; the table never holds more
PAGE_SIZE = 100
#: the key of a group's row: type and message, joined by a character neither can hold
GROUP_SEP = "\x00"


def error_state(e: ErrorEntry, palette: fmt.Palette | None = None) -> Text:
    """resolved (a later retry succeeded), failed (for good), or retried (a retry was scheduled)."""
    if e.resolved_at is not None:
        return Text("resolved", style=fmt.theme_color("success", palette))
    if e.final:
        return Text("failed", style=fmt.theme_color("error", palette))
    return Text("retried", style=fmt.theme_color("warning", palette))


def group_row(g: ErrorGroup, now: datetime) -> Row:
    return (
        f"{g.error_type}{GROUP_SEP}{g.message}",
        (fmt.count(g.count), fmt.count(g.entities), short_type(g.error_type), one_line(g.message),
         fmt.age(g.last_at, now)),
    )


def groups_caption(groups: int) -> str:
    if not groups:
        return "Unresolved errors by type and message: none"
    kinds = "1 kind" if groups == 1 else f"{groups} kinds"
    return f"Unresolved errors by type and message ({kinds}) · enter: show them"


def error_row(e: ErrorEntry, palette: fmt.Palette | None = None) -> Row:
    return (str(e.id), (e.entity_id, short_type(e.error_type), one_line(e.message), str(e.attempt),
                        error_state(e, palette)))


@dataclass(frozen=True)
class ErrorPage:
    """One page of the error log and what it was read with."""

    errors: tuple[ErrorEntry, ...] = ()
    offset: int = 0
    #: (error type, message) when the log is narrowed to one group
    only: tuple[str, str] | None = None
    #: errors the job has logged in all
    total: int = 0


def errors_caption(page: ErrorPage, page_size: int = PAGE_SIZE) -> str:
    """Which errors the page holds, of how many, and how to move on."""
    n, offset = len(page.errors), page.offset
    span = f"{offset + 1:,}–{offset + n:,}"
    if n == 0:
        span = "nothing" if offset == 0 else f"nothing past {offset:,}"
    if page.only is None:
        text = ("Error log: empty, nothing has failed" if page.total == 0
                else f"Error log: {span} of {page.total:,} (every failed attempt)")
    else:
        error_type, message = page.only
        text = f"Error log {span} · only {one_line(short_type(error_type))}: {one_line(message, 40)} · esc: all"
    if n == page_size:
        text += "  ] next page"
    if offset:
        text += "  [ previous"
    return text


class ErrorGroups(Vertical):
    """Unresolved errors grouped by type and message, most frequent first."""

    class Chosen(Message):
        """The operator chose a group: show only its errors."""

        def __init__(self, error_type: str, message: str) -> None:
            super().__init__()
            self.error_type = error_type
            self.message = message

    groups: reactive[tuple[tuple[ErrorGroup, ...], datetime] | None] = reactive(None, init=False)
    """The groups and the time their "last" ages are measured from."""

    def __init__(self, *, table_id: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self._table_id = table_id

    def compose(self) -> ComposeResult:
        yield Label("Unresolved errors by type and message", classes="caption", id="groups-caption")
        yield DataTable(id=self._table_id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label, width in (("count", "Count", 5), ("entities", "Entities", 8), ("type", "Type", 15),
                                  ("message", "Message", 32), ("last", "Last", 4)):
            table.add_column(label, key=key, width=width)

    def watch_groups(self, groups: tuple[tuple[ErrorGroup, ...], datetime] | None) -> None:
        if groups is None:
            return
        items, now = groups
        sync_rows(self.query_one(DataTable), [group_row(g, now) for g in items])
        self.query_one(Label).update(fmt.plain(groups_caption(len(items))))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            error_type, _, message = event.row_key.value.partition(GROUP_SEP)
            self.post_message(self.Chosen(error_type, message))


class ErrorLog(Vertical):
    """One page of every failed attempt, newest first; the highlighted one is ``selected_error()``."""

    class Highlighted(Message):
        """The cursor moved to another error (None: the log is empty)."""

        def __init__(self, error: ErrorEntry | None) -> None:
            super().__init__()
            self.error = error

    page: reactive[ErrorPage] = reactive(ErrorPage, init=False)
    """The page shown."""

    def __init__(self, *, table_id: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self._table_id = table_id
        self._by_id: dict[int, ErrorEntry] = {}

    def compose(self) -> ComposeResult:
        yield Label("Error log", classes="caption", id="errors-caption")
        yield DataTable(id=self._table_id, cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def on_mount(self) -> None:
        for key, label, width in (("entity", "Entity", 16), ("type", "Type", 14), ("message", "Message", 26),
                                  ("attempt", "Try", 3), ("state", "State", 8)):
            self.table.add_column(label, key=key, width=width)

    def watch_page(self, page: ErrorPage) -> None:
        self._by_id = {e.id: e for e in page.errors}
        palette = self.app.theme_variables
        sync_rows(self.table, [error_row(e, palette) for e in page.errors])
        self.query_one(Label).update(fmt.plain(errors_caption(page)))  # quotes a message: never markup

    def selected_error(self) -> ErrorEntry | None:
        key = selected_key(self.table)
        return self._by_id.get(int(key)) if key is not None else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(self.Highlighted(self.selected_error()))
