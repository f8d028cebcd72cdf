"""``concurrency="auto"``: the AIMD limiter on scripted outcomes, its parsing, and a queue run under it.

The limiter's clock is injected and outcomes are scripted, so every assertion is
about what the logic decides, never about how fast anything ran.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from chunkq.core import InvalidInput, Processor, ProcessorOptions, Queue, Retry
from chunkq.core.adaptive import AIMDLimit, FixedLimit, current_limit, is_overloaded, limit_for, parse_auto
from chunkq.core.bounds import check_concurrency


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _round(lim: AIMDLimit, clock: Clock, outcomes: list[tuple[bool, bool]], latency: float = 0.1) -> None:
    """Start ``len(outcomes)`` calls at once (up to the limit, as a worker would), end them in order."""
    assert len(outcomes) <= lim.limit
    cms = [lim.slot() for _ in outcomes]
    slots = [await cm.__aenter__() for cm in cms]
    clock.t += latency
    for cm, slot, (ok, overloaded) in zip(cms, slots, outcomes, strict=True):
        slot.done(ok=ok, overloaded=overloaded)
        await cm.__aexit__(None, None, None)


async def _full_round(lim: AIMDLimit, clock: Clock, latency: float = 0.1) -> None:
    await _round(lim, clock, [(True, False)] * lim.limit, latency)


async def test_slow_start_doubles_then_an_overload_cuts_and_growth_turns_additive() -> None:
    clock = Clock()
    lim = AIMDLimit(initial=2, minimum=1, maximum=1000, clock=clock)
    seen = [lim.limit]
    for _ in range(4):
        await _full_round(lim, clock)
        seen.append(lim.limit)
    assert seen == [2, 4, 8, 16, 32], "slow start doubles the limit every round of good calls"

    # the 21st concurrent call is refused: the limit comes down below what was refused, once
    await _round(lim, clock, [(True, False)] * 20 + [(False, True)] * 12)
    after_cut = lim.limit
    assert after_cut == int(21 * 0.9), "cut to backoff x the load that was refused"
    assert lim.cuts == 1 and lim.overloads == 12, "calls of the old limit do not cut again"
    assert not lim.slow_start

    # from now on: about one more per round far below the wall, and a creep near it
    before = lim.limit
    await _full_round(lim, clock)
    assert lim.limit <= before + 1


async def test_growth_is_additive_below_the_wall_and_creeps_near_it() -> None:
    clock = Clock()
    lim = AIMDLimit(initial=10, maximum=1000, clock=clock)
    await _round(lim, clock, [(True, False)] * 9 + [(False, True)])  # wall at 10: cut to 9
    assert lim.limit == 9 and lim.ceiling == 10
    rounds = 0
    while lim.limit < 10:  # near the wall, one slot takes probe_rounds rounds
        await _full_round(lim, clock)
        rounds += 1
    assert rounds >= 3, f"crept past the last wall in {rounds} rounds"

    # far below a wall: one more per round
    lim2 = AIMDLimit(initial=40, maximum=1000, clock=clock)
    await _round(lim2, clock, [(True, False)] * 39 + [(False, True)])  # cut to 36, wall at 40
    lim2.window = 20.0  # as if it had been cut further by another overload
    growth = []
    for _ in range(5):
        before = lim2.limit
        await _full_round(lim2, clock)
        growth.append(lim2.limit - before)
    assert all(g in (0, 1) for g in growth) and sum(growth) >= 4


async def test_the_same_wall_again_makes_probes_rarer() -> None:
    clock = Clock()
    lim = AIMDLimit(initial=10, maximum=1000, clock=clock)
    counts = []
    for _ in range(3):
        await _round(lim, clock, [(True, False)] * (lim.limit - 1) + [(False, True)]) if lim.limit >= 10 else None
        rounds = 0
        while lim.limit < 10:
            await _full_round(lim, clock)
            rounds += 1
        counts.append(rounds)
    assert counts[0] < counts[1] < counts[2], counts


async def test_latency_that_rises_stops_growth_and_failures_that_say_nothing_leave_it() -> None:
    def warmed_up() -> tuple[AIMDLimit, Clock]:
        clock = Clock()
        lim = AIMDLimit(initial=8, maximum=1000, clock=clock)
        return lim, clock

    grown: dict[float, int] = {}
    for slow in (0.1, 0.5):
        lim, clock = warmed_up()
        for _ in range(30):  # a 100 ms baseline; 4 calls at a time keep the limit from running away
            await _round(lim, clock, [(True, False)] * 4, latency=0.1)
        start = lim.limit
        for _ in range(10):
            await _round(lim, clock, [(True, False)] * lim.limit, latency=slow)
        grown[slow] = lim.limit - start
    assert grown[0.1] > 50, "flat latency, every slot busy: slow start keeps doubling"
    assert grown[0.5] <= 3, "latency x5: growth stops within the few calls the average needs to notice"

    lim, clock = warmed_up()
    before = lim.limit
    await _round(lim, clock, [(False, False)] * lim.limit, latency=0.1)  # 404s, bugs: no signal about load
    assert lim.limit == before and lim.cuts == 0


async def test_bounds_and_rate_limited_waits() -> None:
    clock = Clock()
    lim = AIMDLimit(initial=3, minimum=2, maximum=5, clock=clock)
    for _ in range(10):
        await _full_round(lim, clock)
    assert lim.limit == 5, "never above the maximum"
    for _ in range(10):
        await _round(lim, clock, [(False, True)] * lim.limit)
    assert lim.limit == 2, "never below the minimum"

    lim = AIMDLimit(initial=4, maximum=100, clock=clock)
    for _ in range(5):  # each call waited 1 s for the shared rate limiter: concurrency is not the bottleneck
        cms = [lim.slot() for _ in range(lim.limit)]
        slots = [await cm.__aenter__() for cm in cms]
        clock.t += 1.0
        for s in slots:
            s.started()
        clock.t += 0.1
        for cm, s in zip(cms, slots, strict=True):
            s.done(ok=True)
            await cm.__aexit__(None, None, None)
    assert lim.limit == 4


async def test_slots_wait_for_room_and_growth_lets_waiters_in() -> None:
    clock = Clock()
    lim = AIMDLimit(initial=1, maximum=10, clock=clock)
    first = lim.slot()
    s1 = await first.__aenter__()
    second = asyncio.ensure_future(lim.slot().__aenter__())
    await asyncio.sleep(0)
    assert not second.done() and lim.inflight == 1
    s1.done(ok=True)  # slow start: limit 2, the waiter gets in before the first slot is even released
    await asyncio.sleep(0)
    assert second.done() and lim.inflight == 2
    await first.__aexit__(None, None, None)

    fixed = FixedLimit(2)
    async with fixed.slot(), fixed.slot():
        blocked = asyncio.ensure_future(fixed.slot().__aenter__())
        await asyncio.sleep(0)
        assert not blocked.done() and fixed.inflight == 2
    await asyncio.sleep(0)
    assert blocked.done()


def test_overload_classification() -> None:
    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.status_code = status

    class Resp:
        status = 429

    class ClientError(Exception):
        response = Resp()

    class Throttled(Exception):
        pass

    assert is_overloaded(Retry("later"))
    assert is_overloaded(TimeoutError())
    assert is_overloaded(HTTPError(429)) and not is_overloaded(HTTPError(404))
    assert is_overloaded(ClientError("boom"))
    assert is_overloaded(RuntimeError("429 Too Many Requests"))
    assert is_overloaded(RuntimeError("rate limit exceeded")) and is_overloaded(Throttled())
    assert not is_overloaded(ValueError("bad domain"))
    assert is_overloaded(KeyError("x"), Processor(retry_on=(KeyError,)))


@pytest.mark.parametrize("given, expected", [
    ("auto", "auto"), ("AUTO", "auto"), (" auto:50 ", "auto:50"), ("8", 8), (8, 8),
])
def test_auto_parses(given: object, expected: object) -> None:
    assert check_concurrency(given) == expected
    assert Processor(concurrency=given).concurrency == expected  # type: ignore[arg-type]
    assert ProcessorOptions(concurrency=given).concurrency == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["fast", "auto:0", "auto:x", "auto:10001", "", "0", "10001", "-3", 0, 2.5, True])
def test_bad_concurrency_is_refused_with_the_shape_expected(given: object) -> None:
    with pytest.raises(InvalidInput) as info:
        ProcessorOptions(concurrency=given)  # type: ignore[arg-type]
    assert info.value.field == "concurrency"
    if isinstance(given, str):
        assert "auto" in str(info.value)


def test_limit_for() -> None:
    assert isinstance(limit_for(Processor(concurrency=3)), FixedLimit)
    assert limit_for(Processor(concurrency=3)).limit == 3
    proc = Processor(concurrency="auto:6")
    lim = limit_for(proc)
    assert isinstance(lim, AIMDLimit) and lim.maximum == 6 and limit_for(proc) is lim, "one per processor"
    assert parse_auto("auto") is None and parse_auto("auto:7") == 7


def test_the_auto_limiter_is_kept_off_the_users_processor_and_goes_with_it() -> None:
    """The user's object is theirs: chunkq keeps what it learned about it aside, by identity (an equal
    processor is another one), and forgets it when the processor is gone."""
    proc = Processor(concurrency="auto:6")
    lim = limit_for(proc)
    assert vars(proc) == vars(Processor(concurrency="auto:6")), "nothing of chunkq's on the processor"
    assert limit_for(Processor(concurrency="auto:6")) is not lim and current_limit(proc) == lim.limit
    proc.concurrency = "auto:9"  # a different setting: a limiter of its own
    assert limit_for(proc) is not lim and limit_for(proc).maximum == 9
    kept = weakref.ref(limit_for(proc))
    del proc, lim
    gc.collect()
    assert kept() is None


async def test_a_queue_run_under_auto_processes_everything_and_backs_off(db_url: str) -> None:
    """Against a provider refusing more than 3 calls at once, auto processes every entity exactly once
    (refused ones are retried) and its limit comes down to the provider's."""
    from chunkq.core import Worker

    live = 0
    seen: list[str] = []

    async def call(entity_id: str, job: object) -> None:
        nonlocal live
        if live >= 3:
            raise Retry("429 Too Many Requests", after=0)
        live += 1
        try:
            await asyncio.sleep(0.01)
        finally:
            live -= 1
        seen.append(entity_id)

    proc = Processor(on_process=call, concurrency="auto:40")
    async with Queue(db_url) as q:
        ids = [f"e{i}" for i in range(200)]
        await q.enqueue_job(ids, entity_type="t", provider="p", chunk_size=50, max_attempts=100)
        worker = Worker(q, proc, wait_for_retries=True)
        await asyncio.wait_for(worker.run(), 120)
        assert sorted(seen) == sorted(ids)
        lim = limit_for(proc)
        assert isinstance(lim, AIMDLimit) and lim.cuts >= 1
        assert worker.concurrency_limit == lim.limit <= 4
