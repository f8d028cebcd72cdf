"""Database rows to the frozen values the queue hands out, and tracebacks to the JSON stored.

One place for the mapping, so a new column is added in one function, and no
caller ever holds a live row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .models import ChunkInfo, ErrorEntry, ErrorGroup, Job, TraceFrame, TraceStack, to_datetime
from .status import Status
from .tracebacks import CONTEXT_LINE_MAX, CONTEXT_LINES_MAX, MEMBERS_DEPTH, MEMBERS_MAX, bound_frames

#: how much of a failure is stored (a provider can answer with megabytes)
MESSAGE_MAX = 10_000
TRACEBACK_MAX = 100_000


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def readable(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD, dicts and lists included.

    Enqueue refuses such text now, but a row written before it did (a JSON
    column on SQLite keeps ``\\ud800`` as an escape) must still read back as
    something UTF-8 can encode, or one bad job breaks every listing for everyone.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    if isinstance(value, dict):
        return {readable(k): readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [readable(v) for v in value]
    return value


def job(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=m["id"], name=readable(m["name"]), entity_type=readable(m["entity_type"]),
        provider=readable(m["provider"]),
        status=Status(m["status"]), chunk_size=m["chunk_size"], priority=m["priority"],
        total_count=m["total_count"], processed_count=m["processed_count"], error_count=m["error_count"],
        created_at=to_datetime(m["created_at"]), updated_at=to_datetime(m["updated_at"]),
        started_at=to_datetime(m["started_at"]), finished_at=to_datetime(m["finished_at"]),
        lease_owner=m["lease_owner"], lease_expires_at=to_datetime(m["lease_expires_at"] or None),  # 0: released
        fail_reason=readable(m["fail_reason"]), parent_id=m["parent_id"], max_workers=m["max_workers"],
        succeeded_count=m["succeeded_count"], failed_count=m["failed_count"], waiting_count=m["waiting_count"],
        next_retry_at=to_datetime(m["next_retry_at"]), heartbeat_at=to_datetime(m["heartbeat_at"]),
        leased_chunks=m["leased_chunks"], max_attempts=m["max_attempts"], max_errors=m["max_errors"],
        max_error_ratio=m["max_error_ratio"], params=readable(dict(m["params"] or {})),
        processor=readable(m["processor"]), reason_error_id=m["reason_error_id"],
        released_by=readable(m["released_by"]), released_at=to_datetime(m["released_at"]),
        tenant=readable(m["tenant"]) or None if "tenant" in m else None,
    )


def _frame(f: dict[str, Any]) -> TraceFrame:
    context = f.get("context")
    return TraceFrame(
        f["filename"], f["lineno"], f["name"], f.get("line", ""), f.get("locals"),
        context=tuple(x for x in context if isinstance(x, str)) if isinstance(context, list) else (),
        context_start=int(f.get("context_start") or 0), source_digest=f.get("source_digest"),
        repeated=int(f.get("repeated") or 0),
    )


def _stack(st: dict[str, Any], depth: int = 0) -> TraceStack:
    """One stored exception; keys added later (context, members) may be missing from older rows."""
    members = st.get("members") if depth < 8 else None
    return TraceStack(
        exc_type=st.get("exc_type", ""), exc_value=st.get("exc_value", ""), is_cause=bool(st.get("is_cause")),
        frames=tuple(_frame(f) for f in st.get("frames", [])),
        members=tuple(_stack(m, depth + 1) for m in members if isinstance(m, dict))
        if isinstance(members, list) else (),
    )


def stacks(stored: Any) -> tuple[TraceStack, ...]:
    """The stored JSON of a traceback as frozen values (``stacks_json`` reversed)."""
    return tuple(_stack(st) for st in readable(stored or []) if isinstance(st, dict))


def error(row: Any) -> ErrorEntry:
    m = row._mapping
    return ErrorEntry(
        id=m["id"], job_id=m["job_id"], entity_id=m["entity_id"], error_type=readable(m["error_type"]),
        message=readable(m["message"]), traceback=readable(m["traceback"]), chunk_index=m["chunk_index"],
        attempt=m["attempt"],
        created_at=to_datetime(m["created_at"]), final=bool(m["final"]),
        resolved_at=to_datetime(m["resolved_at"]), stacks=stacks(m["stacks"]),
        fingerprint=m.get("fingerprint"), normalized=readable(m.get("normalized")),
        location=readable(m.get("location")),
        output=readable(m.get("output")),
    )


def error_group(r: Any, key: str, samples: Sequence[str] = ()) -> ErrorGroup:
    """A grouping query's row: ``r.message`` is the normalised message (the exact one for a legacy group)."""
    return ErrorGroup(readable(r.error_type), readable(r.message), int(r.n), int(r.ents),
                      to_datetime(r.first), to_datetime(r.last),
                      fingerprint=key, location=readable(r.location),
                      samples=tuple(readable(x) for x in samples))


def chunk(r: Any) -> ChunkInfo:
    return ChunkInfo(r.job_id, r.chunk_index, r.kind, r.state, r.size, r.owner, r.attempt,
                     to_datetime(r.started_at), to_datetime(r.finished_at), r.duration, r.ok, r.errors,
                     to_datetime(r.lease_expires_at))


def _frame_json(f: TraceFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"filename": f.filename, "lineno": f.lineno, "name": f.name, "line": f.line,
                           "locals": f.locals}
    # only when there is something: most frames are a library's, and a chunk can log 50 tracebacks
    if f.context:
        out["context"] = [line[:CONTEXT_LINE_MAX] for line in f.context[:CONTEXT_LINES_MAX]]
        out["context_start"] = f.context_start
    if f.source_digest:
        out["source_digest"] = f.source_digest
    if f.repeated:
        out["repeated"] = f.repeated
    return out


def _stack_json(st: TraceStack, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "exc_type": st.exc_type, "exc_value": st.exc_value[:2000], "is_cause": st.is_cause,
        "frames": [_frame_json(f) for f in bound_frames(st.frames)],
    }
    if st.members and depth < MEMBERS_DEPTH:
        out["members"] = [_stack_json(m, depth + 1) for m in st.members[:MEMBERS_MAX]]
    return out


def stacks_json(stacks: Sequence[TraceStack]) -> list[dict[str, Any]]:
    """A structured traceback as stored: at most 50 frames of each exception (``bound_frames``), values capped;
    an ``ExceptionGroup``'s members nested under ``members`` (bounded in depth and count)."""
    return [_stack_json(st, 0) for st in stacks]
