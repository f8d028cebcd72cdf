"""A job's status as one type that knows its meaning and its place in a list.

Every front end shows jobs in the same order (what needs attention first) and
asks the same questions (may a worker still claim from it? is it over?). Before,
the order lived twice, as a SQL ``CASE`` in the queue and a dict in the
dashboard; now both derive from ``Status.rank``.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import InvalidInput


class Status(StrEnum):
    """A job status. A ``str``: ``Status.PENDING == "pending"``, JSON-ready, a dict key like its text."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        """Display order, lowest first: running, pending, paused, failed, complete, cancelled.

        Live work first, then what waits for a person (paused, failed), then history.
        """
        return _RANK[self]

    @property
    def is_active(self) -> bool:
        """A worker may still claim chunks of the job."""
        return self in _ACTIVE

    @property
    def is_finished(self) -> bool:
        """Nothing leaves this status on its own (only a person's retry or requeue)."""
        return self in _FINISHED

    @classmethod
    def parse(cls, value: object, *, field: str = "status") -> Status:
        """``"pending"`` -> ``Status.PENDING``; anything else is an ``InvalidInput`` naming ``field``."""
        try:
            return cls(value)  # type: ignore[arg-type]  # any value may be looked up: a stranger raises ValueError
        except ValueError:
            raise InvalidInput(
                f"unknown status {value!r}; expected one of {', '.join(STATUSES)}", field=field
            ) from None

    @classmethod
    def by_rank(cls) -> tuple[Status, ...]:
        return DISPLAY_ORDER


_RANK = {
    Status.RUNNING: 0,
    Status.PENDING: 1,
    Status.PAUSED: 2,
    Status.FAILED: 3,
    Status.COMPLETE: 4,
    Status.CANCELLED: 5,
}
_ACTIVE = frozenset({Status.PENDING, Status.RUNNING})
_FINISHED = frozenset({Status.COMPLETE, Status.FAILED, Status.CANCELLED})

PENDING = Status.PENDING
RUNNING = Status.RUNNING
PAUSED = Status.PAUSED
COMPLETE = Status.COMPLETE
FAILED = Status.FAILED
CANCELLED = Status.CANCELLED

#: every status, in the order click choices and stats have always listed them
STATUSES: tuple[Status, ...] = tuple(Status)
#: statuses a worker may still claim work from
ACTIVE_STATUSES: tuple[Status, ...] = (PENDING, RUNNING)
#: statuses nothing ever leaves on its own
FINISHED_STATUSES: tuple[Status, ...] = (COMPLETE, FAILED, CANCELLED)
#: statuses of a job not finished yet (pending, running, paused): its work may still run
LIVE_STATUSES: tuple[Status, ...] = tuple(st for st in Status if not st.is_finished)
#: the order jobs are listed in
DISPLAY_ORDER: tuple[Status, ...] = tuple(sorted(Status, key=_RANK.__getitem__))


def rank(status: str) -> int:
    """The display rank of a status given as text (an unknown one sorts last)."""
    try:
        return Status(status).rank
    except ValueError:
        return len(_RANK)
