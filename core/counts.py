"""How many jobs, and how many entities in them, without reading every job.

A job is either live (pending, running, paused: the working set, reached by
status through ``ix_chunkq_jobs_list``) or finished (complete, failed,
cancelled: history, which only grows). Live jobs are summed from their rows;
finished ones are read from ``chunkq_job_counts``, which triggers keep exact in
the transaction that finishes, reopens or deletes a job
(``migrations/versions/0008_job_counts.py``). A count then costs the live jobs
plus a few rows per (status, provider, tenant), never the history: the dashboard
header, ``chunkq jobs``, ``GET /jobs`` and ``/metrics`` poll these.

``recount`` is the same answer summed from every job, for the tests that prove
the maintained one exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from . import schema as s
from .bounds import TENANT
from .sql import status_in
from .status import STATUSES, Status

#: the counted columns, named alike on ``chunkq_jobs`` and ``chunkq_job_counts``
SUMS = ("total_count", "processed_count", "succeeded_count", "failed_count", "waiting_count", "error_count")
#: what every total holds, in this order
FIELDS = ("jobs", *SUMS)
#: the columns a total may be grouped by
KEYS = ("status", "provider", "tenant")

Key = tuple[str, ...]
Totals = dict[Key, list[int]]


def tenant_value(tenant: str | None) -> str | None:
    """The stored tenant of a filter (checked like ``enqueue_job(tenant=...)``); None: every tenant."""
    if tenant is None or tenant == "":
        return tenant
    return TENANT.check(tenant) or ""


def _wanted(statuses: Iterable[str] | None) -> list[Status]:
    return list(STATUSES) if statuses is None else [Status.parse(x) for x in statuses]


def _check_group(group: Sequence[str]) -> None:
    if not set(group) <= set(KEYS):
        raise ValueError(f"group by {group!r}: expected some of {KEYS}")


def _add(out: Totals, rows: Iterable[Any], width: int) -> None:
    for r in rows:
        key = tuple(str(v) for v in r[:width])
        acc = out.setdefault(key, [0] * len(FIELDS))
        for i, v in enumerate(r[width:]):
            acc[i] += int(v or 0)


def totals(conn: Connection, *, group: Sequence[str] = ("status",), statuses: Iterable[str] | None = None,
           tenant: str | None = None) -> Totals:
    """``{key: [jobs, *SUMS]}`` grouped by ``group`` (columns of ``KEYS``) over the jobs of ``statuses``
    (every one by default) and ``tenant`` (None: all); keys with no job are left out.

    Reads the live jobs of those statuses and the maintained rows, never a finished job.
    """
    _check_group(group)
    wanted = _wanted(statuses)
    who = tenant_value(tenant)
    out: Totals = {}
    live = [st for st in wanted if not st.is_finished]
    done = [st.value for st in wanted if st.is_finished]
    if live:
        j = s.jobs.c
        keys = [getattr(j, k) for k in group]
        q = select(*keys, func.count(), *(func.sum(getattr(j, c)) for c in SUMS)).where(status_in(live))
        if who is not None:
            q = q.where(j.tenant == who)
        _add(out, conn.execute(q.group_by(*keys)).all(), len(group))
    if done:
        k = s.job_counts.c
        keys = [getattr(k, name) for name in group]
        q = (select(*keys, *(func.sum(getattr(k, c)) for c in FIELDS)).where(k.status.in_(done))
             .group_by(*keys).having(func.sum(k.jobs) > 0))
        if who is not None:
            q = q.where(k.tenant == who)
        _add(out, conn.execute(q).all(), len(group))
    return {key: v for key, v in out.items() if v[0] > 0}


def count(conn: Connection, *, statuses: Iterable[str] | None = None, tenant: str | None = None) -> int:
    """How many jobs of ``statuses`` (every one by default) and ``tenant`` (None: all) there are."""
    return sum(v[0] for v in totals(conn, group=(), statuses=statuses, tenant=tenant).values())


def by_status(conn: Connection, *, statuses: Iterable[str] | None = None, tenant: str | None = None) -> dict[str, int]:
    """``{status: jobs}`` for ``statuses`` (every one by default; those with none are 0)."""
    found = totals(conn, statuses=statuses, tenant=tenant)
    return {st.value: found.get((st.value,), [0])[0] for st in _wanted(statuses)}


def recount(conn: Connection, *, group: Sequence[str] = ("status",)) -> Totals:
    """``totals`` summed from every job row: O(history), for tests and checks, never a view."""
    _check_group(group)
    j = s.jobs.c
    keys = [getattr(j, k) for k in group]
    q = select(*keys, func.count(), *(func.sum(getattr(j, c)) for c in SUMS)).group_by(*keys)
    out: Totals = {}
    _add(out, conn.execute(q).all(), len(group))
    return out


def maintained(conn: Connection) -> Totals:
    """The finished jobs' rows of ``chunkq_job_counts`` as they are, by (status, provider, tenant)."""
    out: Totals = {}
    k = s.job_counts.c
    rows = conn.execute(select(*(getattr(k, c) for c in KEYS), *(getattr(k, c) for c in FIELDS))).all()
    _add(out, rows, len(KEYS))
    return {key: v for key, v in out.items() if v != [0] * len(FIELDS)}


def finished_recount(conn: Connection) -> Totals:
    """What ``maintained`` must equal: the finished jobs summed from their rows."""
    j = s.jobs.c
    keys = [getattr(j, c) for c in KEYS]
    q = (select(*keys, func.count(), *(func.sum(getattr(j, c)) for c in SUMS))
         .where(j.status.in_([st.value for st in STATUSES if st.is_finished])).group_by(*keys))
    out: Totals = {}
    _add(out, conn.execute(q).all(), len(KEYS))
    return out
