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


def claimable(now: Any) -> Any:
    """A live job with a free worker slot and either a fresh range or a retry that is due."""
    j = s.jobs.c
    return and_(
        status_in(ACTIVE_STATUSES),
        j.leased_chunks < j.max_workers,
        or_(j.next_pos < j.total_count, j.next_retry_at <= now),
    )


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
