"""Reading a request: query parameters, path ids and JSON bodies, each mistake a ``BadRequest``.

Every check a person can fail lives here, so a route reads as "parse, call core,
answer". Values core validates itself (chunk sizes, attempts, ID lengths, …) are
passed through and its ``InvalidInput`` becomes a 422; this module only checks
what core cannot see: the shape of the request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from chunkq.core import limits, mask_password
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON

#: one request may process for at most this long: an HTTP call held open for hours helps nobody
MAX_PROCESS_SECONDS = 3600.0
#: ``?max_seconds=``, read by core's one number check (no nan, no inf, nothing past the cap)
PROCESS_SECONDS = limits.FloatLimit("max_seconds", 0.0, MAX_PROCESS_SECONDS,
                                    f"a number of seconds more than 0 and at most {MAX_PROCESS_SECONDS:g}")
#: rows a request may read at once: a tighter cap than core's own (``limits.JOBS_PAGE.hi``)
MAX_PAGE = 1000
MAX_OFFSET = limits.OFFSET.hi

#: the fields POST /jobs accepts: enqueue_job's keyword arguments (core checks every value)
JOB_FIELDS = (
    "entity_ids", "entity_type", "provider", "chunk_size", "priority", "name", "dedupe",
    "max_workers", "max_attempts", "max_errors", "max_error_ratio", "params", "processor", "tenant",
)
_REQUIRED_JOB_FIELDS = ("entity_ids", "entity_type", "provider")


#: characters a terminal acts on or reorders when it prints them (C0 but tab/newline are escaped by JSON
#: itself): C1 controls, bidi overrides and isolates, line/paragraph separators, BOM
_INVISIBLE = re.compile("[\u0080-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


class JSONResponse(_StarletteJSON):
    """JSON whose strings cannot act on the terminal of whoever reads it with ``curl``.

    Job names, entity IDs and provider messages are untrusted. JSON already
    escapes C0 controls; this also writes C1 controls and bidi/invisible
    formatting characters as ``\\uXXXX`` escapes. A JSON parser reads back the
    very same text (an escape is not a change of value), but printed raw the
    body shows them instead of obeying them (a U+202E in a job name does not
    reverse the line it is printed on).
    """

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        if not text.isascii():
            text = _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return text.encode("utf-8", "backslashreplace")


class BadRequest(Exception):
    """A request a person got wrong: answered with ``status`` and the message, nothing written."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the API gives is ``{"error": "..."}``: one shape for scripts to read.

    The message may quote what the client sent: a lone surrogate in it is
    written as ``\\udXXX`` (UTF-8 cannot carry it, and an error must never fail
    to encode), and a database password never leaves the server.
    """
    safe = mask_password(message).encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": safe}, status_code=status, headers=headers)


def only_params(request: Request, allowed: tuple[str, ...]) -> None:
    # A typo such as ?max_second=60 would otherwise be ignored silently and do something else.
    unknown = sorted(set(request.query_params.keys()) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; expected: {expected}")


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if limits.INTEGER.fullmatch(raw.strip()) is None:  # int() also takes "١٢" and "1_000"
        raise BadRequest(f"{name} must be a whole number, got {limits.shown(raw)}")
    value = int(raw.strip())
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:,} and {hi:,}, got {limits.shown(value, 40)}")
    return value


def page(request: Request) -> tuple[int, int]:
    """``?limit=&offset=``: at most ``MAX_PAGE`` rows a request."""
    return (int_param(request, "limit", limits.JOBS_PAGE.default, limits.JOBS_PAGE.lo, MAX_PAGE),  # type: ignore[arg-type]  # it has a default
            int_param(request, "offset", limits.OFFSET.default, limits.OFFSET.lo, MAX_OFFSET))  # type: ignore[arg-type]  # it has a default


def statuses(request: Request) -> list[str]:
    """``?status=a&status=b`` and ``?status=a,b`` both work; core rejects an unknown status."""
    found = [s.strip() for raw in request.query_params.getlist("status") for s in raw.split(",")]
    return [s for s in found if s]


def flag(request: Request, name: str) -> bool:
    """``?name=true|false|1|0`` (absent: false); anything else is refused (422), never a silent false."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name} must be true or false, got {raw!r:.60}")


def max_seconds(request: Request) -> float | None:
    """``?max_seconds=``: how long ``POST /jobs/process`` may keep starting chunks (None: one chunk)."""
    raw = request.query_params.get("max_seconds")
    return None if raw is None else PROCESS_SECONDS.parse(raw)  # InvalidInput: 422 naming the field


def job_id(request: Request) -> int:
    raw = request.path_params["job_id"]
    # ASCII digits only (int() would also take " 7", "٧" or "1_000"), and no 5,000-digit numbers
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= MAX_OFFSET:
        return int(raw)
    raise BadRequest(f"job id must be a positive whole number, got {raw!r:.60}")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: Request) -> dict[str, Any]:
    body = b"".join([chunk async for chunk in request.stream()])
    if not body.strip():
        raise BadRequest("the request body is empty; send a JSON object", 400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 text (byte {exc.start})", 400) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}", 400) from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", 400) from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {json_type(data)}", 400)
    return data


def json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def job_request(data: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A ``POST /jobs`` body -> ``(entity_ids, enqueue_job keyword arguments)``."""
    unknown = sorted(set(data) - set(JOB_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected some of: {', '.join(JOB_FIELDS)}")
    for required in _REQUIRED_JOB_FIELDS:
        if required not in data:
            raise BadRequest(f"{required} is required")
    data = dict(data)
    ids = data.pop("entity_ids")
    if not isinstance(ids, list):
        raise BadRequest(f"entity_ids must be a JSON array of strings, got {json_type(ids)}")
    if "dedupe" in data and not isinstance(data["dedupe"], bool):
        raise BadRequest(f"dedupe must be true or false, got {data['dedupe']!r:.60}")
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise BadRequest(f"name must be a string, got {json_type(data['name'])}")
    # None means "the default" for optional numbers, as if the field were left out.
    kwargs = {k: v for k, v in data.items() if v is not None or k in ("max_errors", "max_error_ratio")}
    return ids, kwargs
