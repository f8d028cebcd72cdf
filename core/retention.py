"""Retention: how long finished jobs are kept, and the pruner that deletes them in small transactions.

Longer than 500 lines: policy, the pruner's lease and its pacing are one loop.

Nothing else in chunkq deletes a job, so without this a queue only grows (issue 26:
a per-minute cron reaches a million jobs in two years; one job with 87,500 errors
was a 111 MB file). The rules:

* **What may go.** Only finished jobs (complete, cancelled, failed) whose last
  change (``updated_at``: a finished job's is its finish, or the last time a
  person touched it) is older than the policy's age for their status. Never an
  active or paused job, and never the parent of a retry job that is not finished
  yet (``parent_id`` of a pending, running or paused job): the retry is still
  about it. Errors, entities, chunks and retries live and die with their job.
* **Defaults.** Complete and cancelled jobs are kept 14 days, failed ones 30 (a
  failure is worth a longer look); any status may be kept ``forever``.
* **Small transactions.** A transaction deletes at most ``BATCH_ROWS`` rows: a
  few small jobs whole, or a slice of a big job's children (errors, retries,
  chunks, then entities) with the job row last, so a 200,000-entity job never
  holds SQLite's write lock (or a PostgreSQL lock) for more than a few
  milliseconds and running workers' claims and commits slip in between. The size
  of a job is read off its own counters (entities + errors + chunks + retries),
  so choosing a batch reads no child table. Each transaction checks again, under
  the lock, that the job may still go. The number of jobs per transaction adapts
  to ``TX_SECONDS``, and on SQLite the pruner then leaves the write lock alone as
  long as it held it (``YIELD_RATIO``: claims and commits waiting for it get in).
  Deleting a job row also looks for its retry jobs (``parent_id``'s ``ON DELETE
  SET NULL``), through ``ix_chunkq_jobs_parent`` (revision 0006; before it, that
  look read the whole jobs table).
* **Known limit.** A big job goes in several transactions; a person who requeues
  it (``retry --in-place``) between two of them stops the pruning of it (the check
  under the lock fails) but finds it without the rows already deleted. Jobs that
  old are rarely requeued; a tombstone would need a schema change.
* **One pruner at a time.** A lease row in ``chunkq_meta`` (``pruner``: owner and
  expiry), taken and renewed by compare-and-swap in each batch's transaction: a
  second pruner (another worker, ``serve``, a person's ``chunkq prune``) sees it
  held and stops at once instead of racing the first over the same rows. A
  pruner that dies leaves a lease that simply runs out (``LEASE_SECONDS``).
* **Found through an index.** Candidates are read oldest first through
  ``ix_chunkq_jobs_updated``, with a keyset that never re-reads a job it passed;
  the "live retry" check reads the live jobs through ``ix_chunkq_jobs_claim``
  (status first), a set as small as the work in flight. A transaction's deletes
  find a job's rows through the job_id indexes whatever the planner's statistics
  say (``backend.read_by_key``): on tables no ANALYZE had seen, PostgreSQL read a
  million jobs' entities whole in every transaction (~300 jobs/s instead of ~3,000).

* **Space comes back.** After its deletes a prune gives SQLite's free pages back to
  the file system in short transactions, still under the lease (``vacuum.py``: why
  incremental auto-vacuum, and ``chunkq db vacuum`` for files made before it);
  PostgreSQL leaves it to autovacuum, which small batches let keep up.

``prune(archive=...)`` writes each batch to an export file (``archive.py``) and
syncs it to disk before the transaction that deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import case, delete, false, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from . import schema as s
from .errors import DatabaseUnavailable, InvalidInput
from .status import CANCELLED, COMPLETE, FAILED, FINISHED_STATUSES, PAUSED, PENDING, RUNNING, Status
from .vacuum import reclaim

if TYPE_CHECKING:
    from .queue import Queue

log = logging.getLogger("chunkq.retention")

MINUTE, HOUR, DAY, WEEK = 60.0, 3600.0, 86400.0, 604800.0
_UNITS = {"s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY, "w": WEEK}
_AGE = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*([smhdw])")
#: the longest age that means something (a hundred years); beyond it, say ``forever``
MAX_AGE = 36_500 * DAY
FOREVER = "forever"
#: rows one pruning transaction deletes at most (a few milliseconds of the write lock)
BATCH_ROWS = 5_000
#: candidate jobs read per transaction (a batch of small jobs takes as many of them as fit in BATCH_ROWS)
BATCH_JOBS = 200
#: what one pruning transaction should take at most: the number of jobs per transaction follows what the
#: last one took (at most halving or doubling, up to BATCH_JOBS), whatever a slow disk or a busy server
#: makes of a batch.
TX_SECONDS = 0.05
#: the same where there are no row locks (SQLite): every claim and commit waits for the whole transaction
ONE_LOCK_TX_SECONDS = 0.02
#: on a database with one write lock for everyone (SQLite), the pruner waits after each transaction as long
#: as it took, so a claim or a commit waiting for the lock gets it (SQLite's busy handler retries every
#: 25-50 ms once it has waited a while: a pruner that took the lock back at once kept one waiting 100 ms)
YIELD_RATIO = 1.0
#: seconds a pruner's lease lasts without a renewal (renewed by every batch)
LEASE_SECONDS = 60.0
LEASE_KEY = "pruner"
#: how often a long-running worker or ``serve`` prunes, by default
PRUNE_EVERY = 300.0
#: statuses whose jobs are never pruned: they may still change, or a person has to look at them
KEPT_STATUSES = (PENDING, RUNNING, PAUSED)


def parse_age(value: object, *, field: str = "older_than") -> float | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"45s"``, ``"2w"`` -> seconds; ``"forever"`` -> None.

    The one parser of every front end (CLI options, HTTP fields, ``--retention``).
    A number is seconds. Negative, NaN, infinite, over a hundred years, or an
    unknown unit: ``InvalidInput`` naming ``field``.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be an age like 30d, 12h, 90m or 'forever', got {value!r}", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        raw = value.strip().lower()
        if raw == FOREVER:
            return None
        match = _AGE.fullmatch(raw)
        if match is None:
            why = "cannot be negative" if raw.startswith("-") else "must be an age like 30d, 12h, 90m or 'forever'"
            raise InvalidInput(f"{field} {why}, got {value[:40]!r}", field=field)
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise InvalidInput(f"{field} must be an age like 30d, 12h, 90m or 'forever', got {type(value).__name__}",
                           field=field)
    if math.isnan(seconds) or seconds < 0:
        raise InvalidInput(f"{field} cannot be negative or NaN, got {value!r:.40}", field=field)
    if math.isinf(seconds):
        raise InvalidInput(f"{field} cannot be infinite; say 'forever'", field=field)
    if seconds > MAX_AGE:
        raise InvalidInput(f"{field} is longer than a hundred years ({value!r:.40}); say 'forever'", field=field)
    return seconds


def format_age(seconds: float | None) -> str:
    """The shortest exact spelling ``parse_age`` reads back: ``14d``, ``36h``, ``forever``."""
    if seconds is None:
        return FOREVER
    for unit in ("d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a finished job is kept after its last change, per status; None keeps it forever."""

    complete: float | None = 14 * DAY
    cancelled: float | None = 14 * DAY
    failed: float | None = 30 * DAY

    def __post_init__(self) -> None:
        for name in ("complete", "cancelled", "failed"):
            value = getattr(self, name)
            if value is not None:
                parse_age(value, field=name)

    @classmethod
    def parse(cls, spec: str, *, field: str = "retention") -> RetentionPolicy | None:
        """``"default"``; ``"off"`` (None: no pruning at all); one age for every status (``"7d"``);
        or per status over the defaults: ``"complete=7d,failed=forever"``."""
        raw = str(spec).strip().lower()
        if raw in ("off", "none", "never"):
            return None
        if raw in ("", "default", "on"):
            return cls()
        if "=" not in raw:
            age = parse_age(raw, field=field)
            return cls(age, age, age)
        values: dict[str, float | None] = {}
        for part in raw.split(","):
            name, sep, given = part.partition("=")
            name = name.strip()
            if not sep or name not in ("complete", "cancelled", "failed"):
                raise InvalidInput(f"{field}: expected status=age (status one of complete, cancelled, failed), "
                                   f"got {part.strip()[:40]!r}", field=field)
            values[name] = parse_age(given, field=f"{field} {name}")
        return cls(**values)

    @classmethod
    def only(cls, age: float | None, statuses: Iterable[str] | None = None) -> RetentionPolicy:
        """``age`` for ``statuses`` (every finished one by default), the others kept forever:
        what ``chunkq prune --older-than AGE --status …`` means."""
        wanted = check_statuses(statuses)
        return cls(**{str(st): age if st in wanted else None for st in FINISHED_STATUSES})

    def restricted(self, statuses: Iterable[str] | None) -> RetentionPolicy:
        """This policy for ``statuses`` only, the others kept forever."""
        wanted = check_statuses(statuses)
        return RetentionPolicy(**{str(st): self.age(st) if st in wanted else None for st in FINISHED_STATUSES})

    def age(self, status: str) -> float | None:
        return getattr(self, str(status)) if status in FINISHED_STATUSES else None

    def cutoffs(self, now: float) -> dict[Status, float]:
        """Status -> epoch seconds before which a job of that status may go (statuses kept forever left out)."""
        return {st: now - age for st in FINISHED_STATUSES if (age := self.age(st)) is not None}

    def describe(self) -> str:
        return ", ".join(f"{st} {format_age(self.age(st))}" for st in (COMPLETE, CANCELLED, FAILED))

    def to_dict(self) -> dict[str, str]:
        return {str(st): format_age(self.age(st)) for st in (COMPLETE, CANCELLED, FAILED)}


