"""The home screen: queue totals, filters, the jobs table and the activity log.

Longer than 500 lines: its polls, filters and keys share one state, the page shown.

The screen decides what to read and when; its widgets draw. A poll asks ``core``
only for jobs changed since the last one (``diff_page`` turns them into rows in
and out, ``JobsTable`` patches just those cells), so it costs the same with 10
jobs or 10,000 and the cursor stays where the operator left it. Polls never
overlap (``Poller``: fetch, render, arm a one-shot timer) and stop while the
screen is covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard.messages import ChunkDone, ProcessingMessage
from chunkq.tui.dashboard.polling import Poller
from chunkq.tui.dashboard.protocol import Dashboard, dashboard
from chunkq.tui.dashboard.screens import job_actions
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
from chunkq.tui.dashboard.screens.prune import PruneScreen
from chunkq.tui.dashboard.screens.prune import summary as prune_summary
from chunkq.tui.dashboard.widgets.activity_log import ActivityLog
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter
from chunkq.tui.dashboard.widgets.history import HistoryLine
from chunkq.tui.dashboard.widgets.job_filters import JobFilters
from chunkq.tui.dashboard.widgets.job_page import (
    MAX_CHANGES,
    PAGE_SIZE,
    diff_page,
    matching_total,
    next_offset,
    page_info,
    prev_offset,
)
from chunkq.tui.dashboard.widgets.jobs_table import JobsTable
from chunkq.tui.dashboard.widgets.recent_rates import RecentRates
from chunkq.tui.dashboard.widgets.totals import QueueTotals
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import Header

#: re-read jobs changed this long before the last poll (commits can land out of order)
OVERLAP_SECONDS = 2.0
#: when a change may reorder a full page, re-read the page at most this often
FULL_RELOAD_EVERY = 5.0
#: queue totals are one aggregate over every job (about 10 ms at 10,000 jobs on SQLite): re-read
#: them this often when idle, and at most this often while jobs change
STATS_EVERY = 2.0
STATS_WHEN_BUSY = 1.0


@dataclass
class Poll:
    """What one poll brought back; rendered on the main thread."""

    full: bool
    jobs: list[core.Job]
    started: float
    total: int | None = None
    stats: core.QueueStats | None = None
    history: list[core.HistoryBucket] | None = None  # None: not re-read this time
    filter_key: tuple[str | None, str, str | None, int] = (None, "", None, 0)
    #: every tenant (``Queue.list_tenants``), read with each full page; None: not re-read this time
    tenants: list[str | None] | None = None


class JobsScreen(Screen[None]):
    """Home: totals, filters, the keyed jobs table and the activity log."""

    COMMAND_SCOPE: ClassVar[commands.Scope] = commands.JOBS
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings(commands.JOBS)
    AUTO_FOCUS = "#jobs"

    def __init__(self) -> None:
        super().__init__()
        self._offset = 0
        self._total = 0
        self._since: float | None = None
        self._stats: core.QueueStats | None = None
        self._stats_at = -1e18
        self._full_at = -1e18
        self._need_full = True
        self._full_pending = False  # re-read the page once FULL_RELOAD_EVERY has passed
        self.recent_rates = RecentRates()  # each row's Rate, from its counters between polls
        self.poller: Poller[Poll] = Poller(
            self, group="poll", fetch=self._fetch, render=self._render_poll,
            interval=lambda: self.dashboard.refresh_interval,
            visible=lambda: self.app.screen is self, on_error=self._show_error,
        )
        self.polls = 0  # rendered polls, for tests and for the curious
        #: jobs the last incremental poll read (None after a full page read)
        self.last_poll_size: int | None = None

    @property
    def dashboard(self) -> Dashboard:
        return dashboard(self)

    @property
    def table(self) -> JobsTable:
        return self.query_one("#jobs", JobsTable)

    @property
    def filters(self) -> JobFilters:
        return self.query_one(JobFilters)

    @property
    def activity(self) -> ActivityLog:
        return self.query_one("#activity", ActivityLog)

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield QueueTotals(id="totals")
        yield HistoryLine(id="queue-history")
        yield JobFilters(id="filters")
        yield JobsTable(self.dashboard.now, id="jobs")
        yield ActivityLog(self.dashboard.now, id="activity")
        yield FitFooter()

    def on_mount(self) -> None:
        if self.dashboard.processor_handle is None:
            hint = commands.PROCESSOR_HINT
            self.activity.hint("Watching only. " + hint[0].upper() + hint[1:] + ".")
        else:
            self.activity.hint("Press s to process one chunk, a to auto-run, S for a dry run, R to reload "
                               "the processor after an edit.")
        # The first poll starts when the screen becomes current (on_screen_resume).

    # ------------------------------------------------------------------ polling

    def poll(self, *, full: bool = False) -> None:
        """Fetch now (or right after the poll in flight); ``full`` re-reads the whole page."""
        if full:
            self._need_full = True
        self.poller.poll()

    def on_screen_resume(self) -> None:
        self.poll()

    def stop_polling(self) -> None:
        """Used by tests and screenshots: no timer fires after this."""
        self.poller.stop()

    def _filter_key(self) -> tuple[str | None, str, str | None, int]:
        return (self.filters.status, self.filters.search, self.filters.tenant, self._offset)

    async def _fetch(self) -> Poll:
        q = self.dashboard.queue
        started = q.now()
        full = self._need_full or self._since is None or (
            self._full_pending and started - self._full_at >= FULL_RELOAD_EVERY)
        want_stats = full or started - self._stats_at >= STATS_EVERY or self._stats is None
        key = status, search, tenant, offset = self._filter_key()
        tenants: list[str | None] | None = None
        if full:
            jobs = await q.list_jobs(status, limit=PAGE_SIZE, offset=offset, search=search or None, tenant=tenant)
            total: int | None = await q.count_jobs(status, search=search or None, tenant=tenant)
            tenants = [name for name, _weight in await q.list_tenants()]  # the tenant filter's choices
        else:
            assert self._since is not None
            # No status filter here: a job that left the filter must be seen to leave. (A job's
            # tenant never changes: the tenant filter stays.)
            jobs = await q.list_jobs(None, changed_since=self._since - OVERLAP_SECONDS, search=search or None,
                                     tenant=tenant, limit=MAX_CHANGES + 1)
            total = None
        # Totals are one aggregate over every job: read them when something changed, or now and then.
        changed_lately = bool(jobs) and started - self._stats_at >= STATS_WHEN_BUSY
        stats = await q.stats() if want_stats or changed_lately else None
        # the queue's history is read with the totals (chunks of the last hour, one indexed range)
        history = await q.history() if stats is not None and self.show_history else None
        return Poll(full, jobs, started, total, stats, filter_key=key, history=history, tenants=tenants)

    def _render_poll(self, result: Poll) -> None:
        if result.filter_key != self._filter_key():
            self._need_full = True  # the filter changed while fetching: this page is stale
        elif self.app.screen is self:
            self._apply(result)
        # else: not rendered and `since` not advanced, so nothing is lost
        if self._need_full:
            self.poll()  # runs once this poll is over

    def _apply(self, result: Poll) -> None:
        self.polls += 1
        self.last_poll_size = None if result.full else len(result.jobs)
        self._since = result.started
        if result.stats is not None:
            self._stats = result.stats
            self._stats_at = result.started
        status, search, tenant, offset = result.filter_key
        diff = diff_page(self.table.jobs, result.jobs, full=result.full,
                         total=(result.total or 0) if result.full else self._total,
                         status=status, offset=offset, page_size=PAGE_SIZE, max_changes=MAX_CHANGES)
        if result.full:
            self._need_full = self._full_pending = False
            self._full_at = result.started
        else:
            self._need_full |= diff.overflow
            self._full_pending |= diff.outranked
        self._total = matching_total(diff.total, self._stats, status, search, tenant)
        # each job's share now, from the rows' own counters (``RecentRates``: no read of its own)
        rates = self.recent_rates.observe({**self.table.jobs, **{j.id: j for j in result.jobs}}.values(),
                                          result.started)
        with self.app.batch_update():
            self.table.apply(diff, touched={j.id for j in result.jobs},
                             rates=rates if result.stats is not None else None, full=result.full)
            totals = self.query_one(QueueTotals)
            totals.problem = None
            totals.stats = self._stats
            if result.history is not None:
                self.query_one(HistoryLine).show(result.history)
            self.filters.page_info = page_info(offset, len(self.table.jobs), self._total,
                                               filtered=bool(search or status) or tenant is not None,
                                               page_size=PAGE_SIZE)
            if result.tenants is not None:
                self.filters.show_tenants(result.tenants)
            self.fit_activity()
        if result.full:
            self._say_if_auto_run_hidden()

    def _show_error(self, error: Exception) -> None:
        msg = str(error) if isinstance(error, core.ChunkqError) else f"{type(error).__name__}: {error}"
        self.query_one(QueueTotals).problem = msg

    # ------------------------------------------------------------------ filters and paging

    def action_search(self) -> None:
        self.filters.focus_search()

    def action_cycle_status(self) -> None:
        self.filters.cycle_status()

    def on_job_filters_changed(self, event: JobFilters.Changed) -> None:
        self._offset = 0
        self.poll(full=True)

    def on_job_filters_submitted(self, event: JobFilters.Submitted) -> None:
        self.table.focus()

    def key_escape(self) -> None:
        """Esc in the search box clears the search and leaves the box; elsewhere it goes back to the table."""
        in_box = self.focused is not None and self.focused.id == "search"
        if (in_box or self.filters.search) and self.filters.clear_search():
            self.notify("search cleared")
        if self.focused is not self.table:
            self.table.focus()

    def action_cycle_sort(self) -> None:
        self.notify(f"sorted by {self.table.cycle_sort()}")

    def action_flip_sort(self) -> None:
        self.notify(f"sorted by {self.table.flip_sort()}")

    def action_toggle_activity(self) -> None:
        mode = self.activity.cycle_size()
        self.fit_activity()
        self.notify({"auto": "activity log at its usual size", "tall": "activity log enlarged",
                     "hidden": "activity log hidden (l shows it again)"}[mode])

    def on_resize(self) -> None:
        self.fit_history()
        self.fit_activity()

    #: below this many rows the history line gives its row to the jobs table (h brings it back)
    HISTORY_MIN_HEIGHT: ClassVar[int] = 30
    #: the operator's choice with h (None: decided by the terminal's height)
    history_wanted: bool | None = None

    @property
    def show_history(self) -> bool:
        """The queue's history line is shown: the operator's choice, else when the terminal is tall enough."""
        if self.history_wanted is not None:
            return self.history_wanted
        return self.size.height >= self.HISTORY_MIN_HEIGHT

    def fit_history(self) -> None:
        self.query_one(HistoryLine).set_class(not self.show_history, "-hidden")

    def action_toggle_history(self) -> None:
        self.history_wanted = not self.show_history
        self.fit_history()
        self.fit_activity()
        self.notify("history shown" if self.history_wanted else "history hidden (h shows it again)")
        if self.history_wanted:
            self._stats_at = -1e18  # read it now, with the totals
            self.poll()

    def fit_activity(self) -> None:
        """Share the height between the table and the log: the log takes what a short table leaves."""
        table, log = self.table, self.activity
        mode = log.size_mode
        log.display = mode != "hidden"
        if mode == "tall":
            table.styles.height, log.styles.height = "1fr", "2fr"
            return
        if mode == "hidden":
            table.styles.height = "1fr"
            return
        room = self.size.height - sum(w.outer_size.height for w in self.children if w not in (table, log))
        rows = table.row_count + 1 + (1 if table.show_horizontal_scrollbar else 0)  # + the header
        if rows + ActivityLog.USUAL_HEIGHT < room:
            table.styles.height, log.styles.height = rows, "1fr"  # a short table: the log gets the rest
        else:
            table.styles.height, log.styles.height = "1fr", ActivityLog.USUAL_HEIGHT

    def action_next_page(self) -> None:
        offset = next_offset(self._offset, self._total, PAGE_SIZE)
        if offset is None:
            self.notify("this is the last page")
            return
        self._offset = offset
        self.poll(full=True)

    def action_prev_page(self) -> None:
        offset = prev_offset(self._offset, PAGE_SIZE)
        if offset is None:
            self.notify("this is the first page")
            return
        self._offset = offset
        self.poll(full=True)

    # ------------------------------------------------------------------ job actions

    def selected_job_id(self) -> int | None:
        return self.table.selected_job_id()

    def selected_job(self, *, quiet: bool = False) -> core.Job | None:
        job = self.table.selected_job()
        if job is None and not quiet:
            self.notify("no job selected", severity="warning")
        return job

    def on_jobs_table_job_chosen(self, event: JobsTable.JobChosen) -> None:
        self.action_open_job()

    def action_open_job(self) -> None:
        job = self.selected_job()
        if job is not None:
            self.app.push_screen(JobDetailScreen(job.id))

    def action_new_job(self) -> None:
        def created(job: core.Job | None) -> None:
            if job is not None:
                self.table.select_when_shown(job.id)
                self.notify(f"job {job.id} enqueued: {job.total_count:,} {job.entity_type} IDs for "
                            f"{job.provider}", title="Enqueued")
                self.poll(full=True)

        self.app.push_screen(EnqueueScreen(), created)

    def action_step(self) -> None:
        if self.dashboard.require_processor() is None:
            return
        job = self.selected_job(quiet=True)
        if job is not None and job.status not in core.ACTIVE_STATUSES:
            # Never a different job than the one under the cursor: the operator chose this one.
            why = "resume it first (p)" if job.status == core.PAUSED else "there is nothing left to process"
            self.notify(f"job {job.id} is {job.status}: {why}", severity="warning")
            return
        self.dashboard.step(None if job is None else job.id)

    def action_dry_run(self) -> None:
        if self.dashboard.require_processor() is None:
            return
        job = self.selected_job()
        if job is not None:
            self.dashboard.dry_run(job.id)

    def action_pause_resume(self) -> None:
        job = self.selected_job()
        if job is not None:
            self._job_action("resume" if job.status == core.PAUSED else "pause", job.id)

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

        self.app.push_screen(job_actions.cancel_from_list(job), confirmed)

    def action_retry_failed(self) -> None:
        job = self.selected_job()
        if job is None:
            return
        if job.failed_count == 0 and job.status not in (core.FAILED, core.CANCELLED):
            self.notify(f"job {job.id} has no failed entities to retry", severity="warning")
            return
        self._retry_ask(job)

    @work(group="job-action", exit_on_error=False)
    async def _retry_ask(self, job: core.Job) -> None:
        """Ask first, and never make a second retry job while one for the same job still waits."""
        try:
            waiting = await self.dashboard.queue.pending_retry_job(job.id)
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="warning")
            return
        if waiting is not None:
            self.table.select_when_shown(waiting.id)
            self.notify(f"job {waiting.id} already retries job {job.id} ({waiting.status}, "
                        f"{humanize.plural(waiting.total_count, 'entity', 'entities')}): no second retry job made",
                        title="Retry", severity="warning")
            self.poll(full=True)
            return

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._job_action("retry", job.id)

        self.app.push_screen(job_actions.failed_dialog(job, "retry"), chosen)

    @work(group="job-action", exit_on_error=False)
    async def _job_action(self, verb: job_actions.Verb, job_id: int) -> None:
        q = self.dashboard.queue
        try:
            if verb == "retry":
                new = await q.retry_failed(job_id)
                self.table.select_when_shown(new.id)
                entities = humanize.plural(new.total_count, "entity", "entities")
                self.notify(f"job {new.id} created: {entities} of job {job_id} to retry", title="Retry")
            else:
                job = await job_actions.change(q, verb, job_id)
                self.notify(f"job {job_id} is {job.status}")
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.poll(full=verb == "retry")

    def action_bulk(self) -> None:
        status, search = self.filters.status, self.filters.search
        if self.filters.tenant is not None:
            # core's bulk actions filter by status and search only: acting on every tenant's jobs
            # while the list shows one tenant's would reach jobs the operator cannot see
            self.notify("bulk actions do not filter by tenant: set the tenant filter to all first",
                        severity="warning")
            return
        if status is None and not search:
            self.notify("set a status filter (f) or a search (/) first: bulk actions apply to every job "
                        "it matches", severity="warning")
            return
        self._bulk_ask(status, search)

    @work(group="job-action", exit_on_error=False)
    async def _bulk_ask(self, status: str | None, search: str) -> None:
        n = await self.dashboard.queue.count_jobs(status, search=search or None)
        if n == 0:
            self.notify("no job matches the filter", severity="warning")
            return

        def chosen(choice: str | None) -> None:
            if choice in job_actions.VERBS:
                self._bulk_apply(choice, status, search)

        # A callback, not push_screen_wait: no worker sits waiting on the operator.
        self.app.push_screen(job_actions.bulk_dialog(n, self.filters.describe()), chosen)

    @work(group="job-action", exit_on_error=False)
    async def _bulk_apply(self, verb: job_actions.Verb, status: str | None, search: str) -> None:
        msg = await job_actions.apply_to_matching(self.dashboard.queue, verb, status, search or None)
        self.notify(msg, title="All matching")
        self.activity.note(msg)
        self.poll(full=True)

    def action_prune(self) -> None:
        def chosen(policy: core.RetentionPolicy | None) -> None:
            if policy is not None:
                self._prune(policy)

        self.app.push_screen(PruneScreen(), chosen)

    @work(group="prune", exclusive=False, exit_on_error=False)
    async def _prune(self, policy: core.RetentionPolicy) -> None:
        """The confirmed prune, on the app's loop a transaction at a time: the interface never waits for it."""
        self.activity.note(f"pruning finished jobs ({policy.describe()})…")
        try:
            result = await core.Pruner(self.dashboard.queue).prune(policy)
        except core.ChunkqError as exc:
            self.notify(f"prune failed: {exc}", severity="error")
            return
        msg = prune_summary(result)
        self.notify(msg, title="Prune", severity="warning" if result.busy else "information")
        self.activity.note(msg)
        self.poll(full=True)

    # ------------------------------------------------------------------ processing

    #: the job auto-run last committed a chunk of (None: none yet), and the filter already said to hide it
    auto_run_job: int | None = None
    _hidden_said: str | None = None

    def _say_if_auto_run_hidden(self) -> None:
        """A filter never hides the job auto-run works on without saying so: the list would look idle
        while the header says auto-run. Said once per filter (auto-run moves between jobs chunk by chunk,
        and a job's status flips between pending and running: a toast per chunk would be noise)."""
        job_id = self.auto_run_job
        filtered = self.filters.describe()
        if job_id is None or not filtered or not self.dashboard.processing or job_id in self.table.jobs:
            return
        if self._hidden_said == filtered:
            return
        self._hidden_said = filtered
        self.notify(f"auto-run works on job {job_id}, which this filter hides ({filtered}); "
                    "f cycles the status filter, esc clears the search", title="Auto-run")

    def processing_event(self, message: ProcessingMessage) -> None:
        """Called by the app for each processing message: the activity log shows it."""
        self.activity.show(message)
        if isinstance(message, ChunkDone) and message.source == "auto-run":
            self.auto_run_job = message.result.job_id
            self._say_if_auto_run_hidden()
        if isinstance(message, ChunkDone) and message.source == "step":
            self.poll()  # show a step's effect now; auto-run's chunks wait for the next tick
