"""The life of one chunk, top to bottom: claim, run, commit.

1. **Claim** - one short write transaction leases the best chunk (or takes over
   one whose worker went silent). ``claims.py``
2. **Run** - the user's callback runs outside any transaction, through the
   shared rate limiter (``ratelimit.py``), while the lease is renewed
   (``renewal.py``); once the lease is known lost, no further entity starts.
   ``runner.py``
3. **Commit** - one short write transaction stores the outcomes, fenced by the
   claim's attempt number so a late worker's results never land twice.
   ``commit.py``

If the run is cancelled (the worker aborts, the dashboard quits), the lease is
released at once so another worker redoes the chunk instead of waiting for the
lease to expire.

Claim and commit are reached through the queue's collaborators,
``queue.claims.claim`` (the one claim, for every way in) and
``queue.committer.commit``: the reliability suite wraps those two to kill a
worker at each step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from .adaptive import ConcurrencyLimit
from .errors import InvalidTransition
from .lease import Claim
from .models import ChunkResult, Job
from .outcomes import Outcomes
from .processor import EntityHook, Processor
from .renewal import LeaseRenewal
from .runner import ChunkAborted, ChunkRunner

if TYPE_CHECKING:
    from .claims import Claims
    from .commit import Committer
    from .ratelimit import RateLimiter

log = logging.getLogger("chunkq")


class ChunkQueue(Protocol):
    """What a chunk's life uses of its queue: a ``Queue``'s collaborators (a protocol, so that this
    module needs nothing of ``queue.py``, which imports it)."""

    @property
    def claims(self) -> Claims: ...

    @property
    def committer(self) -> Committer: ...

    @property
    def rate_limiter(self) -> RateLimiter: ...

    def now(self) -> float: ...

    async def get_job(self, job_id: int) -> Job: ...


async def process(
    queue: ChunkQueue, processor: Processor, *, job_id: int | None = None, on_entity: EntityHook | None = None
) -> ChunkResult | None:
    """Claim a chunk (of ``job_id``, or the best of any job), run it and commit it; None when none is claimable.

    With ``job_id``, a job that cannot run (paused, finished) is an ``InvalidTransition``.
    """
    if job_id is not None:
        job = await queue.get_job(job_id)
        if not job.status.is_active:
            raise InvalidTransition(f"job {job_id} is {job.status}; nothing to process")
        if job.processor is not None and job.processor != processor.name:
            raise InvalidTransition(f"job {job_id} is routed to processor {job.processor!r}, not "
                                    f"{processor.name or 'this unnamed one'!r}; a worker for it runs it")
    # 1. Claim (only a job routed to this processor, or to none: sql.routed).
    claim = await queue.claims.claim(job_id, route=processor.name)
    if claim is None:
        return None
    return await run_claimed(queue, claim, processor, on_entity)


async def run_claimed(
    queue: ChunkQueue, claim: Claim, processor: Processor, on_entity: EntityHook | None = None, *,
    limiter: ConcurrencyLimit | None = None, on_ran: Callable[[], None] | None = None,
    alone: Callable[[], Awaitable[object]] | None = None,
) -> ChunkResult:
    """Steps 2 and 3 for a chunk already claimed.

    A worker's window (``worker.py``) runs several of these at once: ``limiter`` is
    its slots, shared by them all, and ``on_ran`` tells it when this chunk's
    entities are done (before the commit), so that its next claim overlaps the commit.

    A *suspect* chunk (``Claim.suspect``: it lost a lease before) runs alone, so that
    a death while it runs is its own doing (``claims.Claims``): ``alone`` is awaited,
    under the lease renewal, until the rest of the window is done (None: nothing else is
    in flight), and the start is written on the chunk row before its first entity.
    """
    # 2. Run, under the rate limiter and the lease's renewal; once the lease is known lost, no entity starts.
    renewal = LeaseRenewal(queue.claims, claim)
    runner = ChunkRunner(processor, claim.job, on_entity=on_entity, schedule_retries=queue.now,
                         before_call=queue.rate_limiter.for_job(processor, claim.job), lease=renewal,
                         limiter=limiter)
    renewal.on_lost = runner.stop.set
    t0 = time.perf_counter()
    abort: str | None = None
    try:
        async with renewal:
            if not claim.suspect:
                outcomes = await runner.run(claim.items)
            else:
                if alone is not None:
                    await alone()
                # a lease lost while waiting: nothing runs, and the fenced commit says so
                held = await queue.claims.run_alone(claim)
                outcomes = await runner.run(claim.items) if held else Outcomes()
    except ChunkAborted as exc:  # the callback raised JobFailed: the job fails with what is done so far
        # (its culprit, ``outcomes.culprit``, is logged with its traceback; the job's reason points at it)
        outcomes, abort = exc.outcomes, exc.reason
    except BaseException:
        try:
            await asyncio.shield(queue.claims.release(claim))
        except Exception as exc:  # the lease will expire on its own
            log.warning("could not release chunk %s of job %s: %s", claim.chunk_index, claim.job.id, exc)
        raise
    if on_ran is not None:
        on_ran()
    # 3. Commit, fenced (a chunk whose lease was lost is refused here, whatever ran of it).
    return await queue.committer.commit(claim, outcomes, time.perf_counter() - t0, abort)
