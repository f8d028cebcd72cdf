"""Every input bound, defined once, and the checks that enforce them (``chunkq.core.limits`` too, its former name).

A click option, the dashboard's enqueue form and the HTTP trigger all read the
same objects (``CHUNK_SIZE.lo``, ``CHUNK_SIZE.hi``, ``CHUNK_SIZE.default``), so
a bound cannot drift between them; the queue enforces them with ``.check``,
whose ``InvalidInput`` names the field.

What a person types (an option, a query parameter, a form's box) is read by
``.parse``: ASCII decimal notation only, so ``nan``, ``inf``, ``1_000`` and
Arabic-Indic digits are refused like any other bad value instead of slipping
past a range check (every comparison with NaN is false). Every number of
seconds has a cap (``DAY``, ``YEAR``): ``1e308`` seconds overflowed when added
to the time. A search text has one check too (``check_search``), wherever it
comes from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from .errors import InvalidInput

#: the largest id a job or error row can have (signed 64-bit, with room to spare)
MAX_ROW_ID = 2**62
#: the longest lease, per-entity timeout or poll: longer is a typo, not a plan. A lease is the
#: base of PostgreSQL's session timeouts, which hold at most 2**31 - 1 ms (24.8 days), and a
#: time this far ahead still fits a datetime and a thread's wait (1e308 s overflowed both)
DAY = 86_400.0
#: the longest ``max_seconds``: a run meant never to stop is given none
YEAR = 366 * DAY
#: the latest time a row may hold, in epoch seconds: 9999-12-31 23:59:59 UTC, the last second a
#: ``datetime`` holds (a later one, read back, overflowed ``chunkq jobs``, ``show`` and ``export``)
MAX_EPOCH = 253_402_300_799.0

#: what ``IntLimit.parse`` / ``FloatLimit.parse`` (and the HTTP query parameters) read as a number:
#: ASCII digits, no ``_``, no nan or inf
INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,400}\.?[0-9]{0,400}|\.[0-9]{1,400})(?:[eE][+-]?[0-9]{1,4})?")


def shown(value: object, width: int = 60) -> str:
    """``value`` quoted in a message: its repr, cut to ``width`` characters (a 100,000-character
    argument or a 5,000-digit number stays one short line)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**18:
        return f"a number of {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4,000'} digits"
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True, slots=True)
class IntLimit:
    """A whole number between ``lo`` and ``hi`` (inclusive); ``default`` is what "not given" means."""

    field: str
    lo: int
    hi: int
    default: int | None = None

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{self.field} must be a whole number, got {shown(value)}", field=self.field)
        if not self.lo <= value <= self.hi:
            got = f"{value:,}" if abs(value) < 10**18 else shown(value)
            raise InvalidInput(f"{self.field} must be between {self.lo:,} and {self.hi:,}, got {got}",
                               field=self.field)
        return value

    def parse(self, raw: object) -> int:
        """A whole number as a person typed it (an option, a query parameter, a form's box), then ``check``.

        ASCII digits only, with an optional sign: ``int()`` would also take ``"١٢"``, ``"1_000"`` and
        thousand-digit numbers; a float such as ``"5.0"`` or ``"1e3"`` is refused too.
        """
        if isinstance(raw, str):
            text = raw.strip()
            if INTEGER.fullmatch(text) is None:
                raise InvalidInput(f"{self.field} must be a whole number, got {shown(raw)}", field=self.field)
            raw = int(text)
        return self.check(raw)

    def check_optional(self, value: object) -> int | None:
        return None if value is None else self.check(value)


