"""Bulk actions over a filter, and ``EntityResult.retry_at`` made true."""

from __future__ import annotations

from typing import Any

import pytest
from chunkq.core import (
    CANCELLED,
    COMPLETE,
    PAUSED,
    PENDING,
    EntityResult,
    InvalidInput,
    JobFailed,
    Processor,
    Queue,
    Retry,
)

from .test_leases import FakeClock, enqueue

# --------------------------------------------------------------------------- bulk


async def test_bulk_status_changes_report_changed_and_skipped(queue: Queue) -> None:
    a = await enqueue(queue, 2, name="alpha one")
    b = await enqueue(queue, 2, name="alpha two")
    done = await enqueue(queue, 2, name="alpha done")
    other = await enqueue(queue, 2, name="beta")
    while (await queue.get_job(done.id)).status != COMPLETE:
        await queue.process_chunk(done.id)

    r = await queue.bulk("pause", search="ALPHA")
    assert (r.action, r.matched, r.changed, r.skipped, r.job_ids) == ("pause", 3, 2, {"complete": 1}, (a.id, b.id))
    assert [(await queue.get_job(i)).status for i in (a.id, b.id, other.id)] == [PAUSED, PAUSED, PENDING]

    r = await queue.bulk("resume", status="paused")
    assert (r.matched, r.changed, r.skipped) == (2, 2, {})
    r = await queue.bulk("cancel", status=["pending", "complete"], search="alpha")
    assert (r.matched, r.changed, r.skipped, r.job_ids) == (3, 2, {"complete": 1}, (a.id, b.id))
    assert (await queue.get_job(a.id)).status == CANCELLED
    r = await queue.bulk("pause")  # no filter: every job
    assert (r.matched, r.changed, r.skipped) == (4, 1, {"cancelled": 2, "complete": 1})
    assert r.to_dict()["skipped"] == {"cancelled": 2, "complete": 1}


async def test_bulk_retry_and_requeue_redo_each_jobs_failures(queue: Queue) -> None:
    def cb(entity_id: str, job: Any) -> None:
        if entity_id == "e1" and job.name == "has failures":
            raise ValueError("bad")

    failing = await enqueue(queue, 3, name="has failures")
    clean = await enqueue(queue, 3, name="clean")
    while await queue.process_next_chunk(cb) is not None:
        pass
    r = await queue.bulk("retry", status="complete")
    assert (r.matched, r.changed, r.skipped) == (2, 1, {"no failed entities": 1})
    (new_id,) = r.job_ids
    new = await queue.get_job(new_id)
    assert (new.parent_id, new.total_count) == (failing.id, 1)

    r = await queue.bulk("requeue", search="clean")
    assert (r.changed, r.skipped) == (0, {"no failed entities": 1})
    r = await queue.bulk("requeue", search="has failures")  # its retry job still waits: not redone twice
    assert (r.changed, r.skipped) == (0, {"with a retry job waiting": 1, "no failed entities": 1})
    while await queue.process_next_chunk(cb) is not None:  # the retry job completes: no longer waits
        pass
    r = await queue.bulk("requeue", search="has failures")
    assert (r.changed, r.job_ids) == (1, (failing.id,))
    assert (await queue.get_job(failing.id)).waiting_count == 1
    await queue.cancel(failing.id)
    r = await queue.bulk("requeue", status="cancelled")
    assert r.skipped == {"cancelled": 1}
    assert clean.id not in r.job_ids


async def test_bulk_rejects_unknown_actions(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match="unknown action 'explode'"):
        await queue.bulk("explode")


# --------------------------------------------------------------------------- retry_at


async def test_retry_at_is_reported_live_and_is_exactly_the_stored_due_time(db_url: str) -> None:
    clock = FakeClock()

    class RateLimited(Exception):
        pass

    def cb(entity_id: str, _job: Any) -> None:
        if entity_id == "e0":
            raise Retry("429", after=7)
        if entity_id == "e1":
            raise RateLimited("slow down")  # a retry_on type: retried, although not a Retry
        if entity_id == "e2":
            raise ValueError("permanent")

    async with Queue(db_url, clock=clock) as q:
        job = await enqueue(q, 4, chunk_size=4, max_attempts=2)
        seen: dict[str, EntityResult] = {}
        proc = Processor(on_process=cb, retry_on=(RateLimited,), backoff_base=100, backoff_cap=100)
        r = await q.process_next_chunk(proc, on_entity=lambda res: seen.setdefault(res.entity_id, res))
        assert r is not None and r.retried == 2
        assert seen["e0"].retry_at == pytest.approx(clock.t + 7)
        assert seen["e1"].retry_at is not None and 50 <= seen["e1"].retry_at - clock.t <= 100  # jittered back-off
        assert seen["e2"].retry_at is None and seen["e3"].retry_at is None
        j = await q.get_job(job.id)
        assert j.next_retry_at is not None and j.next_retry_at.timestamp() == pytest.approx(seen["e0"].retry_at)
        clock.advance(200)
        seen.clear()
        r = await q.process_next_chunk(proc, on_entity=lambda res: seen.setdefault(res.entity_id, res))
        assert r is not None and r.status == COMPLETE
        assert seen["e0"].retry_at is None and seen["e1"].retry_at is None, "the last attempt schedules nothing"
        errs = await q.list_errors(job.id)
        assert [(e.entity_id, e.attempt, e.final) for e in errs if e.entity_id in ("e0", "e1")] == [
            ("e0", 1, False), ("e1", 1, False), ("e0", 2, True), ("e1", 2, True)]


async def test_dry_runs_and_one_off_retries_schedule_nothing(queue: Queue) -> None:
    job = await enqueue(queue, 2)

    def cb(entity_id: str, _job: Any) -> None:
        raise Retry("429", after=1)

    results = await queue.dry_run(job.id, cb)
    assert [r.retry_at for r in results] == [None, None]
    await queue.process_next_chunk(cb)
    err = (await queue.list_errors(job.id))[0]
    again = await queue.retry_entity(err.id, cb)
    assert again.retry_at is None and not again.ok


async def test_a_job_failed_chunk_schedules_no_retry(queue: Queue) -> None:
    job = await enqueue(queue, 3, chunk_size=3)

    def cb(entity_id: str, _job: Any) -> None:
        if entity_id == "e0":
            raise Retry("429", after=1)
        raise JobFailed("bad key")

    r = await queue.process_next_chunk(cb)
    assert r is not None and r.retried == 0
    j = await queue.get_job(job.id)
    assert (j.status, j.waiting_count, j.next_retry_at) == ("failed", 0, None)
