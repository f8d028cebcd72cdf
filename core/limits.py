"""Every input limit, defined once, and the checks that enforce them.

A click option, the dashboard's enqueue form and the HTTP trigger all read the
same objects (``CHUNK_SIZE.lo``, ``CHUNK_SIZE.hi``, ``CHUNK_SIZE.default``), so
a bound cannot drift between them; the queue enforces them with ``.check``,
whose ``InvalidInput`` names the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidInput

#: the largest id a job or error row can have (signed 64-bit, with room to spare)
MAX_ROW_ID = 2**62


@dataclass(frozen=True, slots=True)
class IntLimit:
    """A whole number between ``lo`` and ``hi`` (inclusive); ``default`` is what "not given" means."""

    field: str
    lo: int
    hi: int
    default: int | None = None

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{self.field} must be a whole number, got {value!r}", field=self.field)
        if not self.lo <= value <= self.hi:
            raise InvalidInput(
                f"{self.field} must be between {self.lo:,} and {self.hi:,}, got {value:,}", field=self.field
            )
        return value

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
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            number = float(value)  # type: ignore[arg-type]
            ok = (number > self.lo if self.lo_open else number >= self.lo) and (self.hi is None or number <= self.hi)
        if not ok:
            raise InvalidInput(f"{self.field} must be {self.must}, got {value!r}", field=self.field)
        return number

    def check_optional(self, value: object) -> float | None:
        return None if value is None else self.check(value)


@dataclass(frozen=True, slots=True)
class TextLimit:
    """A one-line label: at most ``max_length`` characters, no NUL; ``required`` ones may not be blank."""

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
        if len(text) > self.max_length or "\x00" in text:
            raise InvalidInput(
                f"{self.field} must be at most {self.max_length} characters with no NUL bytes", field=self.field
            )
        return text or None

    def check_required(self, value: object) -> str:
        text = self.check(value)
        assert text is not None  # a required label is never blank
        return text


# --------------------------------------------------------------------------- a job's settings

ENTITY_TYPE = TextLimit("entity_type")
PROVIDER = TextLimit("provider")
NAME = TextLimit("name", required=False)
CHUNK_SIZE = IntLimit("chunk_size", 1, 10_000, 50)
PRIORITY = IntLimit("priority", -1_000_000, 1_000_000, 0)
MAX_WORKERS = IntLimit("max_workers", 1, 1000, 1)
MAX_ATTEMPTS = IntLimit("max_attempts", 1, 100, 3)
MAX_ERRORS = IntLimit("max_errors", 0, MAX_ROW_ID, None)
MAX_ERROR_RATIO = FloatLimit("max_error_ratio", 0.0, 1.0, "a fraction in (0, 1]")
#: the longest entity ID, in characters
ENTITY_ID_LENGTH = 2048

# --------------------------------------------------------------------------- processing

CONCURRENCY = IntLimit("concurrency", 1, 10_000, None)
TIMEOUT = FloatLimit("timeout", 0.0, None, "a positive number of seconds")
RATE = FloatLimit("rate", 0.0, None, "a positive number of calls per second")
LEASE_SECONDS = FloatLimit("lease_seconds", 0.0, None, "a positive number of seconds", 30.0)
POLL_INTERVAL = FloatLimit("poll_interval", 0.01, None, "at least 0.01 seconds", 1.0, lo_open=False)
MAX_CHUNKS = IntLimit("max_chunks", 1, MAX_ROW_ID, None)
MAX_SECONDS = FloatLimit("max_seconds", 0.0, None, "a positive number of seconds")

# --------------------------------------------------------------------------- reading

JOBS_PAGE = IntLimit("limit", 0, 100_000, 100)
ERRORS_PAGE = IntLimit("limit", 0, 1_000_000, 100)
OFFSET = IntLimit("offset", 0, MAX_ROW_ID, 0)

#: ``enqueue_job``'s checked settings by keyword, for a form or an API that validates field by field
JOB_SETTINGS: dict[str, IntLimit | FloatLimit | TextLimit] = {
    lim.field: lim
    for lim in (ENTITY_TYPE, PROVIDER, NAME, CHUNK_SIZE, PRIORITY, MAX_WORKERS, MAX_ATTEMPTS, MAX_ERRORS,
                MAX_ERROR_RATIO)
}


def clean_entity_id(value: object, number: int) -> str:
    """Validate one ID; ``number`` counts from 1 so the message matches a file's line."""
    if not isinstance(value, str):
        _bad_id(number, f"is {type(value).__name__} {value!r:.40}, not a string")
    v = value.strip()  # type: ignore[union-attr]
    if not v:
        _bad_id(number, "is blank")
    if len(v) > ENTITY_ID_LENGTH:
        _bad_id(number, f"is {len(v):,} characters long; the limit is {ENTITY_ID_LENGTH:,}")
    if "\x00" in v:
        _bad_id(number, "contains a NUL byte")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            _bad_id(number, "is not valid UTF-8 text")
    return v


def _bad_id(number: int, reason: str) -> None:
    raise InvalidInput(f"entity ID #{number} {reason}", field="entity_ids", number=number, reason=reason)


def check_id(value: object, what: str = "job id") -> int:
    """A row id as people type it: a positive whole number (``what`` names it, e.g. "error id")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > MAX_ROW_ID:
        raise InvalidInput(f"{what} must be a positive whole number, got {value!r}", field=what.replace(" ", "_"))
    return value
