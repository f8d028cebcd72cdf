"""The Errors tab's two tables: failures grouped by bug, and the error log page by page.

Each is a caption over a keyed table. A group is one fingerprint (core's
``fingerprint.py``: exception type, where in the user's code, and the message
with its IDs, numbers and URLs replaced), so a provider that puts the entity in
its message still makes one group per bug; the highlighted group's real messages
are shown under the table as samples. Choosing a group posts
``ErrorGroups.Chosen`` (the ``ErrorsPane`` narrows the log to it); moving through the log
posts ``ErrorLog.Highlighted`` (the pane shows that error's traceback), choosing one posts
``ErrorLog.Chosen`` (the screen opens the traceback, full width when narrow). Both
draw from their reactive attributes only. The grouped table lists a page of groups
(``GROUPS_PAGE``, biggest first) and says which: "101–103 of 103 bugs" (issue 27).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chunkq.core import NO_MESSAGE, ErrorEntry, ErrorGroup
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.detail_text import one_line, short_type
from chunkq.tui.dashboard.widgets.keyed_table import Row, selected_key, sync_rows
from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Label, Static

#: errors per page of the log; the table never holds more
PAGE_SIZE = 100
#: groups per page of the grouped table (issue 27: the rest are paged to, never silently left out)
GROUPS_PAGE = 100
#: the grouped table's columns: key, label, width. Counts come first (they rank the groups) and are
#: wide enough for any ``humanize.count`` ("999,999", then "1.2M"), so a number is never cut.
GROUP_COLUMNS = (("entities", "Entities", 8), ("count", "Attempts", 8), ("type", "Type", 14),
                 ("message", "Message", 34), ("last", "Last", 4), ("location", "Where", 20))
#: the message column never gets narrower than this; "Where" shows only when the message keeps
#: ``WHERE_AFTER`` columns beside it (the samples line under the table always says where)
MESSAGE_MIN = 20
WHERE_AFTER = 48
_CELL_PADDING = 2  # DataTable's cell_padding, both sides


def group_columns(width: int) -> tuple[tuple[str, str, int], ...]:
    """The grouped table's columns for a table ``width`` cells wide: the message takes what is left."""
    fixed = [c for c in GROUP_COLUMNS if c[0] not in ("message", "location")]
    used = sum(w + _CELL_PADDING for _k, _l, w in fixed) + _CELL_PADDING + 1  # + the message's padding, scrollbar
    where = GROUP_COLUMNS[-1]
    show_where = width - used - (where[2] + _CELL_PADDING) >= WHERE_AFTER
    if show_where:
        used += where[2] + _CELL_PADDING
    message = max(width - used, MESSAGE_MIN)
    return tuple((k, label, message if k == "message" else w) for k, label, w in GROUP_COLUMNS
                 if k != "location" or show_where)


def message_text(message: str | None, limit: int = 200) -> str:
    """A message on one line; ``(no message)`` for an empty one."""
    return one_line(message, limit) if message else NO_MESSAGE


def error_state(e: ErrorEntry, palette: fmt.Palette | None = None) -> Text:
    """resolved (a later retry succeeded), failed (for good), or retried (a retry was scheduled)."""
    if e.resolved_at is not None:
        return Text("resolved", style=fmt.theme_color("success", palette))
    if e.final:
        return Text("failed", style=fmt.theme_color("error", palette))
    return Text("retried", style=fmt.theme_color("warning", palette))


def group_row(g: ErrorGroup, now: datetime) -> Row:
    """One bug: how many entities and attempts, what it is (normalised message), when last, where."""
    return (
        g.fingerprint,
        (fmt.count(g.entities), fmt.count(g.count), short_type(g.error_type), message_text(g.message),
         fmt.age(g.last_at, now), one_line(g.location or fmt.DASH)),
    )


#: characters kept before the first difference when a message is shown from there ("…limit <n> for bucket")
DIFF_CONTEXT = 8


def _common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def distinct_messages(messages: list[str], width: int) -> list[str]:
    """``messages`` as a column ``width`` cells wide shows them, each told apart from the others.

    Two groups can differ only past what the column shows ("quota exceeded for acco…" twice: the
    account's template differs at its tail). Those are shown from just before their first
    difference, after an ellipsis, so the part that tells them apart is on screen; every other
    message is left as it is.
    """
    def shown(m: str) -> str:
        return set_cell_size(m, width) if cell_len(m) > width else m

    by_shown: dict[str, list[int]] = {}
    for i, m in enumerate(messages):
        by_shown.setdefault(shown(m), []).append(i)
    out = list(messages)
    for same in by_shown.values():
        if len({messages[i] for i in same}) < 2:
            continue
        for i in same:
            m = messages[i]
            differs = max(_common_prefix(m, messages[j]) for j in same if messages[j] != m)
            start = max(differs - DIFF_CONTEXT, 0)
            if start > 0 and cell_len(m[: differs + 1]) > width:
                out[i] = "…" + m[start:]
    return out


