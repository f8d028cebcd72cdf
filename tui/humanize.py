"""Numbers, counts, durations and times as people read them: one set of rules for every front end.

The `chunkq` command and the dashboard used to format on their own and disagreed
(0.5 s was ``500ms`` in one and ``0.5s`` in the other; 25 hours ``25h00m`` and
``1d01h``; ``2111 pending`` next to ``2,111 jobs``). Both now call this module,
so one rule changes in one place. Plain ``str`` only: no Rich, no Textual, no
colour (each front end styles the text itself), so cron output and unit tests
can use it too.

The rules:

- **Missing** values (``None``, NaN, a negative duration) are an en dash ``–``.
- **Numbers** are exact with thousands separators: ``number(1234567)`` is
  ``1,234,567``. Use them where a person checks a total (what was enqueued, a
  summary of a run).
- **Counts** in table cells and status lines are exact below a million, then
  three figures at most with ``M``/``G``/``T``: ``1,234``, ``999,999``,
  ``1.2M``, ``12.3M``, ``123M``, ``1.2G``. They are rounded *down*, so
  ``1,999,999`` of ``2,000,000`` reads ``1.9M/2.0M``, never finished early.
- **Plurals** put a number before a noun: ``1 job``, ``2,111 jobs``, ``1 entity``,
  ``3 entities`` (``plural(n, "entity", "entities")`` for irregular ones).
- **Percentages** never round to a misleading end: ``0.0%``, ``<0.1%``,
  ``12.3%``, ``99.9%`` until done, then ``100%``.
- **Durations** are short and exact to two units: under a second in
  milliseconds (``12ms``, ``500ms``), under ten seconds with a tenth
  (``2.5s``), then whole seconds (``42s``), minutes and seconds (``4m05s``),
  hours and minutes (``2h03m``), days and hours (``1d01h``).
- **Ages** (how long ago) are coarse, one unit, rounded down (``12s``, ``5m``,
  ``3h``, ``2d``): they are read at a glance and should not tick every second.
  ``ago()`` adds the word: ``5m ago``, or ``in 4m05s`` for a time still to come.
- **Time left** (``until``) is a duration: ``in 4m05s``, or ``now`` once due.
- **Rates** are per second, with a tenth below ten (``2.5/s``, ``1,234/s``);
  below 0.1 a second they are per minute (``1.2/m``), so a slow provider does
  not read ``0.0/s``.
- **Timestamps** are UTC to the second: ``2024-05-01 12:00:00 UTC``.
- **Statuses**: a running job whose worker has gone silent (an expired lease)
  is shown as ``stale``; every other status as it is.
- **Untrusted text** (names, IDs, params, provider messages, tracebacks) goes
  through ``printable`` before any front end shows it: control characters (C0,
  DEL, C1 such as ``\\x9b``), every bidirectional control that can reorder
  what a reader sees (the marks U+200E/U+200F and U+061C, the embeddings and
  overrides U+202A–U+202E, the isolates U+2066–U+2069) and lone surrogates are
  escaped visibly (``\\x1b``, ``\\u202e``, ``\\udcff``), so a job name cannot
  move the cursor, retitle the terminal or pose as other text. On one line,
  line breaks and tabs become spaces; ``lines=True`` keeps ``\\n`` (a
  traceback). Everything else, emoji ZWJ sequences and right-to-left scripts
  included, is left alone. (Markup is the renderer's business: wrap the result
  in ``rich.text.Text``, never parse it.) JSON output stays exact but inert
  (``json_text``): what JSON leaves raw and a terminal acts on is a ``\\uXXXX`` escape.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

DASH = "–"

_COMPACT_UNITS = ((10**12, "T"), (10**9, "G"), (10**6, "M"))
_BREAKS = re.compile(r"\r\n|[\t\n\r\v\f\u2028\u2029]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\v\f\u2028\u2029]")
#: Every bidirectional control (Unicode's Bidi_Control property): the marks (ALM U+061C, LRM U+200E,
#: RLM U+200F), embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069). One set, so an
#: invisible mark is escaped like an override: any of them can reorder what a reader sees.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
#: what a terminal would act on or a reader be misled by: C0 and C1 controls, DEL, bidi controls,
#: and lone surrogates (text decoded with ``surrogateescape``; unencodable as UTF-8)
_UNSAFE = re.compile(rf"[\x00-\x1f\x7f-\x9f{BIDI_CONTROLS}\ud800-\udfff]")
_UNSAFE_KEEP_LINES = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{BIDI_CONTROLS}\ud800-\udfff]")


def number(n: int | None) -> str:
    """Exact, with thousands separators: ``1,234,567``."""
    return DASH if n is None else f"{n:,}"


def count(n: int | None) -> str:
    """Exact below a million, then ``1.2M``/``12.3M``/``123M``/``1.2G``, rounded down: fits a column."""
    if n is None:
        return DASH
    if abs(n) < 1_000_000:
        return f"{n:,}"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for size, unit in _COMPACT_UNITS:
        if n >= size:
            # integer arithmetic: floor to three significant figures without float surprises
            if n < 100 * size:
                tenths = n * 10 // size
                return f"{sign}{tenths // 10}.{tenths % 10}{unit}"
            return f"{sign}{n // size:,}{unit}"
    raise AssertionError("unreachable: n >= 1,000,000 matches a unit")


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``1 job``, ``2,111 jobs``; give the plural for irregular nouns (``entity``/``entities``)."""
    word = singular if n == 1 else (plural_form or singular + "s")
    return f"{n:,} {word}"


