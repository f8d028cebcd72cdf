"""The Chunks tab of the job detail screen: every chunk claimed so far, who ran it and how it went."""

from __future__ import annotations

from datetime import datetime

from chunkq.core import ChunkInfo
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.detail_text import utc_time
from chunkq.tui.dashboard.widgets.keyed_table import Cell, Row, sync_rows
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

# (key, label, width)
COLUMNS: tuple[tuple[str, str, int], ...] = (
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
)
#: the keys in ``chunk_row``'s order
KEYS = tuple(c[0] for c in COLUMNS)


#: the order on screen: what a chunk did (state, counts, how long) before who ran it and when, so an
#: 80-column terminal shows all of that; the Worker column narrows to make room, and what is left
#: (when it started, the lease number, the kind) scrolls into view
SHOWN: tuple[str, ...] = ("index", "state", "ok", "errors", "size", "duration", "worker", "started", "attempt",
                          "kind")
WORKER_MIN = 12
_CELL_PADDING = 2  # DataTable's cell_padding, both sides


def shown_columns(width: int) -> tuple[tuple[str, str, int], ...]:
    """The columns in ``SHOWN`` order for a table ``width`` cells wide: Worker takes what the key columns
    before it leave (between ``WORKER_MIN`` and its usual width)."""
    by_key = {key: (label, w) for key, label, w in COLUMNS}
    before = sum(by_key[k][1] + _CELL_PADDING for k in SHOWN[: SHOWN.index("worker")])
    worker = max(WORKER_MIN, min(by_key["worker"][1], width - before - _CELL_PADDING - 1))  # 1: the scrollbar
    return tuple((k, by_key[k][0], worker if k == "worker" else by_key[k][1]) for k in SHOWN)


def chunk_seconds(chunk: ChunkInfo) -> float | None:
    """Claim to commit on the queue's clock (the clock every worker shares); a leased chunk has none yet."""
    if chunk.started_at is not None and chunk.finished_at is not None:
        return max((chunk.finished_at - chunk.started_at).total_seconds(), 0.0)
    return chunk.duration


def chunk_row(c: ChunkInfo, now: datetime, palette: fmt.Palette | None = None) -> Row:
    """One chunk's row, keyed by its index; a lease past its expiry is shown as such."""
    state: Cell = c.state
    if c.state == "leased":
        expired = c.lease_expires_at is not None and c.lease_expires_at < now
        state = Text("leased, expired" if expired else "leased",
                     style=fmt.theme_color("error" if expired else "primary", palette))
    elif c.state == "aborted":
        state = Text("aborted", style=fmt.theme_color("error", palette))
    errors: Cell = Text(str(c.errors), style=fmt.theme_color("error", palette)) if c.errors else str(c.errors)
    return (
        str(c.chunk_index),
        (
            str(c.chunk_index),
            c.kind,
            state,
            c.worker or fmt.DASH,
            fmt.count(c.size),
            str(c.attempt),
            utc_time(c.started_at, now) if c.started_at else fmt.DASH,
            fmt.duration(chunk_seconds(c)),
            fmt.count(c.ok),
            errors,
        ),
    )


class ChunkHistory(DataTable[Cell]):
    """The job's chunks in order, patched in place as they are claimed and committed."""

    history: reactive[tuple[tuple[ChunkInfo, ...], datetime] | None] = reactive(None, init=False)
    """The chunks and the time leases are judged at."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: tuple[tuple[str, str, int], ...] = ()

    def on_mount(self) -> None:
        self._set_columns(shown_columns(self.size.width or self.app.size.width))

    def on_resize(self) -> None:
        columns = shown_columns(self.size.width)
        if columns != self._shown:
            self._set_columns(columns)

    def _set_columns(self, columns: tuple[tuple[str, str, int], ...]) -> None:
        self._shown = columns
        self.clear(columns=True)
        for key, label, width in columns:
            self.add_column(label, key=key, width=width)
        self.watch_history(self.history)

    def watch_history(self, history: tuple[tuple[ChunkInfo, ...], datetime] | None) -> None:
        if history is not None and self._shown:
            chunks, now = history
            order = [KEYS.index(key) for key, _label, _width in self._shown]
            rows = (chunk_row(c, now, self.app.theme_variables) for c in chunks)
            sync_rows(self, [(key, tuple(cells[i] for i in order)) for key, cells in rows])
