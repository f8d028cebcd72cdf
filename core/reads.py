"""Everything the front ends read: jobs, errors, chunk history, rates and totals.

Each read is one short read transaction; none takes a write lock, so a
dashboard polling twice a second never slows the workers. Lists are ordered and
paged in SQL, so their cost does not grow with the number of jobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from . import counts, error_groups, rows
from . import schema as s
from .backend import Backend
from .bounds import ERRORS_PAGE, JOBS_PAGE, OFFSET, check_id
from .errors import InvalidInput, JobNotFound
from .models import ChunkInfo, ErrorEntry, ErrorGroup, ErrorGroupPage, Job, QueueStats
from .registry import Registry
from .sql import claimable, expired_lease, job_filter, routed, stale_lease, status_in, tenant_filter
from .status import ACTIVE_STATUSES, DISPLAY_ORDER, LIVE_STATUSES, STATUSES, Status

#: a job whose newest chunk finished longer ago than this (or than three of its chunk durations) is idle
IDLE_SECONDS = 15.0

#: list_jobs' order: what needs attention first (``Status.rank``), newest first within a status
_RANK = case({st.value: st.rank for st in Status}, value=s.jobs.c.status)


class Reads:
    def __init__(self, backend: Backend, now: Callable[[], float]) -> None:
        self.backend = backend
        self.now = now

    async def _all(self, q: Any, what: str) -> list[Any]:
        return await self.backend.read(lambda conn: list(conn.execute(q).all()), what)

    async def _first(self, q: Any, what: str) -> Any:
        return await self.backend.read(lambda conn: conn.execute(q).first(), what)

    async def _scalar(self, q: Any, what: str) -> Any:
        return await self.backend.read(lambda conn: conn.execute(q).scalar(), what)

    async def get_job(self, job_id: int) -> Job:
        check_id(job_id)
        row = await self._first(select(s.jobs).where(s.jobs.c.id == job_id), "reading a job")
        if row is None:
            raise JobNotFound(job_id)
        return rows.job(row)

    async def list_jobs(
        self, status: str | Sequence[str] | None = None, *, limit: int = 100, offset: int = 0,
        changed_since: float | None = None, search: str | None = None, tenant: str | None = None,
    ) -> list[Job]:
        JOBS_PAGE.check(limit)
        OFFSET.check(offset)
        j = s.jobs.c
        q = select(s.jobs).where(*job_filter(status, search), *tenant_filter(tenant))
        if changed_since is not None:
            q = q.where(j.updated_at >= float(changed_since)).order_by(j.updated_at, j.id)
        elif search is not None:
            q = q.order_by(_RANK, j.id.desc())  # a text search reads every job anyway
        else:
            return await self._list_by_status(status, limit, offset, tenant)
        return [rows.job(r) for r in await self._all(q.limit(limit).offset(offset), "listing jobs")]

    async def _list_by_status(
        self, status: str | Sequence[str] | None, limit: int, offset: int, tenant: str | None,
    ) -> list[Job]:
        """``list_jobs``' order without sorting every job: each status in rank order, newest first, read
        through ``ix_chunkq_jobs_list`` (``_tenant_list``) with a LIMIT; the maintained counts
        (``counts.py``) say which statuses the page starts in, so earlier ones are skipped, not read."""
        wanted = None if not status else [status] if isinstance(status, str) else list(status)
        j = s.jobs.c

        def read(conn: Connection) -> list[Any]:
            sizes = counts.by_status(conn, statuses=wanted, tenant=tenant)
            found: list[Any] = []
            skip = offset
            for st in DISPLAY_ORDER:
                n = sizes.get(st.value, 0)
                if skip >= n:
                    skip -= n
                    continue
                q = (select(s.jobs).where(j.status == st.value, *tenant_filter(tenant))
                     .order_by(j.id.desc()).limit(limit - len(found)).offset(skip))
                found += conn.execute(q).all()
                skip = 0
                if len(found) >= limit:
                    break
            return found

        return [rows.job(r) for r in await self.backend.read(read, "listing jobs")]

    async def count_jobs(
        self, status: str | Sequence[str] | None = None, *, search: str | None = None, tenant: str | None = None,
    ) -> int:
        """How many jobs a filter selects: from the maintained counts (``counts.py``) unless ``search`` is
        given (a text search reads every job)."""
        where = [*job_filter(status, search), *tenant_filter(tenant)]  # bad input is refused here
        if search is None:
            wanted = None if not status else [status] if isinstance(status, str) else list(status)
            return await self.backend.read(lambda conn: counts.count(conn, statuses=wanted, tenant=tenant),
                                           "counting jobs")
        q = select(func.count()).select_from(s.jobs).where(*where)
        return int(await self._scalar(q, "counting jobs"))

    async def list_tenants(self) -> list[tuple[str | None, float]]:
        """Every tenant ever enqueued and its weight, by name (None: the jobs without a tenant)."""
        t = s.tenants.c
        found = await self._all(select(t.name, t.weight).order_by(t.name), "listing tenants")
        return [(rows.readable(r.name) or None, float(r.weight)) for r in found]

    async def pending_retry_job(self, job_id: int) -> Job | None:
        """The newest unfinished job made by retrying ``job_id`` (``parent_id``), or None.

        A second retry of the same failures would process (and bill) them twice;
        front ends ask this before making one.
        """
        check_id(job_id)
        j = s.jobs.c
        q = (select(s.jobs).where(j.parent_id == job_id, status_in([st.value for st in LIVE_STATUSES]))
             .order_by(j.id.desc()).limit(1))
        row = await self._first(q, "looking for a retry job")
        return None if row is None else rows.job(row)

    async def list_errors(
        self, job_id: int, *, limit: int = 100, offset: int = 0, error_type: str | None = None,
        message: str | None = None, include_resolved: bool = True, fingerprint: str | None = None,
        search: str | None = None, after_id: int | None = None,
    ) -> list[ErrorEntry]:
        """A page of a job's error log, oldest first: one group's (``fingerprint``, a legacy key too),
        and only rows whose entity ID or message contains ``search`` (see ``error_groups.py``).

        ``after_id``: only errors after that one. A walk through a whole log (an export of one group)
        pages by it, each page as cheap as the first; an OFFSET reads every row it skips, so such a
        walk cost the square of the log's length."""
        check_id(job_id)
        ERRORS_PAGE.check(limit)
        OFFSET.check(offset)
        if after_id is not None:
            check_id(after_id, "error id")
        er = s.errors.c
        # not the captured output (up to 64 KB a row): ``get_error`` reads it for the one error shown
        q = select(*(c for c in s.errors.c if c.name != "output")).where(er.job_id == job_id)
        if error_type is not None:
            q = q.where(er.error_type == error_type)
        if message is not None:
            q = q.where(er.message == message)
        if not include_resolved:
            q = q.where(er.resolved_at.is_(None))
        if (searched := error_groups.search_condition(search)) is not None:
            q = q.where(searched)
        if fingerprint is not None:
            error_groups.check_key(fingerprint)
        if after_id is not None:
            q = q.where(er.id > after_id)
        q = q.order_by(er.id).limit(limit).offset(offset)

        def read(conn: Connection) -> list[Any]:
            query = q if fingerprint is None else q.where(error_groups.group_condition(conn, job_id, fingerprint))
            found = list(conn.execute(query).all())
            if not found and not conn.execute(select(s.jobs.c.id).where(s.jobs.c.id == job_id)).scalar():
                raise JobNotFound(job_id)
            if not found and fingerprint is not None and not error_groups.is_group(conn, job_id, fingerprint):
                # a typo, or another job's key: said, not shown as a group with no errors
                raise InvalidInput(f"job {job_id} has no error group {fingerprint}", field="group")
            return found

        return [rows.error(r) for r in await self.backend.read(read, "listing errors")]

    async def iter_errors(self, job_id: int, *, fingerprint: str | None = None, search: str | None = None,
                          page: int = 1000) -> AsyncIterator[ErrorEntry]:
        """Every error of a job (of one group, matching ``search``), for exports that must not hold them all.

        Pages of ``list_errors`` walked by error id (``after_id``), each as cheap as the first: the one walk
        every export goes through. Its rows leave out the captured output, as pages do; no export writes it.
        """
        after: int | None = None
        while True:
            found = await self.list_errors(job_id, limit=page, after_id=after, fingerprint=fingerprint,
                                           search=search)
            for error in found:
                yield error
            if len(found) < page:
                return
            after = found[-1].id

    async def get_error(self, error_id: int) -> ErrorEntry:
        check_id(error_id, "error id")
        row = await self._first(select(s.errors).where(s.errors.c.id == error_id), "reading an error")
        if row is None:
            raise InvalidInput(f"no error with id {error_id}", field="error_id")
        return rows.error(row)

    async def error_pos(self, error_id: int) -> int:
        """The position in its job of the entity an error is about."""
        return int(await self._scalar(select(s.errors.c.pos).where(s.errors.c.id == error_id), "reading an error"))

    async def group_errors(
        self, job_id: int, *, limit: int = 100, include_resolved: bool = False, search: str | None = None,
    ) -> list[ErrorGroup]:
        """Failures grouped by fingerprint (the same bug), biggest group first (``error_groups.py``)."""
        page = await self.group_page(job_id, limit=limit, include_resolved=include_resolved, search=search)
        return list(page.groups)

    async def group_page(
        self, job_id: int, *, limit: int = 100, offset: int = 0, include_resolved: bool = False,
        search: str | None = None,
    ) -> ErrorGroupPage:
        """A page of the job's error groups, biggest first, with how many there are (``error_groups.py``)."""
        check_id(job_id)
        ERRORS_PAGE.check(limit)
        OFFSET.check(offset)
        error_groups.search_condition(search)  # bad input is refused before any read

        def read(conn: Connection) -> ErrorGroupPage:
            total, found = error_groups.read_page(conn, job_id, limit=limit, offset=offset,
                                                  include_resolved=include_resolved, search=search)
            if not total and not conn.execute(select(s.jobs.c.id).where(s.jobs.c.id == job_id)).scalar():
                raise JobNotFound(job_id)  # an unknown job is an error, not an empty list
            return ErrorGroupPage(total, tuple(found), limit, offset)

        return await self.backend.read(read, "grouping errors")

    async def group_entities(
        self, job_id: int, fingerprint: str, *, limit: int = 1000, offset: int = 0, include_resolved: bool = False,
    ) -> list[str]:
        """The distinct entity IDs of one error group, failed for good first, then in job order."""
        check_id(job_id)
        error_groups.check_key(fingerprint)

        def read(conn: Connection) -> list[str]:
            found = error_groups.read_group_entities(conn, job_id, fingerprint, limit=limit, offset=offset,
                                                     include_resolved=include_resolved)
            if not found and not conn.execute(select(s.jobs.c.id).where(s.jobs.c.id == job_id)).scalar():
                raise JobNotFound(job_id)
            return found

        return await self.backend.read(read, "reading a group's entities")

    async def list_chunks(self, job_id: int, *, limit: int = 200) -> list[ChunkInfo]:
        """The job's chunk history, newest last (the latest ``limit`` chunks)."""
        check_id(job_id)
        c = s.chunks.c
        q = select(s.chunks).where(c.job_id == job_id).order_by(c.chunk_index.desc()).limit(limit)
        found = await self._all(q, "listing chunks")
        if not found:
            await self.get_job(job_id)  # an unknown job is an error, not an empty list
        return [rows.chunk(r) for r in reversed(found)]

    async def entity_ids(self, job_id: int, *, limit: int = 1000, offset: int = 0) -> list[str]:
        e = s.entities.c
        q = select(e.entity_id).where(e.job_id == job_id, e.pos >= offset, e.pos < offset + limit).order_by(e.pos)
        return await self.backend.read(lambda conn: list(conn.execute(q).scalars().all()), "reading entity ids")

    async def rate(self, job_id: int, *, window: float = 60.0) -> float:
        """Entities per second over the job's recent chunks (0 when idle)."""
        return (await self.job_rates([job_id], window=window)).get(job_id, 0.0)

    async def job_rates(self, job_ids: Sequence[int], *, window: float = 60.0) -> dict[int, float]:
        """Entities/s per job from recent activity only, in one query; a job that is idle is left out.

        The rate is what the chunks finished in the last ``window`` seconds did, spread over the
        time from their start *up to now*, so it falls as soon as a job stops finishing chunks.
        A job is idle (absent: front ends say "idle", and show no ETA) once its newest chunk
        finished more than ``IDLE_SECONDS`` ago, or three of its usual chunk durations when
        chunks are slower than that.
        """
        if not job_ids:
            return {}
        c = s.chunks.c
        now = self.now()
        q = (
            select(c.job_id, func.sum(c.size), func.min(c.started_at), func.max(c.finished_at), func.avg(c.duration))
            .where(c.job_id.in_(list(job_ids)), c.state == "done", c.finished_at >= now - window)
            .group_by(c.job_id)
        )
        found = await self._all(q, "computing rates")
        out: dict[int, float] = {}
        for job_id, n, first, last, avg in found:
            if not n or first is None or last is None:
                continue
            if now - last > max(IDLE_SECONDS, 3 * float(avg or 0.0)):
                continue
            out[job_id] = float(n) / max(now - max(first, now - window), 1e-3)
        return out

    async def stats(self, *, window: float = 60.0) -> QueueStats:
        def read(conn: Connection) -> QueueStats:
            c = s.chunks.c
            now = self.now()
            # history from the maintained counts, live jobs from their rows (counts.py): not every job
            found = counts.totals(conn)
            by_status = {k.value: found.get((k.value,), [0])[0] for k in STATUSES}
            sums = {f: sum(v[i] for v in found.values()) for i, f in enumerate(counts.FIELDS)}
            tot = (sums["total_count"], sums["processed_count"], sums["error_count"], sums["waiting_count"],
                   sums["failed_count"])
            recent = conn.execute(
                select(func.coalesce(func.sum(c.size), 0), func.min(c.started_at), func.max(c.finished_at),
                       func.avg(c.duration))
                .where(c.state == "done", c.finished_at >= now - window)
            ).one()
            rate = float(recent[0]) / max(now - recent[1], 1e-3) if recent[1] is not None and recent[0] else 0.0
            if recent[2] is not None and now - recent[2] > max(IDLE_SECONDS, 3 * float(recent[3] or 0.0)):
                rate = 0.0  # idle by the same rule as each job's row, so the header agrees with the rows
            workers = conn.execute(
                select(func.count(c.owner.distinct())).where(c.state == "leased", c.lease_expires_at >= now)
            ).scalar()
            stale = conn.execute(select(func.count()).select_from(s.jobs).where(stale_lease(now))).scalar()
            return QueueStats(by_status, int(tot[0]), int(tot[1]), int(tot[2]), int(tot[3]), rate, int(workers or 0),
                              failed_entities=int(tot[4]), stale_jobs=int(stale or 0),
                              workers_alive=Registry.count_alive(conn, now))

        return await self.backend.read(read, "reading stats")

    async def has_claimable(
        self, mine: int | None = None, *, team: str | None = None, route: str | None = None
    ) -> bool:
        """Cheap check used by idle workers before they take the write lock (jobs this task's
        processor, ``route``, may run only: ``sql.routed``; ``mine``, ``team``: see ``sql.claimable``)."""
        now = self.now()
        j, c = s.jobs.c, s.chunks.c
        only = routed(route)
        fresh = select(j.id).where(claimable(now, mine, team=team), only).limit(1)
        expired = (select(c.job_id).select_from(s.chunks.join(s.jobs, j.id == c.job_id))
                   .where(expired_lease(now), only).limit(1))
        return bool(await self.backend.read(
            lambda conn: conn.execute(fresh).first() is not None or conn.execute(expired).first() is not None,
            "polling for work"))

    async def next_retry_due(self, job_id: int | None = None) -> float | None:
        """When the earliest entity retry of an active job falls due (epoch seconds, the queue's clock).

        None when no active job (or not ``job_id``) has an entity waiting. One
        aggregate over the job rows, which keep their own earliest due time.
        """
        j = s.jobs.c
        q = select(func.min(j.next_retry_at)).where(
            status_in(ACTIVE_STATUSES), j.waiting_count > 0, j.next_retry_at.is_not(None))
        if job_id is not None:
            q = q.where(j.id == check_id(job_id))
        due = await self._scalar(q, "looking for due retries")
        return None if due is None else float(due)
