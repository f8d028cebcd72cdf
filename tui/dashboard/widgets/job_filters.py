"""The filter bar above the jobs table: a status filter, a search box and the page position."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Input, Select, Static

STATUS_FILTERS: tuple[str, ...] = ("all", "pending", "running", "paused", "failed", "complete", "cancelled")
#: typing pauses this long before a search is applied (each search re-reads the page)
SEARCH_DELAY = 0.3


def describe(status: str | None, search: str) -> str:
    """The filter in words, for a dialog that acts on every job it matches."""
    parts = []
    if status is not None:
        parts.append(f"status {status}")
    if search:
        parts.append(f"search {search!r}")
    return ", ".join(parts)


class JobFilters(Horizontal):
    """Which jobs the table lists; posts ``Changed`` when that changes (after typing settles)."""

    class Changed(Message):
        """The status filter or the applied search changed: list from the first page again."""

        def __init__(self, status: str | None, search: str) -> None:
            super().__init__()
            self.status = status
            self.search = search

    class Submitted(Message):
        """Enter in the search box: the search is applied, the operator is done typing."""

    page_info: reactive[str] = reactive("", init=False)
    """Which rows of how many the table shows (set by the screen after each poll)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._status = "all"
        self._search = ""
        self._search_timer: Timer | None = None

    @property
    def status(self) -> str | None:
        """The status jobs must have (None: any)."""
        return None if self._status == "all" else self._status

    @property
    def search(self) -> str:
        """The search applied (typing in progress is not applied yet)."""
        return self._search

    def describe(self) -> str:
        return describe(self.status, self._search)

    def compose(self) -> ComposeResult:
        yield Select(
            [(f"status: {s}", s) for s in STATUS_FILTERS], value="all", allow_blank=False,
            compact=True, id="status-filter",
        )
        yield Input(placeholder="/ search name, provider, type", compact=True, id="search")
        yield Static(id="page-info")

    def watch_page_info(self, info: str) -> None:
        self.query_one("#page-info", Static).update(Text(info))

    def clear_search(self) -> bool:
        """Empty the search box and apply that at once (Esc); True when there was a search to clear."""
        box = self.query_one("#search", Input)
        had = bool(box.value or self._search)
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        with box.prevent(Input.Changed):
            box.value = ""
        if self._search:
            self._search = ""
            self.post_message(self.Changed(self.status, self._search))
        return had

    def focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def cycle_status(self) -> None:
        i = STATUS_FILTERS.index(self._status)
        self.query_one("#status-filter", Select).value = STATUS_FILTERS[(i + 1) % len(STATUS_FILTERS)]

    @on(Select.Changed, "#status-filter")
    def _status_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = str(event.value)
        if value != self._status:
            self._status = value
            self.post_message(self.Changed(self.status, self._search))

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_DELAY, self._apply_search)

    def _apply_search(self) -> None:
        self._search_timer = None
        value = self.query_one("#search", Input).value.strip()
        if value != self._search:
            self._search = value
            self.post_message(self.Changed(self.status, self._search))

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self._apply_search()
        self.post_message(self.Submitted())
