"""Every process that processes work, on any host: what it holds, how fresh its heartbeat, and a way to stop it.

Sidekiq's "Busy" and Oban's "Nodes" answer "who is working, on what, and is it
still there?"; this screen answers it from ``Queue.list_workers`` (the
``chunkq_workers`` registry). A worker whose heartbeat is more than two
intervals old reads ``lost`` (core decides; a ``kill -9`` cannot say so itself).

Stopping goes through the database (``Queue.request_worker_stop``), so a worker
on another host obeys with its next heartbeat: ``s`` asks it to finish its chunk
and exit, ``k`` to release its chunk now (another worker redoes it). Both ask
first, with the button that changes nothing focused.

Reads follow the jobs screen's rule (``Poller``): read, render, arm a one-shot
timer; never two at once; nothing read while a dialog covers the screen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from chunkq import core
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.polling import Poller
from chunkq.tui.dashboard.protocol import Dashboard, dashboard
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter
from chunkq.tui.dashboard.widgets.workers_table import (
    STATE_RANK,
    WorkersTable,
    shown_state,
    state_style,
    worker_detail,
    worker_label,
)
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

#: the shortest time between two reads of the registry
MIN_INTERVAL = 1.0


@dataclass(frozen=True)
class WorkersRead:
    """One poll's answer: the workers and when they were read."""

    workers: tuple[core.WorkerInfo, ...]
    now: datetime


def summary_text(workers: tuple[core.WorkerInfo, ...], palette: fmt.Palette | None = None, *,
                 include_stopped: bool = False) -> Text:
    """``3 workers: 2 busy  1 lost`` — the count per state, the trouble coloured."""
    counts = Counter(shown_state(w) for w in workers)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(fmt.plural(len(workers), "worker"), style="bold")
    if not workers:
        text.append(": none registered" + ("" if include_stopped else " and alive") +
                    ". Workers, cron `process` runs, `serve` and the dashboard's auto-run register here.",
                    style="dim")
        return text
    for state in sorted(counts, key=lambda s: STATE_RANK.get(s, 9)):
        text.append("  ")
        text.append(f"{counts[state]} {state}", style=state_style(state, palette))
    if not include_stopped:
        text.append("   (stopped ones hidden: v shows them)", style="dim")
    return text


class WorkersScreen(Screen[None]):
    """The workers registry, live; stop a worker after its chunk or release it now."""

    COMMAND_SCOPE: ClassVar[commands.Scope] = commands.WORKERS
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings(commands.WORKERS)
    AUTO_FOCUS = "#workers"

    def __init__(self, *, include_stopped: bool = False) -> None:
        super().__init__()
        self.include_stopped = include_stopped
        self.read: WorkersRead | None = None
        self.poller: Poller[WorkersRead] = Poller(
            self, group="workers-poll", fetch=self._fetch, render=self._show_read,
            # heartbeats come every few seconds: a faster read shows nothing new (and a list also
            # forgets long-gone rows, a small write)
            interval=lambda: max(self.dashboard.refresh_interval, MIN_INTERVAL),
            visible=lambda: self.app.screen is self, on_error=self._show_error,
        )

    @property
    def dashboard(self) -> Dashboard:
        return dashboard(self)

    @property
    def table(self) -> WorkersTable:
        return self.query_one("#workers", WorkersTable)

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static("", id="workers-summary")
        yield WorkersTable(id="workers")
        yield Static("", id="worker-detail")
        yield FitFooter()

    def on_mount(self) -> None:
        self.sub_title = "workers"

    # ------------------------------------------------------------------ polling

    def poll(self) -> None:
        """Read now (or right after the read in flight)."""
        self.poller.poll()

    def on_screen_resume(self) -> None:
        self.poll()

    def on_screen_suspend(self) -> None:
        self.poller.stop()

    async def _fetch(self) -> WorkersRead:
        workers = await self.dashboard.queue.list_workers(include_stopped=self.include_stopped)
        return WorkersRead(tuple(workers), self.dashboard.now())

    def _show_read(self, read: WorkersRead) -> None:
        self.read = read
        with self.app.batch_update():
            self.query_one("#workers-summary", Static).update(
                summary_text(read.workers, self.app.theme_variables, include_stopped=self.include_stopped))
            self.table.shown = (read.workers, read.now)
            self._show_selected()

    def _show_error(self, error: Exception) -> None:
        msg = str(error) if isinstance(error, core.ChunkqError) else f"{type(error).__name__}: {error}"
        self.query_one("#workers-summary", Static).update(
            fmt.plain(f"⚠ {msg} (retrying)", fmt.status_style("failed", self.app.theme_variables)))

    def _show_selected(self) -> None:
        worker = self.table.selected_worker()
        detail = self.query_one("#worker-detail", Static)
        if worker is None or self.read is None:
            detail.update("")
            return
        detail.update(fmt.plain(worker_detail(worker, self.read.now), lines=True))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    # ------------------------------------------------------------------ actions

    def action_back(self) -> None:
        self.dismiss()

    def action_toggle_stopped(self) -> None:
        self.include_stopped = not self.include_stopped
        self.notify("showing stopped workers too" if self.include_stopped else "hiding stopped workers")
        self.poll()

    def action_stop_worker(self) -> None:
        self._ask_stop(now=False)

    def action_release_worker(self) -> None:
        self._ask_stop(now=True)

    def _ask_stop(self, *, now: bool) -> None:
        worker = self.table.selected_worker()
        if worker is None:
            self.notify("no worker selected", severity="warning")
            return
        if not worker.alive:
            self.notify(f"worker {worker_label(worker)} is {worker.state}: there is nothing to stop",
                        severity="warning")
            return
        label = worker_label(worker)
        if now:
            title = f"Release {label} now?"
            message = (f"Worker {label} ({worker.kind}) gives up the chunk it is processing at its next "
                       "heartbeat: the lease is released and another worker redoes the chunk. Then it exits.")
            choices = [("release", "Release now", "error"), ("back", "Back", "default")]
        else:
            title = f"Stop {label} after its chunk?"
            message = (f"Worker {label} ({worker.kind}) finishes and commits the chunk in flight, then exits. "
                       "It reads the request with its next heartbeat.")
            choices = [("finish", "Stop after chunk", "warning"), ("back", "Back", "default")]

        def chosen(choice: str | None) -> None:
            if choice in ("finish", "release"):
                self._request_stop(worker.id, label, now=choice == "release")

        self.app.push_screen(ConfirmScreen(title, message, choices=choices), chosen)

    @work(group="worker-action", exit_on_error=False)
    async def _request_stop(self, worker_id: str, label: str, *, now: bool) -> None:
        try:
            await self.dashboard.queue.request_worker_stop(worker_id, now=now)
        except core.ChunkqError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.notify(f"asked {label} to " + ("release its chunk and stop" if now else "stop after its chunk"),
                    title="Workers")
        self.poll()
