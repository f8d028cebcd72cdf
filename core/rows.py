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
        created_at=to_datetime(m["created_at"]), updated_at=to_datetime(m["updated_at"]),  # type: ignore[arg-type]
        started_at=to_datetime(m["started_at"]), finished_at=to_datetime(m["finished_at"]),
        lease_owner=m["lease_owner"], lease_expires_at=to_datetime(m["lease_expires_at"]),
        fail_reason=readable(m["fail_reason"]), parent_id=m["parent_id"], max_workers=m["max_workers"],
        succeeded_count=m["succeeded_count"], failed_count=m["failed_count"], waiting_count=m["waiting_count"],
        next_retry_at=to_datetime(m["next_retry_at"]), heartbeat_at=to_datetime(m["heartbeat_at"]),
        leased_chunks=m["leased_chunks"], max_attempts=m["max_attempts"], max_errors=m["max_errors"],
        max_error_ratio=m["max_error_ratio"], params=readable(dict(m["params"] or {})),
    )


def error(row: Any) -> ErrorEntry:
    m = row._mapping
    stacks = tuple(
        TraceStack(
            exc_type=st.get("exc_type", ""), exc_value=st.get("exc_value", ""), is_cause=bool(st.get("is_cause")),
            frames=tuple(TraceFrame(f["filename"], f["lineno"], f["name"], f.get("line", ""), f.get("locals"))
                         for f in st.get("frames", [])),
        )
        for st in readable(m["stacks"] or [])
    )
    return ErrorEntry(
        id=m["id"], job_id=m["job_id"], entity_id=m["entity_id"], error_type=readable(m["error_type"]),
        message=readable(m["message"]), traceback=readable(m["traceback"]), chunk_index=m["chunk_index"],
        attempt=m["attempt"],
        created_at=to_datetime(m["created_at"]), final=bool(m["final"]),  # type: ignore[arg-type]
        resolved_at=to_datetime(m["resolved_at"]), stacks=stacks,
    )


def error_group(r: Any) -> ErrorGroup:
    return ErrorGroup(readable(r.error_type), readable(r.message), int(r.n), int(r.ents),
                      to_datetime(r.first), to_datetime(r.last))  # type: ignore[arg-type]


def chunk(r: Any) -> ChunkInfo:
    return ChunkInfo(r.job_id, r.chunk_index, r.kind, r.state, r.size, r.owner, r.attempt,
                     to_datetime(r.started_at), to_datetime(r.finished_at), r.duration, r.ok, r.errors,
                     to_datetime(r.lease_expires_at))


def stacks_json(stacks: Sequence[TraceStack]) -> list[dict[str, Any]]:
    """A structured traceback as stored: the last 50 frames of each exception, values capped."""
    return [
        {
            "exc_type": st.exc_type, "exc_value": st.exc_value[:2000], "is_cause": st.is_cause,
            "frames": [
                {"filename": f.filename, "lineno": f.lineno, "name": f.name, "line": f.line, "locals": f.locals}
                for f in st.frames[-50:]
            ],
        }
        for st in stacks
    ]
