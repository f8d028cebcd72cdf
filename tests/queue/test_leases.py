"""Leases, fencing and concurrency: what the original design got wrong.

A fake clock drives lease expiry so these tests never sleep out a lease.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chunkq.core import COMPLETE, PENDING, RUNNING, Queue
from chunkq.core.outcomes import Outcomes


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def enqueue(q: Queue, n: int, **kw):
    kw.setdefault("entity_type", "company")
    kw.setdefault("provider", "p")
    return await q.enqueue_job([f"e{i}" for i in range(n)], **kw)


async def test_dead_workers_chunk_is_reclaimed_and_resumed(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=30, clock=clock, owner="dead:1:a") as dead, \
            Queue(db_url, lease_seconds=30, clock=clock, owner="alive:2:b") as alive:
        job = await enqueue(dead, 25, chunk_size=10)
        await dead.process_next_chunk()  # chunk 0 committed
        claim = await dead.claims.claim()  # chunk 1 claimed ... and the worker dies
        assert claim is not None and claim.chunk_index == 1
        j = await alive.get_job(job.id)
        assert (j.status, j.lease_owner, j.leased_chunks) == (RUNNING, "dead:1:a", 1)
        assert not j.lease_is_stale(_dt(clock.t))

        # Before expiry the job (max_workers=1) is busy: nothing to claim.
        assert await alive.process_next_chunk() is None
        clock.advance(31)
        assert (await alive.get_job(job.id)).lease_is_stale(_dt(clock.t))
        seen: list[str] = []
        r = await alive.process_next_chunk(lambda e, _j: seen.append(e))
        assert r is not None and r.chunk_index == 1 and r.committed
        assert seen == [f"e{i}" for i in range(10, 20)]  # the chunk in flight, redone
        while await alive.process_next_chunk(lambda e, _j: seen.append(e)):
            pass
        j = await alive.get_job(job.id)
        assert (j.status, j.processed_count) == (COMPLETE, 25)
        assert seen == [f"e{i}" for i in range(10, 25)]
        chunks = await alive.list_chunks(job.id)
        assert [(c.chunk_index, c.worker, c.attempt) for c in chunks] == [
            (0, "dead:1:a", 1), (1, "alive:2:b", 2), (2, "alive:2:b", 1)]


async def test_a_silent_worker_shows_through_a_live_one_on_the_same_job(db_url: str) -> None:
    """Fair scheduling spreads workers over jobs: a live worker's claims and renewals of a job must not
    hide another holder's silence. The job reads stale, named after the silent worker, before its lease
    runs out, and the queue's stale count says so too."""
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=30, clock=clock, owner="dead:1:a") as dead, \
            Queue(db_url, lease_seconds=30, clock=clock, owner="alive:2:b") as alive:
        job = await enqueue(dead, 100, chunk_size=5, max_workers=2)
        held = await dead.claims.claim()  # ... and this worker goes silent
        assert held is not None
        mine = await alive.claims.claim()
        assert mine is not None and mine.job.id == job.id
        for _ in range(3):  # the live worker renews every third of its lease, and claims more of the job
            clock.advance(9)
            assert await alive.claims.renew(mine)
        more = await alive.claims.claim()
        assert more is not None and more.job.id == job.id
        j = await alive.get_job(job.id)
        now = _dt(clock.t)
        assert j.lease_is_stale(now) and j.lease_expires_at > now  # stale from silence, the lease still runs
        assert j.lease_owner == "dead:1:a"
        assert (await alive.stats()).stale_jobs == 1

        # the silent worker's chunk taken over: the job's oldest lease is a live one again
        clock.advance(4)
        taken = await alive.claims.claim(job.id)
        assert taken is not None and taken.chunk_index == held.chunk_index
        j = await alive.get_job(job.id)
        assert not j.lease_is_stale(_dt(clock.t)) and j.lease_owner == "alive:2:b"
        assert (await alive.stats()).stale_jobs == 0


