"""Short texts the job detail widgets share: clock times, exception names, one-line messages."""

from __future__ import annotations

from datetime import datetime

from chunkq.tui.dashboard import format as fmt


def utc_time(dt: datetime | None, now: datetime) -> str:
    """Clock time in UTC; the date only when it is not today."""
    if dt is None:
        return fmt.DASH
    return f"{dt:%H:%M:%S}" if dt.date() == now.date() else f"{dt:%Y-%m-%d %H:%M:%S}"


def short_type(name: str) -> str:
    """``pkg.mod.ProviderError`` -> ``ProviderError`` for narrow columns (the traceback has it in full)."""
    return name.rsplit(".", 1)[-1]


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace (newlines included) folded to single spaces, controls escaped, cut at ``limit``."""
    line = " ".join(fmt.printable(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
