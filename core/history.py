"""Throughput and failures over time, from the chunk rows the queue writes anyway.

Every committed chunk keeps ``finished_at``, ``ok`` and ``errors``, and
``ix_chunkq_chunks_finished`` orders them by time: a slice of the last hour is
an index range, summed in SQL. The cost follows how many chunks finished in the
window asked for, never how big a job is or how long the queue has run.

The answer is one list of buckets in time order: ``bucket_seconds`` wide for
the hour, then ``recent_bucket_seconds`` wide for the last ``recent_minutes``
(finer where an operator looks first). Buckets are aligned to multiples of their
width in epoch seconds, so a view that polls sees the same buckets move left
instead of jittering, and empty buckets are there (with zeros), so a sparkline
is regular.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection

from . import counts
from . import schema as s
from .backend import Backend
from .bounds import check_id
from .errors import InvalidInput
from .models import HistoryBucket, to_datetime
from .status import ACTIVE_STATUSES

#: at most this many buckets in one answer (a sparkline is a few hundred cells wide at most)
MAX_BUCKETS = 2000
MAX_MINUTES = 7 * 24 * 60


def _check(minutes: float, bucket_seconds: float, recent_minutes: float, recent_bucket_seconds: float) -> None:
    if not 0 < minutes <= MAX_MINUTES:
        raise InvalidInput(f"minutes must be more than 0 and at most {MAX_MINUTES}", field="minutes")
    if not 0 <= recent_minutes <= minutes:
        raise InvalidInput("recent_minutes must be between 0 and minutes", field="recent_minutes")
    for name, value in (("bucket_seconds", bucket_seconds), ("recent_bucket_seconds", recent_bucket_seconds)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 1):
            raise InvalidInput(f"{name} must be at least 1", field=name)
    n = (minutes - recent_minutes) * 60 / bucket_seconds + recent_minutes * 60 / recent_bucket_seconds
    if n > MAX_BUCKETS:
        raise InvalidInput(f"that is {int(n)} buckets; at most {MAX_BUCKETS} (use wider buckets)",
                           field="bucket_seconds")


class History:
    def __init__(self, backend: Backend, now: Callable[[], float]) -> None:
        self.backend = backend
        self.now = now

    def _index(self, expr: Any) -> Any:
        return self.backend.floor(expr)  # a cast alone rounds on PostgreSQL

    def _segment(self, conn: Connection, job_id: int | None, start: float, end: float,
                 width: float) -> list[HistoryBucket]:
        """Buckets of ``width`` seconds aligned to multiples of it, covering [start, end)."""
        first = math.floor(start / width)
        last = math.floor(end / width) + 1  # the bucket holding ``end`` itself (a chunk finished just now)
        if last <= first:
            return []
        c = s.chunks.c
        k = self._index((c.finished_at - first * width) / width).label("k")
        q = (select(k, func.sum(c.ok + c.errors), func.sum(c.errors), func.count())
             .where(c.finished_at >= first * width, c.finished_at < last * width, c.state == "done")
             .group_by(k))
        if job_id is not None:
            q = q.where(c.job_id == job_id)
        found = {int(r[0]): r for r in conn.execute(q).all()}
        out = []
        for i in range(last - first):
            r = found.get(i)
            out.append(HistoryBucket(to_datetime((first + i) * width), float(width),
                                     int(r[1] or 0) if r else 0, int(r[2] or 0) if r else 0,
                                     int(r[3] or 0) if r else 0))
        return out

    async def history(
        self, job_id: int | None = None, *, minutes: float = 60, bucket_seconds: float = 60,
        recent_minutes: float = 5, recent_bucket_seconds: float = 10,
    ) -> list[HistoryBucket]:
        _check(minutes, bucket_seconds, recent_minutes, recent_bucket_seconds)
        if job_id is not None:
            check_id(job_id)
        now = self.now()
        split = now - recent_minutes * 60
        # the coarse part ends where the first fine bucket begins, so no chunk is counted twice
        split = math.floor(split / recent_bucket_seconds) * recent_bucket_seconds if recent_minutes else now
        coarse_start = now - minutes * 60

        def read(conn: Connection) -> list[HistoryBucket]:
            coarse = self._segment(conn, job_id, coarse_start, split, bucket_seconds)
            if coarse and recent_minutes:
                # the last coarse bucket may reach past the split: cut it there
                b = coarse[-1]
                cut = split - b.start.timestamp()
                if cut < b.seconds:
                    c = s.chunks.c
                    q = (select(func.sum(c.ok + c.errors), func.sum(c.errors), func.count())
                         .where(c.finished_at >= b.start.timestamp(), c.finished_at < split, c.state == "done"))
                    if job_id is not None:
                        q = q.where(c.job_id == job_id)
                    r = conn.execute(q).one()
                    if cut <= 0:
                        coarse.pop()
                    else:
                        coarse[-1] = HistoryBucket(b.start, cut, int(r[0] or 0), int(r[1] or 0), int(r[2] or 0))
            fine = self._segment(conn, job_id, split, now, recent_bucket_seconds) if recent_minutes else []
            return coarse + fine

        return await self.backend.read(read, "reading history")


#: the upper bounds (seconds) of ``chunk_durations``' buckets, as Prometheus' client uses by default
DURATION_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


_PROCESSED, _FAILED, _WAITING = (counts.FIELDS.index(f) for f in ("processed_count", "failed_count", "waiting_count"))


async def provider_totals(backend: Backend) -> dict[str, tuple[int, int, int]]:
    """``{provider: (entities processed, failed for good, waiting for a retry)}`` over every job: the live
    jobs' rows and the finished ones' maintained counts (``counts.py``), not every job."""
    found = await backend.read(lambda conn: counts.totals(conn, group=("provider",)), "totalling by provider")
    return {key[0]: (v[_PROCESSED], v[_FAILED], v[_WAITING]) for key, v in sorted(found.items())}


async def tenant_totals(backend: Backend) -> dict[str, tuple[int, int]]:
    """``{tenant: (entities processed, live jobs)}`` over every job ('' : jobs without a tenant), from the
    live jobs' rows and the finished ones' maintained counts (``counts.py``)."""

    def read(conn: Connection) -> tuple[counts.Totals, counts.Totals]:
        return (counts.totals(conn, group=("tenant",)),
                counts.totals(conn, group=("tenant",), statuses=ACTIVE_STATUSES))

    every, live = await backend.read(read, "totalling by tenant")
    return {key[0]: (v[_PROCESSED], live.get(key, [0])[0]) for key, v in sorted(every.items())}


async def chunk_durations(
    backend: Backend, since: float, bounds: tuple[float, ...] = DURATION_BOUNDS
) -> tuple[list[int], int, float]:
    """Chunks finished since ``since`` by duration: (cumulative count per bound, count, sum of seconds).

    One aggregate over an index range of ``ix_chunkq_chunks_finished``: the cost follows the chunks
    of the window, not the size of the table.
    """
    c = s.chunks.c
    cols = [func.coalesce(func.sum(case((c.duration <= b, 1), else_=0)), 0) for b in bounds]
    q = select(*cols, func.count(), func.coalesce(func.sum(c.duration), 0.0)).where(
        c.finished_at >= since, c.state == "done", c.duration.is_not(None))
    row = await backend.read(lambda conn: conn.execute(q).one(), "reading chunk durations")
    return [int(v) for v in row[: len(bounds)]], int(row[len(bounds)]), float(row[len(bounds) + 1])