def percent(fraction: float | None) -> str:
    """``12.3%``; ``99.9%`` until it is really done, ``<0.1%`` once anything has happened."""
    if fraction is None or fraction != fraction:
        return DASH
    fraction = min(max(fraction, 0.0), 1.0)
    if 0 < fraction < 0.001:
        return "<0.1%"
    if fraction < 1.0:
        return f"{min(fraction * 100, 99.9):.1f}%"
    return "100%"


def duration(seconds: float | None) -> str:
    """``12ms``, ``500ms``, ``2.5s``, ``42s``, ``4m05s``, ``2h03m``, ``1d01h``; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return DASH
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms"
    tenths = round(seconds * 10)
    if tenths < 100:
        return f"{tenths // 10}.{tenths % 10}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def age(then: datetime | None, now: datetime) -> str:
    """How long ago, coarse: ``12s``, ``5m``, ``3h``, ``2d`` (a time in the future counts as ``0s``)."""
    if then is None:
        return DASH
    seconds = max((now - then).total_seconds(), 0.0)
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def until(when: datetime | None, now: datetime) -> str:
    """Time left before ``when``: ``in 4m05s``, or ``now`` once it is due."""
    if when is None:
        return DASH
    seconds = (when - now).total_seconds()
    return "now" if seconds <= 0 else f"in {duration(seconds)}"


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``5m ago`` for the past, ``in 4m05s`` for the future (a retry not yet due)."""
    if when is None:
        return DASH
    now = now or datetime.now(UTC)
    if when > now:
        return until(when, now)
    return f"{age(when, now)} ago"


def rate(per_second: float | None) -> str:
    """``2.5/s``, ``1,234/s``; below 0.1 a second per minute (``1.2/m``); a dash when idle."""
    if per_second is None or not math.isfinite(per_second) or per_second <= 0:
        return DASH
    if round(per_second, 1) >= 10:
        return f"{per_second:,.0f}/s"
    if per_second >= 0.1:
        return f"{per_second:.1f}/s"
    per_minute = per_second * 60
    return f"{per_minute:.1f}/m" if per_minute >= 0.05 else "<0.1/m"


def timestamp(when: datetime | None) -> str:
    """``2024-05-01 12:00:00 UTC``: the queue's times are UTC, and say so."""
    if when is None:
        return DASH
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def status(value: str, *, stale: bool = False) -> str:
    """The word for a job's status; a running job whose lease expired unrenewed is ``stale``."""
    return "stale" if stale and value == "running" else value


def printable(text: object, *, lines: bool = False) -> str:
    """``text`` made safe for a terminal: controls, bidi overrides and lone surrogates escaped (``\\x1b``).

    One line by default (breaks and tabs become spaces); ``lines=True`` keeps line
    breaks as ``\\n`` (and tabs), for tracebacks and multi-line messages. The one
    function every front end uses before it shows user or provider text; a value
    whose ``str()`` fails is shown as ``<unprintable TypeName>``.
    """
    if isinstance(text, str):
        raw = text
    else:
        try:
            raw = str(text)
        except Exception:
            return f"<unprintable {type(text).__name__}>"
    raw = even_cells(raw)
    if lines:
        raw = _LINE_BREAKS.sub("\n", raw)
        return _UNSAFE_KEEP_LINES.sub(_escape, raw)
    return _UNSAFE.sub(_escape, _BREAKS.sub(" ", raw))


#: what ``json.dumps(ensure_ascii=False)`` leaves raw that a terminal acts on or a reader is misled by
#: (JSON's own syntax is ASCII, so these only ever occur inside its strings)
_JSON_RAW = re.compile(f"[\x7f-\x9f\u2028\u2029{BIDI_CONTROLS}\ud800-\udfff]")


def json_text(document: object, indent: int | None = None) -> str:
    """``document`` as JSON that is exact and inert: non-ASCII text stays readable, but DEL, C1
    codes, bidi controls and lone surrogates are written ``\\u009b``, ``\\u202e``, ... (JSON itself
    escapes only C0), which decode to the very characters; a lone surrogate no longer fails the write."""
    text = json.dumps(document, indent=indent, default=str, ensure_ascii=False)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# Zero-width joiners, emoji variation selectors and skin-tone modifiers: terminals disagree on how
# wide the sequences they build are, so a row or a border drawn after one shifts.
_UNEVEN = re.compile("[\u200d\ufe0e\ufe0f\U0001f3fb-\U0001f3ff]")


def even_cells(text: str) -> str:
    """``text`` as every terminal draws it alike: a family emoji shows as its members, so a table row
    or a box border after it never shifts (terminals and Rich disagree on joined sequences' width)."""
    return _UNEVEN.sub("", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
