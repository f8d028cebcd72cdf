"""Chunks whose worker is gone: what "until empty" still waits for.

A worker that finds nothing to claim is not done if a chunk is leased by a
process that will never commit it: a worker killed with ``kill -9`` (or lost
with its host) leaves its chunks leased until their leases expire, and a run
that stops then leaves the job short (``running 130/150``) for whoever comes
next. "Empty", for a run that drains the queue (``Worker(wait_for_retries=True)``:
``process --until-empty``, every child of ``--processes N``, the dashboard's
auto-run), therefore means, among the active jobs it may run (its processor's,
``job_id``'s if given):

* nothing is claimable now (a fresh range, a retry that is due, an expired lease);
* no entity retry is due within the run (``Worker._wait_for_retry``);
* no chunk is leased by a worker that is not alive (*orphaned*): those leases
  are waited out and the chunks redone (``Worker._wait_for_orphans``).

A chunk leased by a *live* worker is that worker's to finish, as before: a run
does not wait for its siblings. Whether a lease owner (``host:pid:nonce``,
``claims.make_owner``) is alive is decided here, from what is known without
asking it:

* on this host, by its pid: a pid that does not exist is dead, however fresh its
  workers-registry row still reads (a process killed a second ago heartbeated a
  second ago); one that exists is alive;
* on another host, by the workers registry (``registry.alive_condition``): a row
  for that host and pid that heartbeats is alive; no row, or a stopped or lost
  one, is not known to be alive;
* and always by its lease: a lease renewed while a run waited for it belongs to
  a live process (one not registered: a library user's own worker; another PID
  namespace on the same host name), and is not waited for again. So a live
  worker misjudged costs a run at most one wait of its lease, never a hang.

A released lease (expired at 0) and an expired one are claimable at once and
are taken over by the claim itself; one in a job whose worker slots
(``max_workers``) are all held by other live workers is left to them. Slots
are counted as the claim counts them (``sql.claimable``): by worker as an
operator sees it (a supervisor's children are one, their ``team``), the run's
own worker not among the others.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from . import schema as s
from .bounds import check_id
from .registry import alive_condition
from .sql import holder, leasing_workers, routed, status_in
from .status import ACTIVE_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from .queue import Queue


@dataclass(frozen=True)
class OrphanedLease:
    """A chunk leased by a worker that is not known to be alive; it is claimable once ``expires_at`` passes."""

    job_id: int
    chunk_index: int
    attempt: int
    owner: str
    #: epoch seconds on the queue's clock (``Queue.now``)
    expires_at: float

    @property
    def key(self) -> tuple[int, int, int]:
        """This lease (not the chunk): a take-over bumps the attempt."""
        return (self.job_id, self.chunk_index, self.attempt)

    @property
    def holder(self) -> str:
        """``host:pid`` of the owner, as ``chunkq workers`` and ``released_by`` show it."""
        return short_owner(self.owner)


def short_owner(owner: str) -> str:
    """``host:pid`` of a lease owner or a team (``supervisor.make_team``); anything else as it is.

    The one reading of an owner for people (the dashboard's job rows too): the nonce only matters
    to the queue, and a host may hold colons itself (``[::1]``), so the pid is counted from the right.
    """
    host, pid = owner_host_pid(owner)
    return owner if pid is None else f"{host}:{pid}"


def owner_host_pid(owner: str) -> tuple[str, int | None]:
    """``host:pid:nonce`` -> (host, pid); an owner not made by ``make_owner`` -> (owner, None)."""
    parts = owner.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return owner, None


def pid_exists(pid: int) -> bool:
    """Does a process with this pid exist on this host (a zombie counts as gone)?"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return False
    try:  # Linux: a zombie (killed, not yet reaped by its parent) holds its pid but runs nothing
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _alive(owner: str, me: str, host: str, registered: set[tuple[str, int]]) -> bool:
    if owner == me:
        return True
    owner_host, pid = owner_host_pid(owner)
    if pid is None:
        return False
    if owner_host == host:
        return pid_exists(pid)
    return (owner_host[:200], pid) in registered


async def orphaned_leases(queue: Queue, job_id: int | None = None, *, route: str | None = None) -> list[OrphanedLease]:
    """The leased chunks of active jobs (``job_id``'s, if given; that processor ``route`` may claim,
    ``sql.routed``) whose owner is not known to be alive, earliest expiry first. One read."""
    now = queue.now()
    host = socket.gethostname()
    c, j, w = s.chunks.c, s.jobs.c, s.workers.c
    leased = (select(c.job_id, c.chunk_index, c.attempt, c.owner, c.team, c.lease_expires_at, j.max_workers)
              .select_from(s.chunks.join(s.jobs, j.id == c.job_id))
              .where(c.state == "leased", status_in(ACTIVE_STATUSES), routed(route)))
    if job_id is not None:
        leased = leased.where(c.job_id == check_id(job_id))
    registered_q = select(w.host, w.pid).where(alive_condition(now))

    def read(conn: Connection) -> tuple[list[Any], set[tuple[str, int]]]:
        rows = list(conn.execute(leased).all())
        registered = {(str(h), int(p)) for h, p in conn.execute(registered_q).all()} if rows else set()
        return rows, registered

    rows, registered = await queue.backend.read(read, "looking for chunks of workers that are gone")
    me = queue.claims.holder
    live_holders: dict[int, set[str]] = {}  # per job: the other live workers (``sql.holder``) holding it
    found: list[tuple[OrphanedLease, int]] = []
    for r in rows:
        expires = float(r.lease_expires_at or 0.0)
        owner = str(r.owner or "")
        if expires > now and _alive(owner, queue.owner, host, registered):
            if (r.team or owner) != me:
                live_holders.setdefault(int(r.job_id), set()).add(str(r.team or owner))
        else:
            found.append((OrphanedLease(int(r.job_id), int(r.chunk_index), int(r.attempt), owner, expires),
                          int(r.max_workers)))
    # an expired lease in a job whose slots other live workers fill is theirs to take over when a slot frees
    out = [o for o, max_workers in found
           if o.expires_at > now or len(live_holders.get(o.job_id, ())) < max_workers]
    return sorted(out, key=lambda o: (o.expires_at, o.job_id, o.chunk_index))


#: the most jobs ``held_back`` names
HELD_BACK_SHOWN = 3


async def held_back(queue: Queue, job_id: int | None = None, *, route: str | None = None) -> str | None:
    """Why a run found nothing to claim while work is left, in a phrase; None when no limit is the reason.

    ``job 4 is at its max_workers (1), held by another worker (host:123)``: jobs with
    work left (a fresh range or a retry that is due) that this worker may not join because
    other workers, as many as the job's ``max_workers``, hold it (``sql.claimable``). An
    operator who ran ``--processes 2`` beside another worker should read why a process
    sat idle, not "nothing left to do". Asked once when a run finds nothing (never on a
    timer); two reads, of at most ``HELD_BACK_SHOWN`` jobs' few leased chunks.
    """
    now = queue.now()
    j, c = s.jobs.c, s.chunks.c
    me = queue.claims.holder
    full = (select(j.id, j.max_workers)
            .where(status_in(ACTIVE_STATUSES), routed(route), j.leased_chunks >= j.max_workers,
                   or_(j.next_pos < j.total_count, j.next_retry_at <= now), leasing_workers(me) >= j.max_workers)
            .order_by(j.priority.desc(), j.id).limit(HELD_BACK_SHOWN))
    if job_id is not None:
        full = full.where(j.id == check_id(job_id))

    def read(conn: Connection) -> tuple[list[Any], list[str]]:
        jobs = list(conn.execute(full).all())
        if not jobs:
            return jobs, []
        who = (select(holder()).distinct()
               .where(c.job_id.in_([r.id for r in jobs]), c.state == "leased", holder() != me))
        return jobs, sorted(str(h) for (h,) in conn.execute(who).all())

    jobs, holders = await queue.backend.read(read, "looking for why nothing was claimable")
    if not jobs:
        return None
    limits = {int(r.max_workers) for r in jobs}
    what = (f"job {jobs[0].id} is at its max_workers ({jobs[0].max_workers})" if len(jobs) == 1 else
            f"jobs {', '.join(str(r.id) for r in jobs)} are at their max_workers"
            + (f" ({limits.pop()})" if len(limits) == 1 else ""))
    names = sorted({short_owner(h) for h in holders})
    who = "another worker" if len(names) == 1 else f"{len(names)} other workers"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{what}, held by {who} ({shown})" if names else what


def describe(leases: list[OrphanedLease]) -> str:
    """``2 chunks of job 1 leased by a worker that stopped (host:123)``: what is left, in a phrase."""
    jobs: dict[int, int] = {}
    for o in leases:
        jobs[o.job_id] = jobs.get(o.job_id, 0) + 1
    holders = sorted({o.holder for o in leases})
    n = len(leases)
    what = f"{n} chunk{'s' if n != 1 else ''}"
    if len(jobs) == 1:
        what += f" of job {next(iter(jobs))}"
    else:
        what += f" of jobs {', '.join(str(j) for j in sorted(jobs))}"
    who = "a worker that stopped" if len(holders) == 1 else f"{len(holders)} workers that stopped"
    shown = ", ".join(holders[:3]) + (", ..." if len(holders) > 3 else "")
    return f"{what} leased by {who} ({shown})"


__all__ = ["OrphanedLease", "describe", "held_back", "orphaned_leases", "owner_host_pid", "pid_exists",
           "short_owner"]
