"""The home screen: a live table of jobs, queue totals and the processing log.

The table holds one page of jobs (active first) keyed by job id. A refresh asks
``core`` only for jobs changed since the last poll, then updates just the cells
that changed, so it costs the same with 10 jobs or 10,000 and the cursor and
scroll position stay where the operator left them. Polls never overlap: a
worker fetches, the result is rendered on the main thread, and a one-shot timer
arms the next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from chunkq import core
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Input, RichLog, Select, Static
from textual.widgets.data_table import RowDoesNotExist
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from chunkq.tui.dashboard.app import ChunkqApp

#: most jobs the table holds at once; DataTable pays for every row it holds
PAGE_SIZE = 200
#: re-read jobs changed this long before the last poll (commits can land out of order)
OVERLAP_SECONDS = 2.0
#: more changes than this in one poll: reload the page instead of patching it
MAX_CHANGES = 500
#: when a change may reorder a full page, re-read the page at most this often
FULL_RELOAD_EVERY = 5.0
#: queue totals are one aggregate over every job (about 10 ms at 10,000 jobs on SQLite): re-read
#: them this often when idle, and at most this often while jobs change
STATS_EVERY = 2.0
STATS_WHEN_BUSY = 1.0

STATUS_FILTERS: tuple[str, ...] = ("all", "pending", "running", "paused", "failed", "complete", "cancelled")
RANK = {"running": 0, "pending": 1, "paused": 2, "failed": 3, "complete": 4, "cancelled": 5}

# (key, label, width, right-aligned)
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "ID", 5, True),
    ("name", "Name", 20, False),
    ("type", "Type", 8, False),
    ("provider", "Provider", 11, False),
    ("status", "Status", 9, False),
    ("progress", "Progress", 19, False),
    ("done", "Done", 15, True),
    ("errors", "Errors", 6, True),
    ("rate", "Rate", 7, True),
    ("eta", "ETA", 6, True),
    ("age", "Age", 4, True),
    ("note", "Worker / retries", 22, False),
)
COLUMN_KEYS = tuple(c[0] for c in COLUMNS)
#: cells that change with the clock alone (stale leases, ages, retry countdowns)
TIME_COLUMNS = ("status", "age", "note")
#: cells that change when the rates are re-read
RATE_COLUMNS = ("rate", "eta")


@dataclass
class Poll:
    """What one poll brought back; rendered on the main thread."""

    full: bool
    jobs: list[core.Job]
    started: float
    total: int | None = None
    stats: core.QueueStats | None = None
    rates: dict[int, float] | None = None  # None: not re-read this time
    filter_key: tuple[str, str, int] = ("all", "", 0)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class JobsScreen(Screen[None]):
    """Home: totals, filters, the keyed jobs table and the activity log."""

    HELP_EXTRA: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings("jobs")
    AUTO_FOCUS = "#jobs"

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[int, core.Job] = {}
        self._cells: dict[int, dict[str, Text]] = {}
        self._rates: dict[int, float] = {}
        self._since: float | None = None
        self._status = "all"
        self._search = ""
        self._offset = 0
        self._total = 0
        self._stats: core.QueueStats | None = None
        self._stats_at = -1e18
        self._full_at = -1e18
        self._need_full = True
        self._full_pending = False  # re-read the page once FULL_RELOAD_EVERY has passed
        self._polling = False
        self._poll_again = False
        self._timer: Timer | None = None
        self._select_after: int | None = None
        self._search_timer: Timer | None = None
        self._static_cache: dict[str, object] = {}
        self._last_second = 0
        self._dirty_all = False
        self.polls = 0  # rendered polls, for tests and for the curious
        #: jobs the last incremental poll read (None after a full page read)
        self.last_poll_size: int | None = None

    @property
    def chunkq(self) -> ChunkqApp:
        return cast("ChunkqApp", self.app)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(id="totals")
        with Horizontal(id="filters"):
            yield Select(
                [(f"status: {s}", s) for s in STATUS_FILTERS], value="all", allow_blank=False,
                compact=True, id="status-filter",
            )
            yield Input(placeholder="/ search name, provider, type", compact=True, id="search")
            yield Static(id="page-info")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield RichLog(id="activity", max_lines=1000, wrap=False, markup=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.table
        for key, label, width, right in COLUMNS:
            table.add_column(Text(label, justify="right") if right else label, width=width, key=key)
        log = self.query_one("#activity", RichLog)
        log.border_title = "Activity"
        if self.chunkq.processor_handle is None:
            log.write(Text("Watching only. " + _processor_hint(), style="dim"))
        else:
            log.write(Text("Press s to process one chunk, a to auto-run, S for a dry run, R to reload "
                           "the processor after an edit.", style="dim"))
        self.watch(self.app, "theme", self._theme_changed, init=False)
        # The first poll starts when the screen becomes current (on_screen_resume).

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#jobs", DataTable)

    # ------------------------------------------------------------------ polling

    def poll(self, *, full: bool = False) -> None:
        """Fetch now (or right after the poll in flight); ``full`` re-reads the whole page."""
        if full:
            self._need_full = True
        if self._polling:
            self._poll_again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.app.screen is not self:
            # Hidden under a modal or another screen: fetch nothing, look again later.
            self._arm()
            return
        now = self.chunkq.queue.now()
        full = self._need_full or self._since is None or (
            self._full_pending and now - self._full_at >= FULL_RELOAD_EVERY)
        want_stats = full or now - self._stats_at >= STATS_EVERY or self._stats is None
        self._polling = True
        self._fetch(full, want_stats)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self.set_timer(self.chunkq.refresh_interval, self._tick, name="jobs-poll")

    def _tick(self) -> None:
        self._timer = None
        self.poll()

    def on_screen_resume(self) -> None:
        self.poll()

    def stop_polling(self) -> None:
        """Used by tests and screenshots: no timer fires after this."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    @work(group="poll", exit_on_error=False)
    async def _fetch(self, full: bool, want_stats: bool) -> Poll:
        q = self.chunkq.queue
        started = q.now()
        status = None if self._status == "all" else self._status
        search = self._search or None
        key = (self._status, self._search, self._offset)
        if full:
            jobs = await q.list_jobs(status, limit=PAGE_SIZE, offset=self._offset, search=search)
            total: int | None = await q.count_jobs(status, search=search)
        else:
            assert self._since is not None
            # No status filter here: a job that left the filter must be seen to leave.
            jobs = await q.list_jobs(None, changed_since=self._since - OVERLAP_SECONDS, search=search,
                                     limit=MAX_CHANGES + 1)
            total = None
        # Totals are one aggregate over every job: read them when something changed, or now and then.
        changed_lately = bool(jobs) and started - self._stats_at >= STATS_WHEN_BUSY
        stats = await q.stats() if want_stats or changed_lately else None
        rates: dict[int, float] | None = None
        if stats is not None:  # rates move when chunks commit, i.e. when jobs change
            ids = {j.id for j in jobs} | set(self._jobs)
            active = [i for i in ids if self._job_after(i, jobs).status in core.ACTIVE_STATUSES]
            rates = await q.job_rates(active) if active else {}
        return Poll(full, jobs, started, total, stats, rates, key)

    def _job_after(self, job_id: int, jobs: list[core.Job]) -> core.Job:
        for j in jobs:
            if j.id == job_id:
                return j
        return self._jobs[job_id]

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "poll" or event.state not in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            return
        self._polling = False
        if event.state == WorkerState.SUCCESS:
            result = cast(Poll, event.worker.result)
            if result.filter_key != (self._status, self._search, self._offset):
                self._need_full = True  # the filter changed while fetching: this page is stale
            elif self.app.screen is self:
                self._apply_poll(result)
            # else: not rendered and `since` not advanced, so nothing is lost
        elif event.state == WorkerState.ERROR:
            self._show_error(event.worker.error)
        if self._poll_again:
            self._poll_again = False
            self.poll()
        else:
            self._arm()

    def _show_error(self, error: BaseException | None) -> None:
        msg = str(error) if isinstance(error, core.ChunkqError) else f"{type(error).__name__}: {error}"
        self._set_static("#totals", Text(f"⚠ {msg} (retrying)",
                                         style=fmt.status_style("failed", self.app.theme_variables)))

    # ------------------------------------------------------------------ rendering

    def _apply_poll(self, result: Poll) -> None:
        self.polls += 1
        self.last_poll_size = None if result.full else len(result.jobs)
        self._since = result.started
        if result.stats is not None:
            self._stats = result.stats
            self._stats_at = result.started
        if result.rates is not None:
            self._rates = result.rates
        table = self.table
        selected = self.selected_job_id()
        changed_order = False
        status_filter = None if self._status == "all" else self._status
        with self.app.batch_update():
            if result.full:
                self._need_full = self._full_pending = False
                self._full_at = result.started
                self._total = result.total or 0
                wanted = {j.id for j in result.jobs}
                for job_id in [i for i in self._jobs if i not in wanted]:
                    self._remove(job_id)
                    changed_order = True
                for job in result.jobs:
                    changed_order |= self._put(job)
            else:
                if len(result.jobs) > MAX_CHANGES:
                    self._need_full = True
                for job in result.jobs[:MAX_CHANGES]:
                    matches = status_filter is None or job.status == status_filter
                    if job.id in self._jobs:
                        if matches:
                            changed_order |= self._put(job)
                        else:
                            self._remove(job.id)
                            self._total = max(self._total - 1, 0)
                            changed_order = True
                    elif matches:
                        if self._offset == 0 and len(self._jobs) < PAGE_SIZE:
                            self._put(job)
                            self._total += 1
                            changed_order = True
                        elif self._belongs_on_page(job):
                            self._full_pending = True  # it ranks within this page: re-read the page
            # Rows that changed get every cell recomputed (all rows when the rates were re-read);
            # the others only their clock-driven cells, once a second: a poll costs the page, not more.
            now = self.chunkq.now()
            second = int(now.timestamp())
            everything = result.full or self._dirty_all
            self._dirty_all = False
            tick = second != self._last_second
            self._last_second = second
            touched = {j.id for j in result.jobs}
            partial = (TIME_COLUMNS if tick else ()) + (RATE_COLUMNS if result.rates is not None else ())
            for job_id, job in self._jobs.items():
                if everything or job_id in touched:
                    self._update_cells(job_id, self._cells_for(job, now))
                elif partial == TIME_COLUMNS:
                    self._update_cells(job_id, self._cells_for(job, now, TIME_COLUMNS))
                elif partial:
                    cells = self._cells_for(job, now)
                    self._update_cells(job_id, {k: cells[k] for k in partial})
            if changed_order and len(self._jobs) > 1:
                table.sort("id", key=self._sort_key)
            target = self._select_after if self._select_after in self._jobs else selected
            if target is not None and target in self._jobs:
                if self._select_after == target:
                    self._select_after = None
                index = table.get_row_index(str(target))
                if index != table.cursor_row:
                    table.move_cursor(row=index, animate=False, scroll=True)
            if self._stats is not None and not self._search and status_filter is None:
                self._total = sum(self._stats.jobs_by_status.values())
            elif self._stats is not None and not self._search and status_filter is not None:
                self._total = self._stats.jobs_by_status.get(status_filter, self._total)
            self._render_totals()
            self._render_page_info()
        if self._need_full and not self._polling:
            self._poll_again = True

    def _belongs_on_page(self, job: core.Job) -> bool:
        """Would ``job`` rank within the rows this page holds (active first, newest first)?"""
        if not self._jobs:
            return True
        key = (RANK.get(job.status, 9), -job.id)
        keys = [(RANK.get(j.status, 9), -j.id) for j in self._jobs.values()]
        lo, hi = min(keys), max(keys)
        return key <= hi if self._offset == 0 else lo <= key <= hi

    def _sort_key(self, id_cell: Text) -> tuple[int, int]:
        job = self._jobs[int(id_cell.plain)]
        return (RANK.get(job.status, 9), -job.id)

    def _put(self, job: core.Job) -> bool:
        """Add or update one job's row; True when its place in the order may have changed."""
        old = self._jobs.get(job.id)
        self._jobs[job.id] = job
        if old is None:
            cells = self._cells_for(job, self.chunkq.now())
            self._cells[job.id] = cells
            self.table.add_row(*[cells[k] for k in COLUMN_KEYS], key=str(job.id), height=1)
            return True
        return RANK.get(old.status) != RANK.get(job.status)

    def _remove(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        self._cells.pop(job_id, None)
        try:
            self.table.remove_row(str(job_id))
        except RowDoesNotExist:
            pass

    def _update_cells(self, job_id: int, cells: dict[str, Text]) -> None:
        old = self._cells.get(job_id)
        if old is None:
            return
        for key, value in cells.items():
            before = old.get(key)
            if before is None or before != value or before.style != value.style:
                old[key] = value
                self.table.update_cell(str(job_id), key, value)

    def _cells_for(self, job: core.Job, now: Any, only: tuple[str, ...] | None = None) -> dict[str, Text]:
        pal = self.app.theme_variables
        stale = job.status == core.RUNNING and job.lease_is_stale(now)
        shown_status = "stale" if stale else job.status
        muted = Style(color=fmt.theme_color("foreground-darken-3", pal))
        note, note_style = self._note(job, now, stale)
        timed = {
            "status": fmt.status_text(shown_status, pal),
            "age": Text(fmt.table_age(job.created_at, now), justify="right", end="", style=muted),
            "note": Text(_clip(note, 22), end="", style=note_style or muted),
        }
        if only is not None:
            return timed
        rate = self._rates.get(job.id, 0.0) if job.status in core.ACTIVE_STATUSES else 0.0
        bar = fmt.progress_bar(job.progress, 12, pal, job.status)
        bar.append(f" {fmt.percent(job.progress):>6}")
        errors = Text(fmt.count(job.error_count), justify="right", end="")
        if job.error_count:
            errors.stylize(Style(color=fmt.theme_color("error", pal)))
        return {
            "id": Text(str(job.id), justify="right", end=""),
            "name": Text(_clip(job.name or "—", 20), end=""),
            "type": Text(_clip(job.entity_type, 8), end=""),
            "provider": Text(_clip(job.provider, 11), end=""),
            "status": timed["status"],
            "progress": bar,
            "done": Text(f"{fmt.count(job.processed_count)}/{fmt.count(job.total_count)}", justify="right",
                         end=""),
            "errors": errors,
            "rate": Text(fmt.rate(rate), justify="right", end=""),
            "eta": Text(fmt.eta(job, rate, now), justify="right", end=""),
            "age": timed["age"],
            "note": timed["note"],
        }

    def _note(self, job: core.Job, now: Any, stale: bool) -> tuple[str, Style | None]:
        pal = self.app.theme_variables
        if stale:
            quiet = job.heartbeat_at or job.lease_expires_at
            return (f"quiet {fmt.age(quiet, now)}: {fmt.short_worker(job.lease_owner)}",
                    fmt.status_style("stale", pal))
        parts = []
        if job.leased_chunks > 0 and job.lease_owner:
            more = f" +{job.leased_chunks - 1}" if job.leased_chunks > 1 else ""
            parts.append(f"{fmt.short_worker(job.lease_owner)}{more}")
        if job.waiting_count:
            parts.append(f"{fmt.count(job.waiting_count)} wait, {fmt.until(job.next_retry_at, now)}")
        if parts:
            return " · ".join(parts), Style(color=fmt.theme_color("foreground", pal))
        if job.status == core.FAILED and job.fail_reason:
            return job.fail_reason, fmt.status_style("failed", pal)
        if job.parent_id:
            return f"retry of #{job.parent_id}", None
        return fmt.DASH, None

    def _render_totals(self) -> None:
        stats = self._stats
        if stats is None:
            return
        pal = self.app.theme_variables
        text = Text(no_wrap=True, overflow="ellipsis")
        total_jobs = sum(stats.jobs_by_status.values())
        text.append(f"{fmt.count(total_jobs)} jobs", style="bold")
        for status in ("running", "pending", "paused", "failed", "complete", "cancelled"):
            n = stats.jobs_by_status.get(status, 0)
            text.append("  ")
            text.append(f"{n} {status}", style=fmt.status_style(status, pal) if n else Style(dim=True))
        text.append("   │   ")
        done = stats.processed_entities
        text.append(f"entities {fmt.count(done)}/{fmt.count(stats.total_entities)}")
        text.append(f"  errors {fmt.count(stats.error_count)}",
                    style=Style(color=fmt.theme_color("error", pal)) if stats.error_count else None)
        if stats.waiting_entities:
            text.append(f"  waiting {fmt.count(stats.waiting_entities)}")
        text.append(f"  rate {fmt.rate(stats.entities_per_second)}")
        text.append(f"  workers {stats.active_workers}")
        self._set_static("#totals", text)

    def _render_page_info(self) -> None:
        shown = len(self._jobs)
        if shown == 0:
            info = "no jobs match" if (self._search or self._status != "all") else "no jobs yet: press n"
        else:
            first = self._offset + 1
            info = f"{first}–{self._offset + shown} of {fmt.count(max(self._total, self._offset + shown))}"
            if self._total > PAGE_SIZE or self._offset:
                info += "  ([ ] page)"
        self._set_static("#page-info", Text(info))

    def _set_static(self, selector: str, text: Text) -> None:
        # Static.update lays the screen out again: skip it when nothing changed (most polls).
        key = (text.plain, tuple(text.spans), text.style)
        if self._static_cache.get(selector) != key:
            self._static_cache[selector] = key
            self.query_one(selector, Static).update(text)

    def _theme_changed(self) -> None:
        self._static_cache.clear()
        self._dirty_all = True
        for job_id in list(self._cells):
            self._cells[job_id] = {k: Text("") for k in COLUMN_KEYS}
        self.poll()

    # ------------------------------------------------------------------ selection helpers

    def selected_job_id(self) -> int | None:
        table = self.table
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        except Exception:
            return None
        return int(key.value) if key.value is not None else None

    def selected_job(self, *, quiet: bool = False) -> core.Job | None:
        job_id = self.selected_job_id()
        if job_id is None:
            if not quiet:
                self.notify("no job selected", severity="warning")
            return None
        return self._jobs.get(job_id)

    def _filter_label(self) -> str:
        parts = []
        if self._status != "all":
            parts.append(f"status {self._status}")
        if self._search:
            parts.append(f"search {self._search!r}")
        return ", ".join(parts)

    # ------------------------------------------------------------------ filters and paging

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_cycle_status(self) -> None:
        i = STATUS_FILTERS.index(self._status)
        self.query_one("#status-filter", Select).value = STATUS_FILTERS[(i + 1) % len(STATUS_FILTERS)]

    @on(Select.Changed, "#status-filter")
    def _status_changed(self, event: Select.Changed) -> None:
        value = str(event.value)
        if value != self._status:
            self._status = value
            self._offset = 0
            self.poll(full=True)

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(0.3, self._apply_search)

    def _apply_search(self) -> None:
        self._search_timer = None
        value = self.query_one("#search", Input).value.strip()
        if value != self._search:
            self._search = value
            self._offset = 0
            self.poll(full=True)

    @on(Input.Submitted, "#search")
    def _search_submitted(self) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
        self._apply_search()
        self.table.focus()

    def key_escape(self) -> None:
        if self.focused is not self.table:
            self.table.focus()

    def action_next_page(self) -> None:
        if self._offset + PAGE_SIZE >= self._total:
            self.notify("this is the last page")
            return
        self._offset += PAGE_SIZE
        self.poll(full=True)

    def action_prev_page(self) -> None:
        if self._offset == 0:
            self.notify("this is the first page")
            return
        self._offset = max(self._offset - PAGE_SIZE, 0)
        self.poll(full=True)

    # ------------------------------------------------------------------ job actions

    @on(DataTable.RowSelected, "#jobs")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_job()

    def action_open_job(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        try:
            from chunkq.tui.dashboard.screens.detail import JobDetailScreen
        except ImportError:
            self.notify("the job detail screen is not available in this build", severity="warning")
            return
        self.app.push_screen(JobDetailScreen(job.id))

    def action_new_job(self) -> None:
        from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen

        def created(job: core.Job | None) -> None:
            if job is not None:
                self._select_after = job.id
                self.notify(f"job {job.id} enqueued: {job.total_count:,} {job.entity_type} IDs for "
                            f"{job.provider}", title="Enqueued")
                self.poll(full=True)

        self.app.push_screen(EnqueueScreen(), created)

    def action_step(self) -> None:
        if self.chunkq.require_processor() is None:
            return
        job = self.selected_job(quiet=True)
        if job is not None and job.status in core.ACTIVE_STATUSES:
            self.chunkq.step(job.id)
            return
        if job is not None:
            self.note(f"job {job.id} is {job.status}: stepping the next job in line instead")
        self.chunkq.step(None)

    def action_dry_run(self) -> None:
        if self.chunkq.require_processor() is None:
            return
        job = self.selected_job()
        if job is not None:
            self.chunkq.dry_run(job.id)

    def action_pause_resume(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        if job.status == core.PAUSED:
            self._job_action("resume", job.id)
        else:
            self._job_action("pause", job.id)

    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        if job.is_finished:
            self.notify(f"job {job.id} is {job.status}; there is nothing to cancel", severity="warning")
            return

        def confirmed(choice: str | None) -> None:
            if choice == "cancel":
                self._job_action("cancel", job.id)

        left = job.remaining_count
        self.app.push_screen(
            ConfirmScreen(
                f"Cancel job {job.id}?",
                f"{job.name or job.entity_type + ' for ' + job.provider}: {left:,} of {job.total_count:,} "
                "entities are not processed yet and never will be. A chunk in flight still commits.",
                choices=[("cancel", "Cancel the job", "error"), ("back", "Keep it", "default")],
            ),
            confirmed,
        )

    def action_retry_failed(self) -> None:
        job = self.selected_job()
        if job is not None:
            self._job_action("retry", job.id)

    @work(group="job-action", exit_on_error=False)
    async def _job_action(self, verb: str, job_id: int) -> None:
        q = self.chunkq.queue
        try:
            if verb == "retry":
                new = await q.retry_failed(job_id)
                self._select_after = new.id
                self.notify(f"job {new.id} created: {new.total_count:,} entities of job {job_id} to retry",
                            title="Retry")
            else:
                job = await getattr(q, verb)(job_id)
                self.notify(f"job {job_id} is {job.status}")
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.poll(full=verb == "retry")

    def action_bulk(self) -> None:
        if self._status == "all" and not self._search:
            self.notify("set a status filter (f) or a search (/) first: bulk actions apply to every job "
                        "it matches", severity="warning")
            return
        self._bulk_ask()

    @work(group="job-action", exit_on_error=False)
    async def _bulk_ask(self) -> None:
        status = None if self._status == "all" else self._status
        n = await self.chunkq.queue.count_jobs(status, search=self._search or None)
        if n == 0:
            self.notify("no job matches the filter", severity="warning")
            return
        jobs = "job" if n == 1 else "jobs"

        def chosen(choice: str | None) -> None:
            if choice in ("pause", "resume", "cancel", "retry"):
                self._bulk_apply(choice, status)

        # A callback, not push_screen_wait: no worker sits waiting on the operator.
        self.app.push_screen(
            ConfirmScreen(
                f"Apply to all {n:,} matching {jobs}?",
                f"Every job matching {self._filter_label()} — {n:,} {jobs}, not just the ones on this page. "
                "Jobs the action does not apply to are skipped.",
                choices=[("pause", f"Pause {n:,}", "warning"), ("resume", f"Resume {n:,}", "primary"),
                         ("cancel", f"Cancel {n:,}", "error"), ("retry", f"Retry failed of {n:,}", "default"),
                         ("back", "Back", "default")],
            ),
            chosen,
        )

    @work(group="job-action", exit_on_error=False)
    async def _bulk_apply(self, verb: str, status: str | None) -> None:
        q = self.chunkq.queue
        ids: list[int] = []
        offset = 0
        while True:  # collect first: acting changes statuses, hence the order of the listing
            page = await q.list_jobs(status, search=self._search or None, limit=1000, offset=offset)
            ids += [j.id for j in page]
            if len(page) < 1000:
                break
            offset += 1000
        done = skipped = 0
        for job_id in ids:
            try:
                if verb == "retry":
                    await q.retry_failed(job_id)
                else:
                    await getattr(q, verb)(job_id)
                done += 1
            except (core.InvalidTransition, core.InvalidInput, core.JobNotFound):
                skipped += 1
        past = {"pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried"}[verb]
        msg = f"{past} {done:,} of {len(ids):,} jobs"
        if skipped:
            msg += f" ({skipped:,} skipped: the action did not apply to them)"
        self.notify(msg, title="All matching")
        self.note(msg)
        self.poll(full=True)

    # ------------------------------------------------------------------ activity log

    def note(self, text: str, severity: str = "information") -> None:
        pal = self.app.theme_variables
        style = {"error": fmt.status_style("failed", pal), "warning": fmt.status_style("paused", pal)}.get(
            severity, Style())
        line = Text(f"{self.chunkq.now():%H:%M:%S} ", style=Style(dim=True))
        line.append(text, style=style)
        self.query_one("#activity", RichLog).write(line)

    def processing_event(self, message: Any) -> None:
        """Called by the app for each processing message (see ``tui.app``)."""
        from chunkq.tui.dashboard.app import ActivityNote, ChunkDone, EntityDone

        if isinstance(message, EntityDone):
            self._log_entity(message)
        elif isinstance(message, ChunkDone):
            r = message.result
            if r.committed:
                retried = f", {r.retried} to retry" if r.retried else ""
                errors = f"{r.errors} error{'s' if r.errors != 1 else ''}"
                self.note(f"{message.source}: job {r.job_id} chunk {r.chunk_index}: {r.processed} processed, "
                          f"{errors}{retried} in {fmt.duration(r.duration)} (job {r.status})",
                          "error" if r.errors else "information")
            else:
                self.note(f"{message.source}: job {r.job_id} chunk {r.chunk_index}: lease lost, results "
                          "discarded (another worker redoes it)", "warning")
            if message.source == "step":
                self.poll()  # show a step's effect now; auto-run's chunks wait for the next tick
        elif isinstance(message, ActivityNote):
            self.note(message.text, message.severity)

    def _log_entity(self, message: Any) -> None:
        r: core.EntityResult = message.result
        pal = self.app.theme_variables
        prefix = "dry " if message.dry_run else ""
        job = f"job {message.job_id} " if message.job_id else ""
        line = Text(f"{self.chunkq.now():%H:%M:%S} ", style=Style(dim=True))
        if r.ok:
            line.append(f"{prefix}✓ ", style=fmt.status_style("complete", pal))
            line.append(f"{job}{r.entity_id}")
            line.append(f"  {fmt.duration(r.duration)}", style=Style(dim=True))
        else:
            transient = (r.error_type or "").endswith("Retry")
            mark = "↻ " if transient else "✗ "
            line.append(f"{prefix}{mark}", style=fmt.status_style("paused" if transient else "failed", pal))
            line.append(f"{job}{r.entity_id}  ")
            line.append(f"{r.error_type}: {r.message}",
                        style=fmt.status_style("paused" if transient else "failed", pal))
        self.query_one("#activity", RichLog).write(line)


def _processor_hint() -> str:
    from chunkq.tui.dashboard.app import PROCESSOR_HINT

    return PROCESSOR_HINT[0].upper() + PROCESSOR_HINT[1:] + "."