DEFAULT_POLICY = RetentionPolicy()


def check_statuses(statuses: Iterable[str] | None, *, field: str = "status") -> frozenset[Status]:
    """Statuses a prune may touch: finished ones only (an active or paused one is refused, naming it)."""
    if statuses is None:
        return frozenset(FINISHED_STATUSES)
    if isinstance(statuses, str):
        statuses = [statuses]
    out: set[Status] = set()
    for raw in statuses:
        st = Status.parse(raw, field=field)
        if st not in FINISHED_STATUSES:
            raise InvalidInput(f"{st} jobs are never pruned; only {', '.join(FINISHED_STATUSES)} jobs are",
                               field=field)
        out.add(st)
    return frozenset(out) or frozenset(FINISHED_STATUSES)


@dataclass
class PruneResult:
    """What a prune deleted (or, ``dry_run``, would delete): jobs and the rows they took with them."""

    jobs: int = 0
    entities: int = 0
    errors: int = 0
    chunks: int = 0
    dry_run: bool = False
    #: another pruner held the lease: this one did nothing
    busy: bool = False
    #: the archive file the jobs were written to before they went
    archive: str | None = None
    job_ids: list[int] = field(default_factory=list)
    policy: dict[str, str] = field(default_factory=dict)
    #: SQLite pages given back to the file system after the deletes (``vacuum.reclaim``)
    reclaimed_pages: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "entities": self.entities, "errors": self.errors, "chunks": self.chunks,
                "dry_run": self.dry_run, "busy": self.busy, "archive": self.archive,
                "job_ids": self.job_ids[:1000], "policy": self.policy, "reclaimed_pages": self.reclaimed_pages}


