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
    RATE_COLUMNS,
    TIME_COLUMNS,
    Cells,
    changed_cells,
    job_cells,
    sort_key,
)
from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist


class JobsTable(DataTable[Text]):
    """A page of jobs, active first; ``apply`` a poll's diff, read ``selected_job()``."""

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

    def on_mount(self) -> None:
        for key, label, width, right in COLUMNS:
            self.add_column(Text(label, justify="right") if right else label, width=width, key=key)
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    # ------------------------------------------------------------------ updates

    def apply(self, diff: PageDiff, *, touched: Collection[int], rates: dict[int, float] | None,
              full: bool) -> None:
        """Show one poll: rows in and out, cells of ``touched`` jobs, clock-driven cells once a second.

        ``rates`` (when re-read) repaint every row's Rate and ETA; ``full`` repaints everything.
        """
        if rates is not None:
            self.rates = rates
        selected = self.selected_job_id()
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
        if diff.order_changed and len(self.jobs) > 1:
            self.sort("id", key=self._sort_key)
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
        return job_cells(job, now, self.rates.get(job.id, 0.0), self.app.theme_variables, only)

    def _put(self, job: core.Job) -> None:
        new = job.id not in self.jobs
        self.jobs[job.id] = job
        if new:
            cells = self._cells_for(job, self._clock())
            self._cells[job.id] = cells
            self.add_row(*[cells[k] for k in COLUMN_KEYS], key=str(job.id), height=1)

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
            self.update_cell(str(job_id), key, value)

    def _sort_key(self, id_cell: Text) -> tuple[int, int]:
        return sort_key(self.jobs[int(id_cell.plain)])

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
