"""Fair scheduling (issue 25): a small job never waits behind a big one.

Every order here is proven by scripted claims, never by timing: an injected
clock moves one second per chunk, so "served least recently" is exact, and each
test reads back which job every claim served. Both backends (``db_url``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from chunkq.core import COMPLETE, InvalidInput, Processor, Queue, Worker
from chunkq.core.chunk import run_claimed
from chunkq.core.outcomes import Outcomes

from .test_leases import FakeClock, enqueue

NOOP = Processor(on_process=lambda e, _j: None)


async def _drain(q: Queue, clock: FakeClock, chunks: int | None = None,
                 between: Callable[[int], object] | None = None) -> list[int]:
    """Run chunks one at a time, a second apart; the job each one served, in order."""
    served: list[int] = []
    while chunks is None or len(served) < chunks:
        clock.advance(1)
        r = await q.process_next_chunk(NOOP)
        if r is None:
            break
        served.append(r.job_id)
        if between is not None:
            await between(len(served))  # type: ignore[misc]
    return served


async def test_jobs_of_one_priority_take_turns(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        a = (await enqueue(q, 9, chunk_size=2)).id  # 5 chunks
        b = (await enqueue(q, 4, chunk_size=2)).id  # 2 chunks
        c = (await enqueue(q, 3, chunk_size=1)).id  # 3 chunks
        # never served first, oldest first; then the one served least recently; a job done drops out
        assert await _drain(q, clock) == [a, b, c, a, b, c, a, c, a, a]
        assert [(await q.get_job(j)).status for j in (a, b, c)] == [COMPLETE] * 3


async def test_a_small_job_enqueued_beside_a_big_one_goes_next(db_url: str) -> None:
    """The issue's report: a 3-entity job waited for the whole big job. Now it waits one chunk."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        big = (await enqueue(q, 100, chunk_size=5)).id
        small: list[int] = []

        async def enqueue_small(n: int) -> None:
            if n == 3:
                small.append((await enqueue(q, 3, chunk_size=1, name="small")).id)

        served = await _drain(q, clock, chunks=10, between=enqueue_small)
        s = small[0]
        assert served == [big, big, big, s, big, s, big, s, big, big]
        assert (await q.get_job(s)).status == COMPLETE


async def test_fresh_jobs_start_oldest_first_and_priority_stays_strict(db_url: str) -> None:
    """The seed's order for jobs never served (``test_lifecycle.test_priority_then_fifo``), and a
    higher priority drains before any lower one gets a turn, however long that one has waited."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        low1 = (await enqueue(q, 2, chunk_size=1)).id
        high1 = (await enqueue(q, 3, chunk_size=1, priority=5)).id
        low2 = (await enqueue(q, 2, chunk_size=1)).id
        high2 = (await enqueue(q, 1, chunk_size=1, priority=5)).id
        neg = (await enqueue(q, 1, chunk_size=1, priority=-1)).id
        assert await _drain(q, clock) == [high1, high2, high1, high1, low1, low2, low1, low2, neg]


@pytest.mark.parametrize("how", ["queue", "worker"])
async def test_fifo_on_request_drains_the_oldest_job_first(db_url: str, how: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock, order="fifo" if how == "queue" else "fair") as q:
        a = (await enqueue(q, 4, chunk_size=2)).id
        b = (await enqueue(q, 2, chunk_size=2)).id
        c = (await enqueue(q, 2, chunk_size=1, priority=1)).id
        served: list[int] = []
        worker = Worker(q, NOOP, order="fifo" if how == "worker" else None, window=1,
                        on_chunk=lambda r: served.append(r.job_id))
        summary = await asyncio.wait_for(worker.run(), 60)
        assert summary.stopped_by == "empty"
        assert served == [c, c, a, a, b]


async def test_an_unknown_order_is_refused(db_url: str) -> None:
    with pytest.raises(InvalidInput, match="order must be one of fair, fifo, not 'random'"):
        Queue(db_url, order="random")
    async with Queue(db_url) as q:
        with pytest.raises(InvalidInput, match="order must be one of fair, fifo"):
            Worker(q, NOOP, order="lifo")


async def test_a_job_at_max_workers_is_passed_over_for_the_next_in_turn(db_url: str) -> None:
    """The job served least recently is held by another worker up to its ``max_workers``: the claim
    serves the next job in turn, and the held job's turn comes once its slot is free."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock, owner="one:1:a") as one, \
            Queue(db_url, clock=clock, owner="two:2:b") as two:
        a = (await enqueue(one, 6, chunk_size=1, max_workers=1)).id
        b = (await enqueue(one, 6, chunk_size=1, max_workers=1)).id
        held = await one.claims.claim()  # a's turn: worker one holds it (its only worker slot)
        assert held is not None and held.job.id == a
        clock.advance(1)
        assert [(await two.process_next_chunk(NOOP)).job_id for _ in range(2)] == [b, b]  # type: ignore[union-attr]
        clock.advance(1)
        await run_claimed(one, held, NOOP, None)  # a's slot is free again
        clock.advance(1)
        r = await two.process_next_chunk(NOOP)
        assert r is not None and r.job_id == a  # served least recently: its turn, at once


