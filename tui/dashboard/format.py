"""How the dashboard shows numbers, times, statuses and untrusted text, shared by every screen.

Every string that came from a user or a provider (a job name, an entity ID, a
provider's error message, a traceback, a path) is shown through ``plain``: a
``rich.text.Text``, so brackets are never parsed as markup, with control
characters, bidi overrides and lone surrogates escaped by
``humanize.printable``, so nothing reaches the terminal raw.

Colours come from the running Textual theme (``app.theme_variables``) rather than
fixed names, so a status reads the same way in every theme. Functions that take
``palette`` accept that mapping; without one they fall back to Textual's default
dark theme so they also work in plain Rich output and in unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from chunkq.core import short_owner

# Plain-text rules shared with the CLI (chunkq.tui.humanize); re-exported for the screens.
from chunkq.tui.humanize import DASH as DASH
from chunkq.tui.humanize import age as age
from chunkq.tui.humanize import count as count
from chunkq.tui.humanize import duration as duration
from chunkq.tui.humanize import even_cells as even_cells
from chunkq.tui.humanize import number as number
from chunkq.tui.humanize import percent as percent
from chunkq.tui.humanize import plural as plural
from chunkq.tui.humanize import printable as printable
from chunkq.tui.humanize import rate as rate
from chunkq.tui.humanize import timestamp as timestamp
from chunkq.tui.humanize import until as until
from rich.style import Style
from rich.text import Text
from textual.color import Color

if TYPE_CHECKING:
    from chunkq import core

#: what joins or re-styles emoji, where terminals disagree on the width: tmux draws a ZWJ family as
#: its four members (8 cells) while Rich counts one (2), which shifts the rest of the row
Palette = Mapping[str, str]

#: Theme variable that colours each status.
STATUS_VARIABLE: dict[str, str] = {
    "pending": "foreground",
    "running": "primary",
    "paused": "warning",
    "complete": "success",
    "failed": "error",
    "cancelled": "foreground-darken-3",
    "stale": "error",
}

_FALLBACK: dict[str, str] = {
    "background": "#121212",
    "foreground": "#E0E0E0",
    "foreground-darken-3": "#8A8A8A",
    "primary": "#0178D4",
    "success": "#4EBF71",
    "warning": "#FEA62B",
    "error": "#B93C5B",
    "panel": "#24292F",
}

BAR_FULL = "━"
BAR_EMPTY = "─"


@lru_cache(maxsize=256)
def _rich_color(value: str, background: str) -> str:
    """A theme value (may carry alpha, e.g. ``#E0E0E099``) as an opaque ``#rrggbb``."""
    try:
        color = Color.parse(value)
    except Exception:
        return value
    if color.a < 1:
        try:
            color = Color.parse(background) + color
        except Exception:
            color = color.with_alpha(1)
    return color.hex6


def plain(text: object, style: str | Style = "", *, lines: bool = False, end: str = "") -> Text:
    """User or provider text as a ``Text``: never markup, never a raw control character.

    One line by default; ``lines=True`` keeps line breaks (a traceback, a message
    of several lines).
    """
    return Text(printable(text, lines=lines), style=style, end=end)


def theme_color(name: str, palette: Palette | None = None) -> str:
    """The opaque colour of theme variable ``name`` (``primary``, ``error``, …)."""
    pal = palette or _FALLBACK
    value = pal.get(name) or _FALLBACK.get(name) or _FALLBACK["foreground"]
    return _rich_color(value, pal.get("background") or _FALLBACK["background"])


def status_style(status: str, palette: Palette | None = None) -> Style:
    """Style for a job status; finished-and-fine fades, trouble stands out."""
    color = theme_color(STATUS_VARIABLE.get(status, "foreground"), palette)
    bold = status in ("running", "failed", "stale")
    return Style(color=color, bold=bold)


def status_text(status: str, palette: Palette | None = None) -> Text:
    return Text(status, style=status_style(status, palette), end="")


def progress_bar(
    fraction: float, width: int = 20, palette: Palette | None = None, status: str = "running"
) -> Text:
    """A one-line bar for a table cell; a ``ProgressBar`` widget per row would cost a widget each."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    if fraction < 1.0 and filled == width:
        filled = width - 1  # never look finished before it is
    done_color = theme_color(STATUS_VARIABLE.get(status, "primary"), palette)
    if status == "pending":
        done_color = theme_color("primary", palette)
    rest_color = theme_color("foreground-darken-3", palette)
    text = Text(end="", no_wrap=True)
    text.append(BAR_FULL * filled, style=Style(color=done_color))
    text.append(BAR_EMPTY * (width - filled), style=Style(color=rest_color, dim=True))
    return text


def table_age(then: datetime | None, now: datetime) -> str:
    """A job's age in the jobs table: minutes at the finest.

    A column of ages in seconds changes every second on every young row, and each
    change repaints the table: "<1m" keeps an idle dashboard idle.
    """
    if then is not None and (now - then).total_seconds() < 60:
        return "<1m"
    return age(then, now)


def eta(job: core.Job, per_second: float | None, now: datetime | None = None) -> str:
    """Time to finish at the recent rate (never before the next retry is due); a dash when idle."""
    seconds = job.eta_seconds(per_second, now)
    return DASH if seconds is None else duration(seconds)


def short_worker(owner: str | None) -> str:
    """``host:pid:nonce`` -> ``host:pid`` by core's one rule (``short_owner``); a dash for no owner."""
    return short_owner(owner) if owner else DASH