def group_samples(g: ErrorGroup | None) -> Text:
    """Where the bug is raised, and the real messages behind its normalised one (what the provider said)."""
    if g is None:
        return Text("")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("in ", style="dim")
    text.append(one_line(g.location or "an unknown place"))
    text.append(" · e.g. ", style="dim")
    samples = g.samples or (g.message,)
    for i, sample in enumerate(samples[:2]):
        if i:
            text.append("\n     ")
        text.append(message_text(sample, 300))
    return text


def groups_caption(groups: int, search: str | None = None, shown: int | None = None, offset: int = 0,
                   width: int | None = None) -> str:
    """How many bugs there are in all (never the size of the page read: issue 27), and which are listed.

    One page: "(3 bugs)". More: the range listed, "101–103 of 103 bugs", and the paging keys (``]``
    and ``[`` with the grouped table focused). ``width``: the hints go, last first, until the caption
    fits; the range never does, so at 80 columns it is never cut.
    """
    where = f" matching {one_line(search, 30)!r}" if search else ""
    if not groups:
        return f"Unresolved errors by bug{where}: none"
    kinds = "1 bug" if groups == 1 else f"{groups:,} bugs"
    n = groups if shown is None else shown
    if offset == 0 and n >= groups:
        return f"Unresolved errors by bug{where} ({kinds}) · enter: show them · /: search"
    span = f"{offset + 1:,}–{offset + n:,} of {kinds}" if n else f"nothing past {offset:,} of {kinds}"
    hints = []
    if offset + n < groups:
        hints.append("  ] next page")
    if offset:
        hints.append("  [ previous")
    hints.append(" · enter: show them")
    for head in (f"Unresolved errors by bug{where}: ", f"Bugs{where}: ", "Bugs: "):
        text = head + span
        if width is None or cell_len(text) <= width:
            break
    while hints and width is not None and cell_len(text + "".join(hints)) > width:
        hints.pop()
    return text + "".join(hints)


def error_row(e: ErrorEntry, palette: fmt.Palette | None = None) -> Row:
    return (str(e.id), (e.entity_id, short_type(e.error_type), message_text(e.message), str(e.attempt),
                        error_state(e, palette)))


@dataclass(frozen=True)
class ErrorPage:
    """One page of the error log and what it was read with."""

    errors: tuple[ErrorEntry, ...] = ()
    offset: int = 0
    #: the group when the log is narrowed to one (a drill-down)
    only: ErrorGroup | None = None
    #: errors the job has logged in all
    total: int = 0
    #: the search text the log is narrowed by (entity ID or message)
    search: str | None = None


def errors_caption(page: ErrorPage, page_size: int = PAGE_SIZE) -> str:
    """Which errors the page holds, of how many, and how to move on."""
    n, offset = len(page.errors), page.offset
    span = f"{offset + 1:,}–{offset + n:,}"
    if n == 0:
        span = "nothing" if offset == 0 else f"nothing past {offset:,}"
    found = f" matching {one_line(page.search, 30)!r}" if page.search else ""
    if page.only is not None:
        g = page.only
        text = (f"Error log {span}{found} · only {one_line(short_type(g.error_type))}: "
                f"{message_text(g.message, 40)} ({fmt.plural(g.entities, 'entity', 'entities')}) · esc: all")
    elif page.search:
        text = f"Error log {span}{found} · esc: all"
    else:
        text = ("Error log: empty, nothing has failed" if page.total == 0
                else f"Error log: {span} of {page.total:,} (every failed attempt)")
    if n == page_size:
        text += "  ] next page"
    if offset:
        text += "  [ previous"
    return text


