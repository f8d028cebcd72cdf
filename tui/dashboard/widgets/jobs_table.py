"""The jobs table: one page of jobs keyed by id, patched in place poll after poll.

Clearing and re-adding rows costs every row each time (about 1.5 s for 5,000 rows
here, UI frozen) and loses the cursor and the scroll position. So rows are keyed
by job id and columns by name; a poll's ``PageDiff`` adds the rows that arrived,
removes those that left and ``update_cell``s only the cells that changed, all in
one ``batch_update``. The cursor stays on its job when rows move around it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from chunkq import core
from chunkq.tui.dashboard.widgets.job_page import PageDiff
from chunkq.tui.dashboard.widgets.job_rows import (
    COLUMN_KEYS,
    COLUMNS,
    COUNT_COLUMNS,
    PERCENT_WIDTH,
    RATE_COLUMNS,
    SORTS,
    TIME_COLUMNS,
    Cells,
    changed_cells,
    count_needs,
    fit_columns,
    job_cells,
    present_columns,
    sort_key,
)
from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class JobsTable(DataTable[Text]):
    """A page of jobs, active first; ``apply`` a poll's diff, read ``selected_job()``.

    Its columns fit the terminal (``job_rows.fit_columns``): on a resize, or when a
    count outgrows its column, the columns are laid out again and the rows re-added
    in place, the cursor staying on its job. The Tenant column joins them only while
    a job on the page has a tenant (``job_rows.WHEN_PRESENT``). ``sort_by`` orders the page by another
    column (``o`` cycles, ``O`` flips, a click on a header sorts by it).
    """

    class JobChosen(Message):
        """The operator chose a job (enter or a click on its row)."""

        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, clock: Callable[[], datetime], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._clock = clock
        #: the jobs the rows show, by id
        self.jobs: dict[int, core.Job] = {}
        #: recent entities per second of active jobs, for the Rate and ETA cells
        self.rates: dict[int, float] = {}
        self._cells: dict[int, Cells] = {}
        self._select_after: int | None = None
        self._last_second = 0
        self._dirty_all = False
        #: the columns shown and their widths (``fit_columns``)
        self.widths: dict[str, int] = {}
        #: (column, descending) the page is ordered by; ("status", False) is the queue's own order
        self.sort_by: tuple[str, bool] = ("status", False)
        self._outgrown = False  # a count is wider than its column: fit() at the end of apply()
        #: the ``WHEN_PRESENT`` columns shown (the Tenant column once a job on the page has a tenant)
        self.present: frozenset[str] = frozenset()

    def on_mount(self) -> None:
        self._layout(fit_columns(self._available()))
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    # ------------------------------------------------------------------ columns that fit

    def _available(self) -> int:
        width = self.size.width or self.app.size.width
        return max(width - self.styles.scrollbar_size_vertical, 20)

    @property
    def bar_width(self) -> int:
        return max(self.widths.get("progress", 0) - PERCENT_WIDTH, 0)

    def on_resize(self) -> None:
        self.fit()

    def fit(self) -> bool:
        """Lay the columns out again if the width, the widest count or the tenants changed what fits
        (True: they were)."""
        self.present = present_columns(self.jobs.values())
        widths = fit_columns(self._available(), count_needs(self._cells.values(), self.jobs.values()),
                             present=self.present, sorted_by=self.sort_by[0])
        if widths != self.widths:
            self._layout(widths)
            return True
        return False

    def _layout(self, widths: dict[str, int]) -> None:
        """Columns for ``widths``; every row re-added in its place, the cursor kept on its job."""
        selected = self.selected_job_id()
        order = [int(str(row.key.value)) for row in self.ordered_rows] if self.row_count else []
        rebar = self.bar_width != max(widths.get("progress", 0) - PERCENT_WIDTH, 0)
        self.widths = widths
        labels = {key: (label, right) for key, label, _width, right in COLUMNS}
        with self.app.batch_update():
            self.clear(columns=True)
            for key, width in widths.items():
                label, right = labels[key]
                self.add_column(self._header(key, label, right), width=width, key=key)
            now = self._clock()
            for job_id in order:
                if rebar:
                    self._cells[job_id] = self._cells_for(self.jobs[job_id], now)
                cells = self._cells[job_id]
                self.add_row(*[cells[k] for k in widths], key=str(job_id), height=1)
            if selected is not None and selected in self.jobs:
                self.move_cursor(row=self.get_row_index(str(selected)), animate=False, scroll=True)

    def _header(self, key: str, label: str, right: bool) -> Text:
        column, descending = self.sort_by
        if key == column:  # core's own order too: "Status ▲" says the list is sorted, and by what
            label = f"{label} {'▼' if descending else '▲'}"
        return Text(label, justify="right" if right else "left")

    # ------------------------------------------------------------------ sorting

    def cycle_sort(self) -> str:
        """Order the page by the next sortable column; returns what it is sorted by now."""
        keys = list(SORTS)
        column, _descending = self.sort_by
        nxt = keys[(keys.index(column) + 1) % len(keys)] if column in keys else keys[0]
        return self.sort_page(nxt, SORTS[nxt][1])

    def flip_sort(self) -> str:
        column, descending = self.sort_by
        return self.sort_page(column, not descending)

    def sort_page(self, column: str, descending: bool) -> str:
        self.sort_by = (column, descending)
        if not self.fit():  # the sorted column keeps room for its arrow
            self._layout(self.widths)  # headers show the arrow
        self._resort()
        return f"{SORTS[column][0]}, {'descending' if descending else 'ascending'}"

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        if column not in SORTS:
            self.notify(f"the {column} column does not sort", severity="warning")
            return
        current, descending = self.sort_by
        self.sort_page(column, not descending if current == column else SORTS[column][1])

    def _resort(self) -> None:
        if len(self.jobs) < 2:
            return
        selected = self.selected_job_id()
        self.sort("id", key=self._sort_key)
        if selected is not None:
            self.move_cursor(row=self.get_row_index(str(selected)), animate=False, scroll=True)

    # ------------------------------------------------------------------ updates

    def apply(self, diff: PageDiff, *, touched: Collection[int], rates: dict[int, float] | None,
              full: bool) -> None:
        """Show one poll: rows in and out, cells of ``touched`` jobs, clock-driven cells once a second.

        ``rates`` (when re-read) repaint every row's Rate and ETA; ``full`` repaints everything.
        """
        if rates is not None:
            self.rates = rates
        selected = self.selected_job_id()
        # a tenant and a total are set at enqueue: only rows in or out change what the columns need
        arrivals = bool(diff.removes) or any(job.id not in self.jobs for job in diff.puts)
        for job_id in diff.removes:
            self._remove(job_id)
        for job in diff.puts:
            self._put(job)
        now = self._clock()
        second = int(now.timestamp())
        everything = full or self._dirty_all
        self._dirty_all = False
        tick = second != self._last_second
        self._last_second = second
        partial = (TIME_COLUMNS if tick else ()) + (RATE_COLUMNS if rates is not None else ())
        for job_id, job in self.jobs.items():
            if everything or job_id in touched:
                self._update_cells(job_id, self._cells_for(job, now))
            elif partial == TIME_COLUMNS:
                self._update_cells(job_id, self._cells_for(job, now, TIME_COLUMNS))
            elif partial:
                cells = self._cells_for(job, now)
                self._update_cells(job_id, {k: cells[k] for k in partial})
        if self.sort_by != ("status", False) and (diff.puts or touched):
            self.sort("id", key=self._sort_key)  # another order than core's: any change may move a row
        elif diff.order_changed and len(self.jobs) > 1:
            self.sort("id", key=self._sort_key)
        if self._outgrown or arrivals:
            self._outgrown = False
            self.fit()
        target = self._select_after if self._select_after in self.jobs else selected
        if target is not None and target in self.jobs:
            if self._select_after == target:
                self._select_after = None
            index = self.get_row_index(str(target))
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False, scroll=True)

    def select_when_shown(self, job_id: int) -> None:
        """Put the cursor on ``job_id`` once a poll brings its row (a job just created)."""
        self._select_after = job_id

    def _cells_for(self, job: core.Job, now: datetime, only: tuple[str, ...] | None = None) -> Cells:
        return job_cells(job, now, self.rates.get(job.id, 0.0), self.app.theme_variables, only,
                         bar=self.bar_width)

    def _put(self, job: core.Job) -> None:
        new = job.id not in self.jobs
        self.jobs[job.id] = job
        if new:
            cells = self._cells_for(job, self._clock())
            self._cells[job.id] = cells
            self._outgrown |= any(cells[k].cell_len > self.widths.get(k, 1 << 30) for k in COUNT_COLUMNS)
            self.add_row(*[cells[k] for k in self.widths], key=str(job.id), height=1)

    def _remove(self, job_id: int) -> None:
        self.jobs.pop(job_id, None)
        self._cells.pop(job_id, None)
        try:
            self.remove_row(str(job_id))
        except RowDoesNotExist:
            pass

    def _update_cells(self, job_id: int, cells: Cells) -> None:
        old = self._cells.get(job_id)
        if old is None:
            return
        for key, value in changed_cells(old, cells).items():
            old[key] = value
            if key in self.widths:
                if key in COUNT_COLUMNS and value.cell_len > self.widths[key]:
                    self._outgrown = True
                self.update_cell(str(job_id), key, value)

    def _sort_key(self, id_cell: Text) -> tuple[object, ...]:
        return sort_key(self.jobs[int(id_cell.plain)], *self.sort_by)

    def _theme_changed(self, _theme: object) -> None:
        # Every cell carries colours of the old theme: repaint them all, now and at the next poll.
        self._dirty_all = True
        for job_id in list(self._cells):
            self._cells[job_id] = {k: Text("") for k in COLUMN_KEYS}
        with self.app.batch_update():
            now = self._clock()
            for job_id, job in self.jobs.items():
                self._update_cells(job_id, self._cells_for(job, now))

    # ------------------------------------------------------------------ selection

    def selected_job_id(self) -> int | None:
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def selected_job(self) -> core.Job | None:
        job_id = self.selected_job_id()
        return None if job_id is None else self.jobs.get(job_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        job_id = self.selected_job_id()
        if job_id is not None:
            self.post_message(self.JobChosen(job_id))
