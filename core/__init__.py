"""chunkq's queue: jobs of entity IDs processed chunk by chunk under leases.

This package imports no CLI, terminal or web library; the dashboard and the
command line (``tui``) build on it, never the reverse. The module map is in
``queue.py``'s docstring; behaviour every front end shares lives here once:
``Status`` (display rank), ``bounds`` (every input bound), ``ProcessorOptions`` /
``apply_overrides`` (the one merge rule), ``Worker(wait_for_retries=True)`` and
``Worker.stop_on_signals()``, ``Queue.bulk`` and ``Queue.next_retry_due``.

Everything a front end uses is exported here (``__all__``); front ends import
this package itself, never a module inside it (an import-linter contract and
``tests/test_boundaries.py`` hold them to it), so core's insides can move.
"""

import sys

from . import bounds
from .adaptive import is_auto, limit_for
from .archive import ArchiveWriter, ImportResult, MalformedArchive, export_job, import_jobs, open_export
from .bounds import FloatLimit, IntLimit, TextLimit
from .capture import set_echo as set_output_echo
from .capture import stderr_echo as output_to_stderr
from .claims import ORDERS
from .db import deadline, mask_password
from .demo import seed as seed_demo
from .enqueue import check_settings as check_job_settings
from .errors import DatabaseStalled, NoDatabase, RetryJobWaiting, SchemaMismatch, WorkerNotFound
from .fingerprint import fingerprint_as
from .history import DURATION_BOUNDS
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
    WORKER_KINDS,
    BulkResult,
    ChunkInfo,
    ChunkqError,
    ChunkResult,
    DatabaseUnavailable,
    EntityResult,
    ErrorEntry,
    ErrorGroup,
    ErrorGroupPage,
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
from .orphans import short_owner
from .processor import Processor
from .queue import MAX_CHUNK_SIZE, MAX_ID_LENGTH, Queue, clean_entity_id
from .registry import DEFAULT_INTERVAL as WORKER_HEARTBEAT_SECONDS
from .registry import Registrant, Registration
from .retention import (
    DEFAULT_POLICY,
    PRUNE_EVERY,
    Pruner,
    PruneResult,
    RetentionPolicy,
    archive_folder,
    parse_age,
    prune_periodically,
    pruning_in_background,
)
from .schema import SCHEMA_VERSION
from .schema import revision_of as schema_revision
from .signals import SignalStop, stop_message
from .status import Status
from .supervisor import EXIT_WORK_LEFT, Supervisor, strip_option, supervised, team, time_left, watch_supervisor
from .threads import ABANDONED_THREADS_MAX
from .threads import abandoned as abandoned_callbacks
from .tracebacks import NO_MESSAGE, source_digest
from .tracebacks import describe as describe_error
from .vacuum import SpaceReport, VacuumResult, space
from .vacuum import vacuum as vacuum_database  # as ``vacuum`` it would hide the module
from .version import RELEASES, __version__
from .worker import (
    NEW_ERROR_SCOPES,
    OVERRUN_WARN_SECONDS,
    RETRY_POLL_SECONDS,
    RunSummary,
    Worker,
    check_new_error_scope,
)

# ``limits``: the input bounds' former module name (issue 30: "limit" now means a concurrency or rate
# limit), the same module under both names, ``import chunkq.core.limits`` included
limits = bounds
sys.modules[f"{__name__}.limits"] = bounds

__all__ = [
    "ABANDONED_THREADS_MAX",
    "ACTIVE_STATUSES",
    "CANCELLED",
    "COMPLETE",
    "DEFAULT_POLICY",
    "DURATION_BOUNDS",
    "EXIT_WORK_LEFT",
    "FAILED",
    "FINISHED_STATUSES",
    "MAX_CHUNK_SIZE",
    "MAX_ID_LENGTH",
    "NEW_ERROR_SCOPES",
    "NO_MESSAGE",
    "ORDERS",
    "OVERRUN_WARN_SECONDS",
    "PAUSED",
    "PENDING",
    "PRUNE_EVERY",
    "RELEASES",
    "RETRY_POLL_SECONDS",
    "RUNNING",
    "SCHEMA_VERSION",
    "STATUSES",
    "WORKER_HEARTBEAT_SECONDS",
    "WORKER_KINDS",
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
    "ErrorGroupPage",
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
    "Registrant",
    "Registration",
    "RetentionPolicy",
    "Retry",
    "RetryJobWaiting",
    "RunSummary",
    "SchemaMismatch",
    "SchemaState",
    "SchemaUpgrade",
    "SignalStop",
    "SpaceReport",
    "Status",
    "Supervisor",
    "TextLimit",
    "TraceFrame",
    "TraceStack",
    "VacuumResult",
    "Worker",
    "WorkerInfo",
    "WorkerNotFound",
    "__version__",
    "abandoned_callbacks",
    "apply_overrides",
    "archive_folder",
    "bounds",
    "check_job_settings",
    "check_new_error_scope",
    "clean_entity_id",
    "deadline",
    "describe_error",
    "export_job",
    "fingerprint_as",
    "import_jobs",
    "is_auto",
    "limit_for",
    "limits",
    "load_processor",
    "mask_password",
    "open_export",
    "output_to_stderr",
    "parse_age",
    "parse_rate",
    "parse_rates",
    "prune_periodically",
    "pruning_in_background",
    "schema_revision",
    "schema_status",
    "seed_demo",
    "set_output_echo",
    "short_owner",
    "source_digest",
    "space",
    "stop_message",
    "strip_option",
    "supervised",
    "team",
    "time_left",
    "upgrade_schema",
    "vacuum_database",
    "watch_supervisor",
]