async def _turns(q: Queue) -> tuple[dict[int, float], dict[str, float]]:
    """Every job's ``served_at`` and every tenant's virtual time: the state of the fair order."""
    from chunkq.core import schema as s
    from sqlalchemy import select

    def read(conn: object) -> tuple[dict[int, float], dict[str, float]]:
        jobs = conn.execute(select(s.jobs.c.id, s.jobs.c.served_at)).all()  # type: ignore[attr-defined]
        tenants = conn.execute(select(s.tenants.c.name, s.tenants.c.vtime)).all()  # type: ignore[attr-defined]
        return {int(i): float(v) for i, v in jobs}, {str(n): float(v) for n, v in tenants}

    return await q.backend.read(read, "reading turns")


async def test_taking_over_an_expired_lease_is_not_a_turn(db_url: str) -> None:
    """A worker that redoes a dead worker's chunk has not given its job a turn: the job's
    ``served_at`` and its tenant's virtual time stay as the first claim left them, so the
    next fresh claims serve the other tenant first, as if the worker had never died."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock, owner="one:1:a", lease_seconds=30) as one, \
            Queue(db_url, clock=clock, owner="two:2:b", lease_seconds=30) as two:
        a = (await enqueue(one, 6, chunk_size=1, tenant="a")).id
        b = (await enqueue(one, 6, chunk_size=1, tenant="b")).id
        clock.advance(1)
        dead = await one.claims.claim()  # tenant a's turn; then worker one dies holding it
        assert dead is not None and dead.job.id == a
        before = await _turns(one)
        clock.advance(60)  # its lease expired
        taken = await two.claims.claim()
        assert taken is not None and (taken.job.id, taken.chunk_index, taken.attempt) == (a, 0, 2)
        assert await _turns(two) == before  # not a turn: neither the job's nor its tenant's
        await two.committer.commit(taken, Outcomes(), 0.0, None)
        assert await _drain(two, clock, chunks=4) == [b, a, b, a]


async def test_a_window_holding_two_jobs_at_max_workers_keeps_both(db_url: str) -> None:
    """Only *other* workers count against ``max_workers``: a window holding chunks of two
    ``max_workers=1`` jobs may take more of either (not only of its latest chunk's), while
    another worker may join neither."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock, owner="one:1:a") as one, \
            Queue(db_url, clock=clock, owner="two:2:b") as two:
        a = (await enqueue(one, 6, chunk_size=1, max_workers=1)).id
        b = (await enqueue(one, 6, chunk_size=1, max_workers=1)).id
        held = []
        for _ in range(4):  # the window's latest chunk is passed as ``mine``, as ``Worker`` does
            clock.advance(1)
            held.append(await one.claims.claim(mine=held[-1].job.id if held else None))
        assert [h.job.id for h in held if h is not None] == [a, b, a, b]  # turns, inside one window
        assert await two.claims.claim() is None
        for h in held:
            assert h is not None
            await one.committer.commit(h, Outcomes(), 0.0, None)


async def test_a_window_holds_chunks_of_several_jobs(queue: Queue) -> None:
    """A worker's window takes its next chunk from the next job in turn, not only from the job it
    holds: job b's chunk runs beside job a's first chunk, long before a's last is claimed."""
    a = await enqueue(queue, 40, chunk_size=2)  # 20 chunks
    b = await enqueue(queue, 2, chunk_size=2)
    b_ran = asyncio.Event()
    flight_when_b_ran: list[list[tuple[int, int]]] = []
    worker: Worker

    async def cb(entity_id: str, job: object) -> None:
        if getattr(job, "id", None) == a.id and entity_id == "e0":
            await b_ran.wait()
        elif getattr(job, "id", None) == b.id:
            flight_when_b_ran.append(worker.in_flight)
            b_ran.set()

    worker = Worker(queue, Processor(on_process=cb, concurrency=3))
    summary = await asyncio.wait_for(worker.run(), 60)
    assert (summary.chunks, summary.entities, summary.stopped_by) == (21, 42, "empty")
    assert sorted(summary.jobs_completed) == sorted([a.id, b.id])
    first = flight_when_b_ran[0]
    assert (a.id, 0) in first and (b.id, 0) in first  # chunks of both jobs held at once
    assert max(i for j, i in first if j == a.id) < 5  # b's turn came early (oldest first: after a's 20th)


async def test_a_retry_chunk_takes_its_turn_too(db_url: str) -> None:
    """A retry that falls due is a chunk like any other: claiming it is the job's turn."""
    from chunkq.core import Retry

    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        a = (await enqueue(q, 1, chunk_size=1, max_attempts=3)).id
        b = (await enqueue(q, 3, chunk_size=1)).id
        clock.advance(1)

        def once(_e: str, _j: object) -> None:
            raise Retry("busy", after=0)

        r = await q.process_next_chunk(once)  # a's only entity: retried, due at once
        assert r is not None and (r.job_id, r.retried) == (a, 1)
        served = await _drain(q, clock)
        assert served == [b, a, b, b]


# ---------------------------------------------------------------------------------------- tenants


async def test_tenants_take_turns_before_their_jobs_do(db_url: str) -> None:
    """A tenant with three jobs gets one turn to another tenant's one, not three; within a tenant
    its jobs take turns; jobs without a tenant take turns as one tenant."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        a1 = (await enqueue(q, 4, chunk_size=1, tenant="acme")).id
        a2 = (await enqueue(q, 4, chunk_size=1, tenant="acme")).id
        a3 = (await enqueue(q, 4, chunk_size=1, tenant="acme")).id
        b1 = (await enqueue(q, 4, chunk_size=1, tenant="bolt")).id
        n1 = (await enqueue(q, 2, chunk_size=1)).id
        served = await _drain(q, clock, chunks=12)
        tenant = {a1: "acme", a2: "acme", a3: "acme", b1: "bolt", n1: None}
        # tenants in turn (ties: by name, "" first), until one has nothing left
        assert [tenant[j] for j in served] == [None, "acme", "bolt"] * 2 + ["acme", "bolt"] * 2 + ["acme"] * 2
        assert [j for j in served if tenant[j] == "acme"] == [a1, a2, a3] * 2  # acme's jobs in turn
        assert (await q.get_job(b1)).tenant == "bolt" and (await q.get_job(n1)).tenant is None


async def test_a_tenant_of_weight_two_gets_two_turns_to_one(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        heavy = (await enqueue(q, 30, chunk_size=1, tenant="heavy")).id
        light = (await enqueue(q, 30, chunk_size=1, tenant="light")).id
        await q.set_tenant_weight("heavy", 2)
        served = await _drain(q, clock, chunks=30)
        assert served.count(heavy) == 20 and served.count(light) == 10, served
        assert all(served[i:i + 3].count(heavy) == 2 for i in range(0, 30, 3)), served  # evenly, not in bursts


async def test_a_tenant_new_to_the_queue_takes_its_turn_among_the_others(db_url: str) -> None:
    """Not every turn it never used: its virtual time starts at the lowest of the tenants waiting."""
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        a = (await enqueue(q, 40, chunk_size=1, tenant="a")).id
        b = (await enqueue(q, 40, chunk_size=1, tenant="b")).id
        assert len(await _drain(q, clock, chunks=20)) == 20
        c = (await enqueue(q, 40, chunk_size=1, tenant="c")).id
        served = await _drain(q, clock, chunks=9)
        assert sorted(served.count(j) for j in (a, b, c)) == [3, 3, 3], served


async def test_bad_tenants_and_weights_are_refused(db_url: str) -> None:
    async with Queue(db_url) as q:
        with pytest.raises(InvalidInput, match="tenant"):
            await enqueue(q, 1, tenant="a\x1b[31mb")
        with pytest.raises(InvalidInput, match="tenant"):
            await enqueue(q, 1, tenant="x" * 201)
        for bad in (0, -1, float("nan"), float("inf"), "2", True):
            with pytest.raises(InvalidInput, match="weight"):
                await q.set_tenant_weight("a", bad)  # type: ignore[arg-type]
        assert await q.list_jobs() == []


async def test_a_tenant_whose_jobs_are_being_claimed_does_not_idle_the_others(pg_url: str) -> None:
    """PostgreSQL: the job of the tenant whose turn it is is locked by another worker's claim in
    flight (SKIP LOCKED passes it by): the claim serves another tenant's job at once, instead of
    waiting for that transaction (or finding nothing when it commits with the job's slot taken)."""
    from chunkq.core import schema as s
    from sqlalchemy import select as select_
    from sqlalchemy import text

    clock = FakeClock()
    async with Queue(pg_url, clock=clock) as q:
        first = (await enqueue(q, 4, chunk_size=1, tenant="first")).id
        other = (await enqueue(q, 4, chunk_size=1, tenant="other")).id
        async with q.engine.connect() as held:
            await held.execute(text("BEGIN"))
            await held.execute(select_(s.jobs.c.id).where(s.jobs.c.id == first).with_for_update())
            claim = await asyncio.wait_for(q.claims.claim(), 20)
            await held.rollback()
        assert claim is not None and claim.job.id == other


async def test_a_worker_kept_idle_by_max_workers_says_which_job_and_who_holds_it(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Not "nothing left to do" while work is left: the run names the job at its ``max_workers``
    and the worker holding it (``orphans.held_back``); a forever worker logs it once when idle."""
    async with Queue(db_url, owner="hold:11:a") as holder, Queue(db_url, owner="idle:22:b") as idle:
        job = (await enqueue(holder, 6, chunk_size=2)).id  # max_workers 1
        held = await holder.claims.claim()
        assert held is not None
        summary = await asyncio.wait_for(Worker(idle, NOOP).run(), 30)
        assert (summary.chunks, summary.stopped_by) == (0, "empty")
        assert summary.held_back == f"job {job} is at its max_workers (1), held by another worker (hold:11)"
        assert summary.to_dict()["held_back"] == summary.held_back
        with caplog.at_level("WARNING", logger="chunkq.worker"):
            await asyncio.wait_for(Worker(idle, NOOP, forever=True, poll_interval=0.05, max_seconds=0.5).run(), 30)
        said = [r.getMessage() for r in caplog.records if "max_workers" in r.getMessage()]
        assert len(said) == 1 and f"job {job} is at its max_workers (1)" in said[0], said
        await holder.committer.commit(held, Outcomes(), 0.0, None)
        done = await asyncio.wait_for(Worker(idle, NOOP).run(), 30)
        assert done.chunks == 2 and done.held_back is None  # its slot was free: nothing to explain
