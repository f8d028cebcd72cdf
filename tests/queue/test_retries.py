"""Transient failures retried inside the job, error budgets, shared rate limits (issue 9)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chunkq.core import (
    COMPLETE,
    PAUSED,
    PENDING,
    InvalidInput,
    InvalidTransition,
    Processor,
    Queue,
    Retry,
    RetryJobWaiting,
)

from .test_leases import FakeClock, enqueue


async def test_retry_after_is_honoured_and_success_counted_once(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        job = await enqueue(q, 5, chunk_size=5)
        calls: list[str] = []

        def cb(eid: str, _j: object) -> None:
            calls.append(eid)
            if eid == "e2" and calls.count("e2") == 1:
                raise Retry("429 Too Many Requests", after=5)

        r = await q.process_next_chunk(cb)
        assert r is not None and (r.processed, r.errors, r.retried, r.status) == (4, 1, 1, PENDING)
        j = await q.get_job(job.id)
        assert (j.processed_count, j.waiting_count, j.succeeded_count, j.failed_count) == (4, 1, 4, 0)
        assert j.next_retry_at is not None and j.next_retry_at.timestamp() == pytest.approx(clock.t + 5)
        clock.advance(4.9)
        assert await q.process_next_chunk(cb) is None  # not due yet: the job waits, not complete
        clock.advance(0.2)
        r = await q.process_next_chunk(cb)
        assert r is not None and (r.processed, r.errors, r.status) == (1, 0, COMPLETE)
        j = await q.get_job(job.id)
        assert (j.processed_count, j.succeeded_count, j.failed_count, j.waiting_count) == (5, 5, 0, 0)
        assert calls.count("e2") == 2
        (err,) = await q.list_errors(job.id)
        assert (err.entity_id, err.error_type, err.attempt, err.final) == ("e2", "Retry", 1, False)
        assert err.resolved_at is not None  # it got through on the retry: no longer "broken"
        assert await q.group_errors(job.id) == []
        chunks = await q.list_chunks(job.id)
        assert [c.kind for c in chunks] == ["range", "retry"]


async def test_attempts_are_bounded_and_backoff_grows(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        job = await enqueue(q, 1, max_attempts=4)
        dues = []

        def cb(eid: str, _j: object) -> None:
            raise Retry("503 Service Unavailable")

        proc = Processor(on_process=cb, backoff_base=10, backoff_cap=1000)
        start = clock.t
        r = await q.process_next_chunk(proc)
        while r is not None and r.status != COMPLETE:
            j = await q.get_job(job.id)
            assert j.next_retry_at is not None
            dues.append(j.next_retry_at.timestamp() - clock.t)
            clock.t = j.next_retry_at.timestamp() + 0.001
            r = await q.process_next_chunk(proc)
        assert clock.t > start
        assert len(dues) == 3  # attempts 1..3 scheduled a retry, attempt 4 was the last
        assert 5 <= dues[0] <= 10 and 10 <= dues[1] <= 20 and 20 <= dues[2] <= 40
        assert dues[0] <= dues[1] <= dues[2]
        j = await q.get_job(job.id)
        assert (j.status, j.processed_count, j.failed_count, j.waiting_count, j.error_count) == (COMPLETE, 1, 1, 0, 4)
        errs = await q.list_errors(job.id)
        assert [(e.attempt, e.final) for e in errs] == [(1, False), (2, False), (3, False), (4, True)]
        retry = await q.retry_failed(job.id)
        assert retry.total_count == 1


async def test_retry_on_exception_types(db_url: str) -> None:
    clock = FakeClock()

    class RateLimited(Exception):
        pass

    async with Queue(db_url, clock=clock) as q:
        job = await enqueue(q, 2)
        tries = {"e0": 0}

        def cb(eid: str, _j: object) -> None:
            if eid == "e0":
                tries["e0"] += 1
                if tries["e0"] < 3:
                    raise RateLimited("slow down")
            else:
                raise ValueError("permanent")

        proc = Processor(on_process=cb, retry_on=(RateLimited,), backoff_base=1)
        while True:
            r = await q.process_next_chunk(proc)
            if r is None:
                j = await q.get_job(job.id)
                if j.status == COMPLETE:
                    break
                assert j.next_retry_at is not None
                clock.t = j.next_retry_at.timestamp() + 0.001
        j = await q.get_job(job.id)
        assert (j.succeeded_count, j.failed_count, j.processed_count) == (1, 1, 2)
        assert tries["e0"] == 3


async def test_error_budget_pauses_the_job(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await enqueue(q, 100, chunk_size=10, max_errors=3)

        def cb(eid: str, _j: object) -> None:
            if int(eid[1:]) % 5 == 0:
                raise ValueError("bad id")

        statuses = []
        while (r := await q.process_next_chunk(cb)) is not None:
            statuses.append(r.status)
        assert statuses == [PENDING, PAUSED]  # 2 failures, then 4 > 3
        j = await q.get_job(job.id)
        assert j.status == PAUSED and j.fail_reason == "error budget exceeded: 4 failed entities"
        ratio = await enqueue(q, 100, chunk_size=10, max_error_ratio=0.5)

        def half(eid: str, _j: object) -> None:
            if int(eid[1:]) % 10 < 6:
                raise ValueError("bad")

        r = await q.process_chunk(ratio.id, half)
        assert r is not None and r.status == PAUSED


async def test_requeue_failed_in_place(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await enqueue(q, 6, chunk_size=6)
        broken = {"e1", "e4"}

        def cb(eid: str, _j: object) -> None:
            if eid in broken:
                raise ValueError("broken")

        await q.process_next_chunk(cb)
        assert (await q.get_job(job.id)).status == COMPLETE
        j = await q.requeue_failed(job.id)
        assert (j.status, j.processed_count, j.waiting_count, j.failed_count) == (PENDING, 4, 2, 0)
        broken.clear()
        r = await q.process_next_chunk(cb)
        assert r is not None and r.status == COMPLETE
        j = await q.get_job(job.id)
        assert (j.processed_count, j.succeeded_count, j.failed_count) == (6, 6, 0)
        with pytest.raises(Exception, match="no failed entities"):
            await q.retry_failed(job.id)


async def test_retry_entity_resolves_errors(db_url: str, tmp_path: Path) -> None:
    async with Queue(db_url) as q:
        job = await enqueue(q, 3)
        flag = tmp_path / "fixed"

        def cb(eid: str, _j: object) -> None:
            if eid == "e1" and not flag.exists():
                raise ValueError("still broken")

        await q.process_next_chunk(cb)
        (err,) = await q.list_errors(job.id)
        again = await q.retry_entity(err.id, cb)
        assert not again.ok and again.message == "still broken"
        assert len(await q.list_errors(job.id)) == 2
        flag.touch()
        ok = await q.retry_entity(err.id, cb)
        assert ok.ok
        errs = await q.list_errors(job.id)
        assert all(e.resolved_at is not None for e in errs)
        j = await q.get_job(job.id)
        assert (j.succeeded_count, j.failed_count) == (3, 0)


async def test_dry_run_writes_nothing(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await enqueue(q, 10, chunk_size=4)
        before = await q.get_job(job.id)
        results = await q.dry_run(job.id, lambda e, _j: (_ for _ in ()).throw(ValueError(e)) if e == "e2" else None)
        assert [(r.entity_id, r.ok) for r in results] == [("e0", True), ("e1", True), ("e2", False), ("e3", True)]
        assert await q.get_job(job.id) == before
        assert await q.list_errors(job.id) == []
        assert await q.list_chunks(job.id) == []


RATE_WORKER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from chunkq.core import Processor, Queue, Worker

    log = open(sys.argv[2], "a")

    def cb(entity_id, job):
        os.write(log.fileno(), f"{time.time()}\\n".encode())

    async def main():
        async with Queue(sys.argv[1]) as q:
            await Worker(q, Processor(on_process=cb, rate_limits={"prospeo": float(sys.argv[3])})).run()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_shared_rate_limit_holds_across_processes(db_url: str, tmp_path: Path,
                                                        python_env: dict[str, str]) -> None:
    rate, n = 20.0, 100  # five seconds of work at the limit: five one-second windows, each full
    async with Queue(db_url) as q:
        for _ in range(4):
            await q.enqueue_job([f"x{i}" for i in range(n // 4)], entity_type="person", provider="prospeo",
                                chunk_size=5, max_workers=4)
    script = tmp_path / "rate_worker.py"
    script.write_text(RATE_WORKER)
    out = tmp_path / "calls.log"
    procs = [subprocess.Popen([sys.executable, str(script), db_url, str(out), str(rate)], env=python_env,
                              stderr=subprocess.PIPE) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    stamps = sorted(float(x) for x in out.read_text().split())
    assert len(stamps) == n
    # In every one-second window the four workers together made at most rate (+1 for the bucket's burst).
    worst = max(sum(1 for t in stamps[i:] if t < s + 1.0) for i, s in enumerate(stamps))
    assert worst <= rate + 1, worst
    overall = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 0.5 * rate <= overall <= rate * 1.05, overall


async def test_eta_waits_for_the_next_retry(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        job = await enqueue(q, 10, chunk_size=10)

        def cb(eid: str, _j: object) -> None:
            if eid == "e0":
                raise Retry("busy", after=120)

        await q.process_next_chunk(cb)
        j = await q.get_job(job.id)
        now = _at(clock.t)
        assert j.remaining_count == 1 and j.waiting_count == 1
        # One entity at 100/s would take 0.01 s, but it cannot run before its retry is due.
        assert j.eta_seconds(100.0, now) == pytest.approx(120, abs=0.01)
        assert j.eta_seconds(0.0, now) is None
        done = await enqueue(q, 1)
        await q.process_chunk(done.id)
        assert (await q.get_job(done.id)).eta_seconds(100.0, now) is None


def _at(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


async def _all_failed(q: Queue, n: int = 10):
    job = await enqueue(q, n, chunk_size=n)

    def cb(eid: str, _j: object) -> None:
        raise ValueError("down")

    while await q.process_next_chunk(cb) is not None:
        pass
    return await q.get_job(job.id)


async def test_no_second_retry_while_a_retry_job_of_the_same_failures_waits(db_url: str) -> None:
    """`chunkq retry 1` twice, or then `retry 1 --in-place`, made three jobs holding the same 10 entities."""
    async with Queue(db_url) as q:
        job = await _all_failed(q)
        first = await q.retry_failed(job.id)
        assert first.total_count == 10
        for redo in (q.retry_failed, q.requeue_failed):
            with pytest.raises(RetryJobWaiting) as got:
                await redo(job.id)
            assert (got.value.job_id, got.value.waiting_id, got.value.waiting_status) == (job.id, first.id, PENDING)
            assert str(got.value) == (f"job {job.id} already has a retry job waiting: job {first.id} (pending); "
                                      "process or cancel it first")
        assert isinstance(got.value, InvalidTransition)  # HTTP: 409, the CLI: exit 2
        await q.pause(first.id)
        with pytest.raises(RetryJobWaiting, match=r"\(paused\)"):
            await q.retry_failed(job.id)
        assert {j.id for j in await q.list_jobs()} == {job.id, first.id}
        after = await q.get_job(job.id)  # nothing written
        assert (after.status, after.failed_count, after.waiting_count) == (job.status, 10, 0)
        await q.resume(first.id)
        while await q.process_next_chunk(lambda eid, _j: None) is not None:
            pass
        assert (await q.get_job(first.id)).status == COMPLETE
        # once the retry job is over, a person may retry again (its failures were not its parent's to resolve)
        again = await q.retry_failed(job.id)
        assert again.total_count == 10


async def test_a_retry_of_a_cancelled_retry_job_is_refused_while_its_sibling_waits(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _all_failed(q)
        first = await q.retry_failed(job.id)
        await q.cancel(first.id)
        second = await q.retry_failed(job.id)  # the first is over: allowed
        with pytest.raises(RetryJobWaiting, match=f"job {second.id} "):
            await q.retry_failed(first.id)  # its 10 unfinished entities are the ones job `second` holds
        r = await q.bulk("retry")
        assert (r.changed, r.skipped) == (0, {"with a retry job waiting": 2, "no failed entities": 1})
        assert len(await q.list_jobs()) == 3


async def test_a_retry_after_an_in_place_requeue_makes_nothing(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _all_failed(q)
        requeued = await q.requeue_failed(job.id)
        assert (requeued.status, requeued.waiting_count) == (PENDING, 10)
        with pytest.raises(InvalidInput, match="no failed entities"):
            await q.retry_failed(job.id)  # they wait in the job itself again
        with pytest.raises(InvalidInput, match="no failed entities"):
            await q.requeue_failed(job.id)
        assert [j.id for j in await q.list_jobs()] == [job.id]


async def test_two_retries_at_once_make_one_retry_job(db_url: str) -> None:
    async with Queue(db_url) as a, Queue(db_url) as b:
        job = await _all_failed(a)
        got = await asyncio.gather(a.retry_failed(job.id), b.retry_failed(job.id), return_exceptions=True)
        made = [r for r in got if not isinstance(r, BaseException)]
        refused = [r for r in got if isinstance(r, RetryJobWaiting)]
        assert (len(made), len(refused)) == (1, 1), got
        assert len(await a.list_jobs()) == 2
