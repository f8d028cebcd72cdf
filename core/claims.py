"""Leases: claiming a chunk, taking over an expired one, renewing and releasing.

Longer than 500 lines: the claim and the lease's other transactions share their fencing rules.

A claim is one short write transaction that hands a worker a chunk under a lease
of ``lease_seconds``. The lease lives on the chunk row, so several workers can
share a job (up to its ``max_workers``); a worker that stops renewing loses its
chunk to the next worker that looks, and its late commit is fenced off
(``commit.py``) by the attempt number bumped here.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Float,
    Text,
    Update,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection

from . import poison, rows
from . import schema as s
from .backend import Backend
from .errors import InvalidInput
from .hot import HotStatement
from .lease import Claim
from .outcomes import Item, Items
from .poison import ISOLATE_AFTER, SETTLED_PER_CLAIM
from .sql import claimable, expired_lease, next_retry_subquery, oldest_lease_columns, routed
from .status import RUNNING

if TYPE_CHECKING:
    from .commit import Committer

log = logging.getLogger("chunkq")

#: the orders a claim can pick the next job in (``ClaimStatements``): ``fair`` (the default) serves the
#: job served least recently, ``fifo`` the oldest
ORDERS = ("fair", "fifo")
#: how often a busy worker also looks for expired leases (at most; half a lease when that is shorter)
STALE_CHECK_SECONDS = 5.0


def check_order(order: str) -> str:
    """``order`` if it is one of ``ORDERS``; else ``InvalidInput`` naming them."""
    if order not in ORDERS:
        raise InvalidInput(f"order must be one of {', '.join(ORDERS)}, not {str(order)[:40]!r}", field="order")
    return order


def release_tag() -> str:
    """``host:pid``: who gave a lease back on purpose (``Job.released_by``)."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def make_owner() -> str:
    """``host:pid:random`` - unique per process even across machines and PID reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


@dataclass(frozen=True)
class ClaimStatements:
    """The claim's statements, built once per queue and order; a chunk's own values are bound parameters.

    Building a SQLAlchemy expression and its cache key costs more CPU than SQLite
    takes to run it, so the hot path never rebuilds these.

    **Which job is next** (issue 25). Priority is strict. Within a priority the
    ``fair`` order (the default) takes the job served least recently
    (``served_at``, which the claim's own UPDATE writes): one worker draining a
    million-entity job hands the next chunk to a 3-entity job enqueued beside it
    instead of making it wait for the whole big job; jobs never served (0) go
    first, oldest first, so fresh jobs still start in the order they came. The
    ``fifo`` order takes the oldest job (by id), as chunkq always did. With
    tenants (``enqueue_job(tenant=...)``) the fair order has two levels: at the
    best priority, the tenant whose turn it is, then its job served least
    recently (``_tenant_turn``); the claim then advances that tenant's virtual
    time by ``1 / weight`` (``advance``, the transaction's one extra statement).
    Every step reads an index in order (partial, live jobs only:
    ``ix_chunkq_jobs_fair``, ``_fifo``, ``_tenant``) and stops at the first
    claimable entry, so the cost does not grow with the number of jobs (at
    10,000 live jobs 1.07x its cost at 10 on SQLite, 1.15x on PostgreSQL:
    ``tests/benchmarks/fair_section.py``).
    """

    claim: HotStatement  # the best claimable job of any: advance it and return it
    claim_job: HotStatement  # the same, for one given job
    claim_wait: HotStatement | None  # like ``claim`` but waiting for locked rows (None: no row locks)
    claim_job_wait: HotStatement | None
    #: fair order: the best job of any tenant, when the tenant whose turn it is has none free (its job
    #: rows locked by other workers' claims: SKIP LOCKED) - never an idle worker while others have work
    claim_any: HotStatement | None
    range_items: HotStatement  # a chunk's entity IDs by position, a row each
    #: the same gathered into two values, positions and IDs (None: the database has no such aggregate)
    range_gathered: HotStatement | None
    lease: HotStatement  # the chunk row
    advance: HotStatement  # the served job's tenant: its turn is taken (``vtime``)

    @staticmethod
    def _tenant_turn(now: Any, mine: Any, team: Any) -> list[Any]:
        """The fair claim's two levels: the best priority with a claimable job, then, at it, the
        tenant whose turn it is (the lowest ``vtime`` with such a job), whose least recently
        served job the claim takes.

        Each is a walk of an index in order that stops at the first claimable entry
        (``ix_chunkq_jobs_fair``, ``chunkq_tenants`` by ``vtime`` probing
        ``ix_chunkq_jobs_tenant``), run once per claim. A job whose tenant has no row
        (written by hand) still runs: the tenant of the best job is the fallback.
        """
        j, t = s.jobs.c, s.tenants.c
        live = (claimable(now, mine, team=team, in_order=True), routed(bindparam("p_proc", type_=Text)))
        head = select(j.priority).where(*live).order_by(j.priority.desc(), j.served_at, j.id).limit(1)
        top = head.correlate(None).scalar_subquery()
        top_tenant = head.with_only_columns(j.tenant).correlate(None).scalar_subquery()
        probe = select(literal(1)).select_from(s.jobs).where(j.tenant == t.name, j.priority == top, *live)
        turn = (select(t.name).where(exists(probe.correlate(s.tenants))).order_by(t.vtime, t.name).limit(1)
                .correlate(None).scalar_subquery())
        return [j.priority == top, j.tenant == func.coalesce(turn, top_tenant)]

    @classmethod
    def build(cls, backend: Backend, order: str = "fair") -> ClaimStatements:
        e = s.entities.c

        def claim(one_job: bool, skip_locked: bool, tenants: bool = False) -> HotStatement:
            j = s.jobs.c
            now = bindparam("p_now", type_=Float)
            mine = bindparam("p_mine", type_=BigInteger)
            team = bindparam("p_team", type_=Text)  # the claiming worker (``Claims.holder``)
            # routing (sql.routed): only jobs for the claiming processor (``Claims.claim(route=...)``), or for any
            # (read in the order of an index made for it: ``sql.claimable``)
            cand = select(j.id).where(claimable(now, mine, team=team, in_order=True),
                                      routed(bindparam("p_proc", type_=Text)))
            if one_job:
                cand = cand.where(j.id == bindparam("p_job", type_=BigInteger))
            elif tenants:
                cand = cand.where(*cls._tenant_turn(now, mine, team))
            best = (j.priority.desc(), j.served_at, j.id) if order == "fair" else (j.priority.desc(), j.id)
            cand = backend.lock_rows(cand.order_by(*best).limit(1), skip_locked=skip_locked)
            retry_due = and_(j.next_retry_at.is_not(None), j.next_retry_at <= now)
            return HotStatement(
                update(s.jobs)
                .where(j.id == cand.scalar_subquery(), claimable(now, mine, team=team))
                .values(
                    next_pos=case((retry_due, j.next_pos), else_=j.next_pos + j.chunk_size),
                    next_chunk=j.next_chunk + 1,
                    leased_chunks=j.leased_chunks + 1,
                    status=RUNNING,
                    started_at=func.coalesce(j.started_at, now),
                    updated_at=now,
                    lease_owner=bindparam("p_owner", type_=Text),  # its oldest lease, if older: _show_oldest_lease
                    lease_expires_at=bindparam("p_until", type_=Float),
                    heartbeat_at=now,
                    released_by=None,  # claimed again: no longer "released" (0003)
                    released_at=None,
                    served_at=now,  # the fair order's turn (``ClaimStatements``), in FIFO runs too
                )
                .returning(*s.jobs.c, case((retry_due, 1), else_=0).label("is_retry"))
            )

        chunk = s.chunks.c
        leased = ("job_id", "chunk_index", "kind", "start_pos", "end_pos", "size", "state", "owner", "attempt",
                  "lease_expires_at", "started_at", "ok", "errors", "lost_leases", "team")

        return cls(
            claim=claim(False, True, tenants=order == "fair"),
            claim_job=claim(True, True),
            claim_any=claim(False, True) if order == "fair" and backend.row_locks else None,
            claim_wait=claim(False, False) if backend.row_locks else None,
            claim_job_wait=claim(True, False) if backend.row_locks else None,
            range_items=HotStatement(
                select(e.pos, e.entity_id)
                .where(e.job_id == bindparam("p_job", type_=BigInteger),
                       e.pos >= bindparam("p_start", type_=BigInteger), e.pos < bindparam("p_end", type_=BigInteger))
                .order_by(e.pos)
            ),
            range_gathered=cls._gathered(backend),
            lease=HotStatement(insert(s.chunks).values(
                {name: bindparam(name, type_=chunk[name].type) for name in leased})),
            advance=HotStatement(update(s.tenants).where(s.tenants.c.name == bindparam("p_tenant", type_=Text))
                                 .values(vtime=s.tenants.c.vtime + 1.0 / s.tenants.c.weight)),
        )

    @staticmethod
    def _gathered(backend: Backend) -> HotStatement | None:
        e = s.entities.c
        positions, ids = backend.gather(e.pos, e.pos), backend.gather(e.entity_id, e.pos)
        if positions is None or ids is None:
            return None
        return HotStatement(
            select(positions, ids)
            .where(e.job_id == bindparam("p_job", type_=BigInteger),
                   e.pos >= bindparam("p_start", type_=BigInteger), e.pos < bindparam("p_end", type_=BigInteger))
        )


class Claims:
    """Hands out, renews and takes back one queue's leases.

    **Poison chunks** (``poison.py``). A lease that *expired* (its worker died, froze, or blocked
    its event loop for longer than the lease) is counted on the chunk row
    (``lost_leases``) when the chunk is taken over; a lease given back on
    purpose (``release``: an aborted worker) is not a death and is not counted.
    A chunk taken over for the ``isolate_after``-th time without a commit is
    *isolated*: in the same transaction it is split into one-entity chunks
    (state ``split``; its entities' new chunks are free to claim at once), so the
    one entity that takes workers down is found while every other one completes.
    A one-entity chunk that reaches the bound is not run again: the entity is
    recorded as failed for good (``WorkerLost``) and the job goes on. A job
    finishes without human help given a supervisor that restarts crashed workers.

    **Blame the chunk that crashed, not the window** (issue 24). A worker holds
    several chunks at once (``worker.py``), and a death says only that one of
    them took it down. So a lost lease counts the first time (the chunk becomes a
    *suspect*) and after that only when the chunk was running *alone*: a worker
    that takes over a suspect runs it with nothing else in flight and says so on
    the chunk row when it starts (``run_alone``: ``solo_at``, one write, suspects
    only). An innocent chunk that shared a window with a poison one thus loses
    one lease, is redone once alone, and completes; the poison chunk reaches the
    bound through its solo runs (1 in a window + 2 alone), as does the poison
    entity's one-entity chunk after the split. A suspect lost before it started
    running alone (its worker died of another chunk of the window) is not counted
    again. Good entities of a poison chunk are called at most ``isolate_after + 1``
    times when each worker runs one chunk at a time, ``isolate_after + 2`` in a
    window (the split's one-entity chunks run side by side, and the poison one's
    first death makes its siblings suspects, run once more alone). A frozen worker
    or a blocked event loop counts the same way: the first loss, then solo ones.
    """

    def __init__(
        self, backend: Backend, *, owner: str, lease_seconds: float, now: Callable[[], float],
        committer: Committer | None = None, isolate_after: int = ISOLATE_AFTER, order: str = "fair",
        team: str | None = None,
    ) -> None:
        self.backend = backend
        #: which job a claim serves next unless told otherwise (``ORDERS``, ``ClaimStatements``)
        self.order = check_order(order)
        self._built: dict[str, ClaimStatements] = {}
        self.owner = owner
        #: the worker an operator sees this one as part of (a supervisor's id for its children,
        #: ``supervisor.team``), written on each lease; None: this owner is a worker on its own
        self.team = team
        self.lease_seconds = lease_seconds
        self.now = now
        self.committer = committer  # records a poison entity's failure inside the claim transaction
        self.isolate_after = isolate_after
        self._next_stale_check = 0.0
        #: a blocked event loop let a lease lapse and the operator was told (once: ``renewal.py``)
        self.warned_blocked_loop = False
        #: the thread renewing this queue's leases off the event loop, where the backend allows (``renewal.py``)
        self.beater: Any = None

    @property
    def holder(self) -> str:
        """Who this worker's leases count as against ``max_workers`` (``sql.holder``): its team, else itself."""
        return self.team or self.owner

    @property
    def statements(self) -> ClaimStatements:
        """Built on first use: a ``Queue`` that only reads never pays for them."""
        return self.statements_for(self.order)

    def statements_for(self, order: str) -> ClaimStatements:
        built = self._built.get(order)
        if built is None:
            built = self._built[order] = ClaimStatements.build(self.backend, check_order(order))
        return built

    async def claim(
        self, job_id: int | None = None, *, route: str | None = None, mine: int | None = None,
        order: str | None = None,
    ) -> Claim | None:
        """Lease the best claimable chunk (of ``job_id`` only, if given); None when there is none.

        The one way a chunk is claimed: ``Worker``, ``Queue.process_next_chunk`` and
        ``process_chunk`` all come here (tests wrap it, and ``Committer.commit``, to stop a
        worker at each step). ``route``: the claiming processor's name (``Processor.name``):
        only jobs routed to it or to no one are claimed (``sql.routed``); None: only the
        jobs routed to no one (an unnamed processor cannot know it runs another's callback).

        ``order``: ``fair`` or ``fifo`` (``ClaimStatements``); None: this queue's ``order``.

        ``max_workers`` counts the *other* workers holding a job (``sql.claimable``; this
        worker's team, ``team``, is one with it), so a worker, or a team, that holds a
        chunk of a job may lease more of it, and a taken-over lease obeys the same rule.
        ``mine``: a job this worker already holds a chunk of (its window, ``worker.py``),
        decided without counting.

        Expired leases are looked for at most every few seconds (and whenever there
        is nothing fresh), so a busy worker does not pay for that query per chunk.
        """

        def tx(conn: Connection) -> Claim | None:
            self.backend.relax_durability(conn)
            now = self.now()
            checked_stale = False
            if job_id is not None or now >= self._next_stale_check:
                checked_stale = True
                self._next_stale_check = now + min(self.lease_seconds / 2, STALE_CHECK_SECONDS)
                claim = self._reclaim_expired(conn, now, job_id, route)
                if claim is not None:
                    return claim
            claim = self._claim_fresh(conn, now, job_id, route, mine, order)
            if claim is None and not checked_stale:
                self._next_stale_check = now + min(self.lease_seconds / 2, STALE_CHECK_SECONDS)
                claim = self._reclaim_expired(conn, now, job_id, route)
            return claim

        return await self.backend.write(tx, "claiming a chunk", undo=self._release_claimed, short=True)

    def _claim_fresh(
        self, conn: Connection, now: float, job_id: int | None, route: str | None, mine: int | None = None,
        order: str | None = None,
    ) -> Claim | None:
        st = self.statements_for(order or self.order)
        params = {"p_now": now, "p_owner": self.owner, "p_until": now + self.lease_seconds, "p_job": job_id,
                  "p_mine": mine, "p_team": self.holder, "p_proc": route}
        row = (st.claim if job_id is None else st.claim_job).first(conn, params)
        if row is None and job_id is None and st.claim_any is not None:
            row = st.claim_any.first(conn, params)  # the tenant whose turn it is: its jobs are being claimed
        wait = st.claim_wait if job_id is None else st.claim_job_wait
        if row is None and wait is not None:
            # Every candidate was locked by a worker in mid-transaction (SKIP LOCKED passed it
            # by): wait for that transaction rather than report that there is no work.
            row = wait.first(conn, params)
        if row is None:
            return None
        job = rows.job(row)
        st.advance.run(conn, {"p_tenant": row.tenant})
        index = row.next_chunk - 1
        if row.is_retry:
            r = s.retries.c
            pick = (
                select(r.pos)
                .where(r.job_id == job.id, r.chunk_index.is_(None), r.due_at <= now)
                .order_by(r.due_at, r.pos)
                .limit(row.chunk_size)
            )
            picked = conn.execute(
                update(s.retries).where(r.job_id == job.id, r.pos.in_(pick)).values(chunk_index=index)
                .returning(r.pos, r.entity_id, r.attempt)
            ).all()
            items = Items.of(sorted((Item(p.pos, p.entity_id, p.attempt) for p in picked), key=lambda i: i.pos))
            conn.execute(update(s.jobs).where(s.jobs.c.id == job.id).values(next_retry_at=next_retry_subquery(job.id)))
            start = end = None
        else:
            end = min(row.next_pos, row.total_count)
            start = row.next_pos - row.chunk_size
            items = self.range_items(conn, job.id, start, end)
        kind = "retry" if row.is_retry else "range"
        st.lease.run(conn, {
            "job_id": job.id, "chunk_index": index, "kind": kind, "start_pos": start, "end_pos": end,
            "size": len(items), "state": "leased", "owner": self.owner, "attempt": 1,
            "lease_expires_at": now + self.lease_seconds, "started_at": now, "ok": 0, "errors": 0, "lost_leases": 0,
            "team": self.team,
        })
        if row.leased_chunks > 1:  # only while another chunk of the job is out can an older lease be shown
            self._show_oldest_lease(conn, job.id, now, now + self.lease_seconds)
        return Claim(job, index, kind, 1, self.owner, items, now)

    def _oldest_lease(self, conn: Connection, job_id: int, now: float, until: float) -> dict[str, Any]:
        """The job row's lease columns after this worker's lease until ``until`` (``sql.oldest_lease_columns``)."""
        return oldest_lease_columns(conn, job_id, owner=self.owner, now=now, until=until,
                                    lease_seconds=until - now)

    def _show_oldest_lease(self, conn: Connection, job_id: int, now: float, until: float) -> None:
        """After a fresh claim (whose hot statement wrote this worker's own lease on the job row): the
        job's older lease instead, if another worker holds one. One read, and no write in the common case."""
        values = self._oldest_lease(conn, job_id, now, until)
        if values["lease_expires_at"] != until:
            conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(**values))

    def _reclaim_expired(self, conn: Connection, now: float, job_id: int | None, route: str | None) -> Claim | None:
        """Take over a chunk whose worker stopped renewing its lease: nothing stays stuck.

        A poison chunk (see the class) is isolated or settled here instead of
        handed out, and the next expired chunk is looked for.
        """
        for _ in range(SETTLED_PER_CLAIM):
            claim, lost, released = self._take_over(conn, now, job_id, route)
            if claim is None:
                return None
            if lost < self.isolate_after or self.committer is None:
                # a lease given back on purpose (a second Ctrl-C, "release now") is no silent worker
                log.info("reclaimed chunk %s of job %s (%s)", claim.chunk_index, claim.job.id,
                         "its worker had given it back" if released else "lease of a silent worker expired")
                return claim
            if len(claim.items) > 1:
                poison.isolate(conn, claim, lost, now)
            else:
                poison.give_up(conn, self.committer, claim, lost)
        return None

    def _take_over(
        self, conn: Connection, now: float, job_id: int | None, route: str | None
    ) -> tuple[Claim | None, int, bool]:
        """Lease the best expired chunk to this worker; (claim, leases it has lost so far, whether its last
        lease was given back on purpose rather than run out)."""
        c, j = s.chunks.c, s.jobs.c
        live = s.chunks.alias("live")
        # Chunks run one entity at a time after a split can outnumber the job's worker slots:
        # take one over only while the job has a free slot, as a fresh claim would (``sql.claimable``:
        # fewer other workers than ``max_workers`` hold a live lease of it).
        others = func.coalesce(live.c.team, live.c.owner)
        busy = (select(func.count(others.distinct())).select_from(live)
                .where(live.c.job_id == c.job_id, live.c.state == "leased", live.c.lease_expires_at >= now,
                       others != self.holder)
                .scalar_subquery())
        q = (
            select(c.job_id, c.chunk_index, c.attempt, c.lease_expires_at)
            .select_from(s.chunks.join(s.jobs, j.id == c.job_id))
            .where(expired_lease(now), busy < j.max_workers)
            .order_by(j.priority.desc(), j.id, c.chunk_index)
            .limit(1)
        )
        if job_id is not None:
            q = q.where(c.job_id == job_id)
        q = q.where(routed(route))
        found = conn.execute(self.backend.lock_rows(q, of=s.chunks, skip_locked=True)).first()
        if found is None:
            return None, 0, False
        until = now + self.lease_seconds
        chunk = conn.execute(
            update(s.chunks)
            .where(c.job_id == found.job_id, c.chunk_index == found.chunk_index,
                   c.state == "leased", c.attempt == found.attempt)
            # A lease given back on purpose expires at 0 (``release``): that is no death. An expired one
            # counts if it was the chunk's first (a suspect now) or its worker ran it alone (see the class).
            .values(owner=self.owner, team=self.team, attempt=c.attempt + 1, lease_expires_at=until, started_at=now,
                    lost_leases=c.lost_leases + case(
                        (and_(c.lease_expires_at > 0, or_(c.lost_leases == 0, c.solo_at.is_not(None))), 1),
                        else_=0),
                    solo_at=None)
            .returning(*s.chunks.c)
        ).first()
        if chunk is None:
            return None, 0, False
        row = conn.execute(
            update(s.jobs).where(j.id == found.job_id)
            .values(status=RUNNING, updated_at=now, **self._oldest_lease(conn, found.job_id, now, until),
                    released_by=None, released_at=None)
            .returning(*s.jobs.c)
        ).first()
        assert row is not None
        if chunk.kind == "retry":
            r = s.retries.c
            held = conn.execute(
                select(r.pos, r.entity_id, r.attempt)
                .where(r.job_id == chunk.job_id, r.chunk_index == chunk.chunk_index).order_by(r.pos)
            ).all()
            items = Items.of(Item(p.pos, p.entity_id, p.attempt) for p in held)
        else:
            items = self.range_items(conn, chunk.job_id, chunk.start_pos, chunk.end_pos)
        if chunk.kind == "retry":
            isolated = chunk.start_pos is not None  # a retry chunk has no range, unless a split gave it one
        else:
            isolated = chunk.size == 1 and conn.execute(
                select(c.chunk_index).where(c.job_id == chunk.job_id, c.state == "split", c.kind == "range",
                                            c.start_pos <= chunk.start_pos, c.end_pos > chunk.start_pos).limit(1)
            ).first() is not None
        claim = Claim(rows.job(row), chunk.chunk_index, chunk.kind, chunk.attempt, self.owner, items, now,
                      isolated=isolated, suspect=chunk.lost_leases > 0)
        return claim, int(chunk.lost_leases), found.lease_expires_at == 0

    def range_items(self, conn: Connection, job_id: int, start: int, end: int) -> Items:
        """Entities ``start`` to ``end`` (exclusive) of a job, read by position through the primary key.

        The hot path's one per-entity read. Where the database can, positions and IDs come
        gathered into one row (``Backend.gather``): at chunk 500, half the time of a row
        per entity. Their order is then checked, not assumed (SQLite promises none for an
        aggregate): positions ``start..end-1`` in order mean the IDs are in order too, as
        both lists come from one pass; anything else is sorted by position.
        """
        st = self.statements
        params = {"p_job": job_id, "p_start": start, "p_end": end}
        if st.range_gathered is not None:
            ((gathered_pos, gathered_ids),) = st.range_gathered.tuples(conn, params)
            positions, ids = self.backend.gathered(gathered_pos), self.backend.gathered(gathered_ids)
            if positions == list(range(start, end)):
                return Items(ids, range(start, end))
            pairs = sorted(zip(positions, ids, strict=True))
            return Items([eid for _, eid in pairs], [p for p, _ in pairs])
        found = st.range_items.tuples(conn, params)
        return Items([eid for _, eid in found], [p for p, _ in found])

    async def renew(self, claim: Claim) -> bool:
        """Extend the lease; False when it was lost (another worker took the chunk)."""
        return bool(await self.backend.write(self._renew_tx(claim), "renewing a lease"))

    def renew_blocking(self, claim: Claim) -> bool:
        """``renew`` from a plain thread, off the event loop (backends with ``blocking_writes``)."""
        return bool(self.backend.write_blocking(self._renew_tx(claim)))

    @staticmethod
    def _still_held(claim: Claim) -> Update:
        """An update of the claim's chunk row that lands only while the lease is still this claim's
        (its fencing token, the attempt number, holds): renewing, starting alone and releasing share it."""
        c = s.chunks.c
        return update(s.chunks).where(c.job_id == claim.job.id, c.chunk_index == claim.chunk_index,
                                      c.attempt == claim.attempt, c.state == "leased")

    def _renew_chunk(self, conn: Connection, claim: Claim, now: float, **also: Any) -> bool:
        """Extend the chunk row's lease (and write ``also`` on it); False when it was lost."""
        return conn.execute(
            self._still_held(claim).values(lease_expires_at=now + self.lease_seconds, **also)
            .returning(s.chunks.c.chunk_index)
        ).first() is not None

    def _renew_tx(self, claim: Claim) -> Callable[[Connection], bool]:
        def tx(conn: Connection) -> bool:
            now = self.now()
            held = self._renew_chunk(conn, claim, now)
            if held:
                conn.execute(
                    update(s.jobs).where(s.jobs.c.id == claim.job.id)
                    .values(**self._oldest_lease(conn, claim.job.id, now, now + self.lease_seconds))
                )
            return held

        return tx

    async def run_alone(self, claim: Claim) -> bool:
        """A suspect chunk starts running with nothing else in flight in this worker: from now on, losing
        its lease counts against it (see the class). Renews the lease too; False when it was lost already."""

        def tx(conn: Connection) -> bool:
            self.backend.relax_durability(conn)  # lost in a server crash, it only delays an isolation
            now = self.now()
            return self._renew_chunk(conn, claim, now, solo_at=now)

        return bool(await self.backend.write(tx, "starting a chunk alone", short=True))

    async def release(self, claim: Claim) -> None:
        """Give a chunk back at once (expire its lease) so any worker redoes it."""

        def tx(conn: Connection) -> None:
            conn.execute(self._still_held(claim).values(lease_expires_at=0.0))
            conn.execute(
                # who gave it back and when: read as "released by host:pid at ...", not as a silent worker
                update(s.jobs).where(s.jobs.c.id == claim.job.id)
                .values(lease_expires_at=0.0, updated_at=self.now(), released_by=release_tag(), released_at=self.now())
            )

        await self.backend.write(tx, "releasing a lease")
        self._next_stale_check = 0.0  # our own released chunk is the first thing to take next

    async def _release_claimed(self, claim: Claim | None) -> None:
        if claim is not None:
            await self.release(claim)