async def test_a_claim_reads_the_jobs_other_leases_only_while_one_is_out(db_url: str) -> None:
    """The job row shows its oldest live lease (the test above), which costs a claim one more read of the
    lease index; a chunk claimed while no other chunk of its job is out has no older lease to show, so
    the claim skips that read (it was a third of the regression of a no-op chunk of 50 since 0.5.0)."""
    from sqlalchemy import Engine, event

    clock = FakeClock()
    async with Queue(db_url, lease_seconds=30, clock=clock, owner="a:1:a") as a, \
            Queue(db_url, lease_seconds=30, clock=clock, owner="b:2:b") as b:
        job = await enqueue(a, 100, chunk_size=5, max_workers=2)
        seen: list[str] = []

        def keep(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            seen.append(" ".join(statement.split()))

        def lease_reads() -> int:
            return sum(1 for q in seen if q.startswith("SELECT chunkq_chunks.lease_expires_at, chunkq_chunks.owner"))

        # every engine's statements (SQLite writes through a synchronous engine of its own, on a thread)
        event.listen(Engine, "before_cursor_execute", keep)
        try:
            first = await a.claims.claim()  # the only chunk out
            assert first is not None and lease_reads() == 0, seen
            clock.advance(1)
            second = await b.claims.claim()  # another is out: the row must show the older one
            assert second is not None and second.job.id == job.id and lease_reads() == 1, seen
        finally:
            event.remove(Engine, "before_cursor_execute", keep)
        assert (await a.get_job(job.id)).lease_owner == "a:1:a"


async def test_a_commit_moves_the_job_row_on_to_the_oldest_lease_left(db_url: str) -> None:
    """A worker whose lease the job row showed commits and moves on: the row must show the lease that is
    left, or a job held by a silent worker names the one that finished, and reads stale from the finished
    lease's expiry instead of the silent one's."""
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=30, clock=clock, owner="done:1:a") as done, \
            Queue(db_url, lease_seconds=30, clock=clock, owner="silent:2:b") as silent:
        job = await enqueue(done, 100, chunk_size=5, max_workers=2)
        first = await done.claims.claim()
        assert first is not None and first.job.id == job.id
        clock.advance(5)
        held = await silent.claims.claim()  # ... and this worker goes silent
        assert held is not None and held.job.id == job.id
        assert (await done.get_job(job.id)).lease_owner == "done:1:a"  # the oldest lease shows
        clock.advance(5)
        r = await done.committer.commit(first, Outcomes(len(first.items), [], first.items.positions), 0.1, None)
        assert r.committed
        j = await done.get_job(job.id)
        assert (j.leased_chunks, j.lease_owner) == (1, "silent:2:b")
        assert j.lease_expires_at == _dt(held.started + 30)
        clock.advance(21)  # 31 s after the first claim: its lease would have read as run out
        j = await done.get_job(job.id)
        assert j.lease_is_stale(_dt(clock.t)) and j.lease_owner == "silent:2:b"

        # the last lease closed: the row shows none
        r = await silent.committer.commit(held, Outcomes(len(held.items), [], held.items.positions), 0.1, None)
        assert r.committed
        j = await done.get_job(job.id)
        assert (j.leased_chunks, j.lease_owner, j.lease_expires_at) == (0, None, None)


async def test_late_commit_is_fenced_off(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, lease_seconds=10, clock=clock, owner="slow") as slow, \
            Queue(db_url, lease_seconds=10, clock=clock, owner="fast") as fast:
        job = await enqueue(slow, 10, chunk_size=10)
        claim = await slow.claims.claim()
        assert claim is not None
        clock.advance(11)  # the slow worker stalls past its lease
        r = await fast.process_next_chunk(lambda e, _j: None)
        assert r is not None and r.committed and r.status == COMPLETE
        # The slow worker finally finishes: its results must not be applied twice.
        from chunkq.core.outcomes import Outcomes

        late = await slow.committer.commit(claim, Outcomes(len(claim.items), [], claim.items.positions), 1.0, None)
        assert late.committed is False
        j = await fast.get_job(job.id)
        assert (j.status, j.processed_count, j.succeeded_count) == (COMPLETE, 10, 10)


async def test_lease_renewed_while_a_long_chunk_runs(db_url: str) -> None:
    async with Queue(db_url, lease_seconds=0.3) as q, Queue(db_url, lease_seconds=0.3) as other:
        job = await enqueue(q, 2, chunk_size=2)
        stolen = []

        async def slow(eid: str, _j: object) -> None:
            await asyncio.sleep(0.5)  # longer than the lease; heartbeats keep it
            if eid == "e0":
                stolen.append(await other.process_next_chunk())

        r = await q.process_next_chunk(slow)
        assert r is not None and r.committed and r.status == COMPLETE
        assert stolen == [None]
        assert (await q.get_job(job.id)).processed_count == 2


