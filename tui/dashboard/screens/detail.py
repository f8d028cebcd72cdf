"""One job, in full: summary, errors and their tracebacks, chunk history, fields.

Longer than 500 lines: four tabs and the debugging actions on their errors; the Errors tab's
widgets and query state live in ``ErrorsPane``.

It is also where a developer closes the loop on a failing callback: retry one
entity (``t``), debug it post-mortem under pdb (``d``), put every failure back
into the job (``u``) or into a new job (``r``). Errors are grouped by bug (one
fingerprint a row); in a group's drill-down — or with the grouped table focused —
``u``, ``r`` and ``x`` act on that group only. ``/`` searches the log by entity
ID or message text.

The screen decides what to read; its widgets draw. Reads follow Dolphie's rule
(``Poller``): read, render, then arm a one-shot timer, so reads never overlap;
nothing is read while a dialog covers the screen; and when the job has not
changed since the last read, only the job row is read (chunks and errors are
fetched again only when ``updated_at`` moves).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Literal

from chunkq import core
from chunkq.core import ChunkInfo, ErrorEntry, ErrorGroup, ErrorGroupPage, Job
from chunkq.tui.dashboard import commands, debugging
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.polling import Poller
from chunkq.tui.dashboard.protocol import Dashboard, dashboard
from chunkq.tui.dashboard.screens import copy_error, group_actions, job_actions
from chunkq.tui.dashboard.screens.export import ExportScreen, export_errors
from chunkq.tui.dashboard.widgets.chunk_history import ChunkHistory
from chunkq.tui.dashboard.widgets.error_tables import PAGE_SIZE, ErrorLog
from chunkq.tui.dashboard.widgets.error_view import ErrorView, retry_outcome
from chunkq.tui.dashboard.widgets.errors_pane import ErrorQuery, ErrorsPane, read_errors
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter
from chunkq.tui.dashboard.widgets.history import HistoryLine
from chunkq.tui.dashboard.widgets.job_fields import JobFields
from chunkq.tui.dashboard.widgets.job_summary import JobSummary, Summary
from textual import events, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import BindingType
from textual.clock import Clock
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Header, TabbedContent, TabPane

__all__ = ["PAGE_SIZE", "JobDetailScreen"]


@dataclasses.dataclass
class _Snapshot:
    job: Job
    rate: float
    chunks: list[ChunkInfo] | None = None
    #: the Errors tab's query when the read began, and what the read settled on (a breakpoint's group opened)
    asked: ErrorQuery | None = None
    query: ErrorQuery | None = None
    #: a page of groups and how many in all: the caption says "103 bugs", not the page's size
    groups: ErrorGroupPage | None = None
    errors: list[ErrorEntry] | None = None
    #: the error that paused or failed the job (``job.reason_error_id``)
    reason_error: ErrorEntry | None = None
    history: list[core.HistoryBucket] | None = None


class JobDetailScreen(Screen[None]):
    """Everything about one job, refreshed live; the debugging tools for its failures."""

    COMMAND_SCOPE: ClassVar[commands.Scope] = commands.DETAIL
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings(commands.DETAIL)
    #: the widget that takes focus when a tab opens (a hidden focused widget would pull its tab back)
    TAB_FOCUS: ClassVar[dict[str, str]] = {
        "errors": "#detail-errors",
        "chunks": "#detail-chunks",
        "fields": "#detail-fields",
    }

    def __init__(
        self,
        job_id: int,
        *,
        progress_clock: Clock | None = None,
        debugger: debugging.Debugger | None = None,
        refresh_interval: float | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        #: the ProgressBar's clock (a textual MockClock in tests)
        self.progress_clock = progress_clock
        #: what post-mortem hands the traceback to (pdb unless a test says otherwise)
        self.debugger = debugger
        self._interval = refresh_interval
        self.job: Job | None = None
        self.rate = 0.0
        #: the error that paused or failed the job, once read (``e`` opens its traceback)
        self.reason_error: ErrorEntry | None = None
        #: the group ``m`` marked, to merge into the next group ``m`` is pressed on (issue 27)
        self.merge_mark: ErrorGroup | None = None
        self._open_group = group  # handed to the ErrorsPane when it is made
        #: the Errors tab (kept: its query outlives the screen's mounting, for whoever asks afterwards)
        self._errors_pane: ErrorsPane | None = None
        #: "retry" or "debug" while one runs (one at a time)
        self.busy: str | None = None
        self._force_next = False
        self.poller: Poller[_Snapshot] = Poller(
            self, group="detail-refresh", fetch=self._fetch, render=self._apply,
            interval=lambda: self.interval, visible=lambda: self.is_active and self.busy != "debug",
            on_error=self._show_error, errors=(core.ChunkqError,),
        )

    @property
    def dashboard(self) -> Dashboard:
        return dashboard(self)

    @property
    def loads(self) -> int:
        """Reads finished; tests wait on it."""
        return self.poller.completed

    @property
    def interval(self) -> float:
        if self._interval is not None:
            return self._interval
        return float(self.dashboard.refresh_interval or 0.5)

    # the Errors tab's query, read where it is kept (the pane): tests and the app's breakpoint use these

    @property
    def errors_pane(self) -> ErrorsPane:
        if self._errors_pane is None:
            raise RuntimeError("the Errors tab is made when the screen is composed")
        return self._errors_pane

    @property
    def error_filter(self) -> ErrorGroup | None:
        """The group the error log is narrowed to (a drill-down)."""
        return self.errors_pane.only

    @property
    def error_search(self) -> str | None:
        return self.errors_pane.search

    @property
    def page_offset(self) -> int:
        return self.errors_pane.log_offset

    @property
    def open_group(self) -> str | None:
        """A group to open once it is read (by fingerprint): auto-run's breakpoint opens the new bug."""
        return self._open_group if self._errors_pane is None else self._errors_pane.open_group

    @open_group.setter
    def open_group(self, fingerprint: str | None) -> None:
        if self._errors_pane is None:
            self._open_group = fingerprint
        else:
            self._errors_pane.open_group = fingerprint

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        yield JobSummary(self.job_id, progress_clock=self.progress_clock, id="detail-summary")
        yield HistoryLine(id="job-history")
        with TabbedContent(id="detail-tabs", initial="errors"):
            with TabPane("Errors", id="errors"):
                self._errors_pane = ErrorsPane(show_locals=bool(self.dashboard.capture_locals),
                                               open_group=self._open_group, id="errors-split")
                yield self._errors_pane
            with TabPane("Chunks", id="chunks"):
                yield ChunkHistory(id="detail-chunks")
            with TabPane("Fields", id="fields"):
                yield JobFields(id="detail-fields")
        yield FitFooter()

    def on_mount(self) -> None:
        self.errors_pane.focus_log()
        self._fit(self.app.size)
        self.reload(force=True)

    #: below these, the screen drops its history line and tightens (short), and the traceback leaves
    #: the side of the lists for its own full-width view, ``z`` (narrow): at 80x24 the error log keeps rows
    SHORT_BELOW = 32
    NARROW_BELOW = 110

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size)

    def _fit(self, size: Size) -> None:
        self.set_class(size.height < self.SHORT_BELOW, "-short")
        self.set_class(size.width < self.NARROW_BELOW, "-narrow")

    def action_toggle_traceback(self) -> None:
        """Zoom the traceback to the whole width, and back (the only way to see it on a narrow terminal)."""
        self.toggle_class("-zoom")
        if self.has_class("-zoom"):
            self.error_view.focus()
        else:
            self.errors_pane.focus_log()

    @property
    def error_log(self) -> ErrorLog:
        return self.errors_pane.error_log

    @property
    def error_view(self) -> ErrorView:
        return self.errors_pane.error_view

    # ------------------------------------------------------------------ live refresh

    def reload(self, *, force: bool = False) -> None:
        """Read the job now (or right after the read in flight); ``force`` re-reads chunks and errors."""
        self._force_next = self._force_next or force
        self.poller.poll()

    async def _fetch(self) -> _Snapshot:
        force, self._force_next = self._force_next, False
        queue = self.dashboard.queue
        job = await queue.get_job(self.job_id)
        changed = force or self.job is None or job.updated_at != self.job.updated_at
        snap = _Snapshot(job, self.rate, reason_error=self.reason_error)
        if job.status in core.ACTIVE_STATUSES or changed:
            # The rate is over a sliding window: it decays while nothing changes; so does the history.
            snap.rate = (await queue.job_rates([job.id])).get(job.id, 0.0)
            snap.history = await queue.history(job.id)
        if job.reason_error_id is None:
            snap.reason_error = None
        elif self.reason_error is None or self.reason_error.id != job.reason_error_id:
            try:
                snap.reason_error = await queue.get_error(job.reason_error_id)
            except core.ChunkqError:  # deleted with a requeue: the reason's text still says why
                snap.reason_error = None
        if not changed:
            return snap
        snap.chunks = await queue.list_chunks(job.id)
        pane = self.errors_pane
        snap.asked = pane.error_query
        snap.query, snap.groups, snap.errors = await read_errors(queue, job.id, snap.asked, pane.take_open_group())
        return snap

    def _show_error(self, exc: Exception) -> None:
        self.query_one(JobSummary).problem = str(exc)

    def _apply(self, snap: _Snapshot) -> None:
        self.job = snap.job
        self.rate = snap.rate
        self.reason_error = snap.reason_error
        now = self.dashboard.now()
        with self.app.batch_update():
            summary = self.query_one(JobSummary)
            summary.problem = None
            summary.summary = Summary(snap.job, snap.rate, now, snap.reason_error)
            if snap.history is not None:
                self.query_one(HistoryLine).show(snap.history)
            if snap.chunks is not None:
                self.query_one(ChunkHistory).history = (tuple(snap.chunks), now)
            pane = self.errors_pane
            if snap.query is not None and snap.asked is not None:
                pane.adopt(snap.query, snap.asked)
            pane.show(snap.query, groups=snap.groups, errors=snap.errors, error_total=snap.job.error_count, now=now)
            self.query_one(JobFields).shown = (snap.job, now)

    # ------------------------------------------------------------------ errors: selection and paging

    def selected_error(self) -> ErrorEntry | None:
        return self.error_log.selected_error()

    def on_errors_pane_query_changed(self, event: ErrorsPane.QueryChanged) -> None:
        """The operator changed what the Errors tab shows (a group, a search, a page): read it."""
        event.stop()
        self.reload(force=True)

    def on_error_log_chosen(self, event: ErrorLog.Chosen) -> None:
        """Enter on an error opens its traceback: the whole width when the pane has no room beside the lists
        (below ``NARROW_BELOW``), else the pane beside them takes the focus (its keys scroll it); esc returns."""
        self.error_view.show(event.error)
        if self.has_class("-narrow") and not self.has_class("-zoom"):
            self.action_toggle_traceback()
        else:
            self.error_view.focus()

    def show_group(self, group: ErrorGroup) -> None:
        """Drill down: the log shows only ``group``'s errors; ``u``, ``r`` and ``x`` act on it alone."""
        self.errors_pane.show_group(group)

    def selected_group(self) -> ErrorGroup | None:
        """The group the group actions apply to: the drill-down's, or the one highlighted in the grouped table
        while it has the focus; None: the whole job."""
        return self.errors_pane.selected_group()

    # ------------------------------------------------------------------ errors: copy

    def action_copy_error(self) -> None:
        """Ask what to copy of the error shown (the selected one, or the reason ``e`` opened), then copy it."""
        error = self.error_view.error or self.selected_error()
        if error is None:
            self.notify("select an error in the error log first (tab 1): y copies its entity ID, message or "
                        "traceback", severity="warning")
            return

        def chosen(what: str | None) -> None:
            if what in copy_error.WHAT_WORDS:
                text = copy_error.copied_text(error, what)  # type: ignore[arg-type]  # what is one of WHAT_WORDS
                self.app.copy_to_clipboard(text)
                self.notify(copy_error.copied_note(error, what, text), title="Copied")  # type: ignore[arg-type]  # what is one of WHAT_WORDS

        self.app.push_screen(copy_error.CopyScreen(error), chosen)

    # ------------------------------------------------------------------ errors: search and paging

    def action_search_errors(self) -> None:
        self.action_show_tab("errors")
        self.errors_pane.open_search()

    def action_next_page(self) -> None:
        """``]``: the next page of what has the focus - the groups (when there is more than one page of them)
        or the error log."""
        pane = self.errors_pane
        if pane.groups_focused and pane.group_pages:
            pane.next_group_page()
        else:
            pane.next_page()

    def action_prev_page(self) -> None:
        pane = self.errors_pane
        if pane.groups_focused and pane.group_pages:
            pane.prev_group_page()
        else:
            pane.prev_page()

    # ------------------------------------------------------------------ navigation

    def action_back(self) -> None:
        if self.has_class("-zoom"):  # Esc leaves the zoomed traceback first
            self.action_toggle_traceback()
            return
        if self.error_view.has_focus:  # then the traceback beside the lists, for the log it was opened from
            self.errors_pane.focus_log()
            return
        if self.errors_pane.back():  # then the search, then the drill-down
            return
        self.dismiss()

    def action_show_reason(self) -> None:
        """Show the traceback of the error that paused or failed the job (circuit breaker, budget, JobFailed)."""
        error = self.reason_error
        if error is None:
            job = self.job
            why = (f"job {self.job_id} is {job.status}: {job.reason}; no error row names the entity"
                   if job is not None and job.reason else f"job {self.job_id} is neither paused nor failed by an error")
            self.notify(why, severity="warning")
            return
        self.action_show_tab("errors")
        self.error_view.show(error)
        self.notify(f"the traceback of entity {error.entity_id}, which {self.job.status if self.job else 'stopped'} "
                    "the job", title="Reason")

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.query_one(self.TAB_FOCUS[tab]).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id or ""
        focused = self.app.focused
        if pane in self.TAB_FOCUS and (focused is None or event.pane not in focused.ancestors):
            self.query_one(self.TAB_FOCUS[pane]).focus()

    # ------------------------------------------------------------------ job control

    def action_step(self) -> None:
        self.dashboard.step(self.job_id)

    def action_dry_run(self) -> None:
        self.dashboard.dry_run(self.job_id)

    @work(group="detail-action", exit_on_error=False)
    async def action_pause_resume(self) -> None:
        queue = self.dashboard.queue
        try:
            job = await queue.get_job(self.job_id)
            job = await job_actions.change(queue, "resume" if job.status == core.PAUSED else "pause", job.id)
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"job {job.id} is {job.status}")
        self.reload()

    def action_cancel_job(self) -> None:
        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_job_change("cancel")

        self.app.push_screen(job_actions.cancel_from_detail(self.job_id), chosen)

    def action_requeue_failed(self) -> None:
        group = self.selected_group()
        if group is not None:
            self._confirm_group_change(group, "requeue")
            return
        self._confirm_failed_change("requeue")

    def action_retry_failed(self) -> None:
        group = self.selected_group()
        if group is not None:
            self._confirm_group_change(group, "retry")
            return
        self._confirm_failed_change("retry")

    def action_merge_group(self) -> None:
        """``m`` marks the highlighted group; ``m`` on another merges the marked one into it (asks first)."""
        group = self.selected_group()
        job = self.job
        if group is None or job is None:
            self.notify("highlight a group in the grouped table first (tab to it)", severity="warning")
            return
        mark = self.merge_mark
        if mark is None or mark.fingerprint == group.fingerprint:
            self.merge_mark = None if mark is not None else group
            self.notify(f"marked {group_actions.group_label(group, 40)}: highlight the group it is the same bug "
                        "as and press m" if mark is None else "unmarked", title="Merge")
            return

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_merge(mark, group, None)

        self.app.push_screen(group_actions.merge_dialog(job, mark, group), chosen)

    def action_unmerge_group(self) -> None:
        """``M``: split the group last merged by hand into the highlighted one off again (asks first)."""
        group = self.selected_group()
        if group is None or not group.merged:
            self.notify("the highlighted group has no group merged into it by hand", severity="warning")
            return
        part = group.merged[-1]

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_merge(group, None, part)

        self.app.push_screen(group_actions.unmerge_dialog(group, part), chosen)

    @work(group="detail-action", exit_on_error=False)
    async def _run_merge(self, group: ErrorGroup, into: ErrorGroup | None, part: str | None) -> None:
        queue = self.dashboard.queue
        try:
            if into is not None:
                said = await group_actions.merge_groups(queue, self.job_id, group, into)
            else:
                said = await group_actions.unmerge_group(queue, self.job_id, group, part or "")
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
        else:
            self.notify(said, title="Merged" if into is not None else "Split off")
        self.merge_mark = None
        self.reload(force=True)

    def _confirm_group_change(self, group: ErrorGroup, how: group_actions.How) -> None:
        job = self.job
        if job is None:
            return

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_group_change(group, how)

        self.app.push_screen(group_actions.group_dialog(job, group, how), chosen)

    @work(group="detail-action", exit_on_error=False)
    async def _run_group_change(self, group: ErrorGroup, how: group_actions.How) -> None:
        try:
            said = await group_actions.act_on_group(self.dashboard.queue, self.job_id, group, how)
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
        else:
            self.notify(said, title="Requeued" if how == "requeue" else "Retry job created")
        self.reload(force=True)

    def _confirm_failed_change(self, how: Literal["requeue", "retry"]) -> None:
        job = self.job
        if job is None:
            return
        unfinished = how == "retry" and job.status in (core.FAILED, core.CANCELLED)
        if job.failed_count == 0 and not unfinished:
            self.notify(f"job {job.id} has no failed entities to retry", severity="warning")
            return

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_job_change(how)

        self.app.push_screen(job_actions.failed_dialog(job, how), chosen)

    @work(group="detail-action", exit_on_error=False)
    async def _run_job_change(self, how: Literal["requeue", "retry", "cancel"]) -> None:
        queue = self.dashboard.queue
        try:
            if how == "requeue":
                job = await queue.requeue_failed(self.job_id)
                self.notify(f"requeued the failed entities of job {job.id}: {job.waiting_count:,} now "
                            "waiting, due now", title="Requeued")
            elif how == "retry":
                new = await queue.retry_failed(self.job_id)
                self.notify(f"created job {new.id} with {fmt.plural(new.total_count, 'entity', 'entities')} "
                            f"(retry of #{self.job_id})",
                            title="Retry job created")
            else:
                job = await job_actions.change(queue, "cancel", self.job_id)
                self.notify(f"job {job.id} is cancelled")
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
        self.reload(force=True)

    # ------------------------------------------------------------------ export

    def action_export_errors(self) -> None:
        job = self.job
        if job is None:
            return
        if job.error_count == 0:
            self.notify(f"job {job.id} has no errors to export")
            return
        group = self.selected_group()

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._export(path, group)

        if group is None:
            screen = ExportScreen(job.id, job.error_count, f"job-{job.id}-errors.jsonl")
        else:
            name = f"job-{job.id}-group-{group.fingerprint.replace(':', '-')[:16]}.jsonl"
            screen = ExportScreen(job.id, group.count, name,
                                  what=f"one group of job {job.id}, {group_actions.group_label(group, 40)}")
        self.app.push_screen(screen, chosen)

    @work(group="detail-export", exclusive=True, exit_on_error=False)
    async def _export(self, path: Path, group: ErrorGroup | None = None) -> None:
        try:
            n = await export_errors(self.dashboard.queue, self.job_id, path,
                                    fingerprint=group.fingerprint if group is not None else None)
        except (OSError, core.ChunkqError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.notify(f"export failed, nothing written: {reason}", title="Export", severity="error")
            return
        self.notify(f"wrote {fmt.plural(n, 'error')} to {path}", title="Export")

    # ------------------------------------------------------------------ debugging

    def _error_for_action(self) -> ErrorEntry | None:
        error = self.selected_error()
        if error is None:
            self.notify("select an error in the error log first (tab 1)", severity="warning")
        return error

    def _error_and_processor(self) -> tuple[ErrorEntry, core.Processor] | None:
        """The selected error and the callback to run it through; None (the user was told why) if either is missing."""
        error = self._error_for_action()
        if error is None:
            return None
        processor = self.dashboard.require_processor()
        return None if processor is None else (error, processor)

    @property
    def retry_note(self) -> object:
        """What the last retry of the shown error's entity did (None: nothing yet)."""
        return self.error_view.note

    def action_retry_entity(self) -> None:
        target = self._error_and_processor()
        if target is None:
            return
        error, processor = target
        if self.busy:
            self.notify(f"a {self.busy} is already running", severity="warning")
            return
        self.busy = "retry"
        self.error_view.note = fmt.plain(f"retrying {error.entity_id}…", "italic")
        self._retry_entity(error, processor)

    @work(group="detail-debug", exit_on_error=False)
    async def _retry_entity(self, error: ErrorEntry, processor: core.Processor) -> None:
        try:
            outcome: core.EntityResult | core.ChunkqError = await self.dashboard.queue.retry_entity(error.id, processor)
        except core.ChunkqError as exc:
            outcome = exc
        finally:
            self.busy = None
        self.error_view.note = retry_outcome(error, outcome, show_locals=bool(self.dashboard.capture_locals),
                                             palette=self.app.theme_variables)
        self.reload(force=True)

    def action_debug_entity(self) -> None:
        target = self._error_and_processor()
        if target is None:
            return
        error, processor = target
        if self.dashboard.processing:
            self.notify("a chunk is being processed; stop auto-run (a) or let the step finish first — "
                        "the debugger would stall its lease", severity="warning")
            return
        if self.busy:
            self.notify(f"a {self.busy} is already running", severity="warning")
            return
        self.busy = "debug"
        self._debug(error, processor)

    @work(group="detail-debug", exit_on_error=False)
    async def _debug(self, error: ErrorEntry, processor: core.Processor) -> None:
        try:
            job = await self.dashboard.queue.get_job(error.job_id)
            try:
                with self.app.suspend():
                    outcome = debugging.post_mortem(processor, error.entity_id, job, debugger=self.debugger)
            except SuspendNotSupported:
                self.notify("post-mortem needs a real terminal to hand over, and this one cannot be suspended",
                            title="Debug", severity="error")
                return
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
            return
        finally:
            self.busy = None
        self.notify(outcome.summary, title="Post-mortem", severity="information" if outcome.ok else "warning")
        self.reload(force=True)