class ErrorGroups(Vertical):
    """Unresolved errors grouped by fingerprint (one row per bug), most entities first."""

    class Chosen(Message):
        """The operator chose a group: show only its errors."""

        def __init__(self, group: ErrorGroup) -> None:
            super().__init__()
            self.group = group

    groups: reactive[tuple[tuple[ErrorGroup, ...], datetime] | None] = reactive(None, init=False)
    """The groups and the time their "last" ages are measured from."""

    search: reactive[str | None] = reactive(None, init=False)
    """The search the groups were read with (for the caption)."""

    total: int | None = None
    """How many groups the job has in all (set before ``groups``; None: as many as listed)."""

    page_start: int = 0
    """Where the listed page starts among them (set before ``groups``; not ``offset``: every widget's position)."""

    def __init__(self, *, table_id: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self._table_id = table_id
        self._by_key: dict[str, ErrorGroup] = {}
        self._columns: tuple[tuple[str, str, int], ...] = ()
        self._shown_offset: int | None = None  # the page's offset last drawn: a new page starts at its top

    def compose(self) -> ComposeResult:
        yield Label("Unresolved errors by bug", classes="caption", id="groups-caption")
        yield DataTable(id=self._table_id, cursor_type="row", zebra_stripes=True)
        yield Static("", id="group-samples")

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def on_mount(self) -> None:
        self._set_columns(group_columns(self.size.width or 80))

    def _set_columns(self, columns: tuple[tuple[str, str, int], ...]) -> None:
        self._columns = columns
        table = self.table
        keep = selected_key(table)
        table.clear(columns=True)
        for key, label, width in columns:
            table.add_column(label, key=key, width=width)
        if self.groups is not None:
            self._sync(self.groups)
            if keep is not None and keep in self._by_key:
                table.move_cursor(row=table.get_row_index(keep), animate=False)

    def on_resize(self) -> None:
        columns = group_columns(self.size.width)
        if columns != self._columns:
            self._set_columns(columns)
        if self.groups is not None:
            self._caption(self.groups[0])

    def _sync(self, groups: tuple[tuple[ErrorGroup, ...], datetime]) -> None:
        items, now = groups
        index = [i for i, (key, _l, _w) in enumerate(GROUP_COLUMNS) if key in {k for k, _l, _w in self._columns}]
        full = [group_row(g, now) for g in items]
        # messages the column would cut to the same text are shown from where they differ
        at = next(i for i, (key, _l, _w) in enumerate(GROUP_COLUMNS) if key == "message")
        width = next(w for key, _l, w in self._columns if key == "message")
        told = distinct_messages([str(cells[at]) for _key, cells in full], width)
        rows = [(key, [told[n] if i == at else cells[i] for i in index]) for n, (key, cells) in enumerate(full)]
        sync_rows(self.table, rows)

    def highlight(self, fingerprint: str) -> None:
        """Put the cursor on this group's row, if it is listed: the drill-down, the highlighted row and the
        samples line describe one group (issue 27: the breakpoint opened one while another was highlighted)."""
        table = self.table
        if fingerprint in self._by_key and selected_key(table) != fingerprint:
            table.move_cursor(row=table.get_row_index(fingerprint), animate=False)
            self._show_samples()

    def selected_group(self) -> ErrorGroup | None:
        """The group under the cursor (None: no groups)."""
        key = selected_key(self.table)
        return self._by_key.get(key) if key is not None else None

    def watch_groups(self, groups: tuple[tuple[ErrorGroup, ...], datetime] | None) -> None:
        if groups is None:
            return
        items, _now = groups
        self._by_key = {g.fingerprint: g for g in items}
        self._sync(groups)
        if self._shown_offset is not None and self._shown_offset != self.page_start and items:
            self.table.move_cursor(row=0, animate=False)  # another page: from its biggest group
        self._shown_offset = self.page_start
        self._caption(items)
        self._show_samples()

    def _caption(self, items: tuple[ErrorGroup, ...]) -> None:
        total = self.page_start + len(items) if self.total is None else max(self.total, self.page_start + len(items))
        label = self.query_one(Label)
        # the caption's own width: its padding inside the pane's (known once laid out)
        width = self.size.width - label.styles.gutter.width if self.size.width else None
        label.update(fmt.plain(groups_caption(total, self.search, len(items), self.page_start, width)))

    def _show_samples(self) -> None:
        self.query_one("#group-samples", Static).update(group_samples(self.selected_group()))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_samples()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        group = self._by_key.get(str(event.row_key.value))
        if group is not None:
            self.post_message(self.Chosen(group))


class ErrorLog(Vertical):
    """One page of every failed attempt, newest first; the highlighted one is ``selected_error()``."""

    class Highlighted(Message):
        """The cursor moved to another error (None: the log is empty)."""

        def __init__(self, error: ErrorEntry | None) -> None:
            super().__init__()
            self.error = error

    class Chosen(Message):
        """Enter (or a click) on an error: open its traceback, where the terminal has room for it or not."""

        def __init__(self, error: ErrorEntry) -> None:
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

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        error = self._by_id.get(int(str(event.row_key.value)))
        if error is not None:
            self.post_message(self.Chosen(error))
