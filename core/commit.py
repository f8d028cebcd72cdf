"""The fenced commit: a chunk's results land once, or not at all.

A commit presents the fencing token (the attempt number) its claim got. If
another worker took the chunk over meanwhile, the token no longer matches and
the late results are dropped; otherwise, in one transaction, the chunk row is
closed, errors appended, retries scheduled and the job row "booked": its
counters move and its next status (complete, paused by the circuit breaker or
error budget, failed by ``JobFailed``) is decided by the database, in the same
statement, so two workers finishing chunks of one job at once cannot both
think they finished it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Integer,
    Text,
    and_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from . import error_groups, rows
from . import schema as s
from .backend import Backend
from .fingerprint import Fingerprint, FingerprintCache
from .hot import HotStatement
from .lease import Claim
from .models import ChunkResult
from .outcomes import Outcome, Outcomes
from .sql import next_retry_subquery, oldest_lease_columns, status_in
from .status import COMPLETE, FAILED, PAUSED, PENDING, RUNNING, Status
from .text import storable

log = logging.getLogger("chunkq")


@dataclass(frozen=True)
class CommitStatements:
    """The commit's two hot statements, built once per queue (see ``ClaimStatements``)."""

    fence: HotStatement  # close the chunk row, if the claim's token still holds
    book: HotStatement  # move the job's counters and decide its status

    @classmethod
    def build(cls, breaker_chunks: int) -> CommitStatements:
        c = s.chunks.c
        now = bindparam("p_now", type_=Float)
        fence = (
            update(s.chunks)
            .where(c.job_id == bindparam("p_job", type_=BigInteger),
                   c.chunk_index == bindparam("p_index", type_=Integer),
                   c.attempt == bindparam("p_attempt", type_=Integer), c.state == "leased",
                   # the owner too: a claim undone by a server crash (claims commit asynchronously)
                   # hands its index and attempt out again, maybe for other entities
                   c.owner == bindparam("p_owner", type_=Text))
            .values(state=bindparam("p_state", type_=Text), finished_at=now,
                    duration=bindparam("p_duration", type_=Float), ok=bindparam("p_ok", type_=Integer),
                    errors=bindparam("p_errors", type_=Integer), owner=bindparam("p_owner", type_=Text))
            .returning(c.chunk_index)
        )
        return cls(fence=HotStatement(fence), book=HotStatement(_book_statement(breaker_chunks)))


def _book_statement(breaker_chunks: int) -> Any:
    """The job row's update for a finished chunk: counters, and the status it leads to."""
    j = s.jobs.c
    ok, errors = bindparam("p_ok", type_=Integer), bindparam("p_errors", type_=Integer)
    failed, processed = bindparam("p_failed", type_=Integer), bindparam("p_processed", type_=Integer)
    dwait = bindparam("p_dwait", type_=Integer)
    dead, aborted = bindparam("p_dead", type_=Boolean), bindparam("p_aborted", type_=Boolean)
    retry_chunk = bindparam("p_retry_chunk", type_=Boolean)
    now = bindparam("p_now", type_=Float)
    left = j.leased_chunks - 1
    live = status_in((PENDING, RUNNING, PAUSED))
    active = status_in((PENDING, RUNNING))
    done_all = and_(j.next_pos >= j.total_count, left == 0, j.waiting_count + dwait == 0)
    new_failed = j.failed_count + failed
    new_processed = j.processed_count + processed
    breaker = and_(dead, j.dead_chunks + 1 >= breaker_chunks)
    budget = or_(
        and_(j.max_errors.is_not(None), new_failed > j.max_errors),
        and_(j.max_error_ratio.is_not(None), new_processed >= j.chunk_size,
             new_failed > j.max_error_ratio * new_processed),
    )
    status = case(
        (and_(aborted, live), FAILED.value),
        (and_(live, done_all), COMPLETE.value),
        (and_(active, or_(breaker, budget)), PAUSED.value),
        (and_(j.status == RUNNING.value, left == 0), PENDING.value),
        else_=j.status,
    )
    reason = case(
        (and_(aborted, live), bindparam("p_reason", type_=Text)),
        (and_(live, done_all), j.fail_reason),
        (and_(active, breaker), literal(f"circuit breaker: the last {breaker_chunks} chunks failed for every entity")),
        (and_(active, budget),
         literal("error budget exceeded: ") + cast(new_failed, Text) + literal(" failed entities")),
        else_=j.fail_reason,
    )
    values: dict[str, Any] = {
        "leased_chunks": left,
        "processed_count": new_processed,
        "succeeded_count": j.succeeded_count + ok,
        "failed_count": new_failed,
        "waiting_count": j.waiting_count + dwait,
        "error_count": j.error_count + errors,
        # the circuit breaker counts fresh ranges that failed whole; a retry chunk leaves it be
        "dead_chunks": case((dead, j.dead_chunks + 1), (retry_chunk, j.dead_chunks), else_=0),
        "status": status,
        "fail_reason": reason,
        "finished_at": case((and_(live, or_(aborted, done_all)), now), else_=j.finished_at),
        "lease_owner": case((left == 0, None), else_=j.lease_owner),
        "lease_expires_at": case((left == 0, None), else_=j.lease_expires_at),
        "updated_at": now,
    }
    return (update(s.jobs).where(j.id == bindparam("p_job", type_=BigInteger)).values(**values)
            .returning(j.status, j.leased_chunks, j.lease_owner))


