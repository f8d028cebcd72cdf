"""Plain values that cross chunkq's boundaries.

Everything the queue hands out is a frozen dataclass, never a live ORM object: a
dashboard, a CLI and an HTTP handler can keep them, compare them and pass them
between threads without touching a database session.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

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
    "ErrorEntry", "ErrorGroup", "ErrorGroupPage", "HistoryBucket", "InvalidInput", "InvalidTransition", "Job",
    "JobFailed", "JobNotFound",
    "ProcessorError", "QueueStats", "Retry", "Status", "TraceFrame", "TraceStack", "WorkerInfo", "to_datetime",
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


#: a lease holder (or a registered worker) is silent after this many heartbeat intervals without one
STALE_HEARTBEATS = 2


@overload
def to_datetime(ts: float) -> datetime: ...
@overload
def to_datetime(ts: float | None) -> datetime | None: ...
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
    #: the processor the job is routed to (its import path or ``Processor.name``); None: any worker runs it
    processor: str | None = None
    #: the error row that paused or failed the job (circuit breaker, error budget, ``JobFailed``)
    reason_error_id: int | None = None
    #: who gave the job's leases back on purpose (``host:pid``) and when: a release, not a silent worker
    released_by: str | None = None
    released_at: datetime | None = None
    #: who the job is for (fair scheduling: tenants take turns); None: no tenant
    tenant: str | None = None

    @property
    def reason(self) -> str | None:
        """Why the job is paused or failed, as a sentence (circuit breaker, error budget, ``JobFailed``,
        an operator); None for a job that is neither."""
        if self.status not in (PAUSED, FAILED):
            return None
        return self.fail_reason or ("paused by an operator" if self.status == PAUSED else None)

    @property
    def is_released(self) -> bool:
        """Its leases were given back on purpose and no worker has taken them since."""
        return self.released_at is not None and self.leased_chunks > 0 and not self.is_finished

    @property
    def heartbeat_interval(self) -> float | None:
        """How often the lease holder renews (a third of its lease), read off the job row itself."""
        if self.heartbeat_at is None or self.lease_expires_at is None:
            return None
        lease = (self.lease_expires_at - self.heartbeat_at).total_seconds()
        return lease / 3 if lease > 0 else None

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
        """True when a worker holds a lease it has stopped renewing (it probably died).

        Said within two heartbeat intervals of the last renewal (a third of the lease
        each), not only once the whole lease has run out. A lease given back on purpose
        (``is_released``) is not stale: nobody went silent.
        """
        if self.leased_chunks <= 0 or self.lease_expires_at is None or self.is_finished or self.is_released:
            return False
        now = now or datetime.now(UTC)
        if self.lease_expires_at < now:
            return True
        interval = self.heartbeat_interval
        return (interval is not None and self.heartbeat_at is not None
                and (now - self.heartbeat_at).total_seconds() > STALE_HEARTBEATS * interval)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``--json`` and the HTTP API (with ``reason``, the sentence)."""
        out = _json_ready(self)
        out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class TraceFrame:
    filename: str
    lineno: int
    name: str
    line: str
    locals: dict[str, str] | None = None
    #: the source lines around ``lineno`` as they were when the error happened (``context_start`` is the
    #: first one's number), so a traceback shows the code that failed, not the file as it is today
    context: tuple[str, ...] = ()
    context_start: int = 0
    #: a digest of the file at capture (``tracebacks.source_digest``): a renderer compares it with today's
    #: file to say "changed since"; None when the file could not be read
    source_digest: str | None = None
    #: > 0 on the marker frame that stands for a run of collapsed recursive frames (``tracebacks.py``)
    repeated: int = 0


@dataclass(frozen=True, slots=True)
class TraceStack:
    """One exception of a (possibly chained) traceback, innermost frame last.

    ``members``: an ``ExceptionGroup``'s exceptions, each its own stack (captured
    recursively, bounded in depth and count: ``tracebacks.py``).
    """

    exc_type: str
    exc_value: str
    frames: tuple[TraceFrame, ...]
    is_cause: bool = False
    members: tuple[TraceStack, ...] = ()


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
    #: what groups it (``fingerprint.py``): None on a row written by a worker older than schema 3
    fingerprint: str | None = None
    normalized: str | None = None  # the message with its variable parts replaced
    location: str | None = None  # "file.py:function" in the user's code that raised it
    #: what the callback printed and logged for this entity (``capture.py``): read by ``get_error``
    #: only (a page of errors would carry up to 64 KB a row); None there too when nothing was written
    output: str | None = None

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
            "fingerprint": self.fingerprint,
            "normalized": self.normalized,
            "location": self.location,
        }


