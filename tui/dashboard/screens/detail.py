"""One job, in full: fields, progress, chunk history, errors and their tracebacks.

It is also where a developer closes the loop on a failing callback: retry one
entity (``t``), debug it post-mortem under pdb (``d``), put every failure back
into the job (``u``) or into a new job (``r``).

Refreshing follows Dolphie's rule: read, render, then arm a one-shot timer for
the next read, so reads never overlap; nothing is read while a dialog covers
the screen; and when the job has not changed since the last read, only the job
row is read (chunks and errors are fetched again only when ``updated_at`` moves).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from chunkq import core
from chunkq.core import ChunkInfo, ErrorEntry, ErrorGroup, Job
from chunkq.tui.dashboard import debugging, format
from chunkq.tui.dashboard.traceback_view import render_error, render_stacks
from chunkq.tui.dashboard.widgets.detail_export import ExportScreen, export_errors
from chunkq.tui.dashboard.widgets.detail_table import selected_key, sync_rows
from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.clock import Clock
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Label, ProgressBar, Static, TabbedContent, TabPane

if TYPE_CHECKING:
    from chunkq.tui.dashboard.app import ChunkqApp

#: Errors per page of the log; the table never holds more.
PAGE_SIZE = 100


class DetailCommand(NamedTuple):
    key: str
    action: str
    title: str
    description: str
    footer: bool = True
    key_display: str | None = None


#: The one list the footer, the command palette and the help screen read.
DETAIL_COMMANDS: tuple[DetailCommand, ...] = (
    DetailCommand(
        "escape", "back", "Back", "Clear the error filter; press again to go back to the jobs list."
    ),
    DetailCommand(
        "t",
        "retry_entity",
        "Retry entity",
        "Run the callback on the selected error's entity "
        "now and show the result inline; on success its errors are marked resolved.",
    ),
    DetailCommand(
        "d",
        "debug_entity",
        "Debug",
        "Post-mortem: the dashboard steps aside and the callback "
        "runs on the selected error's entity under pdb, stopped at the exception.",
    ),
    DetailCommand(
        "u",
        "requeue_failed",
        "Requeue failed",
        "Put this job's failed entities back into it, due now with fresh attempts (asks first).",
    ),
    DetailCommand(
        "r",
        "retry_failed",
        "Retry as new job",
        "Create a new job of this job's failed entities (asks first).",
    ),
    DetailCommand("x", "export_errors", "Export", "Write the whole error log to a JSON Lines or CSV file."),
    DetailCommand("s", "step", "Step", "Process one chunk of this job.", footer=False),
    DetailCommand(
        "S",
        "dry_run",
        "Dry run",
        "Run this job's next chunk and show the results, writing nothing.",
        footer=False,
    ),
    DetailCommand(
        "p", "pause_resume", "Pause/resume", "Pause this job, or resume it if paused.", footer=False
    ),
    DetailCommand("c", "cancel_job", "Cancel", "Cancel this job (asks first).", footer=False),
    DetailCommand(
        "right_square_bracket",
        "next_page",
        "Next errors",
        "Next page of the error log.",
        footer=False,
        key_display="]",
    ),
    DetailCommand(
        "left_square_bracket",
        "prev_page",
        "Previous errors",
        "Previous page of the error log.",
        footer=False,
        key_display="[",
    ),
    DetailCommand(
        "1", "show_tab('errors')", "Errors tab", "Failures grouped, the error log, tracebacks.", footer=False
    ),
    DetailCommand("2", "show_tab('chunks')", "Chunks tab", "The chunk history.", footer=False),
    DetailCommand("3", "show_tab('fields')", "Fields tab", "Every field of the job.", footer=False),
)


class DetailCommands(Provider):
    """This screen's commands in the command palette (the app's own come from its provider)."""

    def _hits(self) -> list[tuple[str, str, str]]:
        # Actions the app's registry already offers for this screen (step, pause, …) are listed once, there.
        from chunkq.tui.dashboard.commands import COMMANDS

        shared = {c.action for c in COMMANDS}
        return [
            (c.title, c.action, f"{c.description} [{c.key_display or c.key}]")
            for c in DETAIL_COMMANDS
            if c.action not in shared
        ]

    async def discover(self) -> Hits:
        for title, action, help_text in self._hits():
            yield DiscoveryHit(title, self._run(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in self._hits():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._run(action), help=help_text)

    def _run(self, action: str) -> Any:
        screen = self.screen

        async def run() -> None:
            await screen.run_action(action)

        return run


@dataclasses.dataclass
class _Snapshot:
    job: Job
    rate: float
    chunks: list[ChunkInfo] | None = None
    groups: list[ErrorGroup] | None = None
    errors: list[ErrorEntry] | None = None


def _utc(dt: datetime | None, now: datetime) -> str:
    """Clock time in UTC; the date only when it is not today."""
    if dt is None:
        return format.DASH
    return f"{dt:%H:%M:%S}" if dt.date() == now.date() else f"{dt:%Y-%m-%d %H:%M:%S}"


def lease_notice(job: Job, now: datetime) -> tuple[str, bool] | None:
    """What the job's worker is doing, said honestly; (text, is_a_problem).

    A worker renews its lease every third of the lease; two missed renewals
    mean it has gone quiet (stuck in the callback, paused, or dead), and once
    the lease has expired any worker may take the chunk over.
    """
    if job.leased_chunks <= 0 or job.lease_expires_at is None:
        return None
    owner = job.lease_owner or "unknown worker"
    chunks = "1 chunk" if job.leased_chunks == 1 else f"{job.leased_chunks} chunks"
    beat = job.heartbeat_at
    if job.lease_is_stale(now):
        since = f" since {_utc(beat, now)} UTC ({format.age(beat, now)} ago)" if beat else ""
        return (
            f"⚠ worker {owner} silent{since}: its lease expired at {_utc(job.lease_expires_at, now)} "
            f"UTC, so any worker can claim its {chunks} again now",
            True,
        )
    if beat is not None:
        lease_len = (job.lease_expires_at - beat).total_seconds()
        silent = (now - beat).total_seconds()
        if silent > max(lease_len * 2 / 3, 1.0):
            return (
                f"⚠ worker {owner} silent since {_utc(beat, now)} UTC ({format.age(beat, now)}); "
                f"claimable again at {_utc(job.lease_expires_at, now)} UTC "
                f"({format.until(job.lease_expires_at, now)})",
                True,
            )
        return (
            f"worker {owner} holds {chunks}; last heartbeat {format.age(beat, now)} ago, "
            f"lease until {_utc(job.lease_expires_at, now)} UTC",
            False,
        )
    return (f"worker {owner} holds {chunks}, lease until {_utc(job.lease_expires_at, now)} UTC", False)


def _field_value(value: Any, now: datetime) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S} UTC ({format.age(value, now)} ago)"
    if value is None:
        return format.DASH
    if isinstance(value, dict):
        return ", ".join(f"{k}={v!r}" for k, v in value.items()) or "{}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _chunk_seconds(chunk: ChunkInfo) -> float | None:
    """Claim to commit on the queue's clock (the clock every worker shares); a leased chunk has none yet."""
    if chunk.started_at is not None and chunk.finished_at is not None:
        return max((chunk.finished_at - chunk.started_at).total_seconds(), 0.0)
    return chunk.duration