_j = s.jobs.c


class Archive(Protocol):
    """Where ``prune(archive=...)`` writes each job before it goes: an ``archive.ArchiveWriter`` (a
    protocol, so that this module needs nothing of ``archive.py``, which uses the pruner to undo an import)."""

    @property
    def name(self) -> str | None: ...

    async def add_job(self, queue: Queue, job_id: int) -> None: ...

    def sync(self) -> None: ...


def _size(jobs_table: Any = s.jobs) -> Any:
    """A job's rows, read off its own counters: entities, errors, chunks, and retries still waiting."""
    c = jobs_table.c
    return c.total_count + c.error_count + c.next_chunk + c.waiting_count


def eligible(policy: RetentionPolicy, now: float) -> list[Any]:
    """The conditions a prunable job meets (empty list inside ``or_``: none is)."""
    cutoffs = policy.cutoffs(now)
    if not cutoffs:
        return [false()]
    live = s.jobs.alias("live")
    live_parents = select(live.c.parent_id).where(live.c.status.in_(KEPT_STATUSES), live.c.parent_id.is_not(None))
    # The status test is a CASE, which no index serves: both databases then walk ix_chunkq_jobs_updated
    # in order (oldest first, no sort) instead of every job of a status through the claim index.
    per_status = case(*((_j.status == st, cut) for st, cut in cutoffs.items()), else_=None)
    return [
        _j.updated_at < max(cutoffs.values()),  # the index range scan
        _j.updated_at < per_status,
        _j.id.not_in(live_parents),
    ]


