"""SQL conditions several modules must agree on, written once.

"Claimable", "an expired lease", "the next retry due" and "the jobs a filter
selects" each decide what a worker, the dashboard or a bulk action sees; two
spellings of one of them would be two answers to one question.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select

from . import schema as s
from .errors import InvalidInput
from .limits import text_problem
from .status import ACTIVE_STATUSES, Status


def status_in(statuses: Iterable[str]) -> Any:
    """``status IN ('pending', 'running')`` with the names written into the SQL.

    They are constants; as bound parameters SQLAlchemy would expand the IN list
    again on every execution of the hot path's prebuilt statements.
    """
    return s.jobs.c.status.in_([literal_column(f"'{Status(st).value}'") for st in statuses])


def claimable(now: Any, mine: Any = None) -> Any:
    """A live job with a free worker slot and either a fresh range or a retry that is due.

    ``max_workers`` counts *workers*, not chunks: a worker holds a small window of
    chunks (``worker.py``), so a job whose leased chunks reach ``max_workers`` still
    has a free slot while fewer distinct workers hold them (counted only then: the
    common case is decided by the job row alone). ``mine`` is the job whose chunks
    the claiming worker already holds (one of its slots is already taken).
    """
    j = s.jobs.c
    slot = [j.leased_chunks < j.max_workers, leasing_workers() < j.max_workers]
    if mine is not None:
        slot.insert(1, j.id == mine)
    return and_(
        status_in(ACTIVE_STATUSES),
        or_(*slot),
        or_(j.next_pos < j.total_count, j.next_retry_at <= now),
    )


def leasing_workers() -> Any:
    """How many distinct workers hold a leased chunk of the job (correlated to the jobs row)."""
    c = s.chunks.c
    # "job_id + 0": read through the lease index (the few leased chunks of all jobs), not the primary
    # key (every chunk the job ever had: the cost of a claim must not grow with the job)
    return (select(func.count(c.owner.distinct()))
            .where((c.job_id + 0) == s.jobs.c.id, c.state == "leased")
            .scalar_subquery())


def expired_lease(now: Any) -> Any:
    """A leased chunk of a live job whose worker stopped renewing: free for anyone to take."""
    c, j = s.chunks.c, s.jobs.c
    return and_(c.state == "leased", c.lease_expires_at < now, j.status.in_(ACTIVE_STATUSES))


def next_retry_subquery(job_id: int) -> Any:
    """When the job's earliest retry that no chunk holds yet is due (the job row caches it)."""
    r = s.retries.c
    return select(func.min(r.due_at)).where(r.job_id == job_id, r.chunk_index.is_(None)).scalar_subquery()


def job_filter(status: str | Sequence[str] | None, search: str | None) -> list[Any]:
    """The conditions of a jobs filter: statuses (any of), and text in the name, provider or entity type."""
    j = s.jobs.c
    where: list[Any] = []
    if status:
        wanted = [status] if isinstance(status, str) else list(status)
        where.append(j.status.in_([Status.parse(x).value for x in wanted]))
    if search:
        if (problem := text_problem(search, controls=False)) is not None:
            raise InvalidInput(f"search {problem}", field="search")
        like = f"%{search.strip().lower()}%"
        where.append(or_(func.lower(j.name).like(like), func.lower(j.provider).like(like),
                         func.lower(j.entity_type).like(like)))
    return where


def routed(processor: Any) -> Any:
    """Jobs a worker for ``processor`` may run: those routed to it, and those routed to no one (NULL).

    ``processor`` is a name, a bound parameter, or None (an unnamed processor: only jobs routed to no
    one, since it cannot know it runs the others' callback). Jobs enqueued before routing existed are
    NULL, so every worker keeps running them.
    """
    j = s.jobs.c
    if processor is None:
        return j.processor.is_(None)
    return or_(j.processor.is_(None), j.processor == processor)


def stale_lease(now: Any) -> Any:
    """A live job whose lease holder stopped heartbeating: ``Job.lease_is_stale``'s rule, in SQL.

    The holder renews every third of its lease (``heartbeat.py``), writing ``heartbeat_at`` and
    ``lease_expires_at`` together, so the interval is read off the row: silent for more than two
    intervals is stale, long before the whole lease runs out. A release on purpose is not stale.
    """
    j = s.jobs.c
    return and_(
        status_in(ACTIVE_STATUSES), j.leased_chunks > 0, j.released_at.is_(None), j.lease_expires_at.is_not(None),
        or_(j.lease_expires_at < now,
            j.heartbeat_at < now - 2 * (j.lease_expires_at - j.heartbeat_at) / 3),
    )
