"""The errors chunkq raises on purpose, and the two a callback raises to steer it.

Errors carry structure, not just prose: ``InvalidInput.field`` names the input a
message is about, so a form can put it next to the right box and an HTTP client
can read it without matching message prefixes.
"""

from __future__ import annotations


class ChunkqError(Exception):
    """Base of every error chunkq raises on purpose; its message is for people."""


class InvalidInput(ChunkqError, ValueError):
    """The caller asked for something that cannot be done; nothing was written.

    ``field`` is the keyword argument (or query parameter) at fault, e.g.
    ``"chunk_size"`` or ``"entity_ids"``; None when no single input is to blame.
    For one bad entity ID, ``number`` is its 1-based position (a file's line)
    and ``reason`` the message without the "entity ID #N" prefix, so a front end
    can phrase its own "line 7: the ID is blank".
    """

    def __init__(
        self, message: str, *, field: str | None = None, number: int | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.field = field
        self.number = number
        self.reason = reason


class JobNotFound(ChunkqError, LookupError):
    def __init__(self, job_id: object) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class WorkerNotFound(ChunkqError, LookupError):
    """No registered worker has this id (it never existed, or stopped long enough ago to be forgotten)."""

    def __init__(self, worker_id: object) -> None:
        super().__init__(f"no worker with id {worker_id!r}")
        self.worker_id = worker_id


class InvalidTransition(ChunkqError):
    """E.g. resuming a complete job: the message says the job's current status."""


class RetryJobWaiting(InvalidTransition):
    """A retry of a job's failures was refused: a retry job holding some of them still waits.

    Redoing them again (a second retry job, or a requeue in place) would process,
    and bill, the same entities twice. ``job_id`` is the job asked about,
    ``waiting_id`` and ``waiting_status`` the retry job that still waits (pending,
    running or paused). Nothing was written.
    """

    def __init__(self, job_id: int, waiting_id: int, waiting_status: str) -> None:
        super().__init__(f"job {job_id} already has a retry job waiting: job {waiting_id} ({waiting_status}); "
                         "process or cancel it first")
        self.job_id = job_id
        self.waiting_id = waiting_id
        self.waiting_status = waiting_status


class ProcessorError(ChunkqError):
    """A processor import path that cannot be loaded into a callable."""


class DatabaseUnavailable(ChunkqError):
    """The database cannot be reached or written; the message says why."""


class DatabaseStalled(DatabaseUnavailable):
    """A transaction waited past the deadline it ran under (``db.deadline``) and was given up.

    ``waited`` is how long it had waited (seconds), ``what`` names it ("committing chunk 3 of job 1").
    Nothing it did is applied: it was rolled back, or its connection closed.
    """

    def __init__(self, what: str, waited: float) -> None:
        super().__init__(f"the database did not answer for {waited:.1f} s ({what})")
        self.what = what
        self.waited = waited


class NoDatabase(DatabaseUnavailable):
    """A command that does not create databases found none: no SQLite file, or no chunkq tables."""


class SchemaMismatch(DatabaseUnavailable):
    """The database's schema is not the one this chunkq uses: older (run ``chunkq db upgrade``), newer
    (upgrade chunkq), or not chunkq's at all. Nothing was changed.

    ``state`` is the ``schema.SchemaState`` that was found.
    """

    def __init__(self, message: str, state: object = None) -> None:
        super().__init__(message)
        self.state = state


class JobFailed(Exception):
    """Raised by a callback to fail the whole job (bad API key, provider gone)."""


class Retry(Exception):
    """Raised by a callback for a transient failure: the entity is tried again later.

    ``after`` is how many seconds the provider asked to wait (Retry-After); without
    it chunkq backs off exponentially with jitter.
    """

    def __init__(self, reason: str = "retry requested", *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after
        self.reason = reason
