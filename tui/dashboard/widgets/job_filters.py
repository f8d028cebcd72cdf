"""The filter bar above the jobs table: a status filter, a search box, a tenant filter and the page position.

The tenant filter stays hidden until the queue has a named tenant: a queue that
never uses tenants keeps its bar as it was.
"""

from __future__ import annotations

from collections.abc import Iterable

from chunkq.core import limits
from chunkq.tui.dashboard.format import printable
from chunkq.tui.dashboard.widgets.job_page import PAGING_HINT
from rich.cells import cell_len
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
#: the tenant filter's values: every tenant, or one (("t", "") is the jobs without a tenant); a tuple,
#: so no tenant name can be mistaken for "every tenant"
ANY_TENANT: tuple[str, ...] = ("any",)


def tenant_value(name: str) -> tuple[str, ...]:
    return ("t", name)


def tenant_options(names: Iterable[str | None]) -> list[tuple[Text, tuple[str, ...]]]:
    """The tenant filter's choices for ``names`` (``Queue.list_tenants``; None: jobs without a tenant).

    A tenant name is user text: a plain ``Text``, control characters escaped, never markup.
    """
    options = [(Text("tenant: all"), ANY_TENANT), (Text("tenant: none"), tenant_value(""))]
    for name in sorted(n for n in names if n):
        options.append((Text(f"tenant: {printable(name)}", no_wrap=True, overflow="ellipsis"),
                        tenant_value(name)))
    return options


def describe(status: str | None, search: str, tenant: str | None = None) -> str:
    """The filter in words, for a dialog that acts on every job it matches."""
    parts = []
    if status is not None:
        parts.append(f"status {status}")
    if search:
        parts.append(f"search {search!r}")
    if tenant is not None:
        parts.append(f"tenant {tenant!r}" if tenant else "no tenant")
    return ", ".join(parts)


class JobFilters(Horizontal):
    """Which jobs the table lists; posts ``Changed`` when that changes (after typing settles)."""

    class Changed(Message):
        """The status filter, the applied search or the tenant filter changed: list from the first page again."""

        def __init__(self, status: str | None, search: str, tenant: str | None = None) -> None:
            super().__init__()
            self.status = status
            self.search = search
            self.tenant = tenant

    class Submitted(Message):
        """Enter in the search box: the search is applied, the operator is done typing."""

    #: the search box's width when the bar has room for it beside the page position, and its least
    SEARCH_WIDTH = 40
    SEARCH_MIN = 12

    page_info: reactive[str] = reactive("", init=False)
    """Which rows of how many the table shows (set by the screen after each poll)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._status = "all"
        self._search = ""
        self._search_timer: Timer | None = None
        self._tenant: tuple[str, ...] = ANY_TENANT
        self._tenant_names: tuple[str, ...] = ()

    @property
    def status(self) -> str | None:
        """The status jobs must have (None: any)."""
        return None if self._status == "all" else self._status

    @property
    def search(self) -> str:
        """The search applied (typing in progress is not applied yet)."""
        return self._search

    @property
    def tenant(self) -> str | None:
        """The tenant jobs must have (None: any; "": those without a tenant)."""
        return None if self._tenant == ANY_TENANT else self._tenant[1]

    def describe(self) -> str:
        return describe(self.status, self._search, self.tenant)

    def _changed(self) -> None:
        self.post_message(self.Changed(self.status, self._search, self.tenant))

    def show_tenants(self, names: Iterable[str | None]) -> None:
        """Offer ``names`` (``Queue.list_tenants``) in the tenant filter; shown once one has a name.

        The choice made stays while its tenant is listed; the options are replaced
        only when the names change, so a poll does not reset an open list.
        """
        named = tuple(sorted(n for n in names if n))
        if named == self._tenant_names:
            return
        self._tenant_names = named
        box = self.query_one("#tenant-filter", Select)
        keep = self._tenant if self._tenant == ANY_TENANT or not self._tenant[1] or self._tenant[1] in named \
            else ANY_TENANT
        with box.prevent(Select.Changed):
            box.set_options(tenant_options(named))
            box.value = keep
        box.display = bool(named) or keep != ANY_TENANT
        if keep != self._tenant:
            self._tenant = keep
            self._changed()

    def compose(self) -> ComposeResult:
        yield Select(
            [(f"status: {s}", s) for s in STATUS_FILTERS], value="all", allow_blank=False,
            compact=True, id="status-filter",
        )
        yield Input(placeholder="/ search name, provider, type", compact=True, id="search",
                    max_length=limits.SEARCH_LENGTH)
        tenants = Select(tenant_options(()), value=ANY_TENANT, allow_blank=False, compact=True,
                         id="tenant-filter")
        tenants.display = False  # until a tenant exists (``show_tenants``)
        yield tenants
        yield Static(id="page-info")

    def watch_page_info(self, info: str) -> None:
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The page position is never cut ("1–200 of 10,008"): the search box gives way to it, down to
        ``SEARCH_MIN``, and then the paging hint goes, never the numbers."""
        info = self.page_info
        box = self.query_one("#search", Input)
        others = sum(w.outer_size.width for w in (self.query_one("#status-filter"), self.query_one("#tenant-filter"))
                     if w.display)
        room = self.content_size.width - others - box.styles.margin.width
        if room <= 0:
            return
        box.styles.width = max(self.SEARCH_MIN, min(self.SEARCH_WIDTH, room - cell_len(info)))
        if cell_len(info) > room - self.SEARCH_MIN:
            info = info.split(PAGING_HINT)[0]
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
            self._changed()
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
            self._changed()

    @on(Select.Changed, "#tenant-filter")
    def _tenant_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.value
        if isinstance(value, tuple) and value != self._tenant:
            self._tenant = value
            self._changed()

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
            self._changed()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self._apply_search()
        self.post_message(self.Submitted())