@dataclass(frozen=True, slots=True)
class ErrorGroup:
    """Failures that are the same bug (one group: ``error_groups.py``): what an operator reads first.

    ``message`` is the group's template (``upstream <*> for <*>``: ``templates.py``) and
    ``samples`` up to 3 distinct real ones. ``count`` is attempts logged,
    ``entities`` distinct entities. Rows written before fingerprints existed
    group by their exact message, under a key starting ``legacy:``.
    """

    error_type: str
    message: str
    count: int
    entities: int
    first_at: datetime
    last_at: datetime
    fingerprint: str = ""
    location: str | None = None
    samples: tuple[str, ...] = ()
    #: groups an operator merged into this one (``chunkq errors unmerge JOB KEY`` splits one off again)
    merged: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "error_type": self.error_type, "message": self.message,
            "location": self.location, "count": self.count, "entities": self.entities,
            "first_at": self.first_at.isoformat(), "last_at": self.last_at.isoformat(), "samples": list(self.samples),
            "merged": list(self.merged),
        }


@dataclass(frozen=True, slots=True)
class ErrorGroupPage:
    """A page of a job's error groups and how many it has in all: a view says "103 bugs", never a silent cap."""

    total: int
    groups: tuple[ErrorGroup, ...]
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "limit": self.limit, "offset": self.offset,
                "groups": [g.to_dict() for g in self.groups]}


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
    #: what the callback printed and logged for this entity, bounded (``capture.py``); None: nothing
    output: str | None = None


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
    #: fingerprints this chunk logged that its job had never logged before (decided in the commit transaction)
    new_fingerprints: tuple[str, ...] = ()

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
            "new_fingerprints": list(self.new_fingerprints),
        }


@dataclass(frozen=True, slots=True)
class QueueStats:
    jobs_by_status: dict[str, int]
    total_entities: int
    processed_entities: int
    error_count: int
    waiting_entities: int
    entities_per_second: float  # over the recent window of chunk history
    active_workers: int  # distinct holders of live leases
    #: entities that failed for good (what every "Errors" number shows); ``error_count`` is attempts logged
    failed_entities: int = 0
    #: running jobs whose lease holder stopped heartbeating (``Job.lease_is_stale``'s rule, counted in SQL):
    #: "running" in a header is ``jobs_by_status["running"] - stale_jobs``
    stale_jobs: int = 0
    #: registered workers (``chunkq_workers``) that heartbeat, lost and stopped ones left out
    workers_alive: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: the kinds of process that register in ``chunkq_workers``
WORKER_KINDS = ("worker", "process", "dashboard", "serve")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One registered process that processes work, as read (``registry.py``).

    ``state`` is busy | idle | stopping | stopped as the process wrote it, or
    ``lost`` when its heartbeat is more than two intervals old (computed on read:
    a process killed with ``kill -9`` cannot say so itself).
    """

    id: str
    host: str
    pid: int
    kind: str
    processor: str | None
    version: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_interval: float
    state: str
    #: the job of the chunk(s) it holds now (the first, when it holds chunks of several), and how many it holds
    job_id: int | None = None
    chunks: int = 0
    concurrency: int | None = None
    done: int = 0
    failed: int = 0
    stop_request: str | None = None  # None | "finish" | "release"
    stopped_at: datetime | None = None
    detail: str | None = None

    @property
    def alive(self) -> bool:
        return self.state not in ("lost", "stopped")

    @property
    def host_pid(self) -> str:
        return f"{self.host}:{self.pid}"

    def heartbeat_age(self, now: datetime | None = None) -> float:
        """Seconds since its last heartbeat."""
        return max(((now or datetime.now(UTC)) - self.heartbeat_at).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        out = _json_ready(self)
        out["alive"] = self.alive
        return out


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    """Throughput over one slice of time, from the chunks that finished in it (``Queue.history``).

    ``processed`` counts entities finished (succeeded or failed), ``failed`` the
    attempts that failed (logged errors), ``chunks`` chunks committed.
    """

    start: datetime
    seconds: float
    processed: int = 0
    failed: int = 0
    chunks: int = 0

    @property
    def per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(self)


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
