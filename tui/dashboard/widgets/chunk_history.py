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

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    def watch_history(self, history: tuple[tuple[ChunkInfo, ...], datetime] | None) -> None:
        if history is not None:
            chunks, now = history
            sync_rows(self, [chunk_row(c, now, self.app.theme_variables) for c in chunks])
