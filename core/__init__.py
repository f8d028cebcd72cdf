"""chunkq's queue: jobs of entity IDs processed chunk by chunk under leases.

This package imports no CLI, terminal or web library; the dashboard and the
command line (``tui``) build on it, never the reverse. The module map is in
``queue.py``'s docstring; behaviour every front end shares lives here once:
``Status`` (display rank), ``limits`` (every input bound), ``ProcessorOptions`` /
``apply_overrides`` (the one merge rule), ``Worker(wait_for_retries=True)`` and
``Worker.stop_on_signals()``, ``Queue.bulk`` and ``Queue.next_retry_due``.
"""

from . import limits
from .archive import ArchiveWriter, ImportResult, MalformedArchive, export_job, import_jobs, open_export
from .db import deadline
from .enqueue import check_settings as check_job_settings
from .errors import DatabaseStalled, NoDatabase, SchemaMismatch, WorkerNotFound
from .limits import FloatLimit, IntLimit, TextLimit
from .loader import ProcessorHandle, load_processor
from .migrations import SchemaState, SchemaUpgrade, schema_status, upgrade_schema
from .models import (
    ACTIVE_STATUSES,
    CANCELLED,
    COMPLETE,
    FAILED,
    FINISHED_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    STATUSES,
    BulkResult,
    ChunkInfo,
    ChunkqError,
    ChunkResult,
    DatabaseUnavailable,
    EntityResult,
    ErrorEntry,
    ErrorGroup,
    HistoryBucket,
    InvalidInput,
    InvalidTransition,
    Job,
    JobFailed,
    JobNotFound,
    ProcessorError,
    QueueStats,
    Retry,
    TraceFrame,
    TraceStack,
    WorkerInfo,
)
from .options import ProcessorOptions, apply_overrides, parse_rate, parse_rates
from .queue import MAX_CHUNK_SIZE, MAX_ID_LENGTH, Queue, clean_entity_id
from .registry import Registration
from .retention import DEFAULT_POLICY, Pruner, PruneResult, RetentionPolicy, parse_age, prune_periodically
from .runner import Processor
from .signals import SignalStop, stop_message
from .status import Status
from .worker import RunSummary, Worker

__all__ = [
    "ACTIVE_STATUSES",
    "CANCELLED",
    "COMPLETE",
    "DEFAULT_POLICY",
    "FAILED",
    "FINISHED_STATUSES",
    "MAX_CHUNK_SIZE",
    "MAX_ID_LENGTH",
    "PAUSED",
    "PENDING",
    "RUNNING",
    "STATUSES",
    "ArchiveWriter",
    "BulkResult",
    "ChunkInfo",
    "ChunkResult",
    "ChunkqError",
    "DatabaseStalled",
    "DatabaseUnavailable",
    "EntityResult",
    "ErrorEntry",
    "ErrorGroup",
    "FloatLimit",
    "HistoryBucket",
    "ImportResult",
    "IntLimit",
    "InvalidInput",
    "InvalidTransition",
    "Job",
    "JobFailed",
    "JobNotFound",
    "MalformedArchive",
    "NoDatabase",
    "Processor",
    "ProcessorError",
    "ProcessorHandle",
    "ProcessorOptions",
    "PruneResult",
    "Pruner",
    "Queue",
    "QueueStats",
    "Registration",
    "RetentionPolicy",
    "Retry",
    "RunSummary",
    "SchemaMismatch",
    "SchemaState",
    "SchemaUpgrade",
    "SignalStop",
    "Status",
    "TextLimit",
    "TraceFrame",
    "TraceStack",
    "Worker",
    "WorkerInfo",
    "WorkerNotFound",
    "apply_overrides",
    "check_job_settings",
    "clean_entity_id",
    "deadline",
    "export_job",
    "import_jobs",
    "limits",
    "load_processor",
    "open_export",
    "parse_age",
    "parse_rate",
    "parse_rates",
    "prune_periodically",
    "schema_status",
    "stop_message",
    "upgrade_schema",
]
