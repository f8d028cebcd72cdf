"""The queue: enqueue, claim under a lease, run a chunk, commit fenced.

Every write is one short transaction; the user's callback always runs between
transactions, never inside one. A chunk costs the same whatever the job's size:
IDs are read by position through the primary key, errors are appended rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

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
    literal_column,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import schema as s
from .db import (
    create_engine,
    create_sqlite_thread_engine,
    describe_db_error,
    display_url,
    normalize_url,
    with_retries,
)
from .models import (
    ACTIVE_STATUSES,
    CANCELLED,
    COMPLETE,
    FAILED,
    PAUSED,
    PENDING,
    RUNNING,
    STATUSES,
    ChunkInfo,
    ChunkResult,
    DatabaseUnavailable,
    EntityResult,
    ErrorEntry,
    ErrorGroup,
    InvalidInput,
    InvalidTransition,
    Job,
    JobNotFound,
    QueueStats,
    TraceFrame,
    TraceStack,
    to_datetime,
)
from .runner import ChunkAborted, ChunkRunner, EntityCallback, EntityHook, Item, Outcome, Processor

log = logging.getLogger("chunkq")

MAX_CHUNK_SIZE = 10_000
MAX_ID_LENGTH = 2048
MAX_PRIORITY = 1_000_000
_INSERT_BATCH = 5_000
_STALE_CHECK_SECONDS = 5.0

ProcessorLike = Processor | EntityCallback | None
T = TypeVar("T")


def make_owner() -> str:
    """``host:pid:random`` - unique per process even across machines and PID reuse."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


def clean_entity_id(value: object, number: int) -> str:
    """Validate one ID; ``number`` counts from 1 so the message matches a file's line."""
    if not isinstance(value, str):
        raise InvalidInput(f"entity ID #{number} is {type(value).__name__} {value!r:.40}, not a string")
    v = value.strip()
    if not v:
        raise InvalidInput(f"entity ID #{number} is blank")
    if len(v) > MAX_ID_LENGTH:
        raise InvalidInput(f"entity ID #{number} is {len(v):,} characters long; the limit is {MAX_ID_LENGTH:,}")
    if "\x00" in v:
        raise InvalidInput(f"entity ID #{number} contains a NUL byte")
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"entity ID #{number} is not valid UTF-8 text") from None
    return v


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo:,} and {hi:,}, got {value:,}")
    return value


