"""Poison chunks: finding the entity that takes workers down, without stalling its job.

An entity whose callback kills the process running it (a segfault, ``os._exit``,
the OOM killer) - or keeps its worker from renewing the lease (a frozen process,
an event loop blocked for longer than the lease) - would have its chunk taken
over and rerun forever, good entities and all. ``claims.py`` counts on the
chunk row a take-over of an *expired* lease (``lost_leases``): the chunk's first,
and then only those lost while its worker ran it alone (``solo_at``), so a crash
is blamed on the chunk that caused it, not on every chunk of the dead worker's
window (issue 24). When a chunk reaches ``ISOLATE_AFTER`` the claim transaction
calls this module instead of handing it out:

* ``isolate`` splits it into one-entity chunks, free to claim at once (the
  parent's state becomes ``split``), so the next deaths point at one entity;
* ``give_up`` records the entity of a one-entity chunk that reached the bound
  as failed for good (``WorkerLost``), through the ordinary fenced commit.

Good entities of a poison chunk are so called at most ``ISOLATE_AFTER + 1``
times (``+ 2`` when workers run windows: ``claims.Claims``), innocent entities
of the same window twice, and the job finishes given a supervisor that restarts
crashed workers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, bindparam, insert, update
from sqlalchemy.engine import Connection

from . import schema as s
from .outcomes import Outcome, Outcomes

if TYPE_CHECKING:
    from .commit import Committer
    from .lease import Claim

log = logging.getLogger("chunkq")

#: leases a chunk may lose without a commit before it is isolated
ISOLATE_AFTER = 3
#: poison chunks one claim transaction may isolate or settle before it gives up looking
SETTLED_PER_CLAIM = 20
WORKER_LOST = "WorkerLost"
WORKER_LOST_DETAIL = (
    "No traceback: each time this entity was in flight, the process running the callback ended (os._exit, "
    "a crash such as a segfault, a kill such as the OOM killer's) or stopped renewing its lease (frozen, or "
    "an event loop blocked for longer than the lease). Its chunk was then run one entity at a time, which "
    "found this one. Everything else in the job went on."
)


def worker_lost_message(times: int) -> str:
    return f"the worker died or lost its lease while processing this entity, {times} times"


def isolate(conn: Connection, claim: Claim, lost: int, now: float) -> None:
    """Split a poison chunk into one-entity chunks, free to claim at once (in the claim's transaction)."""
    c, j = s.chunks.c, s.jobs.c
    n = len(claim.items)
    first = conn.execute(
        update(s.jobs).where(j.id == claim.job.id)
        .values(next_chunk=j.next_chunk + n, leased_chunks=j.leased_chunks + n - 1)
        .returning(j.next_chunk)
    ).scalar_one() - n
    # Released leases (expiry 0: no death counted when taken), not suspects (lost_leases 0): they may run
    # side by side, and the first death among them makes suspects of the ones in flight (``claims.Claims``).
    # Each one-entity chunk keeps its entity's position in start_pos, a retry chunk's too (whose entity
    # is the retry row pointing at it).
    conn.execute(insert(s.chunks), [{
        "job_id": claim.job.id, "chunk_index": first + k, "kind": claim.kind, "start_pos": item.pos,
        "end_pos": item.pos + 1, "size": 1, "state": "leased", "owner": None, "attempt": 1,
        "lease_expires_at": 0.0, "started_at": now, "ok": 0, "errors": 0, "lost_leases": 0, "solo_at": None,
    } for k, item in enumerate(claim.items)])
    if claim.kind == "retry":
        r = s.retries.c
        point = (update(s.retries)
                 .where(r.job_id == bindparam("p_job", type_=BigInteger), r.pos == bindparam("p_pos"))
                 .values(chunk_index=bindparam("p_index")))
        conn.execute(point, [{"p_job": claim.job.id, "p_pos": item.pos, "p_index": first + k}
                             for k, item in enumerate(claim.items)])
    conn.execute(update(s.chunks).where(c.job_id == claim.job.id, c.chunk_index == claim.chunk_index)
                 .values(state="split", finished_at=now, lease_expires_at=None))
    log.warning("chunk %s of job %s lost its lease %d times without a commit (its worker died or stalled "
                "each time): running its %d entities one at a time to find the one responsible",
                claim.chunk_index, claim.job.id, lost, n)


def give_up(conn: Connection, committer: Committer, claim: Claim, lost: int) -> None:
    """Commit a one-entity poison chunk's entity as failed for good (in the claim's transaction)."""
    outcomes = [Outcome(item, False, error_type=WORKER_LOST, message=worker_lost_message(lost),
                        traceback=WORKER_LOST_DETAIL) for item in claim.items]
    for o in outcomes:
        log.warning("job %s: entity %r failed for good (%s: %s)", claim.job.id, o.item.entity_id,
                    WORKER_LOST, o.message)
    claim.isolated = True  # a death says nothing about the provider: no circuit breaker
    committer.apply(conn, claim, Outcomes(0, outcomes), 0.0, None)
