"""What a person does to jobs: pause, resume, cancel (one job or every job a filter matches),
and redo failures (as a new job, in place, one entity now, or a dry run that writes nothing).

A status change is one conditional ``UPDATE``: it applies only from the statuses
it allows, so it never races a worker's commit into a state nobody asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, insert, literal, select, union, update
from sqlalchemy.engine import Connection

from . import error_groups, rows
from . import schema as s
from .backend import Backend
from .bounds import TENANT, TENANT_WEIGHT, check_id
from .enqueue import join_tenant, new_job_row
from .errors import InvalidInput, InvalidTransition, JobNotFound, RetryJobWaiting
from .fingerprint import fingerprint as fingerprint_of
from .models import BulkResult, EntityResult, Job
from .outcomes import Item, Outcomes
from .processor import EntityHook, Processor
from .reads import Reads
from .runner import ChunkAborted, ChunkRunner
from .sql import job_filter, next_retry_subquery
from .status import CANCELLED, COMPLETE, FAILED, LIVE_STATUSES, PAUSED, PENDING, RUNNING, Status

NO_FAILURES = "no failed entities"
#: ``Queue.bulk``'s reason for a job whose failures a waiting retry job still holds
RETRY_WAITING = "with a retry job waiting"


@dataclass(frozen=True)
class Transition:
    """A status change: the statuses it applies from, and what it sets."""

    verb: str
    allowed: tuple[Status, ...]
    values: Callable[[float], dict[str, Any]]


_j = s.jobs.c
TRANSITIONS = {
    "pause": Transition("pause", (PENDING, RUNNING), lambda now: {"status": PAUSED, "fail_reason": None,
                                                                    "reason_error_id": None}),
    "resume": Transition("resume", (PAUSED,), lambda now: {
        "status": case((_j.leased_chunks > 0, RUNNING), else_=PENDING), "dead_chunks": 0, "fail_reason": None,
        "reason_error_id": None}),
    "cancel": Transition("cancel", (PENDING, RUNNING, PAUSED), lambda now: {"status": CANCELLED, "finished_at": now}),
}
#: what ``Queue.bulk`` can do: the status changes, plus a redo of each job's failures
BULK_ACTIONS = (*TRANSITIONS, "retry", "requeue")


class Control:
    def __init__(self, backend: Backend, reads: Reads, now: Callable[[], float]) -> None:
        self.backend = backend
        self.reads = reads
        self.now = now

    async def transition(self, job_id: int, verb: str) -> Job:
        t = TRANSITIONS[verb]
        check_id(job_id)

        def tx(conn: Connection) -> bool:
            now = self.now()
            got = conn.execute(
                update(s.jobs).where(_j.id == job_id, _j.status.in_(t.allowed))
                .values(updated_at=now, **t.values(now)).returning(_j.id)
            ).first()
            return got is not None

        if not await self.backend.write(tx, f"{verb} job {job_id}"):
            job = await self.reads.get_job(job_id)  # raises JobNotFound
            raise InvalidTransition(f"cannot {verb} job {job_id}: it is {job.status}")
        return await self.reads.get_job(job_id)

    async def set_tenant_weight(self, tenant: str | None, weight: float) -> None:
        name = TENANT.check(tenant) or ""
        share = TENANT_WEIGHT.check(weight)

        def tx(conn: Connection) -> None:
            join_tenant(self.backend, conn, name)  # its row, if it had none
            conn.execute(update(s.tenants).where(s.tenants.c.name == name).values(weight=share))

        await self.backend.write(tx, f"setting the weight of tenant {name!r}")

    async def bulk(self, action: str, status: str | Sequence[str] | None, search: str | None) -> BulkResult:
        """``action`` on every job the filter matches.

        A status change is one transaction: the matched jobs are counted by status
        and the allowed ones changed in one ``UPDATE``. A retry or requeue redoes
        each job's failures in its own transaction (each is a job's worth of rows).
        """
        where = job_filter(status, search)
        if action in TRANSITIONS:
            t = TRANSITIONS[action]

            def tx(conn: Connection) -> BulkResult:
                by_status: dict[str, int] = dict(
                    conn.execute(select(_j.status, func.count()).where(*where).group_by(_j.status)).all())
                now = self.now()
                changed = conn.execute(
                    update(s.jobs).where(*where, _j.status.in_(t.allowed))
                    .values(updated_at=now, **t.values(now)).returning(_j.id)
                ).scalars().all()
                skipped = {st: int(n) for st, n in sorted(by_status.items()) if st not in t.allowed}
                return BulkResult(action, sum(by_status.values()), len(changed), skipped, tuple(sorted(changed)))

            return await self.backend.write(tx, f"{action} of every matching job")
        if action not in ("retry", "requeue"):
            raise InvalidInput(f"unknown action {action!r}; expected one of {', '.join(BULK_ACTIONS)}",
                               field="action")
        matched = await self.backend.read(
            lambda conn: list(conn.execute(select(_j.id).where(*where).order_by(_j.id)).scalars()),
            "listing matching jobs")
        done: list[int] = []
        skipped: dict[str, int] = {}
        for job_id in matched:
            try:
                done.append((await self.retry_failed(job_id)).id if action == "retry" else
                            (await self.requeue_failed(job_id)).id)
            except InvalidInput:  # the job has nothing to redo
                skipped[NO_FAILURES] = skipped.get(NO_FAILURES, 0) + 1
            except RetryJobWaiting:  # a retry job of its failures still waits: not a second time
                skipped[RETRY_WAITING] = skipped.get(RETRY_WAITING, 0) + 1
            except InvalidTransition:  # requeue: the job was cancelled
                skipped[CANCELLED] = skipped.get(CANCELLED, 0) + 1
        return BulkResult(action, len(matched), len(done), skipped, tuple(done))

    async def retry_failed(self, job_id: int, *, fingerprint: str | None = None) -> Job:
        """A new job (``parent_id`` = this one) of every entity that did not succeed.

        That is the entities that failed for good and, for a failed or cancelled
        job, those never finished. Only first-time errors are counted once.
        With ``fingerprint`` (a group's key): only the entities failed for good
        with an error of that group.

        Raises ``RetryJobWaiting`` (nothing written) when a retry job of this job
        (or of one of its retry jobs) that still waits holds any of those
        entities: they would be processed, and billed, twice (``_check_no_retry_waiting``).
        """
        job = await self.reads.get_job(job_id)
        if fingerprint is not None:
            error_groups.check_key(fingerprint)
        e, er, c, r = s.entities.c, s.errors.c, s.chunks.c, s.retries.c

        def tx(conn: Connection) -> int:
            family = _lock_family(self.backend, conn, job_id)
            failed = select(er.pos, er.entity_id).where(er.job_id == job_id, er.final.is_(True),
                                                        er.resolved_at.is_(None))
            if fingerprint is not None:
                failed = failed.where(error_groups.group_condition(conn, job_id, fingerprint))
            parts: list[Any] = [failed]
            if family.status in (FAILED, CANCELLED) and fingerprint is None:
                next_pos = conn.execute(select(_j.next_pos).where(_j.id == job_id)).scalar()
                parts.append(select(e.pos, e.entity_id).where(e.job_id == job_id, e.pos >= next_pos))
                parts.append(
                    select(e.pos, e.entity_id)
                    .select_from(s.entities.join(
                        s.chunks, and_(c.job_id == e.job_id, e.pos >= c.start_pos, e.pos < c.end_pos)))
                    .where(e.job_id == job_id, c.kind == "range", c.state.in_(("leased", "aborted")))
                )
                parts.append(select(r.pos, r.entity_id).where(r.job_id == job_id))
            src = union(*parts).subquery() if len(parts) > 1 else parts[0].distinct().subquery()
            _check_no_retry_waiting(conn, family, select(src.c.entity_id))
            new_id = conn.execute(insert(s.jobs).values(**new_job_row(
                self.now(), name=f"retry of {job.name or '#' + str(job.id)}"[:200], entity_type=job.entity_type,
                provider=job.provider, chunk_size=job.chunk_size, priority=job.priority,
                max_workers=job.max_workers, max_attempts=job.max_attempts, max_errors=job.max_errors,
                max_error_ratio=job.max_error_ratio, parent_id=job.id, params=job.params,
                processor=job.processor, tenant=job.tenant or "",
            )).returning(_j.id)).scalar_one()
            conn.execute(insert(s.entities).from_select(
                ["job_id", "pos", "entity_id"],
                select(literal(new_id), func.row_number().over(order_by=src.c.pos) - 1, src.c.entity_id),
            ))
            total = conn.execute(select(func.count()).where(e.job_id == new_id)).scalar()
            if not total:
                raise InvalidInput(f"job {job_id} has {NO_FAILURES} to retry" if fingerprint is None else
                                   f"job {job_id} has {NO_FAILURES} in group {fingerprint} to retry")
            conn.execute(update(s.jobs).where(_j.id == new_id).values(total_count=total))
            return int(new_id)

        return await self.reads.get_job(await self.backend.write(tx, f"retrying job {job_id}"))

    async def requeue_failed(self, job_id: int, *, fingerprint: str | None = None) -> Job:
        """Put a job's failed entities back into the same job, due now, with fresh attempts.

        With ``fingerprint`` (a group's key): only the entities failed for good
        with an error of that group (all of such an entity's final errors stop
        being final, whatever their group: the entity is no longer failed).

        Raises ``RetryJobWaiting`` (nothing written) when a retry job that still
        waits holds any of those entities, as ``retry_failed`` does.
        """
        job = await self.reads.get_job(job_id)
        if fingerprint is not None:
            error_groups.check_key(fingerprint)
        if job.status == CANCELLED:
            raise InvalidTransition(f"cannot requeue failures of job {job_id}: it is cancelled")

        def tx(conn: Connection) -> int:
            family = _lock_family(self.backend, conn, job_id)
            now = self.now()
            er = s.errors.c
            dead = and_(er.job_id == job_id, er.final.is_(True), er.resolved_at.is_(None))
            chosen = dead
            if fingerprint is not None:
                chosen = and_(dead, er.pos.in_(error_groups.final_positions(conn, job_id, fingerprint)
                                               .scalar_subquery()))
            failed = conn.execute(
                select(er.pos, func.min(er.entity_id).label("entity_id")).where(chosen).group_by(er.pos)
            ).all()
            if not failed:
                raise InvalidInput(f"job {job_id} has {NO_FAILURES} to retry" if fingerprint is None else
                                   f"job {job_id} has {NO_FAILURES} in group {fingerprint} to retry")
            _check_no_retry_waiting(conn, family, select(er.entity_id).where(chosen))
            conn.execute(insert(s.retries), [
                {"job_id": job_id, "pos": p.pos, "entity_id": p.entity_id, "attempt": 1, "due_at": now}
                for p in failed
            ])
            conn.execute(update(s.errors).where(chosen).values(final=False))
            n = len(failed)
            conn.execute(update(s.jobs).where(_j.id == job_id).values(
                failed_count=_j.failed_count - n, processed_count=_j.processed_count - n,
                waiting_count=_j.waiting_count + n, next_retry_at=now, dead_chunks=0,
                status=case((_j.status.in_((COMPLETE, FAILED)), PENDING), else_=_j.status),
                fail_reason=case((_j.status == FAILED, None), else_=_j.fail_reason),
                finished_at=None, updated_at=now,
            ))
            return n

        await self.backend.write(tx, f"requeueing failures of job {job_id}")
        return await self.reads.get_job(job_id)

    async def retry_entity(self, error_id: int, processor: Processor, on_entity: EntityHook | None) -> EntityResult:
        """Run the callback on one failed entity now; on success its errors are marked resolved."""
        err = await self.reads.get_error(error_id)
        job = await self.reads.get_job(err.job_id)
        item = Item(await self.reads.error_pos(error_id), err.entity_id, err.attempt + 1)
        try:
            outcomes, (result,) = await _run_reported(processor, job, [item], on_entity)
        except ChunkAborted as exc:
            raise InvalidTransition(f"the callback raised JobFailed: {exc.reason}") from None
        outcome = outcomes.failures[0] if outcomes.failures else None

        def tx(conn: Connection) -> None:
            now = self.now()
            er, r = s.errors.c, s.retries.c
            if outcome is not None:
                fp = fingerprint_of(outcome.error_type, outcome.message[:rows.MESSAGE_MAX], outcome.stacks,
                                    entity_id=item.entity_id, declared=outcome.fingerprint)
                logged = {
                    "job_id": job.id, "pos": item.pos, "entity_id": item.entity_id, "error_type": outcome.error_type,
                    "message": outcome.message[:rows.MESSAGE_MAX], "traceback": outcome.traceback[:rows.TRACEBACK_MAX],
                    "stacks": rows.stacks_json(outcome.stacks), "chunk_index": -1, "attempt": item.attempt,
                    "final": err.final, "created_at": now, "fingerprint": fp.key, "normalized": fp.normalized,
                    "location": fp.where, "output": outcome.output,
                }
                error_groups.record(conn, job.id, [logged], [fp], now)  # its group and the group's counts
                conn.execute(insert(s.errors).values(**logged))
                conn.execute(update(s.jobs).where(_j.id == job.id)
                             .values(error_count=_j.error_count + 1, updated_at=now))
                return
            error_groups.resolve(conn, job.id, er.pos == item.pos)
            finals = conn.execute(
                update(s.errors).where(er.job_id == job.id, er.pos == item.pos, er.resolved_at.is_(None))
                .values(resolved_at=now).returning(er.final)
            ).scalars().all()
            waiting = conn.execute(
                delete(s.retries).where(r.job_id == job.id, r.pos == item.pos, r.chunk_index.is_(None))
                .returning(r.pos)
            ).first()
            values: dict[str, Any] = {"updated_at": now}
            if any(finals):
                values.update(failed_count=_j.failed_count - 1, succeeded_count=_j.succeeded_count + 1)
            elif waiting is not None:
                values.update(waiting_count=_j.waiting_count - 1, processed_count=_j.processed_count + 1,
                              succeeded_count=_j.succeeded_count + 1)
            conn.execute(update(s.jobs).where(_j.id == job.id).values(**values))
            if waiting is not None:
                # Once the job row is locked (see commit.py: a subquery in the UPDATE above could
                # read a snapshot from before the lock wait on PostgreSQL).
                conn.execute(update(s.jobs).where(_j.id == job.id).values(next_retry_at=next_retry_subquery(job.id)))

        await self.backend.write(tx, "recording a retry")
        return result

    async def dry_run(self, job_id: int, processor: Processor, on_entity: EntityHook | None) -> list[EntityResult]:
        """Run the job's next chunk through the callback and write nothing at all.

        For callbacks that are safe to repeat: the job does not advance and no error is stored.
        """
        job = await self.reads.get_job(job_id)
        r = s.retries.c

        def read(conn: Connection) -> list[Item]:
            row = conn.execute(select(_j.next_pos, _j.total_count).where(_j.id == job_id)).one()
            due = conn.execute(
                select(r.pos, r.entity_id, r.attempt)
                .where(r.job_id == job_id, r.chunk_index.is_(None), r.due_at <= self.now())
                .order_by(r.due_at, r.pos).limit(job.chunk_size)
            ).all()
            if due:
                return [Item(p.pos, p.entity_id, p.attempt) for p in due]
            e = s.entities.c
            end = min(row.next_pos + job.chunk_size, row.total_count)
            found = conn.execute(select(e.pos, e.entity_id)
                                 .where(e.job_id == job_id, e.pos >= row.next_pos, e.pos < end).order_by(e.pos)).all()
            return [Item(p, eid, 1) for p, eid in found]

        items = await self.backend.read(read, "reading the next chunk")
        if not items:
            raise InvalidTransition(f"job {job_id} has no chunk left to run")
        try:
            _outcomes, reported = await _run_reported(processor, job, items, on_entity)
        except ChunkAborted as exc:
            reported = exc.reported
        return reported


async def _run_reported(
    processor: Processor, job: Job, items: Sequence[Item], on_entity: EntityHook | None
) -> tuple[Outcomes, list[EntityResult]]:
    """Run ``items`` and keep every entity's report, successes included (the runner keeps only
    failures: ``outcomes.py``). ``ChunkAborted`` carries the reports so far as ``reported``."""
    reported: list[EntityResult] = []

    def hook(result: EntityResult) -> None:
        reported.append(result)
        if on_entity is not None:
            on_entity(result)

    try:
        outcomes = await ChunkRunner(processor, job, on_entity=hook).run(items)
    except ChunkAborted as exc:
        exc.reported = reported
        raise
    return outcomes, reported


#: the statuses of a retry job that still waits to process its entities
_WAITING = tuple(st.value for st in LIVE_STATUSES)


@dataclass(frozen=True)
class _Family:
    """A job, locked, and the retry jobs it descends from (``parent_id``, nearest first)."""

    job_id: int
    status: str
    ancestors: tuple[int, ...]

    @property
    def root(self) -> int:
        return self.ancestors[-1] if self.ancestors else self.job_id


def _lock_family(backend: Backend, conn: Connection, job_id: int) -> _Family:
    """Lock the row of ``job_id``'s first ancestor (the job it was retried from, and so on up), then its own.

    Every redo of a job's failures takes them first, so two at once in one family of
    retry jobs (two ``chunkq retry 1``, or ``retry 1`` and ``retry 2`` where job 2 retries
    job 1) run one after the other and the second sees what the first made. On
    PostgreSQL ``FOR UPDATE`` (the root first, always: no deadlock); SQLite's write
    transaction already holds the file's one write lock. ``JobNotFound`` if the job is gone.
    """
    ancestors: list[int] = []
    parent = conn.execute(select(_j.parent_id).where(_j.id == job_id)).scalar()
    while parent is not None and parent not in ancestors and len(ancestors) < 1000:
        ancestors.append(int(parent))
        parent = conn.execute(select(_j.parent_id).where(_j.id == parent)).scalar()

    def lock(row_id: int) -> Any:
        return conn.execute(backend.lock_rows(select(_j.status).where(_j.id == row_id), skip_locked=False)).scalar()

    if ancestors:
        lock(ancestors[-1])
    status = lock(job_id)
    if status is None:
        raise JobNotFound(job_id)
    return _Family(job_id, str(status), tuple(ancestors))


def _check_no_retry_waiting(conn: Connection, family: _Family, entity_ids: Any) -> None:
    """Raise ``RetryJobWaiting`` when a retry job that still waits holds any of ``entity_ids``.

    The one rule every front end gets (the CLI's ``retry``, the dashboard, ``Queue.bulk``):
    a failed entity is redone by one job at a time. "Still waits": pending, running or
    paused; a retry job that completed, failed or was cancelled does not, so a person may
    retry again once the first retry is over. "A retry job": any job retried, down the
    ``parent_id`` chain, from the same first job as ``family.job_id`` (its own retry jobs,
    their retry jobs, and its siblings': a retry of a cancelled retry job is refused
    while the other retry of the same failures runs), but not the job itself nor the jobs
    it descends from. Only a job holding one of the entities counts: the retry jobs of two
    error groups (two bugs) may wait side by side.
    """
    first = select(_j.id).where(_j.parent_id == family.root).cte("retry_tree", recursive=True)
    child = s.jobs.alias("retry_child")
    tree = first.union_all(select(child.c.id).where(child.c.parent_id == first.c.id))
    e = s.entities.c
    found = conn.execute(
        select(_j.id, _j.status)
        .where(_j.id.in_(select(tree.c.id)), _j.id.not_in((family.job_id, *family.ancestors)),
               _j.status.in_(_WAITING), exists().where(e.job_id == _j.id, e.entity_id.in_(entity_ids)))
        .order_by(_j.id).limit(1)
    ).first()
    if found is not None:
        raise RetryJobWaiting(family.job_id, int(found.id), str(found.status))
