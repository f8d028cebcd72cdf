"""The workers table: every registered process, keyed by worker id, patched in place.

Rows are pure functions of a ``core.WorkerInfo`` and the clock (``worker_cells``),
so what an operator reads is unit-tested without Pilot; the widget hands them to
``keyed_table.sync_rows``, which adds, removes and ``update_cell``s only what
changed, so the cursor stays on its worker poll after poll.

A host name, a processor path and a version come from other machines: every
cell is a plain ``Text`` (``fmt.plain``), never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from chunkq import core
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.keyed_table import Row, selected_key, sync_rows
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

# (key, label, width, right-aligned); the columns an operator needs first come first, so an
# 80-column terminal shows who, what state, how fresh, which job and counts; processor and version follow
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("worker", "Worker", 20, False),
    ("state", "State", 8, False),
    ("beat", "Beat", 5, True),
    ("job", "Job", 6, True),
    ("chunks", "Chunks", 6, True),
    ("done", "Done", 8, True),
    ("failed", "Failed", 7, True),
    # what to read first fits 80 columns; the rest scrolls into view on a narrow terminal
    ("kind", "Kind", 9, False),
    ("processor", "Processor", 28, False),
    ("version", "Version", 9, False),
)
COLUMN_KEYS = tuple(c[0] for c in COLUMNS)

#: theme variable colouring each worker state; lost is trouble, stopped fades
STATE_VARIABLE: dict[str, str] = {
    "busy": "primary",
    "idle": "foreground",
    "stopping": "warning",
    "stopped": "foreground-darken-3",
    "lost": "error",
}
#: display order: working first, then those to look at, the gone last
STATE_RANK: dict[str, int] = {"busy": 0, "idle": 1, "stopping": 2, "lost": 3, "stopped": 4}


def worker_label(worker: core.WorkerInfo) -> str:
    """``host:pid``: how an operator names a process (and how a release names who did it)."""
    return worker.host_pid


def state_style(state: str, palette: fmt.Palette | None = None) -> Style:
    color = fmt.theme_color(STATE_VARIABLE.get(state, "foreground"), palette)
    return Style(color=color, bold=state in ("busy", "lost"))


def shown_state(worker: core.WorkerInfo) -> str:
    """The state as written, but a stop asked of a live worker already reads as "stopping"."""
    if worker.stop_request and worker.state in ("busy", "idle"):
        return "stopping"
    return worker.state


def sort_key(worker: core.WorkerInfo) -> tuple[int, str, int]:
    return (STATE_RANK.get(shown_state(worker), 9), worker.host, worker.pid)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def worker_cells(worker: core.WorkerInfo, now: datetime, palette: fmt.Palette | None = None) -> tuple[Text, ...]:
    """One worker's row, in ``COLUMN_KEYS`` order; every piece of text from another host stays plain."""
    state = shown_state(worker)
    muted = Style(color=fmt.theme_color("foreground-darken-3", palette))
    held = worker.chunks
    failed = Text(fmt.count(worker.failed), justify="right", end="")
    if worker.failed:
        failed.stylize(Style(color=fmt.theme_color("error", palette)))
    beat_style = state_style("lost", palette) if state == "lost" else muted
    return (
        fmt.plain(clip(worker_label(worker), 20)),
        Text(state, style=state_style(state, palette), end=""),
        Text(fmt.age(worker.heartbeat_at, now), justify="right", end="", style=beat_style),
        Text(f"#{worker.job_id}" if worker.job_id is not None else fmt.DASH, justify="right", end=""),
        Text(str(held) if held else fmt.DASH, justify="right", end=""),
        Text(fmt.count(worker.done), justify="right", end=""),
        failed,
        fmt.plain(worker.kind),
        fmt.plain(clip(fmt.printable(worker.processor or fmt.DASH), 28)),
        fmt.plain(clip(worker.version, 9), muted),
    )


def worker_rows(workers: Sequence[core.WorkerInfo], now: datetime, palette: fmt.Palette | None = None) -> list[Row]:
    """Keyed rows in display order: busy, idle, stopping, lost, stopped; then by host and pid."""
    return [(w.id, worker_cells(w, now, palette)) for w in sorted(workers, key=sort_key)]


def worker_detail(worker: core.WorkerInfo, now: datetime) -> str:
    """Everything about one worker on two lines, for the line under the table (full processor path)."""
    first = [f"{worker_label(worker)} · {worker.kind} · {shown_state(worker)}",
             f"processor {worker.processor or 'any (not routed)'}",
             f"chunkq {worker.version}"]
    second = [f"started {fmt.age(worker.started_at, now)} ago",
              f"last heartbeat {fmt.age(worker.heartbeat_at, now)} ago "
              f"(every {fmt.duration(worker.heartbeat_interval)})"]
    if worker.chunks and not worker.detail:
        second.append(f"holds {fmt.plural(worker.chunks, 'chunk')} of job #{worker.job_id}")
    if worker.concurrency:
        second.append(f"concurrency {worker.concurrency}")
    if worker.stop_request:
        second.append("asked to " + ("release its chunks and stop now" if worker.stop_request == "release"
                                     else "stop after its chunk"))
    if worker.state == "lost":
        second.append("no heartbeat for over two intervals: killed, frozen or cut off")
    if worker.detail:
        # "job 3 chunks 4, 5": what it holds, as the worker wrote it (a lost one's is its last word)
        second.append(("last seen holding " if worker.state == "lost" else "") + worker.detail)
    return " · ".join(first) + "\n" + " · ".join(second)


class WorkersTable(DataTable[Text]):
    """Every registered worker; set ``shown`` to (workers, now), read ``selected_worker()``."""

    shown: reactive[tuple[tuple[core.WorkerInfo, ...], datetime] | None] = reactive(None, init=False)
    """The workers as last read and the time their ages are measured from."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.by_id: dict[str, core.WorkerInfo] = {}

    def on_mount(self) -> None:
        for key, label, width, right in COLUMNS:
            self.add_column(Text(label, justify="right") if right else label, width=width, key=key)

    def watch_shown(self, shown: tuple[tuple[core.WorkerInfo, ...], datetime] | None) -> None:
        if shown is None:
            return
        workers, now = shown
        self.by_id = {w.id: w for w in workers}
        sync_rows(self, worker_rows(workers, now, self.app.theme_variables))

    def selected_worker(self) -> core.WorkerInfo | None:
        key = selected_key(self)
        return None if key is None else self.by_id.get(key)