def _after(key: tuple[float, int]) -> list[Any]:
    """Keyset: jobs after (updated_at, id) ``key``; the plain ``>=`` is what the index range scan starts from."""
    return [_j.updated_at >= key[0], or_(_j.updated_at > key[0], _j.id > key[1])]


class Pruner:
    """Deletes what a ``RetentionPolicy`` lets go, a small transaction at a time (see the module docstring)."""

    def __init__(self, queue: Queue, *, batch_rows: int = BATCH_ROWS, lease_seconds: float = LEASE_SECONDS,
                 pause: float = 0.0) -> None:
        self.queue = queue
        self.backend = queue.backend
        self.batch_rows = max(1, int(batch_rows))
        self.lease_seconds = lease_seconds
        #: seconds to wait between transactions (a background pruner leaves the lock to the workers)
        self.pause = pause
        self.owner = f"{queue.owner}:prune"
        self._lease_value: str | None = None
        #: what a transaction should take (``TX_SECONDS``; shorter where every writer waits for it)
        self.tx_seconds = TX_SECONDS if self.backend.row_locks else ONE_LOCK_TX_SECONDS
        #: jobs per transaction now (adapted to ``tx_seconds``)
        self.jobs_per_tx = 8  # grows while transactions are quick
        #: how long the last transaction took (what the pruner yields after it, ``YIELD_RATIO``)
        self._last_tx = 0.0

    # ------------------------------------------------------------------ reading

    async def count(self, policy: RetentionPolicy) -> PruneResult:
        """What ``prune(policy)`` would delete now, deleting nothing (``--dry-run``)."""
        where = eligible(policy, self.queue.now())

        def read(conn: Connection) -> PruneResult:
            row = conn.execute(select(func.count(), func.sum(_j.total_count), func.sum(_j.error_count),
                                      func.sum(_j.next_chunk)).where(*where)).one()
            return PruneResult(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0), int(row[3] or 0),
                               dry_run=True, policy=policy.to_dict())

        return await self.backend.read(read, "counting what retention would prune")

    async def count_by_status(self, policy: RetentionPolicy) -> dict[Status, PruneResult]:
        """``count`` per finished status (every one present, zero or not): what a person confirms first."""
        where = eligible(policy, self.queue.now())

        def read(conn: Connection) -> dict[Status, PruneResult]:
            rows = conn.execute(select(_j.status, func.count(), func.sum(_j.total_count), func.sum(_j.error_count),
                                       func.sum(_j.next_chunk)).where(*where).group_by(_j.status)).all()
            found = {str(r[0]): [int(v or 0) for v in r[1:]] for r in rows}
            return {st: PruneResult(*found.get(str(st), [0, 0, 0, 0]), dry_run=True, policy=policy.to_dict())  # type: ignore[misc, arg-type]  # four counts: jobs, entities, errors, chunks
                    for st in FINISHED_STATUSES}

        return await self.backend.read(read, "counting what retention would prune")

    async def iter_candidates(self, policy: RetentionPolicy, *, page: int = 1000) -> AsyncIterator[int]:
        """Every prunable job id, oldest change first, read a page at a time by keyset (``export --older-than``)."""
        where = eligible(policy, self.queue.now())
        after: tuple[float, int] | None = None
        while True:
            def read(conn: Connection, after: tuple[float, int] | None = after) -> Sequence[Any]:
                q = select(_j.id, _j.updated_at).where(*where)
                if after is not None:
                    q = q.where(*_after(after))
                return conn.execute(q.order_by(_j.updated_at, _j.id).limit(page)).all()

            found = await self.backend.read(read, "listing what retention would prune")
            for r in found:
                yield int(r.id)
            if len(found) < page:
                return
            after = (float(found[-1].updated_at), int(found[-1].id))

    # ------------------------------------------------------------------ pruning

    async def prune(
        self,
        policy: RetentionPolicy,
        *,
        archive: Archive | None = None,
        max_batches: int | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> PruneResult:
        """Delete every job ``policy`` lets go, oldest first, in transactions of at most ``batch_rows`` rows.

        ``archive``: each job is written there (and synced) before the transaction
        that deletes it. ``max_batches``/``stop``: end early (a background pruner
        takes its turn in rounds); the next call carries on. A call that got to the
        end gives SQLite's freed pages back to the file system (``reclaimed_pages``).
        Returns what went; ``busy`` when another pruner holds the lease (nothing was done).
        """
        result = PruneResult(policy=policy.to_dict(), archive=archive.name if archive is not None else None)
        if not policy.cutoffs(self.queue.now()):
            return result
        if not await self._take_lease():
            result.busy = True
            return result
        try:
            batches = await self._run(policy, archive, result, max_batches, stop)
            if max_batches is None or batches < max_batches:
                # the space the deletes freed, given back in steps as short as the batches (vacuum.py);
                # still under the lease, so two pruners never vacuum at once
                steps = None if max_batches is None else max(1, max_batches - batches)
                result.reclaimed_pages = await reclaim(self.queue, max_steps=steps, pause=self.pause, stop=stop,
                                                       each=self._renew)
        except _LeaseLost:
            log.info("another pruner took the lease over; leaving the rest to it")
            result.busy = True
        finally:
            await self._release_lease()
        return result

    async def _run(self, policy: RetentionPolicy, archive: Archive | None, result: PruneResult,
                   max_batches: int | None, stop: Callable[[], bool] | None) -> int:
        """The deletes; returns how many transactions they took."""
        after: tuple[float, int] | None = None  # keyset: the last job passed (deleted or not)
        current: int | None = None  # a big job being deleted slice by slice
        archived: set[int] = set()
        batches = 0
        while max_batches is None or batches < max_batches:
            if stop is not None and stop():
                break
            if batches:
                await self._yield()
            batches += 1
            where = eligible(policy, self.queue.now())
            if current is None:
                picked, big, after = await self._pick(where, after)
                if not picked and big is None:
                    break
                if archive is not None:
                    todo = [i for i in [*picked, *([big] if big is not None else [])] if i not in archived]
                    for job_id in todo:
                        await archive.add_job(self.queue, job_id)
                    archive.sync()  # on disk before the transaction that deletes them
                    archived.update(todo)
                if picked:
                    await self._delete_jobs(picked, where, result)
                    continue
                current = big
            if await self._delete_slice(current, where, result):  # type: ignore[arg-type]  # nothing small picked: big is set
                current = None
        return batches

    async def _pick(
        self, where: list[Any], after: tuple[float, int] | None
    ) -> tuple[list[int], int | None, tuple[float, int] | None]:
        """The next small jobs that fit in one batch together, or the next big one alone; and the new keyset."""
        budget = self.batch_rows
        most = self.jobs_per_tx

        def read(conn: Connection) -> tuple[list[int], int | None, tuple[float, int] | None]:
            q = select(_j.id, _j.updated_at, _size().label("size")).where(*where)
            if after is not None:
                q = q.where(*_after(after))
            rows = conn.execute(q.order_by(_j.updated_at, _j.id).limit(most)).all()
            picked: list[int] = []
            used = 0
            last = after
            for r in rows:
                size = int(r.size or 0) + 1
                if not picked and size > budget:
                    return [], int(r.id), (float(r.updated_at), int(r.id))
                if used + size > budget:
                    break
                picked.append(int(r.id))
                used += size
                last = (float(r.updated_at), int(r.id))
            return picked, None, last

        return await self.backend.read(read, "choosing jobs to prune")

    async def _delete_jobs(self, job_ids: Sequence[int], where: list[Any], result: PruneResult) -> None:
        """Small jobs, whole, in one transaction (each checked again under the lock)."""

        def tx(conn: Connection) -> tuple[list[int], dict[str, int]]:
            self.backend.read_by_key(conn)
            self._renew(conn)
            still = [int(x) for x in conn.execute(
                self.backend.lock_rows(select(_j.id).where(_j.id.in_(job_ids), *where), skip_locked=False)
            ).scalars()]
            counts = {"entities": 0, "errors": 0, "chunks": 0}
            if not still:
                return still, counts
            for table, key in ((s.errors, "errors"), (s.retries, None), (s.chunks, "chunks"),
                               (s.entities, "entities")):
                n = conn.execute(delete(table).where(table.c.job_id.in_(still))).rowcount or 0
                if key is not None:
                    counts[key] += n
            conn.execute(delete(s.error_groups).where(s.error_groups.c.job_id.in_(still)))  # a few rows a job
            conn.execute(delete(s.jobs).where(_j.id.in_(still)))
            return still, counts

        started = time.monotonic()
        gone, counts = await self.backend.write(tx, "pruning finished jobs")
        took = self._last_tx = time.monotonic() - started
        # Aim at the size that would have taken ``tx_seconds``, at most halving or doubling per transaction
        # (doubling only after a full batch). Proportional, not "halve when slow, double when very quick":
        # a transaction's fixed cost (a commit's flush on a busy server) once pinned that rule at one job.
        ideal = int(len(job_ids) * self.tx_seconds / max(took, 1e-6))
        cap = self.jobs_per_tx * 2 if len(job_ids) >= self.jobs_per_tx else self.jobs_per_tx
        self.jobs_per_tx = max(1, self.jobs_per_tx // 2, min(BATCH_JOBS, cap, ideal))
        self._add(result, gone, counts)

    async def delete_job(self, job_id: int) -> PruneResult:
        """Delete one job whatever its status and age, in the same small transactions (an import's clean-up)."""
        result = PruneResult()
        while not await self._delete_slice(job_id, [], result, lease=False):
            pass
        return result

    async def _delete_slice(self, job_id: int, where: list[Any], result: PruneResult, *, lease: bool = True) -> bool:
        """Up to ``batch_rows`` child rows of one big job; its row too once they are gone. True: done with it."""
        budget = self.batch_rows

        def tx(conn: Connection) -> tuple[bool, bool, dict[str, int]]:
            self.backend.read_by_key(conn)
            if lease:
                self._renew(conn)
            counts = {"entities": 0, "errors": 0, "chunks": 0}
            ok = conn.execute(self.backend.lock_rows(select(_j.id).where(_j.id == job_id, *where),
                                                     skip_locked=False)).first()
            if ok is None:
                return True, False, counts  # requeued, retried or deleted meanwhile: leave it
            left = budget
            for table, key, col in ((s.errors, "errors", s.errors.c.id), (s.retries, None, s.retries.c.pos),
                                    (s.chunks, "chunks", s.chunks.c.chunk_index),
                                    (s.entities, "entities", s.entities.c.pos)):
                if left <= 0:
                    break
                some = select(col).where(table.c.job_id == job_id).order_by(col).limit(left).scalar_subquery()
                n = conn.execute(delete(table).where(table.c.job_id == job_id, col.in_(some))).rowcount or 0
                if key is not None:
                    counts[key] += n
                left -= n
            if left <= 0:
                return False, False, counts
            conn.execute(delete(s.error_groups).where(s.error_groups.c.job_id == job_id))  # its groups: few rows
            conn.execute(delete(s.jobs).where(_j.id == job_id))
            return True, True, counts

        started = time.monotonic()
        done, deleted, counts = await self.backend.write(tx, f"pruning job {job_id}")
        self._last_tx = time.monotonic() - started
        self._add(result, [job_id] if deleted else [], counts)
        return done

    async def _yield(self) -> None:
        """Leave the database to the workers between two transactions: ``pause``, and where there are no row
        locks (SQLite: one write lock for everyone) at least as long as the last transaction held it."""
        wait = max(self.pause, self._last_tx * YIELD_RATIO if not self.backend.row_locks else 0.0)
        if wait > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _add(result: PruneResult, gone: Sequence[int], counts: dict[str, int]) -> None:
        result.jobs += len(gone)
        result.job_ids.extend(gone)
        result.entities += counts["entities"]
        result.errors += counts["errors"]
        result.chunks += counts["chunks"]

    # ------------------------------------------------------------------ the lease

    def _lease_row(self) -> str:
        return f"{self.owner} {self.queue.now() + self.lease_seconds:.3f}"

    def _claim(self, conn: Connection) -> bool:
        m = s.meta.c
        held = conn.execute(select(m.value).where(m.key == LEASE_KEY)).scalar()
        mine = self._lease_row()
        if held is None:
            conn.execute(insert(s.meta).values(key=LEASE_KEY, value=mine))  # a racing insert: IntegrityError
        else:
            owner, _, until = held.rpartition(" ")
            try:
                expires = float(until)
            except ValueError:
                expires = 0.0
            if owner != self.owner and expires > self.queue.now():
                return False
            # compare-and-swap: a pruner that changed the row since we read it wins
            if not conn.execute(update(s.meta).where(m.key == LEASE_KEY, m.value == held).values(value=mine)
                                ).rowcount:
                return False
        self._lease_value = mine
        return True

    def _renew(self, conn: Connection) -> None:
        if not self._claim(conn):
            raise _LeaseLost

    async def _take_lease(self) -> bool:
        try:
            return await self.backend.write(self._claim, "taking the pruner's lease")
        except IntegrityError:
            return False

    async def _release_lease(self) -> None:
        value, self._lease_value = self._lease_value, None
        if value is None:
            return
        m = s.meta.c

        def tx(conn: Connection) -> None:
            conn.execute(delete(s.meta).where(m.key == LEASE_KEY, m.value.like(f"{self.owner} %")))

        try:
            await self.backend.write(tx, "releasing the pruner's lease")
        except DatabaseUnavailable as exc:  # it runs out by itself
            log.debug("could not release the pruner's lease: %s", exc)


class _LeaseLost(Exception):
    """Another pruner took the lease over (this one stalled past it): stop, it carries on."""


async def prune_periodically(
    queue: Queue, policy: RetentionPolicy, *, every: float = PRUNE_EVERY, batches: int = 20, pause: float = 0.05,
) -> None:
    """Prune in rounds of at most ``batches`` transactions every ``every`` seconds, until cancelled.

    What a long-running worker and ``serve`` run as a task of their own, beside (never
    inside) the claim loop: the first round a little after start (a worker's first
    claims come first), then one per period, with ``pause`` seconds between its
    transactions. Whichever process holds the lease prunes; the others find it busy
    and wait for the next round. A failing round is logged and retried next time.
    """
    pruner = Pruner(queue, pause=pause)
    await asyncio.sleep(min(every, 10.0))
    while True:
        started = time.monotonic()
        try:
            result = await pruner.prune(policy, max_batches=batches)
            if result.jobs:
                log.info("retention: pruned %d finished jobs (kept: %s)", result.jobs, policy.describe())
        except DatabaseUnavailable as exc:
            log.warning("retention: pruning failed, trying again in %.0f s: %s", every, exc)
        except Exception:  # never let housekeeping take the worker down
            log.exception("retention: pruning failed unexpectedly")
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))


@asynccontextmanager
async def pruning_in_background(
    queue: Queue, policy: RetentionPolicy | None, *, every: float = PRUNE_EVERY
) -> AsyncIterator[None]:
    """``prune_periodically`` as a task for as long as the block runs (nothing when ``policy`` is None: off)."""
    if policy is None:
        yield
        return
    task = asyncio.create_task(prune_periodically(queue, policy, every=every), name="chunkq-retention")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def archive_folder(path: str | os.PathLike[str], *, field: str = "archive") -> Path:
    """A folder an archive can be written into, checked before anything is deleted."""
    folder = Path(path).expanduser()
    try:
        is_dir = folder.is_dir()
    except OSError as exc:  # a parent this user may not enter
        raise InvalidInput(f"cannot reach archive folder {str(folder)!r}: {exc.strerror or exc}", field=field) from None
    if not is_dir:
        raise InvalidInput(f"archive folder {str(folder)!r} does not exist or is not a folder", field=field)
    probe = folder / f".chunkq-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InvalidInput(f"cannot write into archive folder {str(folder)!r}: {exc.strerror or exc}",
                           field=field) from None
    return folder