def short_type(name: str) -> str:
    """``pkg.mod.ProviderError`` -> ``ProviderError`` for narrow columns (the traceback has it in full)."""
    return name.rsplit(".", 1)[-1]


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class JobDetailScreen(Screen[None]):
    """Everything about one job, refreshed live; the debugging tools for its failures."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            c.key,
            c.action,
            c.title,
            show=c.footer,
            key_display=c.key_display,
            id="detail." + re.sub(r"\W+", "_", c.action).strip("_"),
            tooltip=c.description,
        )
        for c in DETAIL_COMMANDS
    ]
    COMMANDS: ClassVar = {DetailCommands}
    HELP_EXTRA: ClassVar = tuple(
        ("Job detail", c.key_display or c.key, f"{c.title}: {c.description}") for c in DETAIL_COMMANDS
    )

    DEFAULT_CSS = """
    JobDetailScreen #detail-summary { height: auto; padding: 0 1; }
    JobDetailScreen #detail-title { height: 1; }
    JobDetailScreen #detail-progress { height: 1; margin: 1 0 0 0; }
    JobDetailScreen #detail-progress Bar { width: 1fr; }
    JobDetailScreen #detail-counts { height: auto; }
    JobDetailScreen #detail-lease { height: auto; color: $text-muted; }
    JobDetailScreen #detail-lease.-problem { color: $error; text-style: bold; }
    JobDetailScreen #detail-lease.-empty { display: none; }
    JobDetailScreen TabbedContent { height: 1fr; }
    JobDetailScreen TabPane { padding: 0; }
    JobDetailScreen #errors-split { height: 1fr; }
    JobDetailScreen #errors-left { width: 1fr; min-width: 50; }
    JobDetailScreen .caption { width: 1fr; height: 1; padding: 0 1; background: $boost; color: $text-muted; }
    JobDetailScreen #detail-groups { height: 9; }
    JobDetailScreen #detail-errors { height: 1fr; }
    JobDetailScreen #traceback-pane { width: 1fr; border-left: vkey $foreground 20%; padding: 0 1; }
    JobDetailScreen #detail-retry-result { height: auto; }
    JobDetailScreen #detail-chunks, JobDetailScreen #detail-fields { height: 1fr; }
    """

    def __init__(
        self,
        job_id: int,
        *,
        progress_clock: Clock | None = None,
        debugger: debugging.Debugger | None = None,
        refresh_interval: float | None = None,
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
        self.groups: list[ErrorGroup] = []
        self.errors: dict[int, ErrorEntry] = {}
        self.chunks: list[ChunkInfo] = []
        self.error_filter: tuple[str, str] | None = None
        self.page_offset = 0
        self.shown_error: ErrorEntry | None = None
        self.retry_note: RenderableType | None = None
        self.busy: str | None = None
        self.loads = 0  # completed reads; tests wait on it
        self._timer: Timer | None = None
        self._loading = False
        self._again = False
        self._force_next = False

    @property
    def chunkq(self) -> ChunkqApp:
        return self.app  # type: ignore[return-value]

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="detail-summary"):
            yield Static(f"Job #{self.job_id}", id="detail-title")
            yield ProgressBar(total=None, show_eta=False, id="detail-progress", clock=self.progress_clock)
            yield Static("loading…", id="detail-counts")
            yield Static("", id="detail-lease", classes="-empty")
        with TabbedContent(id="detail-tabs", initial="errors"):
            with TabPane("Errors", id="errors"), Horizontal(id="errors-split"):
                with Vertical(id="errors-left"):
                    yield Label(
                        "Unresolved errors by type and message",
                        classes="caption",
                        id="groups-caption",
                    )
                    yield DataTable(id="detail-groups", cursor_type="row", zebra_stripes=True)
                    yield Label("Error log", classes="caption", id="errors-caption")
                    yield DataTable(id="detail-errors", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="traceback-pane"):
                    yield Static("", id="detail-retry-result")
                    yield Static(Text("Select an error to see its traceback.", style="dim"), id="detail-traceback")
            with TabPane("Chunks", id="chunks"):
                yield DataTable(id="detail-chunks", cursor_type="row", zebra_stripes=True)
            with TabPane("Fields", id="fields"):
                yield DataTable(id="detail-fields", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        groups = self.query_one("#detail-groups", DataTable)
        for key, label, width in (
            ("count", "Count", 5),
            ("entities", "Entities", 8),
            ("type", "Type", 15),
            ("message", "Message", 32),
            ("last", "Last", 4),
        ):
            groups.add_column(label, key=key, width=width)
        errors = self.query_one("#detail-errors", DataTable)
        for key, label, width in (
            ("entity", "Entity", 16),
            ("type", "Type", 14),
            ("message", "Message", 26),
            ("attempt", "Try", 3),
            ("state", "State", 8),
        ):
            errors.add_column(label, key=key, width=width)
        chunks = self.query_one("#detail-chunks", DataTable)
        for key, label, width in (
            ("index", "Chunk", 6),
            ("kind", "Kind", 6),
            ("state", "State", 15),
            ("worker", "Worker", 28),
            ("size", "Size", 6),
            ("attempt", "Lease #", 7),
            ("started", "Started", 19),
            ("duration", "Duration", 8),
            ("ok", "OK", 6),
            ("errors", "Errors", 6),
        ):
            chunks.add_column(label, key=key, width=width)
        fields = self.query_one("#detail-fields", DataTable)
        fields.add_column("Field", key="field", width=18)
        fields.add_column("Value", key="value")
        errors.focus()
        self.reload(force=True)

    # ------------------------------------------------------------------ live refresh

    @property
    def interval(self) -> float:
        if self._interval is not None:
            return self._interval
        return float(getattr(self.app, "refresh_interval", 0.5) or 0.5)

    def reload(self, *, force: bool = False) -> None:
        """Read the job now (or right after the read in flight); ``force`` re-reads chunks and errors."""
        self._force_next = self._force_next or force
        if self._loading:
            self._again = True
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._loading = True
        force, self._force_next = self._force_next, False
        self.run_worker(self._load(force), group="detail-refresh", exit_on_error=False)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.interval, self._tick, name="detail-refresh")

    def _tick(self) -> None:
        self._timer = None
        if not self.is_active or self.busy == "debug":
            self._arm()  # a dialog covers us (or pdb has the terminal): look again later
            return
        self.reload()

    async def _load(self, force: bool) -> None:
        try:
            snap = await self._fetch(force)
        except core.ChunkqError as exc:
            self.query_one("#detail-counts", Static).update(Text(str(exc), style="bold red"))
        else:
            self._apply(snap)
        finally:
            self._loading = False
            self.loads += 1
            if self._again:
                self._again = False
                self.reload()
            elif self.is_attached:
                self._arm()

    async def _fetch(self, force: bool) -> _Snapshot:
        queue = self.chunkq.queue
        job = await queue.get_job(self.job_id)
        changed = force or self.job is None or job.updated_at != self.job.updated_at
        snap = _Snapshot(job, self.rate)
        if job.status in core.ACTIVE_STATUSES or changed:
            # The rate is over a sliding window: it decays while nothing changes.
            snap.rate = (await queue.job_rates([job.id])).get(job.id, 0.0)
        if not changed:
            return snap
        snap.chunks = await queue.list_chunks(job.id)
        snap.groups = await queue.group_errors(job.id)
        error_type, message = self.error_filter or (None, None)
        snap.errors = await queue.list_errors(
            job.id, limit=PAGE_SIZE, offset=self.page_offset, error_type=error_type, message=message
        )
        return snap

    # ------------------------------------------------------------------ rendering

    @property
    def palette(self) -> dict[str, str]:
        try:
            return dict(self.app.theme_variables)
        except Exception:
            return {}

    def _apply(self, snap: _Snapshot) -> None:
        self.job = snap.job
        self.rate = snap.rate
        now = self.chunkq.now()
        with self.app.batch_update():
            self._render_summary(snap.job, now)
            if snap.chunks is not None:
                self.chunks = snap.chunks
                self._render_chunks(now)
            if snap.groups is not None:
                self.groups = snap.groups
                self._render_groups(now)
            if snap.errors is not None:
                self.errors = {e.id: e for e in snap.errors}
                self._render_errors()
            self._render_fields(snap.job, now)

    def _render_summary(self, job: Job, now: datetime) -> None:
        pal = self.palette
        title = Text.assemble(
            (f"Job #{job.id}", "bold"),
            (f"  {job.name}" if job.name else "", "bold"),
            "   ",
            format.status_text(job.status, pal),
            (f"   {job.entity_type} via {job.provider}", "dim"),
            (f"   retry of job #{job.parent_id}" if job.parent_id else "", "dim"),
        )
        self.query_one("#detail-title", Static).update(title)
        bar = self.query_one("#detail-progress", ProgressBar)
        bar.update(total=max(job.total_count, 1), progress=job.processed_count)
        counts = Text.assemble(
            (f"{format.count(job.processed_count)} of {format.count(job.total_count)} done", "bold"),
            "  ·  ",
            (f"✓ {format.count(job.succeeded_count)} succeeded", format.theme_color("success", pal)),
            "  ·  ",
            (
                f"✗ {format.count(job.failed_count)} failed",
                format.theme_color("error", pal) if job.failed_count else "",
            ),
            "  ·  ",
            (
                f"⟳ {format.count(job.waiting_count)} waiting for retry",
                format.theme_color("warning", pal) if job.waiting_count else "",
            ),
        )
        if job.waiting_count and job.next_retry_at is not None:
            counts.append(
                f" (next due {format.until(job.next_retry_at, now)}, {_utc(job.next_retry_at, now)} UTC)"
            )
        counts.append(f"  ·  {format.count(job.error_count)} errors logged")
        if job.status in core.ACTIVE_STATUSES:
            if self.rate > 0:
                counts.append(
                    f"  ·  {format.rate(self.rate)}  ·  ETA {format.eta(job, self.rate, now)}"
                )
            else:
                counts.append("  ·  no progress in the last minute", style="dim")
        if job.fail_reason:
            counts.append(f"\nfailed: {job.fail_reason}", style=format.theme_color("error", pal))
        self.query_one("#detail-counts", Static).update(counts)
        lease = self.query_one("#detail-lease", Static)
        notice = lease_notice(job, now)
        if notice is None and job.status == core.RUNNING:
            notice = ("running; no chunk is leased right now", False)
        lease.update(notice[0] if notice else "")
        lease.set_class(notice is None, "-empty")
        lease.set_class(bool(notice and notice[1]), "-problem")

    def _render_fields(self, job: Job, now: datetime) -> None:
        rows = [(f.name, (f.name, _field_value(getattr(job, f.name), now))) for f in dataclasses.fields(job)]
        rows.insert(
            rows.index(next(r for r in rows if r[0] == "total_count")),
            ("progress", ("progress", format.percent(job.progress))),
        )
        sync_rows(self.query_one("#detail-fields", DataTable), rows)

    def _render_chunks(self, now: datetime) -> None:
        pal = self.palette
        rows = []
        for c in self.chunks:
            state: str | Text = c.state
            if c.state == "leased":
                expired = c.lease_expires_at is not None and c.lease_expires_at < now
                state = Text(
                    "leased, expired" if expired else "leased",
                    style=format.theme_color("error" if expired else "primary", pal),
                )
            elif c.state == "aborted":
                state = Text("aborted", style=format.theme_color("error", pal))
            errors: str | Text = str(c.errors)
            if c.errors:
                errors = Text(str(c.errors), style=format.theme_color("error", pal))
            rows.append(
                (
                    str(c.chunk_index),
                    (
                        str(c.chunk_index),
                        c.kind,
                        state,
                        c.worker or format.DASH,
                        format.count(c.size),
                        str(c.attempt),
                        _utc(c.started_at, now) if c.started_at else format.DASH,
                        format.duration(_chunk_seconds(c)),
                        format.count(c.ok),
                        errors,
                    ),
                )
            )
        sync_rows(self.query_one("#detail-chunks", DataTable), rows)

    def _render_groups(self, now: datetime) -> None:
        rows = [
            (
                f"{g.error_type}\x00{g.message}",
                (
                    format.count(g.count),
                    format.count(g.entities),
                    short_type(g.error_type),
                    _one_line(g.message),
                    format.age(g.last_at, now),
                ),
            )
            for g in self.groups
        ]
        sync_rows(self.query_one("#detail-groups", DataTable), rows)
        kinds = "1 kind" if len(self.groups) == 1 else f"{len(self.groups)} kinds"
        caption = (
            "Unresolved errors by type and message: none"
            if not self.groups
            else f"Unresolved errors by type and message ({kinds}) · enter: show them"
        )
        self.query_one("#groups-caption", Label).update(caption)

    def _error_state(self, e: ErrorEntry) -> Text:
        pal = self.palette
        if e.resolved_at is not None:
            return Text("resolved", style=format.theme_color("success", pal))
        if e.final:
            return Text("failed", style=format.theme_color("error", pal))
        # A transient failure: a retry was scheduled (it may have succeeded since).
        return Text("retried", style=format.theme_color("warning", pal))

    def _render_errors(self) -> None:
        table = self.query_one("#detail-errors", DataTable)
        rows = [
            (
                str(e.id),
                (
                    e.entity_id,
                    short_type(e.error_type),
                    _one_line(e.message),
                    str(e.attempt),
                    self._error_state(e),
                ),
            )
            for e in self.errors.values()
        ]
        sync_rows(table, rows)
        self._render_errors_caption()
        self._show_selected_error()

    def _render_errors_caption(self) -> None:
        n = len(self.errors)
        if n == 0:
            span = "nothing" if self.page_offset == 0 else f"nothing past {self.page_offset:,}"
        else:
            span = f"{self.page_offset + 1:,}–{self.page_offset + n:,}"
        if self.error_filter is None:
            total = self.job.error_count if self.job else 0
            text = (
                "Error log: empty, nothing has failed"
                if total == 0
                else f"Error log: {span} of {total:,} (every failed attempt)"
            )
        else:
            error_type, message = self.error_filter
            text = f"Error log {span} · only {short_type(error_type)}: {_one_line(message, 40)} · esc: all"
        if n == PAGE_SIZE:
            text += "  ] next page"
        if self.page_offset:
            text += "  [ previous"
        self.query_one("#errors-caption", Label).update(text)

    def selected_error(self) -> ErrorEntry | None:
        key = selected_key(self.query_one("#detail-errors", DataTable))
        return self.errors.get(int(key)) if key is not None else None

    def _show_selected_error(self) -> None:
        error = self.selected_error()
        if error == self.shown_error:
            return
        if error is None or self.shown_error is None or error.id != self.shown_error.id:
            self.retry_note = None
        self.shown_error = error
        self._render_traceback()

    def _render_traceback(self) -> None:
        error = self.shown_error
        pane = self.query_one("#detail-traceback", Static)
        note = self.query_one("#detail-retry-result", Static)
        note.update(self.retry_note or "")
        if error is None:
            pane.update(Text("Select an error to see its traceback.", style="dim"))
            return
        head = Text.assemble(
            (f"error #{error.id}", "bold"),
            f"  entity {error.entity_id}  ·  attempt {error.attempt}",
            f"  ·  chunk {error.chunk_index}" if error.chunk_index >= 0 else "  ·  manual retry",
            f"  ·  {error.created_at:%Y-%m-%d %H:%M:%S} UTC",
        )
        head.append("  ·  ")
        head.append_text(self._error_state(error))
        if error.resolved_at is not None:
            head.append(f" at {error.resolved_at:%H:%M:%S} UTC")
        show_locals = bool(getattr(self.app, "capture_locals", False))
        pane.update(Group(head, Text(""), render_error(error, show_locals=show_locals)))

    # ------------------------------------------------------------------ events

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "detail-errors":
            self._show_selected_error()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "detail-groups" or event.row_key.value is None:
            return
        error_type, _, message = event.row_key.value.partition("\x00")
        self.error_filter = (error_type, message)
        self.page_offset = 0
        self.query_one("#detail-errors", DataTable).focus()
        self.reload(force=True)

    # ------------------------------------------------------------------ navigation

    def action_back(self) -> None:
        if self.error_filter is not None:
            self.error_filter = None
            self.page_offset = 0
            self.reload(force=True)
            return
        self.dismiss()

    #: the widget that takes focus when a tab opens (a hidden focused widget would pull its tab back)
    TAB_FOCUS: ClassVar[dict[str, str]] = {
        "errors": "#detail-errors",
        "chunks": "#detail-chunks",
        "fields": "#detail-fields",
    }

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self.query_one(self.TAB_FOCUS[tab]).focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id or ""
        focused = self.app.focused
        if pane in self.TAB_FOCUS and (focused is None or event.pane not in focused.ancestors):
            self.query_one(self.TAB_FOCUS[pane]).focus()

    def action_next_page(self) -> None:
        if len(self.errors) < PAGE_SIZE:
            self.notify("this is the last page of the error log")
            return
        self.page_offset += PAGE_SIZE
        self.reload(force=True)

    def action_prev_page(self) -> None:
        if self.page_offset == 0:
            return
        self.page_offset = max(self.page_offset - PAGE_SIZE, 0)
        self.reload(force=True)

    # ------------------------------------------------------------------ job control

    def action_step(self) -> None:
        self.chunkq.step(self.job_id)

    def action_dry_run(self) -> None:
        self.chunkq.dry_run(self.job_id)

    @work(group="detail-action", exit_on_error=False)
    async def action_pause_resume(self) -> None:
        queue = self.chunkq.queue
        try:
            job = await queue.get_job(self.job_id)
            job = await (queue.resume(job.id) if job.status == core.PAUSED else queue.pause(job.id))
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"job {job.id} is {job.status}")
        self.reload()

    def action_cancel_job(self) -> None:
        from chunkq.tui.dashboard.screens.confirm import ConfirmScreen

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_job_change("cancel")

        self.app.push_screen(
            ConfirmScreen(
                f"Cancel job {self.job_id}?",
                "No further chunks will be handed out; a chunk in flight still "
                "commits. This cannot be undone (retry creates a new job).",
            ),
            chosen,
        )

    def action_requeue_failed(self) -> None:
        self._confirm_failed_change("requeue")

    def action_retry_failed(self) -> None:
        self._confirm_failed_change("retry")

    def _confirm_failed_change(self, how: str) -> None:
        from chunkq.tui.dashboard.screens.confirm import ConfirmScreen

        job = self.job
        if job is None:
            return
        n = job.failed_count
        unfinished = how == "retry" and job.status in (core.FAILED, core.CANCELLED)
        if n == 0 and not unfinished:
            self.notify(f"job {job.id} has no failed entities to retry", severity="warning")
            return
        if how == "requeue":
            title = f"Requeue the failed entities of job {job.id}?"
            text = (
                f"{n:,} entities that failed for good go back into job {job.id}, due now, with fresh "
                "attempts. Their errors stay in the log."
            )
            choices = [("yes", "Requeue", "primary"), ("no", "Cancel", "default")]
        else:
            title = f"Retry the failed entities of job {job.id} as a new job?"
            text = (
                f"A new job (retry of #{job.id}) is created with the {n:,} entities that failed for good"
                + (" and the ones never finished" if job.status in (core.FAILED, core.CANCELLED) else "")
                + f"; job {job.id} stays as it is."
            )
            choices = [("yes", "Create job", "primary"), ("no", "Cancel", "default")]

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self._run_job_change(how)

        self.app.push_screen(ConfirmScreen(title, text, choices=choices), chosen)

    @work(group="detail-action", exit_on_error=False)
    async def _run_job_change(self, how: str) -> None:
        queue = self.chunkq.queue
        try:
            if how == "requeue":
                job = await queue.requeue_failed(self.job_id)
                self.notify(
                    f"requeued the failed entities of job {job.id}: {job.waiting_count:,} now "
                    "waiting, due now",
                    title="Requeued",
                )
            elif how == "retry":
                new = await queue.retry_failed(self.job_id)
                self.notify(
                    f"created job {new.id} with {new.total_count:,} entities (retry of #{self.job_id})",
                    title="Retry job created",
                )
            else:
                job = await queue.cancel(self.job_id)
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

        def chosen(path: Path | None) -> None:
            if path is not None:
                self._export(path)

        self.app.push_screen(ExportScreen(job.id, job.error_count, f"job-{job.id}-errors.jsonl"), chosen)

    @work(group="detail-export", exclusive=True, exit_on_error=False)
    async def _export(self, path: Path) -> None:
        try:
            n = await export_errors(self.chunkq.queue, self.job_id, path)
        except (OSError, core.ChunkqError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.notify(f"export failed, nothing written: {reason}", title="Export", severity="error")
            return
        self.notify(f"wrote {n:,} errors to {path}", title="Export")

    # ------------------------------------------------------------------ debugging

    def _error_for_action(self) -> ErrorEntry | None:
        error = self.selected_error()
        if error is None:
            self.notify("select an error in the error log first (tab 1)", severity="warning")
        return error

    def action_retry_entity(self) -> None:
        error = self._error_for_action()
        if error is None:
            return
        processor = self.chunkq.require_processor()
        if processor is None:
            return
        if self.busy:
            self.notify(f"a {self.busy} is already running", severity="warning")
            return
        self.busy = "retry"
        self.retry_note = Text(f"retrying {error.entity_id}…", style="italic")
        self._render_traceback()
        self._retry_entity(error, processor)

    @work(group="detail-debug", exit_on_error=False)
    async def _retry_entity(self, error: ErrorEntry, processor: core.Processor) -> None:
        pal = self.palette
        try:
            result = await self.chunkq.queue.retry_entity(error.id, processor)
        except core.ChunkqError as exc:
            self.retry_note = Text(
                f"retry of {error.entity_id} not done: {exc}", style=format.theme_color("error", pal)
            )
        else:
            if result.ok:
                self.retry_note = Text(
                    f"✓ {error.entity_id} succeeded on retry ({format.duration(result.duration)}); "
                    "its errors are marked resolved, the log keeps them",
                    style=f"bold {format.theme_color('success', pal)}",
                )
            else:
                head = Text(
                    f"✗ {error.entity_id} failed again: {result.error_type}: {result.message}",
                    style=f"bold {format.theme_color('error', pal)}",
                )
                trace = (
                    render_stacks(result.stacks, show_locals=bool(self.chunkq.capture_locals))
                    if result.stacks
                    else Text(result.traceback or "")
                )
                self.retry_note = Group(head, trace, Text("─" * 20 + " the stored error:", style="dim"))
        finally:
            self.busy = None
        self._render_traceback()
        self.reload(force=True)

    def action_debug_entity(self) -> None:
        error = self._error_for_action()
        if error is None:
            return
        processor = self.chunkq.require_processor()
        if processor is None:
            return
        if getattr(self.app, "processing", False):
            self.notify(
                "a chunk is being processed; stop auto-run (a) or let the step finish first — "
                "the debugger would stall its lease",
                severity="warning",
            )
            return
        if self.busy:
            self.notify(f"a {self.busy} is already running", severity="warning")
            return
        self.busy = "debug"
        self._debug(error, processor)

    @work(group="detail-debug", exit_on_error=False)
    async def _debug(self, error: ErrorEntry, processor: core.Processor) -> None:
        try:
            job = await self.chunkq.queue.get_job(error.job_id)
            try:
                with self.app.suspend():
                    outcome = debugging.post_mortem(processor, error.entity_id, job, debugger=self.debugger)
            except SuspendNotSupported:
                self.notify(
                    "post-mortem needs a real terminal to hand over, and this one cannot be suspended",
                    title="Debug",
                    severity="error",
                )
                return
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="error")
            return
        finally:
            self.busy = None
        self.notify(outcome.summary, title="Post-mortem", severity="information" if outcome.ok else "warning")
        self.reload(force=True)
