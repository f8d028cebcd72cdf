"""chunkq's queue: jobs of entity IDs processed chunk by chunk under leases.

This package imports no CLI, terminal or web library; the dashboard and the
command line (``tui``) build on it, never the reverse.
"""

from .loader import ProcessorHandle, load_processor
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
    ChunkInfo,
    ChunkqError,
    ChunkResult,
    DatabaseUnavailable,
    EntityResult,
    ErrorEntry,
    ErrorGroup,
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
)
from .queue import MAX_CHUNK_SIZE, MAX_ID_LENGTH, Queue, clean_entity_id
from .runner import Processor
from .worker import RunSummary, Worker

__all__ = [
    "ACTIVE_STATUSES",
    "CANCELLED",
    "COMPLETE",
    "FAILED",
    "FINISHED_STATUSES",
    "MAX_CHUNK_SIZE",
    "MAX_ID_LENGTH",
    "PAUSED",
    "PENDING",
    "RUNNING",
    "STATUSES",
    "ChunkInfo",
    "ChunkResult",
    "ChunkqError",
    "DatabaseUnavailable",
    "EntityResult",
    "ErrorEntry",
    "ErrorGroup",
    "InvalidInput",
    "InvalidTransition",
    "Job",
    "JobFailed",
    "JobNotFound",
    "Processor",
    "ProcessorError",
    "ProcessorHandle",
    "Queue",
    "QueueStats",
    "Retry",
    "RunSummary",
    "TraceFrame",
    "TraceStack",
    "Worker",
    "clean_entity_id",
    "load_processor",
]
