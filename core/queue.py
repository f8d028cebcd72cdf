"""The queue: what the CLI, the dashboard, the HTTP trigger and user code call.

``Queue`` is a thin facade; each concept lives in its own module:

* ``backend/`` - the database: engines, the transaction executor, every SQLite/PostgreSQL difference
* ``enqueue.py`` - creating a job;  ``claims.py`` - leases;  ``commit.py`` - the fenced commit
* ``processor.py`` - what the user hands over: the callback and its knobs
* ``chunk.py`` - the life of one chunk, top to bottom;  ``runner.py`` - calling the user's callback
  (``callbacks.py`` - what it returns and raises; ``threads.py`` - the threads sync ones run on;
  ``text.py`` - its text made storable);  ``renewal.py`` - keeping a lease;  ``poison.py`` - chunks
  whose workers keep dying
* ``ratelimit.py`` - shared token buckets;  ``control.py`` - pause/resume/cancel, bulk actions, redoing failures
* ``reads.py`` - jobs, errors, chunks, rates, stats;  ``orphans.py`` - chunks leased by workers that are
  gone (what a run "until empty" still waits for)

Every write is one short transaction; the user's callback always runs between
transactions, never inside one. A chunk costs the same whatever the job's size:
IDs are read by position through the primary key, errors are appended rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from . import chunk, enqueue, history
from .backend import Backend, backend_for
from .bounds import CHUNK_SIZE, ENTITY_ID_LENGTH, LEASE_SECONDS, check_id, clean_entity_id
from .claims import Claims, make_owner
from .commit import Committer
from .control import Control
from .db import describe_db_error
from .errors import DatabaseUnavailable
from .history import History
from .lease import Claim
from .models import (
    BulkResult,
    ChunkInfo,
    ChunkResult,
    EntityResult,
    ErrorEntry,
    ErrorGroup,
    ErrorGroupPage,
    HistoryBucket,
    Job,
    QueueStats,
    WorkerInfo,
)
from .processor import EntityHook, Processor, ProcessorLike
from .ratelimit import RateLimiter
from .reads import Reads
from .registry import Registry

# Names this module has always exported (front ends and tests import them from here).
MAX_CHUNK_SIZE = CHUNK_SIZE.hi
MAX_ID_LENGTH = ENTITY_ID_LENGTH
__all__ = ["MAX_CHUNK_SIZE", "MAX_ID_LENGTH", "Claim", "ProcessorLike", "Queue", "clean_entity_id", "make_owner"]


class Queue:
    """A database-backed chunk queue, shared safely by any number of workers.

    ``async with Queue(url) as queue`` opens the engine and creates the schema on
    first use. One ``Queue`` belongs to one event loop (the async engine does).

    Opening checks the schema before writing anything: ``create=False`` refuses a
    missing or empty database (``NoDatabase``) instead of making one; an older
    schema is refused (``SchemaMismatch``: run ``chunkq db upgrade``) unless
    ``upgrade=True``; a newer one always is. ``readonly=True`` never writes (a
    SQLite file is opened read-only), for commands that only read.

    ``order``: which job a claim serves next, ``fair`` (the default: round-robin
    among jobs of the same priority, the one served least recently first) or
    ``fifo`` (the oldest job first); see ``claims.ClaimStatements``. A ``Worker``
    may ask for the other one.

    ``team``: several processes that count as one worker against a job's
    ``max_workers`` share it (``--processes N``'s children get their supervisor's,
    ``supervisor.team``); None: this queue's worker is a worker of its own.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        lease_seconds: float = 30.0,
        breaker_chunks: int = 5,
        owner: str | None = None,
        clock: Callable[[], float] | None = None,
        create: bool = True,
        upgrade: bool = False,
        readonly: bool = False,
        order: str = "fair",
        team: str | None = None,
    ) -> None:
        self.backend: Backend = backend_for(url)
        self._open_options = {"create": create and not readonly, "upgrade": upgrade and not readonly,
                              "readonly": readonly}
        self.url = self.backend.url
        self.lease_seconds = LEASE_SECONDS.check(lease_seconds)
        self.backend.lease_seconds = self.lease_seconds  # PostgreSQL bounds its sessions by it
        self.breaker_chunks = breaker_chunks
        self.owner = owner or make_owner()
        self._clock = clock or time.time
        self._offset = 0.0
        self.committer = Committer(self.backend, owner=self.owner, breaker_chunks=breaker_chunks, now=self.now,
                                   lease_seconds=self.lease_seconds)
        self.claims = Claims(self.backend, owner=self.owner, lease_seconds=self.lease_seconds, now=self.now,
                             committer=self.committer, order=order, team=team)
        self.rate_limiter = RateLimiter(self.backend, self.now)
        self.reads = Reads(self.backend, self.now)
        self.control = Control(self.backend, self.reads, self.now)
        self.registry = Registry(self.backend, self.now, writable=not readonly)
        self.history_reader = History(self.backend, self.now)

    # ------------------------------------------------------------------ lifecycle

    @property
    def display_url(self) -> str:
        return self.backend.display_url

    @property
    def engine(self) -> AsyncEngine:
        return self.backend.engine

    def now(self) -> float:
        """Epoch seconds on the database's clock (PostgreSQL) so hosts agree on lease expiry."""
        return self._clock() + self._offset

    async def open(self) -> Queue:
        if self.backend.is_open:
            return self
        try:
            await self.backend.open(**self._open_options)
            if self._clock is time.time:
                self._offset = await self.backend.clock_offset()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, DBAPIError | OSError):
                raise DatabaseUnavailable(
                    f"cannot open database {self.display_url}: {describe_db_error(exc)}"
                ) from exc
            raise
        return self

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> Queue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ enqueue

    async def enqueue_job(
        self,
        entity_ids: Iterable[str],
        *,
        entity_type: str,
        provider: str,
        chunk_size: int = 50,
        priority: int = 0,
        name: str | None = None,
        dedupe: bool = False,
        params: dict[str, Any] | None = None,
        max_workers: int = 1,
        max_attempts: int = 3,
        max_errors: int | None = None,
        max_error_ratio: float | None = None,
        parent_id: int | None = None,
        processor: str | None = None,
        tenant: str | None = None,
    ) -> Job:
        """Create a pending job of ``entity_ids``, all or nothing (see ``enqueue.py``; bounds in ``bounds.py``).

        ``processor`` routes it: only a worker whose processor has that name (the CLI's
        ``--processor`` import path, or ``Processor.name``) claims it; None: any worker.
        ``tenant``: who it is for; tenants take turns before their jobs do (``set_tenant_weight``),
        so a customer with 50 jobs does not get 50 turns to another's one. None: the jobs
        without a tenant, which take turns as one tenant."""
        job_id = await enqueue.enqueue(
            self.backend, self.now, entity_ids, dedupe=dedupe, parent_id=parent_id, entity_type=entity_type,
            provider=provider, chunk_size=chunk_size, priority=priority, name=name, params=params,
            max_workers=max_workers, max_attempts=max_attempts, max_errors=max_errors,
            max_error_ratio=max_error_ratio, processor=processor, tenant=tenant,
        )
        return await self.get_job(job_id)

    # ------------------------------------------------------------------ processing (chunk.py)

    async def process_next_chunk(
        self, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> ChunkResult | None:
        """Claim the best claimable chunk of any job and run it; None when there is none."""
        return await chunk.process(self, Processor.coerce(on_process), on_entity=on_entity)

    async def process_chunk(
        self, job_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> ChunkResult | None:
        """Run the next chunk of one given job (the dashboard's step).

        Raises ``InvalidTransition`` when the job cannot run (paused, finished);
        returns None when it is active but has nothing claimable right now (all
        its chunks are leased by other workers, or its retries are not yet due).
        """
        processor = Processor.coerce(on_process)
        return await chunk.process(self, processor, job_id=check_id(job_id), on_entity=on_entity)

    @property
    def _thread_engine(self) -> Engine | None:
        """SQLite's engine for whole transactions in a thread (None on PostgreSQL)."""
        return getattr(self.backend, "thread_engine", None)

    async def acquire_token(self, provider: str, rate: float, burst: float = 1.0) -> None:
        """Wait for one call's worth of a provider's shared token bucket (see ``ratelimit.py``)."""
        await self.rate_limiter.acquire(provider, rate, burst)

    # ------------------------------------------------------------------ job control (control.py)

    async def pause(self, job_id: int) -> Job:
        """Stop handing out chunks of a job; a chunk in flight still commits."""
        return await self.control.transition(job_id, "pause")

    async def resume(self, job_id: int) -> Job:
        return await self.control.transition(job_id, "resume")

    async def cancel(self, job_id: int) -> Job:
        return await self.control.transition(job_id, "cancel")

    async def bulk(
        self, action: str, *, status: str | Sequence[str] | None = None, search: str | None = None
    ) -> BulkResult:
        """``pause``/``resume``/``cancel``/``retry``/``requeue`` every job matching the filter (as ``list_jobs``)."""
        return await self.control.bulk(action, status, search)

    async def retry_failed(self, job_id: int, *, fingerprint: str | None = None) -> Job:
        """A new job (``parent_id`` = this one) of every entity that did not succeed
        (with ``fingerprint``: of the entities failed for good with an error of that group)."""
        return await self.control.retry_failed(job_id, fingerprint=fingerprint)

    async def requeue_failed(self, job_id: int, *, fingerprint: str | None = None) -> Job:
        """Put a job's failed entities back into the same job, due now, with fresh attempts
        (with ``fingerprint``: only the entities failed for good with an error of that group)."""
        return await self.control.requeue_failed(job_id, fingerprint=fingerprint)

    async def retry_entity(
        self, error_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> EntityResult:
        """Run the callback on one failed entity now; on success its errors are marked resolved."""
        return await self.control.retry_entity(error_id, Processor.coerce(on_process), on_entity)

    async def dry_run(
        self, job_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> list[EntityResult]:
        """Run the job's next chunk through the callback and write nothing at all."""
        return await self.control.dry_run(job_id, Processor.coerce(on_process), on_entity)

    # ------------------------------------------------------------------ reads (reads.py)

    async def get_job(self, job_id: int) -> Job:
        return await self.reads.get_job(job_id)

    async def list_jobs(
        self,
        status: str | Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        changed_since: float | None = None,
        search: str | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """Jobs in ``Status.rank`` order, newest first within one; ``changed_since`` (epoch s): only what changed.

        With ``changed_since`` a live view's refresh costs the same with 10 or 10,000
        jobs. On PostgreSQL concurrent transactions may commit out of timestamp
        order, so poll with a small overlap (the dashboard uses 2 s). ``tenant``: that tenant's
        jobs only ("": those enqueued without one).
        """
        return await self.reads.list_jobs(status, limit=limit, offset=offset, changed_since=changed_since,
                                          search=search, tenant=tenant)

    async def count_jobs(
        self, status: str | Sequence[str] | None = None, *, search: str | None = None, tenant: str | None = None,
    ) -> int:
        return await self.reads.count_jobs(status, search=search, tenant=tenant)

    async def set_tenant_weight(self, tenant: str | None, weight: float) -> None:
        """Give ``tenant`` (None: the jobs without one) ``weight`` times the turns of a tenant of weight 1
        (default 1; at most 1,000). Takes effect at the next claim; a tenant not seen yet is created."""
        await self.control.set_tenant_weight(tenant, weight)

    async def list_tenants(self) -> list[tuple[str | None, float]]:
        """Every tenant ever enqueued and its weight, by name (None: the jobs without a tenant)."""
        return await self.reads.list_tenants()

    async def list_errors(
        self, job_id: int, *, limit: int = 100, offset: int = 0, error_type: str | None = None,
        message: str | None = None, include_resolved: bool = True, fingerprint: str | None = None,
        search: str | None = None, after_id: int | None = None,
    ) -> list[ErrorEntry]:
        """A page of the error log, oldest first: of one group (``fingerprint``), and/or whose entity ID or
        message contains ``search`` (any letter case); ``after_id`` pages a walk through it by error id."""
        return await self.reads.list_errors(job_id, limit=limit, offset=offset, error_type=error_type,
                                            message=message, include_resolved=include_resolved,
                                            fingerprint=fingerprint, search=search, after_id=after_id)

    def iter_errors(self, job_id: int, *, fingerprint: str | None = None, search: str | None = None,
                    page: int = 1000) -> AsyncIterator[ErrorEntry]:
        """Every error of a job (of one group, matching ``search``), paged by id, for exports that must not
        hold them all."""
        return self.reads.iter_errors(job_id, fingerprint=fingerprint, search=search, page=page)

    async def get_error(self, error_id: int) -> ErrorEntry:
        return await self.reads.get_error(error_id)

    async def group_errors(
        self, job_id: int, *, limit: int = 100, include_resolved: bool = False, search: str | None = None,
    ) -> list[ErrorGroup]:
        """Failures grouped by fingerprint (the same bug: ``fingerprint.py``), biggest group first;
        ``count`` is attempts logged, ``entities`` distinct entities. With ``search``: of the matching rows."""
        return await self.reads.group_errors(job_id, limit=limit, include_resolved=include_resolved, search=search)

    async def group_entities(
        self, job_id: int, fingerprint: str, *, limit: int = 1000, offset: int = 0, include_resolved: bool = False,
    ) -> list[str]:
        """The distinct entity IDs of one error group, failed for good first."""
        return await self.reads.group_entities(job_id, fingerprint, limit=limit, offset=offset,
                                               include_resolved=include_resolved)

    async def error_group_page(
        self, job_id: int, *, limit: int = 100, offset: int = 0, include_resolved: bool = False,
        search: str | None = None,
    ) -> ErrorGroupPage:
        """A page of the job's error groups (biggest first) and how many it has in all (issue 27)."""
        return await self.reads.group_page(job_id, limit=limit, offset=offset, include_resolved=include_resolved,
                                           search=search)

    async def merge_error_groups(self, job_id: int, groups: Sequence[str], into: str) -> list[str]:
        """An operator says ``groups`` are the same bug as group ``into``: merged, for the job's future
        errors of those templates too, until ``unmerge_error_group``. Returns the groups merged."""
        from . import error_groups

        check_id(job_id)
        await self.reads.get_job(job_id)
        return await self.backend.write(lambda conn: error_groups.merge(conn, job_id, list(groups), into),
                                        "merging error groups")

    async def unmerge_error_group(self, job_id: int, group: str) -> str:
        """Split ``group`` off the group it was merged into (with what was merged into it); returns that group."""
        from . import error_groups

        check_id(job_id)
        await self.reads.get_job(job_id)
        return await self.backend.write(lambda conn: error_groups.unmerge(conn, job_id, group),
                                        "splitting an error group off")

    async def list_chunks(self, job_id: int, *, limit: int = 200) -> list[ChunkInfo]:
        """The job's chunk history, newest last (the latest ``limit`` chunks)."""
        return await self.reads.list_chunks(job_id, limit=limit)

    async def entity_ids(self, job_id: int, *, limit: int = 1000, offset: int = 0) -> list[str]:
        return await self.reads.entity_ids(job_id, limit=limit, offset=offset)

    async def rate(self, job_id: int, *, window: float = 60.0) -> float:
        """Entities per second over the job's recent chunks (0 when idle)."""
        return await self.reads.rate(job_id, window=window)

    async def job_rates(self, job_ids: Sequence[int], *, window: float = 60.0) -> dict[int, float]:
        """Entities/s per job over the last ``window`` seconds of chunk history, in one query."""
        return await self.reads.job_rates(job_ids, window=window)

    async def stats(self, *, window: float = 60.0) -> QueueStats:
        return await self.reads.stats(window=window)

    async def pending_retry_job(self, job_id: int) -> Job | None:
        """The newest retry job of ``job_id`` not yet finished (pending, running or paused), or None."""
        return await self.reads.pending_retry_job(job_id)

    async def history(
        self, job_id: int | None = None, *, minutes: float = 60, bucket_seconds: float = 60,
        recent_minutes: float = 5, recent_bucket_seconds: float = 10,
    ) -> list[HistoryBucket]:
        """Entities processed and failed over time (one job's, or the whole queue's), oldest bucket first:
        ``bucket_seconds`` wide over the last ``minutes``, ``recent_bucket_seconds`` wide over the last
        ``recent_minutes``. From the chunk rows (``history.py``): the cost is flat in job size."""
        return await self.history_reader.history(job_id, minutes=minutes, bucket_seconds=bucket_seconds,
                                                 recent_minutes=recent_minutes,
                                                 recent_bucket_seconds=recent_bucket_seconds)

    async def provider_totals(self) -> dict[str, tuple[int, int, int]]:
        """``{provider: (processed, failed for good, waiting)}`` over every job (``/metrics``)."""
        return await history.provider_totals(self.backend)

    async def tenant_totals(self) -> dict[str, tuple[int, int]]:
        """``{tenant: (entities processed, live jobs)}`` over every job; '': jobs without a tenant (``/metrics``)."""
        return await history.tenant_totals(self.backend)

    async def chunk_durations(self, *, minutes: float = 60) -> tuple[list[int], int, float]:
        """Chunks finished in the last ``minutes`` by duration: cumulative counts per
        ``history.DURATION_BOUNDS``, their count and total seconds (``/metrics``)."""
        return await history.chunk_durations(self.backend, self.now() - minutes * 60)

    # ------------------------------------------------------------------ workers (registry.py)

    async def list_workers(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        """Every registered process that processes work, newest first; ``lost`` when its heartbeat is
        more than two intervals old. Rows gone for over an hour are deleted on the way."""
        return await self.registry.list(include_stopped=include_stopped)

    async def get_worker(self, worker_id: str) -> WorkerInfo:
        return await self.registry.get(worker_id)

    async def request_worker_stop(self, worker_id: str, *, now: bool = False) -> WorkerInfo:
        """Ask a worker on any host to stop after its chunk (``now=True``: at once, its chunk released).
        It acts on its next heartbeat. Unknown id: ``WorkerNotFound``; stopped or lost: ``InvalidInput``."""
        return await self.registry.request_stop(worker_id, now=now)

    async def has_claimable(self, *, mine: int | None = None, route: str | None = None) -> bool:
        """Cheap check used by idle workers before they take the write lock; ``mine``: a job this
        worker holds a chunk of (its window may take one more of it), ``route``: its processor's
        name (``claims.Claims.claim``)."""
        return await self.reads.has_claimable(mine, team=self.claims.holder, route=route)

    async def next_retry_due(self, job_id: int | None = None) -> float | None:
        """When the earliest entity retry of an active job (or of ``job_id``) falls due, in epoch
        seconds on ``now()``'s clock; None when no entity waits. One aggregate query."""
        return await self.reads.next_retry_due(job_id)
