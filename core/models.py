"""Plain values that cross chunkq's boundaries.

Everything the queue hands out is a frozen dataclass, never a live ORM object: a
dashboard, a CLI and an HTTP handler can keep them, compare them and pass them
between threads without touching a database session.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import (
    ChunkqError,
    DatabaseUnavailable,
    InvalidInput,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    ProcessorError,
    Retry,
)
from .status import (
    ACTIVE_STATUSES,
    CANCELLED,
    COMPLETE,
    FAILED,
    FINISHED_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    STATUSES,
    Status,
)

__all__ = [  # the errors and statuses are re-exported: ``from chunkq.core.models import PENDING`` keeps working
    "ACTIVE_STATUSES", "CANCELLED", "COMPLETE", "FAILED", "FINISHED_STATUSES", "PAUSED", "PENDING", "RUNNING",
    "STATUSES", "BulkResult", "ChunkInfo", "ChunkResult", "ChunkqError", "DatabaseUnavailable", "EntityResult",
    "ErrorEntry", "ErrorGroup", "InvalidInput", "InvalidTransition", "Job", "JobFailed", "JobNotFound",
    "ProcessorError", "QueueStats", "Retry", "Status", "TraceFrame", "TraceStack", "to_datetime",
]


def _json_ready(obj: Any) -> dict[str, Any]:
    """A dataclass as a dict with datetimes in ISO 8601, for JSON output."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Status):
            value = value.value  # plain text: every JSON encoder takes it
        out[f.name] = value
    return out


def to_datetime(ts: float | None) -> datetime | None:
    """Timestamps are stored as epoch seconds (cheap to compare in SQL on both backends)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job as it was when read.

    ``processed_count`` counts entities that are finished (succeeded or failed for
    good); ``waiting_count`` those that failed transiently and wait for a retry.
    """

    id: int
    name: str | None
    entity_type: str
    provider: str
    status: Status
    chunk_size: int
    priority: int
    total_count: int
    processed_count: int
    error_count: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    fail_reason: str | None
    parent_id: int | None
    max_workers: int = 1
    succeeded_count: int = 0
    failed_count: int = 0
    waiting_count: int = 0
    next_retry_at: datetime | None = None
    heartbeat_at: datetime | None = None
    leased_chunks: int = 0
    max_attempts: int = 3
    max_errors: int | None = None
    max_error_ratio: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def remaining_count(self) -> int:
        return max(self.total_count - self.processed_count, 0)

    @property
    def progress(self) -> float:
        """Fraction done, 0..1 (an empty job cannot exist, but be safe)."""
        return self.processed_count / self.total_count if self.total_count else 1.0

    @property
    def is_finished(self) -> bool:
        return Status(self.status).is_finished

    def eta_seconds(self, per_second: float | None, now: datetime | None = None) -> float | None:
        """Seconds until done at ``per_second``, or None when idle or finished.

        Entities waiting for a retry count as remaining, and the job cannot finish
        before its next retry is due, whatever the rate.
        """
        if self.is_finished or self.remaining_count <= 0 or not per_second or per_second <= 0:
            return None
        seconds = self.remaining_count / per_second
        if self.waiting_count and self.next_retry_at is not None:
            due_in = (self.next_retry_at - (now or datetime.now(UTC))).total_seconds()
            seconds = max(seconds, due_in)
        return seconds

    def lease_is_stale(self, now: datetime | None = None) -> bool:
        """True when a worker holds a lease it has stopped renewing (it probably died)."""
        if self.leased_chunks <= 0 or self.lease_expires_at is None or self.is_finished:
            return False
        return self.lease_expires_at < (now or datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``--json`` and the HTTP API."""
        return _json_ready(self)


@dataclass(frozen=True, slots=True)
class TraceFrame:
    filename: str
    lineno: int
    name: str
    line: str
    locals: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TraceStack:
    """One exception of a (possibly chained) traceback, innermost frame last."""

    exc_type: str
    exc_value: str
    frames: tuple[TraceFrame, ...]
    is_cause: bool = False


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    """One failed attempt at one entity; the log keeps every attempt."""

    id: int
    job_id: int
    entity_id: str
    error_type: str
    message: str
    traceback: str
    chunk_index: int
    attempt: int
    created_at: datetime
    final: bool = True
    resolved_at: datetime | None = None
    stacks: tuple[TraceStack, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "entity_id": self.entity_id,
            "error_type": self.error_type,
            "message": self.message,
            "traceback": self.traceback,
            "chunk_index": self.chunk_index,
            "attempt": self.attempt,
            "final": self.final,
            "created_at": self.created_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failures that share an exception type and message: what an operator reads first."""

    error_type: str
    message: str
    count: int
    entities: int
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One row of a job's chunk history."""

    job_id: int
    chunk_index: int
    kind: str  # "range" or "retry"
    state: str  # "leased" or "done"
    size: int
    worker: str | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    ok: int
    errors: int
    lease_expires_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(self)


@dataclass(frozen=True, slots=True)
class EntityResult:
    """What happened to one entity in one chunk, reported live as it finishes."""

    entity_id: str
    ok: bool
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    #: epoch seconds (the queue's clock) the entity's next attempt is due, when this failure scheduled one:
    #: it was transient and attempts were left. The chunk's commit stores exactly this time (unless a
    #: ``JobFailed`` then aborts the chunk, and with it the job).
    retry_at: float | None = None
    duration: float = 0.0
    stacks: tuple[TraceStack, ...] = ()


@dataclass(frozen=True, slots=True)
class ChunkResult:
    job_id: int
    chunk_index: int
    processed: int
    errors: int
    status: Status
    duration: float
    retried: int = 0
    committed: bool = True  # False when the lease was lost and the results were discarded

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "chunk_index": self.chunk_index,
            "processed": self.processed,
            "errors": self.errors,
            "retried": self.retried,
            "status": str(self.status),
            "duration": round(self.duration, 6),
            "committed": self.committed,
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    jobs_by_status: dict[str, int]
    total_entities: int
    processed_entities: int
    error_count: int
    waiting_entities: int
    entities_per_second: float  # over the recent window of chunk history
    active_workers: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What one action over every job matching a filter did.

    ``skipped`` says why the other matched jobs were left alone, and how many:
    the status the action does not apply to (``{"complete": 3}`` for a pause), or
    ``"no failed entities"`` for a retry or requeue of a job with nothing to redo.
    ``job_ids`` are the jobs changed; for ``retry`` the new jobs it created.
    """

    action: str
    matched: int
    changed: int
    skipped: dict[str, int]
    job_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "matched": self.matched, "changed": self.changed,
                "skipped": dict(self.skipped), "job_ids": list(self.job_ids)}