class Committer:
    """Commits one queue's chunks."""

    def __init__(self, backend: Backend, *, owner: str, breaker_chunks: int, now: Callable[[], float],
                 lease_seconds: float = 30.0) -> None:
        self.backend = backend
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.now = now
        self.breaker_chunks = breaker_chunks

    @cached_property
    def statements(self) -> CommitStatements:
        """Built on first use: a ``Queue`` that only reads never pays for them."""
        return CommitStatements.build(self.breaker_chunks)

    async def commit(
        self, claim: Claim, outcomes: Outcomes, duration: float, abort: str | None
    ) -> ChunkResult:
        """Store a chunk's outcomes; ``abort`` is the ``JobFailed`` reason that stopped it, if one did.

        An outcome carrying ``retry_at`` had a retry scheduled by the runner (a
        transient failure with attempts left): it is stored due at exactly that time.
        """
        # normalised before the transaction: no write lock is held while messages are read
        prints = fingerprints(outcomes.failures) if abort is None else []
        result = await self.backend.write(
            lambda conn: self.apply(conn, claim, outcomes, duration, abort, prints=prints),
            f"committing chunk {claim.chunk_index} of job {claim.job.id}", short=True)
        if not result.committed:
            log.warning("chunk %s of job %s was taken over by another worker; results discarded",
                        claim.chunk_index, claim.job.id)
        return result

    def apply(
        self, conn: Connection, claim: Claim, outcomes: Outcomes, duration: float, abort: str | None,
        *, prints: Sequence[Fingerprint] | None = None,
    ) -> ChunkResult:
        """``commit``'s transaction, inside the caller's (a claim settling a poison entity runs it too).

        A chunk run entity by entity to find a poison entity (``Claim.isolated``)
        feeds no circuit breaker: one entity says nothing about the provider.
        """
        job = claim.job
        failures = outcomes.failures
        ok = outcomes.ok
        to_retry = [o for o in failures if o.retry_at is not None]
        final_fail = len(failures) - len(to_retry)
        if abort is not None:
            ok = final_fail = 0
            to_retry = []
            failures = []
        n_items = len(claim.items)
        dwait = len(to_retry) - (n_items if claim.kind == "retry" and abort is None else 0)
        processed = ok + final_fail
        # Only fresh ranges feed the circuit breaker: a retry chunk of one stubborn entity says
        # nothing about the provider as a whole.
        dead = (abort is None and claim.kind == "range" and not claim.isolated and n_items > 0 and ok == 0
                and len(failures) == n_items)
        st = self.statements
        now = self.now()
        j = s.jobs.c
        fenced = st.fence.first(conn, {
            "p_job": job.id, "p_index": claim.chunk_index, "p_attempt": claim.attempt,
            "p_state": "aborted" if abort else "done", "p_now": now, "p_duration": duration,
            "p_ok": ok, "p_errors": len(failures), "p_owner": self.owner,
        })
        if fenced is None:
            # Another worker took this chunk over: its results win, ours are dropped.
            current = conn.execute(select(j.status).where(j.id == job.id)).scalar()
            return ChunkResult(job.id, claim.chunk_index, 0, 0, Status(current or job.status), duration,
                               committed=False)
        fresh: tuple[str, ...] = ()
        if failures:
            if prints is None or len(prints) != len(failures):
                prints = fingerprints(failures)
            logged = [{
                "job_id": job.id, "pos": o.item.pos, "entity_id": o.item.entity_id,
                # storable already (the runner made it so); again here, the one door to the error log
                "error_type": storable(o.error_type), "message": storable(o.message[:rows.MESSAGE_MAX]),
                "traceback": storable(o.traceback[:rows.TRACEBACK_MAX]), "stacks": rows.stacks_json(o.stacks),
                "chunk_index": claim.chunk_index, "attempt": o.item.attempt,
                "final": o.retry_at is None, "created_at": now,
                "fingerprint": fp.key, "normalized": fp.normalized, "location": fp.where,
                "output": o.output,  # what it printed and logged (capture.py): bounded, storable
            } for o, fp in zip(failures, prints, strict=True)]
            # each row's group (its "fingerprint"), decided and counted in this transaction (issue 27)
            fresh = error_groups.record(conn, job.id, logged, prints, now)
            conn.execute(insert(s.errors), logged)
        if claim.kind == "retry" and abort is None:
            r = s.retries.c
            conn.execute(delete(s.retries).where(r.job_id == job.id, r.chunk_index == claim.chunk_index))
            recovered = list(outcomes.succeeded)
            if recovered:
                # The entity got through after all: its earlier transient errors are history,
                # no longer part of "what is broken" (the log keeps them, marked resolved).
                er = s.errors.c
                error_groups.resolve(conn, job.id, er.pos.in_(recovered))
                conn.execute(update(s.errors)
                             .where(er.job_id == job.id, er.pos.in_(recovered), er.resolved_at.is_(None))
                             .values(resolved_at=now))
        if to_retry:
            conn.execute(insert(s.retries), [
                {"job_id": job.id, "pos": o.item.pos, "entity_id": o.item.entity_id,
                 "attempt": o.item.attempt + 1, "due_at": o.retry_at}
                for o in to_retry
            ])
        booked = st.book.first(conn, {
            "p_job": job.id, "p_now": now, "p_ok": ok, "p_errors": len(failures), "p_failed": final_fail,
            "p_processed": processed, "p_dwait": dwait, "p_dead": dead,
            "p_retry_chunk": claim.kind == "retry" or claim.isolated,
            "p_aborted": abort is not None, "p_reason": f"JobFailed: {abort}",
        })
        assert booked is not None, "the job row of a fenced chunk exists (a chunk row references it)"
        new = booked.status
        if booked.leased_chunks > 0 and booked.lease_owner == self.owner:
            # The row showed a lease of ours, maybe the one just closed: show the job's oldest live lease
            # instead (claims and renewals do the same), or a job left to a silent worker names us.
            # One read of the lease index, only while other chunks of the job are out.
            conn.execute(update(s.jobs).where(j.id == job.id).values(**oldest_lease_columns(
                conn, job.id, owner=None, now=now, until=now, lease_seconds=self.lease_seconds)))
        if to_retry or claim.kind == "retry":
            # Its own statement, run once the job row's lock is ours: on PostgreSQL a subquery
            # inside the UPDATE above reads a snapshot from before it waited for that lock, so it
            # missed retries a concurrent chunk of this job had just committed, and set NULL.
            conn.execute(update(s.jobs).where(j.id == job.id).values(next_retry_at=next_retry_subquery(job.id)))
        if failures and new == PAUSED.value:
            # the circuit breaker or error budget paused it: point at the error that tipped it (Job.reason_error_id)
            er = s.errors.c
            tipped = select(func.max(er.id)).where(er.job_id == job.id, er.chunk_index == claim.chunk_index)
            conn.execute(update(s.jobs).where(j.id == job.id, j.reason_error_id.is_(None), j.fail_reason.is_not(None))
                         .values(reason_error_id=tipped.scalar_subquery()))
        culprit = outcomes.culprit if abort is not None else None
        if culprit is not None and new == FAILED.value:
            # JobFailed: the entity that raised it is logged with its traceback, and the job points at it
            fp = fingerprints([culprit])[0]
            row = dict(
                job_id=job.id, pos=culprit.item.pos, entity_id=culprit.item.entity_id,
                error_type=storable(culprit.error_type), message=storable(culprit.message[:rows.MESSAGE_MAX]),
                traceback=storable(culprit.traceback[:rows.TRACEBACK_MAX]), stacks=rows.stacks_json(culprit.stacks),
                chunk_index=claim.chunk_index, attempt=culprit.item.attempt, final=True, created_at=now,
                fingerprint=fp.key, normalized=fp.normalized, location=fp.where, output=culprit.output,
            )
            error_groups.record(conn, job.id, [row], [fp], now)
            err_id = conn.execute(insert(s.errors).values(**row).returning(s.errors.c.id)).scalar_one()
            conn.execute(update(s.jobs).where(j.id == job.id)
                         .values(reason_error_id=err_id, error_count=j.error_count + 1))
        return ChunkResult(job.id, claim.chunk_index, processed, len(failures), Status(new), duration,
                           retried=len(to_retry), new_fingerprints=fresh)


def fingerprints(outcomes: Sequence[Outcome]) -> list[Fingerprint]:
    """The fingerprint of each failed outcome, in order; a chunk's alike failures are normalised once."""
    cache = FingerprintCache()
    return [cache(o.error_type, o.message[:rows.MESSAGE_MAX], o.stacks, entity_id=o.item.entity_id,
                  declared=o.fingerprint) for o in outcomes if not o.ok]
