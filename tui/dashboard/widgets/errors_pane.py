"""The Errors tab: the search box, the groups, the error log and the traceback beside them.

The pane owns the error log's query (``ErrorQuery``): the group it is narrowed to,
the search text, the page of the log and the page of the groups, each a reactive
attribute. Whatever changes them - Enter on a group, a key in the search box,
``]``/``[``, Esc - the pane posts ``ErrorsPane.QueryChanged`` and the screen
reads again; the screen's reads hand back what they found through ``show``, and
``adopt`` takes on what a read learnt (a group's fresh counts, the group a
breakpoint opened) without asking for another read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from chunkq import core
from chunkq.core import ErrorEntry, ErrorGroup
from chunkq.tui.dashboard.widgets.error_tables import (
    GROUPS_PAGE,
    PAGE_SIZE,
    ErrorGroups,
    ErrorLog,
    ErrorPage,
)
from chunkq.tui.dashboard.widgets.error_view import ErrorView
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Input

__all__ = ["ErrorQuery", "ErrorsPane", "read_errors"]


@dataclass(frozen=True)
class ErrorQuery:
    """What the Errors tab reads: which errors, and which page of them and of their groups."""

    #: the group the log is narrowed to (a drill-down); None: every error
    only: ErrorGroup | None = None
    #: the text entity IDs or messages must contain (None: no search)
    search: str | None = None
    #: where the log's page starts
    offset: int = 0
    #: where the grouped table's page starts
    group_offset: int = 0

    @property
    def fingerprint(self) -> str | None:
        return self.only.fingerprint if self.only is not None else None

    def same(self, other: ErrorQuery) -> bool:
        """Asks for the same rows (a group's counts may differ: they move on with the job)."""
        return (self.fingerprint, self.search, self.offset, self.group_offset) == (
            other.fingerprint, other.search, other.offset, other.group_offset)


async def read_errors(queue: core.Queue, job_id: int, query: ErrorQuery, wanted: str | None = None
                      ) -> tuple[ErrorQuery, core.ErrorGroupPage, list[ErrorEntry]]:
    """The page of groups and of the log ``query`` asks for, and the query they were read with (what ``adopt``
    takes on): it opens the group ``wanted`` on whichever page of groups lists it, so the highlighted row,
    the caption and the log describe one group, and it brings the drill-down's counts along."""

    async def groups_at(offset: int) -> core.ErrorGroupPage:
        return await queue.error_group_page(job_id, search=query.search, offset=offset, limit=GROUPS_PAGE)

    page = await groups_at(query.group_offset)
    if not page.groups and page.total and query.group_offset:  # fewer groups now (merged, resolved)
        query = replace(query, group_offset=(page.total - 1) // GROUPS_PAGE * GROUPS_PAGE)
        page = await groups_at(query.group_offset)
    if wanted is not None:
        found = next((g for g in page.groups if g.fingerprint == wanted), None)
        if found is None and query.search is None:
            every = await queue.group_errors(job_id, limit=10_000)
            at = next((i for i, g in enumerate(every) if g.fingerprint == wanted), None)
            if at is not None:  # on another page of groups: show that one
                query = replace(query, group_offset=at // GROUPS_PAGE * GROUPS_PAGE)
                page = await groups_at(query.group_offset)
                found = next((g for g in page.groups if g.fingerprint == wanted), every[at])
        if found is not None:
            query = replace(query, only=found, offset=0)
    if query.only is not None:  # the drill-down's counts move on with the job
        fp = query.only.fingerprint
        query = replace(query, only=next((g for g in page.groups if g.fingerprint == fp), query.only))
    errors = await queue.list_errors(job_id, limit=PAGE_SIZE, offset=query.offset, fingerprint=query.fingerprint,
                                     search=query.search)
    return query, page, errors


class ErrorsPane(Horizontal):
    """The Errors tab's widgets and the query they show; posts ``QueryChanged`` when the query changes."""

    class QueryChanged(Message):
        """The operator changed what the Errors tab shows: read it again (``query``)."""

        def __init__(self, pane: ErrorsPane, query: ErrorQuery) -> None:
            super().__init__()
            self.pane = pane
            self.query = query

        @property
        def control(self) -> ErrorsPane:
            return self.pane

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ErrorsPane.QueryChanged)  # one read for a burst of changes

    only: reactive[ErrorGroup | None] = reactive(None, init=False)
    """The group the log is narrowed to (``show_group``); None: every error."""

    search: reactive[str | None] = reactive(None, init=False)
    """The search text the log and the groups are narrowed by (entity ID or message)."""

    log_offset: reactive[int] = reactive(0, init=False)
    """Where the log's page starts (not ``offset``: that is every widget's position on screen)."""

    group_offset: reactive[int] = reactive(0, init=False)
    """Where the grouped table's page starts (issue 27: every group is reachable, 100 at a time)."""

    open_group: reactive[str | None] = reactive(None, init=False)
    """A group to open once it is read (by fingerprint): auto-run's breakpoint opens the new bug."""

    def __init__(self, *, show_locals: bool = False, open_group: str | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self._show_locals = show_locals
        self.set_reactive(ErrorsPane.open_group, open_group)

    def compose(self) -> ComposeResult:
        with Vertical(id="errors-left"):
            yield Input(placeholder="/ search errors by entity ID or message (esc clears)",
                        id="error-search", select_on_focus=False, max_length=core.limits.SEARCH_LENGTH)
            yield ErrorGroups(table_id="detail-groups", id="error-groups")
            yield ErrorLog(table_id="detail-errors", id="error-log")
        yield ErrorView(show_locals=self._show_locals, id="traceback-pane")

    # ------------------------------------------------------------------ the parts

    @property
    def error_groups(self) -> ErrorGroups:
        return self.query_one(ErrorGroups)

    @property
    def error_log(self) -> ErrorLog:
        return self.query_one(ErrorLog)

    @property
    def error_view(self) -> ErrorView:
        return self.query_one(ErrorView)

    @property
    def search_box(self) -> Input:
        return self.query_one("#error-search", Input)

    # ------------------------------------------------------------------ the query

    @property
    def error_query(self) -> ErrorQuery:
        """The query as one value (not ``query``: that is every widget's DOM query)."""
        return ErrorQuery(self.only, self.search, self.log_offset, self.group_offset)

    def _changed(self) -> None:
        self.post_message(self.QueryChanged(self, self.error_query))

    def _set(self, **parts: object) -> None:
        """Change several parts of the query at once: one ``QueryChanged``, one read."""
        for name, value in parts.items():
            self.set_reactive(getattr(ErrorsPane, name), value)
        self._changed()

    def watch_only(self, old: ErrorGroup | None, new: ErrorGroup | None) -> None:
        if (old and old.fingerprint) != (new and new.fingerprint):  # fresh counts of the same group: no read
            self._changed()

    def watch_search(self) -> None:
        self._changed()

    def watch_log_offset(self) -> None:
        self._changed()

    def watch_group_offset(self) -> None:
        self._changed()

    def watch_open_group(self, group: str | None) -> None:
        if group is not None:
            self._changed()

    def take_open_group(self) -> str | None:
        """The group to open, once: a read that looks for it consumes it, found or not."""
        wanted = self.open_group
        self.set_reactive(ErrorsPane.open_group, None)
        return wanted

    def adopt(self, read: ErrorQuery, asked: ErrorQuery) -> None:
        """Take on what a read asked for ``asked`` settled on (``read``), unless the query moved on meanwhile
        (then another read is on its way). Quietly: it is what was just read."""
        if not self.error_query.same(asked):
            return
        self.set_reactive(ErrorsPane.only, read.only)
        self.set_reactive(ErrorsPane.log_offset, read.offset)
        self.set_reactive(ErrorsPane.group_offset, read.group_offset)

    # ------------------------------------------------------------------ what was read

    def show(self, read: ErrorQuery | None, *, groups: core.ErrorGroupPage | None = None,
             errors: list[ErrorEntry] | None = None, error_total: int = 0, now: datetime) -> None:
        """Draw a read made for ``read`` (None: nothing was read again, only the "last" ages move on)."""
        table = self.error_groups
        if read is not None and groups is not None:
            table.search = read.search
            table.total = groups.total
            table.page_start = groups.offset
            table.groups = (groups.groups, now)
            if read.only is not None:
                table.highlight(read.only.fingerprint)
        elif table.groups is not None:
            table.groups = (table.groups[0], now)  # nothing new: the Last column still ages (issue 27)
        if read is not None and errors is not None:
            self.error_log.page = ErrorPage(tuple(errors), read.offset, read.only, error_total, read.search)
            self.error_view.show(self.error_log.selected_error())

    def selected_error(self) -> ErrorEntry | None:
        return self.error_log.selected_error()

    def selected_group(self) -> ErrorGroup | None:
        """The group the group actions apply to: the drill-down's, or the one highlighted in the grouped table
        while it has the focus; None: the whole job."""
        if self.only is not None:
            return self.only
        return self.error_groups.selected_group() if self.error_groups.table.has_focus else None

    @property
    def groups_focused(self) -> bool:
        """The grouped table has the focus (kept while a dialog covers the screen)."""
        return self.screen.focused is self.error_groups.table

    @property
    def group_pages(self) -> bool:
        """The job has more groups than one page lists."""
        total = self.error_groups.total
        return total is not None and total > GROUPS_PAGE

    # ------------------------------------------------------------------ what the operator does

    def focus_log(self) -> None:
        self.query_one("#detail-errors", DataTable).focus()

    def show_group(self, group: ErrorGroup) -> None:
        """Drill down: the log shows only ``group``'s errors; ``u``, ``r`` and ``x`` act on it alone."""
        self._set(only=group, log_offset=0)  # (the same group chosen again is read afresh all the same)
        self.focus_log()

    def on_error_groups_chosen(self, event: ErrorGroups.Chosen) -> None:
        self.show_group(event.group)

    def on_error_log_highlighted(self, event: ErrorLog.Highlighted) -> None:
        self.error_view.show(event.error)

    def next_page(self) -> None:
        if len(self.error_log.page.errors) < PAGE_SIZE:
            self.notify("this is the last page of the error log")
            return
        self.log_offset += PAGE_SIZE

    def prev_page(self) -> None:
        if self.log_offset:
            self.log_offset = max(self.log_offset - PAGE_SIZE, 0)

    def next_group_page(self) -> None:
        """The next page of groups; a drill-down ends (the highlighted group is the one the keys act on)."""
        total = self.error_groups.total or 0
        if self.group_offset + GROUPS_PAGE >= total:
            self.notify("this is the last page of bugs")
            return
        self._page_groups(self.group_offset + GROUPS_PAGE)

    def prev_group_page(self) -> None:
        if self.group_offset:
            self._page_groups(max(self.group_offset - GROUPS_PAGE, 0))

    def _page_groups(self, offset: int) -> None:
        self._set(only=None, log_offset=0, group_offset=offset)

    def open_search(self) -> None:
        box = self.search_box
        box.add_class("-shown")  # shown while in use: it costs a line the log needs at 24 rows
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "error-search":
            return
        event.stop()
        text = event.value.strip() or None
        if text == self.search:
            return
        self._set(search=text, log_offset=0, group_offset=0)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "error-search":
            event.stop()
            self.focus_log()

    def back(self) -> bool:
        """Esc: clear the search, then the drill-down; False when there is neither (the screen goes back)."""
        box = self.search_box
        if box.has_focus or self.search is not None:
            box.value = ""  # its Input.Changed clears the search and reads again
            box.remove_class("-shown")
            self.focus_log()
            return True
        if self.only is not None:
            self._set(only=None, log_offset=0)
            return True
        return False