async def test_released_chunk_is_redone(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chunkq")
    async with Queue(db_url) as q:
        job = await enqueue(q, 10, chunk_size=5)
        started = asyncio.Event()

        async def hang(eid: str, _j: object) -> None:
            started.set()
            await asyncio.sleep(60)

        task = asyncio.create_task(q.process_next_chunk(hang))
        await started.wait()
        task.cancel()  # the worker's second SIGTERM: give the chunk up now
        await asyncio.gather(task, return_exceptions=True)
        j = await q.get_job(job.id)
        assert j.processed_count == 0 and j.leased_chunks == 1
        seen: list[str] = []
        async with Queue(db_url) as q2:
            while await q2.process_next_chunk(lambda e, _j: seen.append(e)):
                pass
            j = await q2.get_job(job.id)
        assert (j.status, j.processed_count) == (COMPLETE, 10)
        assert sorted(seen, key=lambda e: int(e[1:])) == [f"e{i}" for i in range(10)]
        # given back on purpose, and said so: not "a silent worker" (that is for a lease that ran out)
        reclaimed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reclaimed chunk")]
        assert reclaimed == [f"reclaimed chunk 0 of job {job.id} (its worker had given it back)"]


@pytest.mark.slow
async def test_max_workers_spreads_one_job(db_url: str) -> None:
    async with Queue(db_url) as a, Queue(db_url) as b, Queue(db_url) as c, Queue(db_url) as e:
        wide = await enqueue(a, 100, chunk_size=10, max_workers=2)
        ca, cb = await a.claims.claim(), await b.claims.claim()
        assert ca is not None and cb is not None
        assert (ca.job.id, cb.job.id) == (wide.id, wide.id)
        assert {ca.chunk_index, cb.chunk_index} == {0, 1}
        assert await c.claims.claim() is None  # two leases held, max_workers=2
        narrow = await enqueue(a, 20, chunk_size=10)
        d = await c.claims.claim()
        assert d is not None and d.job.id == narrow.id
        assert await e.claims.claim() is None  # every job's workers are at its max_workers
        more = await c.claims.claim()  # only other workers count: narrow's one worker may hold more of it
        assert more is not None and (more.job.id, more.chunk_index) == (narrow.id, 1)


@pytest.mark.slow
async def test_asyncio_workers_process_every_entity_exactly_once(db_url: str) -> None:
    async with Queue(db_url) as setup:
        jobs = [await enqueue(setup, 97, chunk_size=7, max_workers=3) for _ in range(3)]
        jobs.append(await enqueue(setup, 40, chunk_size=5))
    seen: list[tuple[int, str]] = []

    async def worker() -> None:
        async with Queue(db_url) as q:
            async def cb(eid: str, job: object) -> None:
                seen.append((job.id, eid))  # type: ignore[attr-defined]
                await asyncio.sleep(0)

            while await q.process_next_chunk(cb) is not None:
                pass

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(4))), 60)
    assert len(seen) == len(set(seen)) == 97 * 3 + 40
    async with Queue(db_url) as q:
        for j in jobs:
            got = await q.get_job(j.id)
            assert (got.status, got.processed_count, got.leased_chunks) == (COMPLETE, got.total_count, 0)


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from chunkq.core import Queue, Worker

    log = open(sys.argv[2], "a", buffering=1)

    def cb(entity_id, job):
        os.write(log.fileno(), f"{job.id} {entity_id}\\n".encode())

    async def main():
        async with Queue(sys.argv[1]) as q:
            await Worker(q, cb).run()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_os_processes_process_every_entity_exactly_once(db_url: str, tmp_path: Path,
                                                              python_env: dict[str, str]) -> None:
    async with Queue(db_url) as q:
        jobs = [await enqueue(q, 300, chunk_size=10, max_workers=4), await enqueue(q, 150, chunk_size=25)]
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    out = tmp_path / "seen.log"
    procs = [
        subprocess.Popen([sys.executable, str(script), db_url, str(out)], env=python_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err.decode()
    lines = out.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 450
    async with Queue(db_url) as q:
        for j in jobs:
            got = await q.get_job(j.id)
            assert (got.status, got.processed_count) == (COMPLETE, got.total_count)


async def test_resume_keeps_running_status_while_a_chunk_is_leased(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await enqueue(q, 20, chunk_size=10)
        claim = await q.claims.claim()
        assert claim is not None
        await q.pause(job.id)
        assert (await q.resume(job.id)).status == RUNNING
        from chunkq.core.outcomes import Outcomes

        r = await q.committer.commit(claim, Outcomes(len(claim.items), [], claim.items.positions), 0.1, None)
        assert r.status == PENDING


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)