@dataclass(frozen=True, slots=True)
class FloatLimit:
    """A finite number above ``lo`` (or at it, unless ``lo_open``) and at most ``hi`` (None: no cap).

    ``must`` finishes the sentence "<field> must be ...", e.g. "a fraction in (0, 1]".
    """

    field: str
    lo: float
    hi: float | None
    must: str
    default: float | None = None
    lo_open: bool = True

    def check(self, value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            try:
                number = float(value)  # type: ignore[arg-type]  # `ok` made it an int or a float; an int past 1e308 overflows
            except OverflowError:
                ok = False
        if ok:
            ok = math.isfinite(number) and (number > self.lo if self.lo_open else number >= self.lo) and (
                self.hi is None or number <= self.hi)
        if not ok:
            raise InvalidInput(f"{self.field} must be {self.must}, got {shown(value)}", field=self.field)
        return number

    def parse(self, raw: object) -> float:
        """A number as a person typed it (an option, a query parameter, a form's box), then ``check``.

        Decimal notation only: ``float()`` would also take ``"nan"``, ``"inf"``, ``"infinity"`` and
        ``"1_0"``; a value too big for a float (``"1e999"``) is infinite, so ``check`` refuses it.
        """
        if isinstance(raw, str):
            text = raw.strip()
            if _DECIMAL.fullmatch(text) is None or not math.isfinite(number := float(text)):
                raise InvalidInput(f"{self.field} must be {self.must}, got {shown(raw)}", field=self.field)
            try:
                return self.check(number)
            except InvalidInput:  # quote what was typed ("1e400"), not what it became
                raise InvalidInput(f"{self.field} must be {self.must}, got {shown(raw)}", field=self.field) from None
        return self.check(raw)

    def check_optional(self, value: object) -> float | None:
        return None if value is None else self.check(value)


#: characters a terminal acts on (C0, DEL, C1): never part of an ID or a one-line label
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: halves of a UTF-16 pair alone: what ``surrogateescape`` makes of undecodable bytes; not UTF-8
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def text_problem(text: str, *, controls: bool = True) -> str | None:
    """Why ``text`` cannot be stored and shown back as it is (None: it can).

    A lone surrogate cannot be encoded as UTF-8 (SQLite's driver and JSON
    responses fail on it); PostgreSQL refuses NUL in text and JSON; and a control
    character in a label or an ID could drive the terminal of whoever lists it.
    ``controls=False`` allows controls other than NUL (free text in ``params``).
    """
    if text.isascii():
        if text.isprintable() or (not controls and "\x00" not in text):
            return None
    elif (m := _SURROGATE.search(text)) is not None:
        return f"is not valid UTF-8 text (a lone surrogate U+{ord(m.group()):04X} at position {m.start() + 1})"
    if "\x00" in text:
        return "contains a NUL byte"
    if controls and (m := _CONTROL.search(text)) is not None:
        return f"contains a control character (U+{ord(m.group()):04X} at position {m.start() + 1})"
    return None


@dataclass(frozen=True, slots=True)
class TextLimit:
    """A one-line label: at most ``max_length`` characters of storable, printable text.

    No NUL, no lone surrogate, no control character (see ``text_problem``);
    ``required`` ones may not be blank.
    """

    field: str
    max_length: int = 200
    required: bool = True

    def check(self, value: object) -> str | None:
        """The stripped text; None for an optional label left blank."""
        if value is None and not self.required:
            return None
        if not isinstance(value, str) or (self.required and not value.strip()):
            if self.required:
                raise InvalidInput(f"{self.field} is required (a non-empty string)", field=self.field)
            raise InvalidInput(f"{self.field} must be a string, got {type(value).__name__}", field=self.field)
        text = value.strip()
        if len(text) > self.max_length:
            raise InvalidInput(
                f"{self.field} must be at most {self.max_length} characters, got {len(text):,}", field=self.field
            )
        problem = text_problem(text)
        if problem is not None:
            raise InvalidInput(f"{self.field} {problem}", field=self.field)
        return text or None

    def check_required(self, value: object) -> str:
        text = self.check(value)
        assert text is not None  # a required label is never blank
        return text


# --------------------------------------------------------------------------- a job's settings

ENTITY_TYPE = TextLimit("entity_type")
PROVIDER = TextLimit("provider")
NAME = TextLimit("name", required=False)
#: who a job is for (fair scheduling: tenants take turns, ``claims.ClaimStatements``)
TENANT = TextLimit("tenant", required=False)
#: a tenant's share of the turns against a tenant of weight 1 (``schema.tenants``)
TENANT_WEIGHT = FloatLimit("weight", 0.0, 1000.0, "a positive number, at most 1,000")
#: the processor a job is routed to (``Processor.name``; the CLI's import path ``module:function``)
PROCESSOR_NAME = TextLimit("processor", max_length=500, required=False)
CHUNK_SIZE = IntLimit("chunk_size", 1, 10_000, 50)
PRIORITY = IntLimit("priority", -1_000_000, 1_000_000, 0)
MAX_WORKERS = IntLimit("max_workers", 1, 1000, 1)
MAX_ATTEMPTS = IntLimit("max_attempts", 1, 100, 3)
MAX_ERRORS = IntLimit("max_errors", 0, MAX_ROW_ID, None)
MAX_ERROR_RATIO = FloatLimit("max_error_ratio", 0.0, 1.0, "a fraction in (0, 1]")
#: the longest entity ID, in characters
ENTITY_ID_LENGTH = 2048
#: the longest line of an ID file a front end reads, in characters (an ID plus whatever else a CSV row
#: or a JSON object holds); a longer one is refused as it is read, so memory stays bounded
INPUT_LINE_LENGTH = 1 << 20
#: the most `chunkq enqueue -` copies from stdin (IDs read from a file are never copied)
STDIN_BYTES = 2 << 30

# --------------------------------------------------------------------------- processing

CONCURRENCY = IntLimit("concurrency", 1, 10_000, None)
#: ``concurrency="auto"``: the limit adapts to the provider (``adaptive.py``); ``"auto:N"`` caps it at N
CONCURRENCY_AUTO = "auto"
_CONCURRENCY_MUST = "a whole number from 1 to 10,000, or auto (auto:N to cap it at N)"


def check_concurrency(value: object) -> int | str:
    """A processor's ``concurrency``: a whole number, or ``"auto"`` / ``"auto:N"`` (normalized).

    A string of digits (from a form, a query string) is that number.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text.isdigit() and CONCURRENCY.lo <= int(text) <= CONCURRENCY.hi:
            return int(text)
        head, sep, tail = text.partition(":")
        if head == CONCURRENCY_AUTO and not sep:
            return CONCURRENCY_AUTO
        if head == CONCURRENCY_AUTO and tail.strip().isdigit():
            cap = int(tail.strip())
            if CONCURRENCY.lo <= cap <= CONCURRENCY.hi:
                return f"{CONCURRENCY_AUTO}:{cap}"
        raise InvalidInput(f"concurrency must be {_CONCURRENCY_MUST}, got {value!r}", field="concurrency")
    return CONCURRENCY.check(value)


def check_concurrency_optional(value: object) -> int | str | None:
    return None if value is None else check_concurrency(value)


#: ``--processes``: worker processes under one supervisor (``supervisor.py``)
PROCESSES = IntLimit("processes", 1, 256, 1)
TIMEOUT = FloatLimit("timeout", 0.0, DAY, "a positive number of seconds, at most 86,400 (a day)")
#: calls per second: at least one a day (a slower bucket's wait overflows), at most a million
RATE = FloatLimit("rate", 1 / DAY, 1e6, "between one call a day and 1,000,000 calls a second", lo_open=False)
#: a lease is renewed every third of it, at most every 0.05 s (``renewal.py``): one much under a second ran
#: out between renewals, and the chunks of a healthy job were counted as lost until isolated and failed
#: (``--lease-seconds 0.001``: every entity failed as WorkerLost). 0.3 s leaves six renewals' room.
LEASE_SECONDS = FloatLimit("lease_seconds", 0.3, DAY, "between 0.3 and 86,400 seconds (a day)", 30.0,
                           lo_open=False)
POLL_INTERVAL = FloatLimit("poll_interval", 0.01, 3600.0, "between 0.01 and 3,600 seconds", 1.0, lo_open=False)
#: seconds between a process's heartbeats in the workers registry (``registry.py``, ``--heartbeat``)
HEARTBEAT = FloatLimit("heartbeat", 0.05, 3600.0, "between 0.05 and 3,600 seconds", 5.0, lo_open=False)
MAX_CHUNKS = IntLimit("max_chunks", 1, MAX_ROW_ID, None)
MAX_SECONDS = FloatLimit("max_seconds", 0.0, YEAR, "a positive number of seconds, at most 31,622,400 (366 days)")
#: how long chunks still in flight may run once a run has stopped claiming (``Worker(grace=...)``); 0 gives
#: them up at once
GRACE = FloatLimit("grace", 0.0, DAY, "between 0 and 86,400 seconds (a day)", lo_open=False)

# --------------------------------------------------------------------------- rows

#: a time a row holds (``chunkq import`` writes them from a file): epoch seconds a reader can show
TIMESTAMP = FloatLimit("timestamp", 0.0, MAX_EPOCH, "epoch seconds from 0 to 253,402,300,799 (the year 9999)",
                       lo_open=False)
#: how long something took, in seconds
DURATION = FloatLimit("duration", 0.0, MAX_EPOCH, "a number of seconds from 0 to 253,402,300,799", lo_open=False)

# --------------------------------------------------------------------------- reading

JOBS_PAGE = IntLimit("limit", 0, 100_000, 100)
#: the longest search text (jobs by name, errors by entity ID or message), in characters: SQLite
#: refuses a LIKE pattern over 50,000 bytes ("pattern too complex"), and nobody types more
SEARCH_LENGTH = 1000
ERRORS_PAGE = IntLimit("limit", 0, 1_000_000, 100)
OFFSET = IntLimit("offset", 0, MAX_ROW_ID, 0)

#: ``enqueue_job``'s checked settings by keyword, for a form or an API that validates field by field
JOB_SETTINGS: dict[str, IntLimit | FloatLimit | TextLimit] = {
    lim.field: lim
    for lim in (ENTITY_TYPE, PROVIDER, NAME, CHUNK_SIZE, PRIORITY, MAX_WORKERS, MAX_ATTEMPTS, MAX_ERRORS,
                MAX_ERROR_RATIO)
}


def check_params(params: object) -> dict[str, Any]:
    """A job's ``params``: a JSON object whose every key and string can be stored and read back.

    Checked all the way down (without recursion, so no nesting depth breaks the
    check itself); the message says where, e.g. ``params['headers'][2]``.
    """
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidInput("params must be a JSON object (a dict)", field="params")
    rate = params.get("rate_limit")  # read by core (``ratelimit.py``): a tiny one made a wait of 1e300 s
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        try:
            RATE.check(rate)
        except InvalidInput:
            raise InvalidInput(f"params['rate_limit'] must be {RATE.must} (calls per second), got {shown(rate)}",
                               field="params") from None
    stack: list[tuple[str, object]] = [("params", params)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value, controls=False)
            if problem is not None:
                raise InvalidInput(f"{where} {problem}", field="params")
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and (problem := text_problem(key, controls=False)) is not None:
                    raise InvalidInput(f"a key of {where} {problem}", field="params")
                stack.append((f"{where}[{key!r}]", item))
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return params


def clean_entity_id(value: object, number: int) -> str:
    """Validate one ID; ``number`` counts from 1 so the message matches a file's line."""
    if not isinstance(value, str):
        _bad_id(number, f"is {type(value).__name__} {value!r:.40}, not a string")
    v = value.strip()
    if not v:
        _bad_id(number, "is blank")
    if len(v) > ENTITY_ID_LENGTH:
        _bad_id(number, f"is {len(v):,} characters long; the limit is {ENTITY_ID_LENGTH:,}")
    if not (v.isascii() and v.isprintable()):  # the common case costs one C call
        problem = text_problem(v)
        if problem is not None:
            _bad_id(number, problem)
    return v


def _bad_id(number: int, reason: str) -> NoReturn:
    raise InvalidInput(f"entity ID #{number} {reason}", field="entity_ids", number=number, reason=reason)


def check_search(value: object) -> str | None:
    """A search text (jobs by name, provider or type; errors by entity ID or message), stripped.

    None or blank: no search. Every front end's search reaches SQL through this
    one check (``sql.contains_pattern``), so none can send SQLite a pattern it
    calls "too complex", a NUL or a lone surrogate.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"search must be text, got {type(value).__name__}", field="search")
    text = value.strip()
    if not text:
        return None
    if len(text) > SEARCH_LENGTH:
        raise InvalidInput(f"search must be at most {SEARCH_LENGTH:,} characters, got {len(text):,}",
                           field="search")
    if (problem := text_problem(text, controls=False)) is not None:
        raise InvalidInput(f"search {problem}", field="search")
    return text


def check_id(value: object, what: str = "job id") -> int:
    """A row id as people type it: a positive whole number (``what`` names it, e.g. "error id")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > MAX_ROW_ID:
        raise InvalidInput(f"{what} must be a positive whole number, got {value!r}", field=what.replace(" ", "_"))
    return value