def _check_label(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required (a non-empty string)")
    v = value.strip()
    if len(v) > 200 or "\x00" in v:
        raise InvalidInput(f"{name} must be at most 200 characters with no NUL bytes")
    return v


class _Abandoned(Exception):
    """The caller of a threaded transaction was cancelled before it committed."""


@dataclass
class Claim:
    """A leased chunk: what a worker holds between its claim and its commit."""

    job: Job
    chunk_index: int
    kind: str
    attempt: int  # fencing token
    owner: str
    items: list[Item]
    started: float


class Queue:
    """A database-backed chunk queue, shared safely by any number of workers.

    ``async with Queue(url) as queue`` opens the engine and creates the schema on
    first use. One ``Queue`` belongs to one event loop (the async engine does).
    """

    def __init__(
        self,
        url: str | os.PathLike[str] | None = None,
        *,
        lease_seconds: float = 30.0,
        breaker_chunks: int = 5,
        owner: str | None = None,
        clock: Any = None,
    ) -> None:
        self.url = normalize_url(url)
        if lease_seconds <= 0:
            raise InvalidInput("lease_seconds must be positive")
        self.lease_seconds = float(lease_seconds)
        self.breaker_chunks = breaker_chunks
        self.owner = owner or make_owner()
        self._clock = clock or time.time
        self._offset = 0.0
        self._engine: AsyncEngine | None = None
        self._thread_engine: Engine | None = None  # SQLite: hot transactions run whole in a thread
        self._statements: dict[str, Any] = {}
        self._next_stale_check = 0.0

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the queue is not open: use 'async with Queue(...)' or 'await queue.open()'")
        return self._engine

    def now(self) -> float:
        """Epoch seconds on the database's clock (PostgreSQL) so hosts agree on lease expiry."""
        return self._clock() + self._offset

    async def open(self) -> Queue:
        if self._engine is not None:
            return self
        self._engine = create_engine(self.url)
        if not self.is_postgres:
            self._thread_engine = create_sqlite_thread_engine(self.url)
        try:
            await with_retries(self._create_schema, attempts=3, what=f"opening {self.display_url}")
            if self.is_postgres and self._clock is time.time:
                await self._measure_clock_offset()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, DBAPIError | OSError):
                raise DatabaseUnavailable(
                    f"cannot open database {self.display_url}: {describe_db_error(exc)}"
                ) from exc
            raise
        return self

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        if self._thread_engine is not None:
            self._thread_engine.dispose()
            self._thread_engine = None

    async def __aenter__(self) -> Queue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _create_schema(self) -> None:
        async with self._write() as conn:
            if self.is_postgres:
                # Two processes creating the schema at once would collide on pg_type.
                await conn.execute(text("SELECT pg_advisory_xact_lock(7270351)"))
            await conn.run_sync(s.metadata.create_all)
            version = (
                await conn.execute(select(s.meta.c.value).where(s.meta.c.key == "schema_version"))
            ).scalar()
            if version is None:
                await conn.execute(insert(s.meta).values(key="schema_version", value=str(s.SCHEMA_VERSION)))
            elif int(version) > s.SCHEMA_VERSION:
                raise DatabaseUnavailable(
                    f"database schema version {version} is newer than this chunkq understands "
                    f"({s.SCHEMA_VERSION}); upgrade chunkq"
                )

    async def _measure_clock_offset(self) -> None:
        async with self.engine.connect() as conn:
            t0 = time.time()
            server = (await conn.execute(text("SELECT extract(epoch from clock_timestamp())"))).scalar()
            t1 = time.time()
        self._offset = float(server) - (t0 + t1) / 2

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; on SQLite it takes the file's write lock up front."""
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(chunkq_write=True)
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def _run_write(self, fn: Any, what: str) -> Any:
        async def op() -> Any:
            async with self._write() as conn:
                return await fn(conn)

        return await with_retries(op, what=what)

    async def _run_read(self, fn: Any, what: str) -> Any:
        async def op() -> Any:
            async with self._read() as conn:
                return await fn(conn)

        return await with_retries(op, what=what)

    async def _run_write_sync(
        self, fn: Callable[[Connection], T], what: str, *, undo: Callable[[T], Awaitable[Any]] | None = None
    ) -> T:
        """A write transaction written as a plain function of a synchronous ``Connection``.

        The hot path (claim, commit) is written this way because on SQLite the whole
        transaction then runs in one worker-thread hand-off, where aiosqlite would
        hand over every cursor call (~15 per transaction); on PostgreSQL it runs on
        the async engine as before. A cancelled caller gets the transaction rolled
        back; if it had already committed, ``undo`` gets its result (a claim is released).
        """
        engine = self._thread_engine
        if engine is None:

            async def on_async_engine() -> T:
                async with self._write() as conn:
                    return await conn.run_sync(fn)

            return await with_retries(on_async_engine, what=what)

        def transaction(cancelled: threading.Event) -> T:
            with engine.connect() as conn:
                with conn.begin():
                    conn.exec_driver_sql("BEGIN IMMEDIATE")  # the file's write lock, taken up front
                    result = fn(conn)
                    if cancelled.is_set():
                        raise _Abandoned  # rolls back: nobody is waiting for the result
                return result

        async def in_thread() -> T:
            cancelled = threading.Event()
            done = asyncio.get_running_loop().run_in_executor(None, transaction, cancelled)
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                cancelled.set()
                try:
                    committed = await done
                except BaseException:
                    raise asyncio.CancelledError from None
                if undo is not None:
                    await undo(committed)
                raise

        return await with_retries(in_thread, what=what)

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
    ) -> Job:
        """Create a pending job of ``entity_ids``, all or nothing.

        ``entity_ids`` may be any iterable, including a generator over a huge file:
        IDs are validated and inserted in batches inside one transaction, so a bad
        ID on the millionth line leaves the database exactly as it was.
        """
        entity_type = _check_label("entity_type", entity_type)
        provider = _check_label("provider", provider)
        chunk_size = _check_int("chunk_size", chunk_size, 1, MAX_CHUNK_SIZE)
        priority = _check_int("priority", priority, -MAX_PRIORITY, MAX_PRIORITY)
        max_workers = _check_int("max_workers", max_workers, 1, 1000)
        max_attempts = _check_int("max_attempts", max_attempts, 1, 100)
        if max_errors is not None:
            max_errors = _check_int("max_errors", max_errors, 0, 2**62)
        if max_error_ratio is not None and not (
            isinstance(max_error_ratio, int | float) and 0 < max_error_ratio <= 1
        ):
            raise InvalidInput(f"max_error_ratio must be a fraction in (0, 1], got {max_error_ratio!r}")
        if name is not None:
            name = name.strip() or None
            if name is not None and (len(name) > 200 or "\x00" in name):
                raise InvalidInput("name must be at most 200 characters with no NUL bytes")
        if params is not None and not isinstance(params, dict):
            raise InvalidInput("params must be a JSON object (a dict)")
        if params:
            try:  # caught here, not as a driver error with the SQL in it (PostgreSQL also rejects NaN)
                json.dumps(params, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"params must be plain JSON (no NaN/Infinity): {exc}") from None
        if isinstance(entity_ids, str | bytes):
            raise InvalidInput("entity_ids must be a list of IDs, not a single string")
        try:
            iterator = iter(entity_ids)
        except TypeError:
            raise InvalidInput(f"entity_ids must be a list of strings, got {type(entity_ids).__name__}") from None
        if isinstance(entity_ids, list | tuple):
            # Validate a materialised list before taking any lock.
            cleaned = [clean_entity_id(v, i) for i, v in enumerate(entity_ids, 1)]
            if not cleaned:
                raise InvalidInput("no entity IDs: a job needs at least one")
            iterator = iter(cleaned)
        else:
            # A stream is validated as it is inserted: the first bad ID rolls everything back.
            iterator = (clean_entity_id(v, i) for i, v in enumerate(iterator, 1))

        async def op(conn: AsyncConnection) -> int:
            now = self.now()
            job_id = (
                await conn.execute(
                    insert(s.jobs)
                    .values(
                        name=name, entity_type=entity_type, provider=provider, status=PENDING,
                        chunk_size=chunk_size, priority=priority, max_workers=max_workers,
                        max_attempts=max_attempts, max_errors=max_errors, max_error_ratio=max_error_ratio,
                        total_count=0, next_pos=0, next_chunk=0, leased_chunks=0, processed_count=0,
                        succeeded_count=0, failed_count=0, waiting_count=0, error_count=0, dead_chunks=0,
                        created_at=now, updated_at=now, parent_id=parent_id, params=params or {},
                    )
                    .returning(s.jobs.c.id)
                )
            ).scalar_one()
            total = await self._insert_ids(conn, job_id, iterator, dedupe)
            if total == 0:
                raise InvalidInput("no entity IDs: a job needs at least one")
            await conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(total_count=total))
            return job_id

        # Not retried: a generator cannot be replayed.
        try:
            async with self._write() as conn:
                job_id = await op(conn)
        except DBAPIError as exc:  # an OSError from the caller's own ID source is theirs to report
            if isinstance(exc, IntegrityError):
                raise
            raise DatabaseUnavailable(f"enqueue failed, nothing was created: {describe_db_error(exc)}") from exc
        return await self.get_job(job_id)

    async def _insert_ids(self, conn: AsyncConnection, job_id: int, ids: Iterable[str], dedupe: bool) -> int:
        """Insert already-validated IDs in batches; returns how many were kept."""
        seen: set[str] | None = set() if dedupe else None
        batch: list[tuple[int, int, str]] = []
        pos = 0
        for v in ids:
            if seen is not None:
                if v in seen:
                    continue
                seen.add(v)
            batch.append((job_id, pos, v))
            pos += 1
            if len(batch) >= _INSERT_BATCH:
                await self._insert_rows(conn, batch)
                batch = []
        if batch:
            await self._insert_rows(conn, batch)
        return pos

    async def _insert_rows(self, conn: AsyncConnection, rows: list[tuple[int, int, str]]) -> None:
        """Entity rows go to the driver as plain tuples, inside the caller's transaction.

        SQLAlchemy's per-row parameter handling would cost more than the insert itself:
        SQLite gets one ``executemany``, PostgreSQL one ``COPY``.
        """
        if self.is_postgres:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                s.entities.name, records=rows, columns=("job_id", "pos", "entity_id"))
        else:
            await conn.exec_driver_sql(
                f"INSERT INTO {s.entities.name} (job_id, pos, entity_id) VALUES (?, ?, ?)", rows)

    # ------------------------------------------------------------------ claim

    def _claimable(self, now: float) -> Any:
        j = s.jobs.c
        return and_(
            _status_in(ACTIVE_STATUSES),
            j.leased_chunks < j.max_workers,
            or_(j.next_pos < j.total_count, j.next_retry_at <= now),
        )

    def _expired_lease(self, now: Any) -> Any:
        """A leased chunk of a live job whose worker stopped renewing: free for anyone to take."""
        c, j = s.chunks.c, s.jobs.c
        return and_(c.state == "leased", c.lease_expires_at < now, j.status.in_(ACTIVE_STATUSES))

    async def _claim(self, job_id: int | None = None) -> Claim | None:
        def op(conn: Connection) -> Claim | None:
            if self.is_postgres:
                # A claim lost in a server crash only hands its chunk out again, and the chunk's
                # commit (synchronous) flushes the WAL up to and past it: no need to wait for a flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            now = self.now()
            checked_stale = False
            if job_id is not None or now >= self._next_stale_check:
                checked_stale = True
                self._next_stale_check = now + min(self.lease_seconds / 2, _STALE_CHECK_SECONDS)
                claim = self._reclaim_expired(conn, now, job_id)
                if claim is not None:
                    return claim
            claim = self._claim_fresh(conn, now, job_id)
            if claim is None and not checked_stale:
                self._next_stale_check = now + min(self.lease_seconds / 2, _STALE_CHECK_SECONDS)
                claim = self._reclaim_expired(conn, now, job_id)
            return claim

        return await self._run_write_sync(op, "claiming a chunk", undo=self._release_claimed)

    def _claim_fresh(self, conn: Connection, now: float, job_id: int | None) -> Claim | None:
        j = s.jobs.c
        params = {"p_now": now, "p_owner": self.owner, "p_until": now + self.lease_seconds, "p_job": job_id}
        row = conn.execute(self._statement("claim" if job_id is None else "claim_job"), params).first()
        if row is None and self.is_postgres:
            # Every candidate was locked by a worker in mid-transaction (SKIP LOCKED passed it
            # by): wait for that transaction rather than report that there is no work.
            row = conn.execute(self._statement("claim_wait" if job_id is None else "claim_job_wait"), params).first()
        if row is None:
            return None
        job = _job(row)
        index = row.next_chunk - 1
        if row.is_retry:
            r = s.retries.c
            pick = (
                select(r.pos)
                .where(r.job_id == job.id, r.chunk_index.is_(None), r.due_at <= now)
                .order_by(r.due_at, r.pos)
                .limit(row.chunk_size)
            )
            picked = (
                conn.execute(
                    update(s.retries)
                    .where(r.job_id == job.id, r.pos.in_(pick))
                    .values(chunk_index=index)
                    .returning(r.pos, r.entity_id, r.attempt)
                )
            ).all()
            items = sorted((Item(p.pos, p.entity_id, p.attempt) for p in picked), key=lambda i: i.pos)
            conn.execute(
                update(s.jobs).where(j.id == job.id).values(next_retry_at=self._next_retry_subquery(job.id))
            )
            start = end = None
        else:
            end = min(row.next_pos, row.total_count)
            start = row.next_pos - row.chunk_size
            items = self._range_items(conn, job.id, start, end)
        conn.execute(self._statement("lease"), {
            "job_id": job.id, "chunk_index": index, "kind": "retry" if row.is_retry else "range",
            "start_pos": start, "end_pos": end, "size": len(items), "state": "leased", "owner": self.owner,
            "attempt": 1, "lease_expires_at": now + self.lease_seconds, "started_at": now, "ok": 0, "errors": 0,
        })
        return Claim(job, index, "retry" if row.is_retry else "range", 1, self.owner, items, now)

    def _reclaim_expired(self, conn: Connection, now: float, job_id: int | None) -> Claim | None:
        """Take over a chunk whose worker stopped renewing its lease: nothing stays stuck."""
        c, j = s.chunks.c, s.jobs.c
        q = (
            select(c.job_id, c.chunk_index, c.attempt)
            .select_from(s.chunks.join(s.jobs, j.id == c.job_id))
            .where(self._expired_lease(now))
            .order_by(j.priority.desc(), j.id, c.chunk_index)
            .limit(1)
        )
        if job_id is not None:
            q = q.where(c.job_id == job_id)
        if self.is_postgres:
            q = q.with_for_update(of=s.chunks, skip_locked=True)
        found = (conn.execute(q)).first()
        if found is None:
            return None
        chunk = (
            conn.execute(
                update(s.chunks)
                .where(
                    c.job_id == found.job_id, c.chunk_index == found.chunk_index,
                    c.state == "leased", c.attempt == found.attempt,
                )
                .values(owner=self.owner, attempt=c.attempt + 1, lease_expires_at=now + self.lease_seconds,
                        started_at=now)
                .returning(*s.chunks.c)
            )
        ).first()
        if chunk is None:
            return None
        row = (
            conn.execute(
                update(s.jobs)
                .where(j.id == found.job_id)
                .values(status=RUNNING, updated_at=now, lease_owner=self.owner,
                        lease_expires_at=now + self.lease_seconds, heartbeat_at=now)
                .returning(*s.jobs.c)
            )
        ).first()
        assert row is not None
        if chunk.kind == "retry":
            r = s.retries.c
            rows = (
                conn.execute(
                    select(r.pos, r.entity_id, r.attempt)
                    .where(r.job_id == chunk.job_id, r.chunk_index == chunk.chunk_index)
                    .order_by(r.pos)
                )
            ).all()
            items = [Item(p.pos, p.entity_id, p.attempt) for p in rows]
        else:
            items = self._range_items(conn, chunk.job_id, chunk.start_pos, chunk.end_pos)
        log.info("reclaimed chunk %s of job %s (lease of a silent worker expired)", chunk.chunk_index, chunk.job_id)
        return Claim(_job(row), chunk.chunk_index, chunk.kind, chunk.attempt, self.owner, items, now)

    def _range_items(self, conn: Connection, job_id: int, start: int, end: int) -> list[Item]:
        rows = conn.execute(self._statement("range"), {"p_job": job_id, "p_start": start, "p_end": end}).all()
        return [Item(p, eid, 1) for p, eid in rows]

    def _statement(self, name: str) -> Any:
        """The hot path's statements, built once per queue; a chunk's own values are bound parameters.

        Building a SQLAlchemy expression and its cache key costs more CPU than SQLite
        takes to run it, so claim and commit never rebuild theirs.
        """
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = self._build_statement(name)
        return stmt

    def _build_statement(self, name: str) -> Any:
        j, c, e = s.jobs.c, s.chunks.c, s.entities.c
        now = bindparam("p_now", type_=Float)
        if name.startswith("claim"):
            cand = select(j.id).where(self._claimable(now))
            if name.startswith("claim_job"):
                cand = cand.where(j.id == bindparam("p_job", type_=BigInteger))
            cand = cand.order_by(j.priority.desc(), j.id).limit(1)
            if self.is_postgres:
                cand = cand.with_for_update(skip_locked=not name.endswith("_wait"))
            retry_due = and_(j.next_retry_at.is_not(None), j.next_retry_at <= now)
            return (
                update(s.jobs)
                .where(j.id == cand.scalar_subquery(), self._claimable(now))
                .values(
                    next_pos=case((retry_due, j.next_pos), else_=j.next_pos + j.chunk_size),
                    next_chunk=j.next_chunk + 1,
                    leased_chunks=j.leased_chunks + 1,
                    status=RUNNING,
                    started_at=func.coalesce(j.started_at, now),
                    updated_at=now,
                    lease_owner=bindparam("p_owner", type_=Text),
                    lease_expires_at=bindparam("p_until", type_=Float),
                    heartbeat_at=now,
                )
                .returning(*s.jobs.c, case((retry_due, 1), else_=0).label("is_retry"))
            )
        if name == "range":
            return (
                select(e.pos, e.entity_id)
                .where(e.job_id == bindparam("p_job", type_=BigInteger),
                       e.pos >= bindparam("p_start", type_=BigInteger), e.pos < bindparam("p_end", type_=BigInteger))
                .order_by(e.pos)
            )
        if name == "lease":
            return insert(s.chunks)
        if name == "fence":
            return (
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
        if name == "book":
            return self._book_statement()
        raise KeyError(name)

    def _book_statement(self) -> Any:
        """The job row's update for a finished chunk: counters, and the status it leads to."""
        j = s.jobs.c
        job_id = bindparam("p_job", type_=BigInteger)
        ok, errors = bindparam("p_ok", type_=Integer), bindparam("p_errors", type_=Integer)
        failed, processed = bindparam("p_failed", type_=Integer), bindparam("p_processed", type_=Integer)
        dwait = bindparam("p_dwait", type_=Integer)
        dead, aborted = bindparam("p_dead", type_=Boolean), bindparam("p_aborted", type_=Boolean)
        retry_chunk = bindparam("p_retry_chunk", type_=Boolean)
        now = bindparam("p_now", type_=Float)
        left = j.leased_chunks - 1
        live = _status_in((PENDING, RUNNING, PAUSED))
        done_all = and_(j.next_pos >= j.total_count, left == 0, j.waiting_count + dwait == 0)
        new_failed = j.failed_count + failed
        new_processed = j.processed_count + processed
        breaker = and_(dead, j.dead_chunks + 1 >= self.breaker_chunks)
        budget = or_(
            and_(j.max_errors.is_not(None), new_failed > j.max_errors),
            and_(j.max_error_ratio.is_not(None), new_processed >= j.chunk_size,
                 new_failed > j.max_error_ratio * new_processed),
        )
        status = case(
            (and_(aborted, live), FAILED),
            (and_(live, done_all), COMPLETE),
            (and_(_status_in((PENDING, RUNNING)), or_(breaker, budget)), PAUSED),
            (and_(j.status == RUNNING, left == 0), PENDING),
            else_=j.status,
        )
        reason = case(
            (and_(aborted, live), bindparam("p_reason", type_=Text)),
            (and_(live, done_all), j.fail_reason),
            (and_(_status_in((PENDING, RUNNING)), breaker),
             literal(f"circuit breaker: the last {self.breaker_chunks} chunks failed for every entity")),
            (and_(_status_in((PENDING, RUNNING)), budget),
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
        return update(s.jobs).where(j.id == job_id).values(**values).returning(j.status)

    def _next_retry_subquery(self, job_id: int) -> Any:
        r = s.retries.c
        return (
            select(func.min(r.due_at))
            .where(r.job_id == job_id, r.chunk_index.is_(None))
            .scalar_subquery()
        )

    # ------------------------------------------------------------------ lease upkeep

    async def _renew(self, claim: Claim) -> bool:
        """Extend the lease; False when it was lost (another worker took the chunk)."""

        async def op(conn: AsyncConnection) -> bool:
            now = self.now()
            c = s.chunks.c
            got = (
                await conn.execute(
                    update(s.chunks)
                    .where(c.job_id == claim.job.id, c.chunk_index == claim.chunk_index,
                           c.attempt == claim.attempt, c.state == "leased")
                    .values(lease_expires_at=now + self.lease_seconds)
                    .returning(c.chunk_index)
                )
            ).first()
            if got is not None:
                await conn.execute(
                    update(s.jobs)
                    .where(s.jobs.c.id == claim.job.id)
                    .values(lease_owner=self.owner, lease_expires_at=now + self.lease_seconds, heartbeat_at=now)
                )
            return got is not None

        return bool(await self._run_write(op, "renewing a lease"))

    async def _heartbeat(self, claim: Claim) -> None:
        """Renew the lease while the chunk runs; once it is lost, the fenced commit will say so."""
        interval = max(self.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._renew(claim):
                    log.warning("lost the lease on chunk %s of job %s", claim.chunk_index, claim.job.id)
                    return
            except DatabaseUnavailable as exc:
                log.warning("could not renew lease: %s", exc)

    async def _release(self, claim: Claim) -> None:
        """Give a chunk back at once (expire its lease) so any worker redoes it."""

        async def op(conn: AsyncConnection) -> None:
            c = s.chunks.c
            await conn.execute(
                update(s.chunks)
                .where(c.job_id == claim.job.id, c.chunk_index == claim.chunk_index,
                       c.attempt == claim.attempt, c.state == "leased")
                .values(lease_expires_at=0.0)
            )
            await conn.execute(
                update(s.jobs).where(s.jobs.c.id == claim.job.id).values(lease_expires_at=0.0, updated_at=self.now())
            )

        await self._run_write(op, "releasing a lease")
        self._next_stale_check = 0.0

    async def _release_claimed(self, claim: Claim | None) -> None:
        if claim is not None:
            await self._release(claim)

    # ------------------------------------------------------------------ processing

    async def process_next_chunk(
        self, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> ChunkResult | None:
        """Claim the best claimable chunk of any job and run it; None when there is none."""
        processor = Processor.coerce(on_process)
        claim = await self._claim()
        if claim is None:
            return None
        return await self._run_claim(claim, processor, on_entity)

    async def process_chunk(
        self, job_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> ChunkResult | None:
        """Run the next chunk of one given job (the dashboard's step).

        Raises ``InvalidTransition`` when the job cannot run (paused, finished);
        returns None when it is active but has nothing claimable right now (all
        its chunks are leased by other workers, or its retries are not yet due).
        """
        processor = Processor.coerce(on_process)
        job = await self.get_job(job_id)
        if job.status not in ACTIVE_STATUSES:
            raise InvalidTransition(f"job {job_id} is {job.status}; nothing to process")
        claim = await self._claim(job_id)
        if claim is None:
            return None
        return await self._run_claim(claim, processor, on_entity)

    async def _run_claim(
        self, claim: Claim, processor: Processor, on_entity: EntityHook | None
    ) -> ChunkResult:
        limiter = self._limiter_for(processor, claim.job)
        runner = ChunkRunner(processor, claim.job, on_entity=on_entity, before_call=limiter)
        heartbeat = asyncio.create_task(self._heartbeat(claim))
        t0 = time.perf_counter()
        abort: str | None = None
        try:
            outcomes = await runner.run(claim.items)
        except ChunkAborted as exc:
            outcomes, abort = exc.outcomes, exc.reason
        except BaseException:
            heartbeat.cancel()
            try:
                await asyncio.shield(self._release(claim))
            except Exception as exc:  # the lease will expire on its own
                log.warning("could not release chunk %s of job %s: %s", claim.chunk_index, claim.job.id, exc)
            raise
        finally:
            heartbeat.cancel()
        duration = time.perf_counter() - t0
        return await self._commit(claim, outcomes, duration, abort, processor)

    async def _commit(
        self, claim: Claim, outcomes: Sequence[Outcome], duration: float, abort: str | None,
        processor: Processor,
    ) -> ChunkResult:
        job = claim.job
        max_attempts = job.max_attempts
        ok = sum(1 for o in outcomes if o.ok)
        failures = [o for o in outcomes if not o.ok]
        to_retry = [o for o in failures if o.transient and o.item.attempt < max_attempts]
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
        dead = abort is None and claim.kind == "range" and n_items > 0 and ok == 0 and len(failures) == n_items

        def op(conn: Connection) -> ChunkResult:
            now = self.now()
            j = s.jobs.c
            fenced = conn.execute(self._statement("fence"), {
                "p_job": job.id, "p_index": claim.chunk_index, "p_attempt": claim.attempt,
                "p_state": "aborted" if abort else "done", "p_now": now, "p_duration": duration,
                "p_ok": ok, "p_errors": len(failures), "p_owner": self.owner,
            }).first()
            if fenced is None:
                # Another worker took this chunk over: its results win, ours are dropped.
                current = (conn.execute(select(j.status).where(j.id == job.id))).scalar()
                return ChunkResult(job.id, claim.chunk_index, 0, 0, current or job.status, duration,
                                   committed=False)
            retry_rows = []
            if failures:
                retrying = {id(o) for o in to_retry}
                rows = []
                for o in failures:
                    is_retry = id(o) in retrying
                    rows.append({
                        "job_id": job.id, "pos": o.item.pos, "entity_id": o.item.entity_id,
                        "error_type": o.error_type, "message": o.message[:10_000],
                        "traceback": o.traceback[:100_000], "stacks": _stacks_json(o.stacks),
                        "chunk_index": claim.chunk_index, "attempt": o.item.attempt,
                        "final": not is_retry, "created_at": now,
                    })
                    if is_retry:
                        delay = o.retry_after if o.retry_after is not None else processor.backoff(o.item.attempt)
                        retry_rows.append({"job_id": job.id, "pos": o.item.pos, "entity_id": o.item.entity_id,
                                           "attempt": o.item.attempt + 1, "due_at": now + max(delay, 0.0)})
                conn.execute(insert(s.errors), rows)
            touched_retries = bool(retry_rows) or claim.kind == "retry"
            if claim.kind == "retry" and abort is None:
                r = s.retries.c
                conn.execute(
                    delete(s.retries).where(r.job_id == job.id, r.chunk_index == claim.chunk_index)
                )
                recovered = [o.item.pos for o in outcomes if o.ok]
                if recovered:
                    # The entity got through after all: its earlier transient errors are history,
                    # no longer part of "what is broken" (the log keeps them, marked resolved).
                    er = s.errors.c
                    conn.execute(update(s.errors)
                                 .where(er.job_id == job.id, er.pos.in_(recovered), er.resolved_at.is_(None))
                                 .values(resolved_at=now))
            if retry_rows:
                conn.execute(insert(s.retries), retry_rows)

            new = conn.execute(self._statement("book"), {
                "p_job": job.id, "p_now": now, "p_ok": ok, "p_errors": len(failures), "p_failed": final_fail,
                "p_processed": processed, "p_dwait": dwait, "p_dead": dead, "p_retry_chunk": claim.kind == "retry",
                "p_aborted": abort is not None, "p_reason": f"JobFailed: {abort}",
            }).scalar_one()
            if touched_retries:
                # Its own statement, run once the job row's lock is ours: on PostgreSQL a subquery
                # inside the UPDATE above reads a snapshot from before it waited for that lock, so it
                # missed retries a concurrent chunk of this job had just committed, and set NULL.
                conn.execute(update(s.jobs).where(j.id == job.id)
                             .values(next_retry_at=self._next_retry_subquery(job.id)))
            return ChunkResult(job.id, claim.chunk_index, processed, len(failures), new, duration,
                               retried=len(to_retry))

        result: ChunkResult = await self._run_write_sync(op, "committing a chunk")
        if not result.committed:
            log.warning("chunk %s of job %s was taken over by another worker; results discarded",
                        claim.chunk_index, job.id)
        return result

    # ------------------------------------------------------------------ rate limits

    def _limiter_for(self, processor: Processor, job: Job) -> Any:
        rate = processor.rate_limits.get(job.provider)
        job_rate = job.params.get("rate_limit") if isinstance(job.params, dict) else None
        if isinstance(job_rate, int | float) and job_rate > 0:
            rate = job_rate if rate is None else min(rate, float(job_rate))
        if not rate:
            return None
        provider = job.provider

        async def before_call() -> None:
            await self.acquire_token(provider, float(rate))

        return before_call

    async def acquire_token(self, provider: str, rate: float, burst: float = 1.0) -> None:
        """Wait for one call's worth of a provider's shared token bucket.

        The bucket lives in the database, so every worker on every host that uses
        this database draws from the same one.
        """
        rl = s.rate_limits.c
        while True:

            async def op(conn: AsyncConnection) -> float:
                now = self.now()
                row = (await conn.execute(select(rl.tokens, rl.updated_at).where(rl.provider == provider))).first()
                if row is None:
                    await conn.execute(
                        insert(s.rate_limits).values(provider=provider, rate=rate, burst=burst,
                                                     tokens=burst - 1.0, updated_at=now)
                    )
                    return 0.0
                tokens = min(burst, row.tokens + max(now - row.updated_at, 0.0) * rate)
                if tokens >= 1.0:
                    await conn.execute(
                        update(s.rate_limits).where(rl.provider == provider)
                        .values(tokens=tokens - 1.0, updated_at=now, rate=rate, burst=burst)
                    )
                    return 0.0
                return (1.0 - tokens) / rate

            if self.is_postgres:
                wait = await self._run_write(self._locked_bucket(provider, op), "rate limiting")
            else:
                wait = await self._run_write(op, "rate limiting")
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def _locked_bucket(self, provider: str, op: Any) -> Any:
        async def locked(conn: AsyncConnection) -> float:
            # Serialise bucket updates per provider across hosts (the row may not exist yet).
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": "chunkq:" + provider})
            return float(await op(conn))

        return locked

    # ------------------------------------------------------------------ job control

    async def _transition(self, job_id: int, allowed: tuple[str, ...], values: dict[str, Any], verb: str) -> Job:
        async def op(conn: AsyncConnection) -> bool:
            j = s.jobs.c
            got = (
                await conn.execute(
                    update(s.jobs)
                    .where(j.id == job_id, j.status.in_(allowed))
                    .values(updated_at=self.now(), **values)
                    .returning(j.id)
                )
            ).first()
            return got is not None

        _check_id(job_id)
        if not await self._run_write(op, f"{verb} job {job_id}"):
            job = await self.get_job(job_id)  # raises JobNotFound
            raise InvalidTransition(f"cannot {verb} job {job_id}: it is {job.status}")
        return await self.get_job(job_id)

    async def pause(self, job_id: int) -> Job:
        """Stop handing out chunks of a job; a chunk in flight still commits."""
        return await self._transition(job_id, (PENDING, RUNNING), {"status": PAUSED, "fail_reason": None}, "pause")

    async def resume(self, job_id: int) -> Job:
        j = s.jobs.c
        return await self._transition(
            job_id,
            (PAUSED,),
            {"status": case((j.leased_chunks > 0, RUNNING), else_=PENDING), "dead_chunks": 0, "fail_reason": None},
            "resume",
        )

    async def cancel(self, job_id: int) -> Job:
        return await self._transition(
            job_id, (PENDING, RUNNING, PAUSED), {"status": CANCELLED, "finished_at": self.now()}, "cancel"
        )

    async def retry_failed(self, job_id: int) -> Job:
        """A new job (``parent_id`` = this one) of every entity that did not succeed.

        That is the entities that failed for good and, for a failed or cancelled
        job, those never finished. Only first-time errors are counted once.
        """
        job = await self.get_job(job_id)
        j, e, er, c, r = s.jobs.c, s.entities.c, s.errors.c, s.chunks.c, s.retries.c
        parts: list[Any] = [
            select(er.pos, er.entity_id).where(er.job_id == job_id, er.final.is_(True), er.resolved_at.is_(None))
        ]
        if job.status in (FAILED, CANCELLED):
            next_pos = (await self._run_read(
                lambda conn: _scalar(conn, select(j.next_pos).where(j.id == job_id)), "reading a job"))
            parts.append(select(e.pos, e.entity_id).where(e.job_id == job_id, e.pos >= next_pos))
            parts.append(
                select(e.pos, e.entity_id)
                .select_from(s.entities.join(
                    s.chunks, and_(c.job_id == e.job_id, e.pos >= c.start_pos, e.pos < c.end_pos)))
                .where(e.job_id == job_id, c.kind == "range", c.state.in_(("leased", "aborted")))
            )
            parts.append(select(r.pos, r.entity_id).where(r.job_id == job_id))
        src = union(*parts).subquery() if len(parts) > 1 else parts[0].distinct().subquery()

        async def op(conn: AsyncConnection) -> int:
            now = self.now()
            new_id = (
                await conn.execute(
                    insert(s.jobs).values(
                        name=f"retry of {job.name or '#' + str(job.id)}"[:200], entity_type=job.entity_type,
                        provider=job.provider, status=PENDING, chunk_size=job.chunk_size, priority=job.priority,
                        max_workers=job.max_workers, max_attempts=job.max_attempts, max_errors=job.max_errors,
                        max_error_ratio=job.max_error_ratio, total_count=0, next_pos=0, next_chunk=0,
                        leased_chunks=0, processed_count=0, succeeded_count=0, failed_count=0, waiting_count=0,
                        error_count=0, dead_chunks=0, created_at=now, updated_at=now, parent_id=job.id,
                        params=job.params,
                    ).returning(j.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(s.entities).from_select(
                    ["job_id", "pos", "entity_id"],
                    select(literal(new_id), func.row_number().over(order_by=src.c.pos) - 1, src.c.entity_id),
                )
            )
            total = await _scalar(conn, select(func.count()).where(e.job_id == new_id))
            if not total:
                raise InvalidInput(f"job {job_id} has no failed entities to retry")
            await conn.execute(update(s.jobs).where(j.id == new_id).values(total_count=total))
            return int(new_id)

        new_id = await self._run_write(op, f"retrying job {job_id}")
        return await self.get_job(new_id)

    async def requeue_failed(self, job_id: int) -> Job:
        """Put a job's failed entities back into the same job, due now, with fresh attempts."""
        job = await self.get_job(job_id)
        if job.status == CANCELLED:
            raise InvalidTransition(f"cannot requeue failures of job {job_id}: it is cancelled")

        async def op(conn: AsyncConnection) -> int:
            now = self.now()
            er, j = s.errors.c, s.jobs.c
            rows = (
                await conn.execute(
                    select(er.pos, func.min(er.entity_id).label("entity_id"))
                    .where(er.job_id == job_id, er.final.is_(True), er.resolved_at.is_(None))
                    .group_by(er.pos)
                )
            ).all()
            if not rows:
                raise InvalidInput(f"job {job_id} has no failed entities to retry")
            await conn.execute(
                insert(s.retries),
                [{"job_id": job_id, "pos": p.pos, "entity_id": p.entity_id, "attempt": 1, "due_at": now}
                 for p in rows],
            )
            await conn.execute(
                update(s.errors).where(er.job_id == job_id, er.final.is_(True), er.resolved_at.is_(None))
                .values(final=False)
            )
            n = len(rows)
            await conn.execute(
                update(s.jobs).where(j.id == job_id).values(
                    failed_count=j.failed_count - n, processed_count=j.processed_count - n,
                    waiting_count=j.waiting_count + n, next_retry_at=now, dead_chunks=0,
                    status=case((j.status.in_((COMPLETE, FAILED)), PENDING), else_=j.status),
                    fail_reason=case((j.status == FAILED, None), else_=j.fail_reason),
                    finished_at=None, updated_at=now,
                )
            )
            return n

        await self._run_write(op, f"requeueing failures of job {job_id}")
        return await self.get_job(job_id)

    async def retry_entity(
        self, error_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> EntityResult:
        """Run the callback on one failed entity now; on success its errors are marked resolved."""
        err = await self.get_error(error_id)
        job = await self.get_job(err.job_id)
        processor = Processor.coerce(on_process)
        pos = await self._run_read(
            lambda conn: _scalar(conn, select(s.errors.c.pos).where(s.errors.c.id == error_id)), "reading an error")
        item = Item(int(pos), err.entity_id, err.attempt + 1)
        runner = ChunkRunner(processor, job, on_entity=on_entity)
        try:
            outcomes = await runner.run([item])
        except ChunkAborted as exc:
            raise InvalidTransition(f"the callback raised JobFailed: {exc.reason}") from None
        outcome = outcomes[0]

        async def op(conn: AsyncConnection) -> None:
            now = self.now()
            er, j, r = s.errors.c, s.jobs.c, s.retries.c
            if outcome.ok:
                finals = (
                    await conn.execute(
                        update(s.errors)
                        .where(er.job_id == job.id, er.pos == item.pos, er.resolved_at.is_(None))
                        .values(resolved_at=now)
                        .returning(er.final)
                    )
                ).scalars().all()
                waiting = (
                    await conn.execute(
                        delete(s.retries)
                        .where(r.job_id == job.id, r.pos == item.pos, r.chunk_index.is_(None))
                        .returning(r.pos)
                    )
                ).first()
                values: dict[str, Any] = {"updated_at": now}
                if any(finals):
                    values.update(failed_count=j.failed_count - 1, succeeded_count=j.succeeded_count + 1)
                elif waiting is not None:
                    values.update(waiting_count=j.waiting_count - 1, processed_count=j.processed_count + 1,
                                  succeeded_count=j.succeeded_count + 1)
                await conn.execute(update(s.jobs).where(j.id == job.id).values(**values))
                if waiting is not None:
                    # Once the job row is locked (see _commit: a subquery in the UPDATE above could
                    # read a snapshot from before the lock wait on PostgreSQL).
                    await conn.execute(update(s.jobs).where(j.id == job.id)
                                       .values(next_retry_at=self._next_retry_subquery(job.id)))
            else:
                await conn.execute(
                    insert(s.errors).values(
                        job_id=job.id, pos=item.pos, entity_id=item.entity_id, error_type=outcome.error_type,
                        message=outcome.message[:10_000], traceback=outcome.traceback[:100_000],
                        stacks=_stacks_json(outcome.stacks), chunk_index=-1, attempt=item.attempt,
                        final=err.final, created_at=now,
                    )
                )
                await conn.execute(
                    update(s.jobs).where(j.id == job.id).values(error_count=j.error_count + 1, updated_at=now)
                )

        await self._run_write(op, "recording a retry")
        return EntityResult(item.entity_id, outcome.ok, outcome.error_type or None, outcome.message or None,
                            outcome.traceback or None, None, outcome.duration, outcome.stacks)

    async def dry_run(
        self, job_id: int, on_process: ProcessorLike = None, *, on_entity: EntityHook | None = None
    ) -> list[EntityResult]:
        """Run the job's next chunk through the callback and write nothing at all.

        For callbacks that are safe to repeat: the job does not advance and no error is stored.
        """
        job = await self.get_job(job_id)
        processor = Processor.coerce(on_process)

        async def read(conn: AsyncConnection) -> list[Item]:
            j, r = s.jobs.c, s.retries.c
            row = (await conn.execute(select(j.next_pos, j.total_count).where(j.id == job_id))).one()
            due = (
                await conn.execute(
                    select(r.pos, r.entity_id, r.attempt)
                    .where(r.job_id == job_id, r.chunk_index.is_(None), r.due_at <= self.now())
                    .order_by(r.due_at, r.pos).limit(job.chunk_size)
                )
            ).all()
            if due:
                return [Item(p.pos, p.entity_id, p.attempt) for p in due]
            end = min(row.next_pos + job.chunk_size, row.total_count)
            return await conn.run_sync(lambda sync: self._range_items(sync, job_id, row.next_pos, end))

        items = await self._run_read(read, "reading the next chunk")
        if not items:
            raise InvalidTransition(f"job {job_id} has no chunk left to run")
        runner = ChunkRunner(processor, job, on_entity=on_entity)
        try:
            outcomes = await runner.run(items)
        except ChunkAborted as exc:
            outcomes = exc.outcomes
        return [
            EntityResult(o.item.entity_id, o.ok, o.error_type or None, o.message or None, o.traceback or None,
                         None, o.duration, o.stacks)
            for o in outcomes
        ]

    # ------------------------------------------------------------------ reads

    async def get_job(self, job_id: int) -> Job:
        _check_id(job_id)
        row = await self._run_read(
            lambda conn: _first(conn, select(s.jobs).where(s.jobs.c.id == job_id)), "reading a job"
        )
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def _jobs_query(self, status: str | Sequence[str] | None, search: str | None) -> Any:
        j = s.jobs.c
        q = select(s.jobs)
        if status:
            wanted = [status] if isinstance(status, str) else list(status)
            unknown = [x for x in wanted if x not in STATUSES]
            if unknown:
                raise InvalidInput(f"unknown status {unknown[0]!r}; expected one of {', '.join(STATUSES)}")
            q = q.where(j.status.in_(wanted))
        if search:
            like = f"%{search.strip().lower()}%"
            q = q.where(or_(func.lower(j.name).like(like), func.lower(j.provider).like(like),
                            func.lower(j.entity_type).like(like)))
        return q

    async def list_jobs(
        self,
        status: str | Sequence[str] | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        changed_since: float | None = None,
        search: str | None = None,
    ) -> list[Job]:
        """Jobs, active first then newest; ``changed_since`` (epoch seconds) returns only what changed.

        With ``changed_since`` a live view's refresh costs the same with 10 or 10,000
        jobs. On PostgreSQL concurrent transactions may commit out of timestamp
        order, so poll with a small overlap (the dashboard uses 2 s).
        """
        _check_int("limit", limit, 0, 100_000)
        _check_int("offset", offset, 0, 2**62)
        j = s.jobs.c
        q = self._jobs_query(status, search)
        if changed_since is not None:
            q = q.where(j.updated_at >= float(changed_since)).order_by(j.updated_at, j.id)
        else:
            rank = case({RUNNING: 0, PENDING: 1, PAUSED: 2, FAILED: 3, COMPLETE: 4, CANCELLED: 5}, value=j.status)
            q = q.order_by(rank, j.id.desc())
        q = q.limit(limit).offset(offset)
        rows = await self._run_read(lambda conn: _all(conn, q), "listing jobs")
        return [_job(r) for r in rows]

    async def count_jobs(self, status: str | Sequence[str] | None = None, *, search: str | None = None) -> int:
        sub = self._jobs_query(status, search).subquery()
        return int(await self._run_read(lambda conn: _scalar(conn, select(func.count()).select_from(sub)),
                                        "counting jobs"))

    async def list_errors(
        self,
        job_id: int,
        *,
        limit: int = 100,
        offset: int = 0,
        error_type: str | None = None,
        message: str | None = None,
        include_resolved: bool = True,
    ) -> list[ErrorEntry]:
        _check_id(job_id)
        _check_int("limit", limit, 0, 1_000_000)
        _check_int("offset", offset, 0, 2**62)
        er = s.errors.c
        q = select(s.errors).where(er.job_id == job_id)
        if error_type is not None:
            q = q.where(er.error_type == error_type)
        if message is not None:
            q = q.where(er.message == message)
        if not include_resolved:
            q = q.where(er.resolved_at.is_(None))
        q = q.order_by(er.id).limit(limit).offset(offset)

        async def op(conn: AsyncConnection) -> list[Any]:
            rows = (await conn.execute(q)).all()
            if not rows and not await _scalar(conn, select(s.jobs.c.id).where(s.jobs.c.id == job_id)):
                raise JobNotFound(job_id)
            return list(rows)

        return [_error(r) for r in await self._run_read(op, "listing errors")]

    async def iter_errors(self, job_id: int, *, page: int = 1000) -> AsyncIterator[ErrorEntry]:
        """Every error of a job, paged by id, for exports that must not hold them all."""
        er = s.errors.c
        last = 0
        await self.get_job(job_id)
        while True:
            q = select(s.errors).where(er.job_id == job_id, er.id > last).order_by(er.id).limit(page)
            rows = await self._run_read(lambda conn, q=q: _all(conn, q), "exporting errors")
            for r in rows:
                yield _error(r)
            if len(rows) < page:
                return
            last = rows[-1].id

    async def get_error(self, error_id: int) -> ErrorEntry:
        _check_id(error_id, "error id")
        row = await self._run_read(
            lambda conn: _first(conn, select(s.errors).where(s.errors.c.id == error_id)), "reading an error")
        if row is None:
            raise InvalidInput(f"no error with id {error_id}")
        return _error(row)

    async def group_errors(self, job_id: int, *, limit: int = 100, include_resolved: bool = False) -> list[ErrorGroup]:
        """Failures grouped by exception type and message, biggest group first."""
        _check_id(job_id)
        er = s.errors.c
        q = (
            select(
                er.error_type, er.message, func.count().label("n"), func.count(er.pos.distinct()).label("ents"),
                func.min(er.created_at).label("first"), func.max(er.created_at).label("last"),
            )
            .where(er.job_id == job_id)
            .group_by(er.error_type, er.message)
            .order_by(func.count().desc(), er.error_type, er.message)
            .limit(limit)
        )
        if not include_resolved:
            q = q.where(er.resolved_at.is_(None))
        rows = await self._run_read(lambda conn: _all(conn, q), "grouping errors")
        if not rows:
            await self.get_job(job_id)  # an unknown job is an error, not an empty list
        return [
            ErrorGroup(r.error_type, r.message, int(r.n), int(r.ents), to_datetime(r.first), to_datetime(r.last))  # type: ignore[arg-type]
            for r in rows
        ]

    async def list_chunks(self, job_id: int, *, limit: int = 200) -> list[ChunkInfo]:
        """The job's chunk history, newest last (the latest ``limit`` chunks)."""
        _check_id(job_id)
        c = s.chunks.c
        q = select(s.chunks).where(c.job_id == job_id).order_by(c.chunk_index.desc()).limit(limit)
        rows = await self._run_read(lambda conn: _all(conn, q), "listing chunks")
        if not rows:
            await self.get_job(job_id)  # an unknown job is an error, not an empty list
        return [
            ChunkInfo(r.job_id, r.chunk_index, r.kind, r.state, r.size, r.owner, r.attempt,
                      to_datetime(r.started_at), to_datetime(r.finished_at), r.duration, r.ok, r.errors,
                      to_datetime(r.lease_expires_at))
            for r in reversed(rows)
        ]

    async def entity_ids(self, job_id: int, *, limit: int = 1000, offset: int = 0) -> list[str]:
        e = s.entities.c
        q = (select(e.entity_id).where(e.job_id == job_id, e.pos >= offset, e.pos < offset + limit)
             .order_by(e.pos))
        return list(await self._run_read(lambda conn: _scalars(conn, q), "reading entity ids"))

    async def rate(self, job_id: int, *, window: float = 60.0) -> float:
        """Entities per second over the job's recent chunks (0 when idle)."""
        c = s.chunks.c
        since = self.now() - window
        q = select(func.sum(c.size), func.min(c.started_at), func.max(c.finished_at)).where(
            c.job_id == job_id, c.state == "done", c.finished_at >= since)
        row = await self._run_read(lambda conn: _first(conn, q), "computing a rate")
        if not row or not row[0] or row[1] is None:
            return 0.0
        span = max(row[2] - row[1], 1e-3)
        return float(row[0]) / span

    async def job_rates(self, job_ids: Sequence[int], *, window: float = 60.0) -> dict[int, float]:
        """Entities/s per job over the last ``window`` seconds of chunk history, in one query."""
        if not job_ids:
            return {}
        c = s.chunks.c
        since = self.now() - window
        q = (
            select(c.job_id, func.sum(c.size), func.min(c.started_at), func.max(c.finished_at))
            .where(c.job_id.in_(list(job_ids)), c.state == "done", c.finished_at >= since)
            .group_by(c.job_id)
        )
        rows = await self._run_read(lambda conn: _all(conn, q), "computing rates")
        return {r[0]: float(r[1]) / max(r[3] - r[2], 1e-3) for r in rows if r[1]}

    async def stats(self, *, window: float = 60.0) -> QueueStats:
        async def op(conn: AsyncConnection) -> QueueStats:
            j, c = s.jobs.c, s.chunks.c
            now = self.now()
            by_status = {k: 0 for k in STATUSES}
            for st, n in (await conn.execute(select(j.status, func.count()).group_by(j.status))).all():
                by_status[st] = int(n)
            tot = (
                await conn.execute(
                    select(func.coalesce(func.sum(j.total_count), 0), func.coalesce(func.sum(j.processed_count), 0),
                           func.coalesce(func.sum(j.error_count), 0), func.coalesce(func.sum(j.waiting_count), 0))
                )
            ).one()
            recent = (
                await conn.execute(
                    select(func.coalesce(func.sum(c.size), 0), func.min(c.started_at))
                    .where(c.state == "done", c.finished_at >= now - window)
                )
            ).one()
            rate = float(recent[0]) / max(now - recent[1], 1e-3) if recent[1] is not None and recent[0] else 0.0
            workers = (
                await conn.execute(
                    select(func.count(c.owner.distinct())).where(c.state == "leased", c.lease_expires_at >= now)
                )
            ).scalar()
            return QueueStats(by_status, int(tot[0]), int(tot[1]), int(tot[2]), int(tot[3]), rate, int(workers or 0))

        return await self._run_read(op, "reading stats")

    async def has_claimable(self) -> bool:
        """Cheap check used by idle workers before they take the write lock."""
        now = self.now()
        j, c = s.jobs.c, s.chunks.c
        q1 = select(j.id).where(self._claimable(now)).limit(1)
        q2 = (select(c.job_id).select_from(s.chunks.join(s.jobs, j.id == c.job_id))
              .where(self._expired_lease(now)).limit(1))

        async def op(conn: AsyncConnection) -> bool:
            return bool((await conn.execute(q1)).first() or (await conn.execute(q2)).first())

        return bool(await self._run_read(op, "polling for work"))


# ---------------------------------------------------------------------- row helpers


def _status_in(statuses: Iterable[str]) -> Any:
    """``status IN ('pending', 'running')`` with the names written into the SQL.

    They are constants; as bound parameters SQLAlchemy would expand the IN list
    again on every execution of the hot path's prebuilt statements.
    """
    return s.jobs.c.status.in_([literal_column(f"'{st}'") for st in statuses])


def _check_id(value: object, what: str = "job id") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 2**62:
        raise InvalidInput(f"{what} must be a positive whole number, got {value!r}")


async def _first(conn: AsyncConnection, q: Any) -> Any:
    return (await conn.execute(q)).first()


async def _all(conn: AsyncConnection, q: Any) -> list[Any]:
    return list((await conn.execute(q)).all())


async def _scalar(conn: AsyncConnection, q: Any) -> Any:
    return (await conn.execute(q)).scalar()


async def _scalars(conn: AsyncConnection, q: Any) -> list[Any]:
    return list((await conn.execute(q)).scalars().all())


def _job(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=m["id"], name=m["name"], entity_type=m["entity_type"], provider=m["provider"], status=m["status"],
        chunk_size=m["chunk_size"], priority=m["priority"], total_count=m["total_count"],
        processed_count=m["processed_count"], error_count=m["error_count"],
        created_at=to_datetime(m["created_at"]), updated_at=to_datetime(m["updated_at"]),  # type: ignore[arg-type]
        started_at=to_datetime(m["started_at"]), finished_at=to_datetime(m["finished_at"]),
        lease_owner=m["lease_owner"], lease_expires_at=to_datetime(m["lease_expires_at"]),
        fail_reason=m["fail_reason"], parent_id=m["parent_id"], max_workers=m["max_workers"],
        succeeded_count=m["succeeded_count"], failed_count=m["failed_count"], waiting_count=m["waiting_count"],
        next_retry_at=to_datetime(m["next_retry_at"]), heartbeat_at=to_datetime(m["heartbeat_at"]),
        leased_chunks=m["leased_chunks"], max_attempts=m["max_attempts"], max_errors=m["max_errors"],
        max_error_ratio=m["max_error_ratio"], params=dict(m["params"] or {}),
    )


def _stacks_json(stacks: Sequence[TraceStack]) -> list[dict[str, Any]]:
    return [
        {
            "exc_type": st.exc_type, "exc_value": st.exc_value[:2000], "is_cause": st.is_cause,
            "frames": [
                {"filename": f.filename, "lineno": f.lineno, "name": f.name, "line": f.line, "locals": f.locals}
                for f in st.frames[-50:]
            ],
        }
        for st in stacks
    ]


def _error(row: Any) -> ErrorEntry:
    m = row._mapping
    stacks = tuple(
        TraceStack(
            exc_type=st.get("exc_type", ""), exc_value=st.get("exc_value", ""), is_cause=bool(st.get("is_cause")),
            frames=tuple(TraceFrame(f["filename"], f["lineno"], f["name"], f.get("line", ""), f.get("locals"))
                         for f in st.get("frames", [])),
        )
        for st in (m["stacks"] or [])
    )
    return ErrorEntry(
        id=m["id"], job_id=m["job_id"], entity_id=m["entity_id"], error_type=m["error_type"], message=m["message"],
        traceback=m["traceback"], chunk_index=m["chunk_index"], attempt=m["attempt"],
        created_at=to_datetime(m["created_at"]), final=bool(m["final"]),  # type: ignore[arg-type]
        resolved_at=to_datetime(m["resolved_at"]), stacks=stacks,
    )
