"""SQL conditions several modules must agree on, written once.

"Claimable", "an expired lease", "the next retry due" and "the jobs a filter
selects" each decide what a worker, the dashboard or a bulk action sees; two
spellings of one of them would be two answers to one question.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Boolean, and_, func, literal_column, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from . import schema as s
from .bounds import TENANT, check_search
from .status import ACTIVE_STATUSES, Status


def status_in(statuses: Iterable[str]) -> Any:
    """``status IN ('pending', 'running')`` with the names written into the SQL.

    They are constants; as bound parameters SQLAlchemy would expand the IN list
    again on every execution of the hot path's prebuilt statements.
    """
    return s.jobs.c.status.in_([literal_column(f"'{Status(st).value}'") for st in statuses])


class likely(FunctionElement[Any]):
    """A condition that holds for most rows: SQLite's ``likely(x)``, plain ``x`` elsewhere.

    Tells SQLite's planner that a term selects little, so it walks an index that is
    already in the wanted order instead of searching another by that term and sorting.
    """

    type = Boolean()
    inherit_cache = True
    _is_implicitly_boolean = True  # a condition as it is, not compared with 1 where booleans are integers


@compiles(likely)
def _likely(element: likely, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(likely, "sqlite")
def _likely_sqlite(element: likely, compiler: Any, **kw: Any) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"


def claimable(now: Any, mine: Any = None, *, team: Any = None, in_order: bool = False) -> Any:
    """A live job with a free worker slot and either a fresh range or a retry that is due.

    ``max_workers`` counts *workers* as an operator sees them, not chunks nor
    processes: a worker holds a small window of chunks (``worker.py``), and a
    supervisor's child processes are one worker (their chunks carry its ``team``,
    revision 0007). A slot is free while fewer *other* workers than ``max_workers``
    hold a leased chunk of the job (``leasing_workers``, counted only when its leased
    chunks reach ``max_workers``: the common case is decided by the job row alone), so
    a worker that already holds the job, or whose team does, may take more of it,
    and a window holding chunks of two ``max_workers=1`` jobs keeps both. ``team``:
    the claiming worker's (its team id, else its owner; None counts every holder).
    ``mine``: a job the claiming worker holds a chunk of, for a decision without the
    count (the same answer, cheaper).

    ``in_order``: the query reads jobs in a claim order (``ix_chunkq_jobs_fair``/``_fifo``,
    partial indexes over live jobs): the status term is marked ``likely`` so that SQLite
    walks that index and stops at the first claimable job instead of sorting every
    live one (4.4 ms a claim at 10,000 live jobs, 0.03 ms at 10).
    """
    j = s.jobs.c
    live = status_in(ACTIVE_STATUSES)
    slot = [j.leased_chunks < j.max_workers, leasing_workers(team) < j.max_workers]
    if mine is not None:
        slot.insert(1, j.id == mine)
    return and_(
        likely(live) if in_order else live,
        or_(*slot),
        or_(j.next_pos < j.total_count, j.next_retry_at <= now),
    )


def holder() -> Any:
    """Who holds a chunk's lease as ``max_workers`` counts it: its team (a supervisor's children, 0007),
    else its owner (a worker on its own, or one of a revision before teams)."""
    c = s.chunks.c
    return func.coalesce(c.team, c.owner)


def leasing_workers(team: Any = None) -> Any:
    """How many distinct workers (``holder``) other than ``team`` hold a leased chunk of the job
    (correlated to the jobs row); ``team`` None: every one."""
    c = s.chunks.c
    # "job_id + 0": read through the lease index (the few leased chunks of all jobs), not the primary
    # key (every chunk the job ever had: the cost of a claim must not grow with the job)
    q = select(func.count(holder().distinct())).where((c.job_id + 0) == s.jobs.c.id, c.state == "leased")
    if team is not None:
        q = q.where(holder() != team)
    return q.scalar_subquery()


def oldest_lease(job_id: int) -> Any:
    """The expiry and owner of the job's *oldest* live lease: what its row's lease columns show.

    Fair scheduling (0.5.0) spreads workers over jobs, so one job often has chunks leased by several
    workers. Written last-writer-wins, a live worker's claims and renewals hid a dead one's silence,
    and the job never read stale (``stale_lease``, ``Job.lease_is_stale``) until its chunk was taken
    over. Read through the lease index (``job_id + 0``, as ``leasing_workers``): the few leased chunks
    of all jobs, not every chunk the job ever had. A lease given back on purpose (expiry 0) is not
    counted. ``Claims`` writes it after each claim, take-over and renewal (``_show_oldest_lease``).
    """
    c = s.chunks.c
    return (select(c.lease_expires_at, c.owner)
            .where((c.job_id + 0) == job_id, c.state == "leased", c.lease_expires_at > 0)
            .order_by(c.lease_expires_at).limit(1))


def oldest_lease_columns(conn: Any, job_id: int, *, owner: str | None, now: float, until: float,
                         lease_seconds: float) -> dict[str, Any]:
    """The job row's lease columns from its oldest live lease (``oldest_lease``), ``owner``'s own lease
    until ``until`` counted in (``owner`` None: a commit that closed its lease, counting none).

    Claims, renewals and commits all write the row through this: a commit that closed the lease the row
    showed must move the row on to the next one, or the job names a worker that finished and moved to
    another job, and reads stale early, from that finished lease's expiry. The renewal time shown is the
    expiry less a lease (when the holder last renewed, as near as the row can tell). No live lease left
    while chunks are still counted (they were given back, expiry 0): expiry 0, free for anyone to take.
    """
    oldest = conn.execute(oldest_lease(job_id)).first()
    if owner is not None and (oldest is None or oldest.lease_expires_at >= until):
        return {"lease_expires_at": until, "heartbeat_at": now, "lease_owner": owner}
    if oldest is None:
        return {"lease_expires_at": 0.0, "lease_owner": None}
    return {"lease_expires_at": oldest.lease_expires_at, "heartbeat_at": oldest.lease_expires_at - lease_seconds,
            "lease_owner": oldest.owner}


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
    if (like := contains_pattern(search)) is not None:
        where.append(or_(*(func.lower(col).like(like, escape="\\") for col in (j.name, j.provider, j.entity_type))))
    return where


def contains_pattern(search: object) -> str | None:
    """The LIKE pattern (escape character ``\\``) of "contains ``search``, any letter case"; None: no search.

    Checked by ``bounds.check_search`` (length, NUL, surrogates); ``%`` and ``_`` are
    matched as themselves, never as wildcards. Compare it with ``lower(column)``.
    """
    text = check_search(search)
    if text is None:
        return None
    return "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def tenant_filter(tenant: str | None) -> list[Any]:
    """The jobs of one tenant (checked like ``enqueue_job(tenant=...)``); None: every job; "": those without."""
    if tenant is None:
        return []
    if tenant == "":
        return [s.jobs.c.tenant == ""]
    return [s.jobs.c.tenant == (TENANT.check(tenant) or "")]


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

    The holder renews every third of its lease (``renewal.py``), writing ``heartbeat_at`` and
    ``lease_expires_at`` together, so the interval is read off the row: silent for more than two
    intervals is stale, long before the whole lease runs out. A release on purpose is not stale.
    """
    j = s.jobs.c
    return and_(
        status_in(ACTIVE_STATUSES), j.leased_chunks > 0, j.released_at.is_(None), j.lease_expires_at.is_not(None),
        or_(j.lease_expires_at < now,
            j.heartbeat_at < now - 2 * (j.lease_expires_at - j.heartbeat_at) / 3),
    )
