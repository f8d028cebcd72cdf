"""A chunk's items and outcomes in the hot path's shapes (``core/outcomes.py``, issue 14).

Successes are counted, not built; failures are kept in full. These pin down
that every path of the runner (one sync loop, one call per entity, a batch)
reports the same thing in that shape, and that nothing a caller relied on
(per-entity reports, the positions a retry chunk resolves) got lost with the
objects.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chunkq.core import Processor, Retry
from chunkq.core.errors import JobFailed
from chunkq.core.models import EntityResult, Job
from chunkq.core.outcomes import Item, Items, Outcome, Outcomes
from chunkq.core.runner import ChunkAborted, ChunkRunner
from hypothesis import given
from hypothesis import strategies as st


def test_items_make_item_objects_only_on_demand() -> None:
    items = Items(["a", "b", "c"], range(10, 13))
    assert len(items) == 3 and items.ids == ["a", "b", "c"]
    assert items[1] == Item(11, "b", 1)
    assert list(items) == [Item(10, "a", 1), Item(11, "b", 1), Item(12, "c", 1)]
    assert items[1:] == [Item(11, "b", 1), Item(12, "c", 1)]
    retry = Items.of([Item(4, "x", 3), Item(9, "y", 2)])
    assert retry.attempts == [3, 2] and retry[0] == Item(4, "x", 3)
    assert Items.of(retry) is retry
    with pytest.raises(ValueError):
        Items(["a"], range(0, 2))


@given(st.lists(st.booleans(), max_size=40), st.integers(0, 40))
def test_outcomes_of_a_loop_count_what_ran(failed: list[bool], stop: int) -> None:
    """``Outcomes.ran``: the first ``ran`` entities ran; successes are those of them that did not fail."""
    items = Items([f"e{i}" for i in range(len(failed))], range(100, 100 + len(failed)))
    ran = min(stop, len(failed))
    failures = [Outcome(items[i], False, "E") for i in range(ran) if failed[i]]
    out = Outcomes.ran(items, ran, failures)
    assert out.ok + len(out.failures) == len(out) == ran
    assert list(out.succeeded) == [100 + i for i in range(ran) if not failed[i]]
    # the same from one Outcome per entity (how a caller may build them by hand)
    each = [Outcome(items[i], not failed[i], "" if not failed[i] else "E") for i in range(ran)]
    by_hand = Outcomes.of(each)
    assert (by_hand.ok, list(by_hand.succeeded), by_hand.failures) == (out.ok, list(out.succeeded), out.failures)


def _job(**kw: Any) -> Job:
    from datetime import UTC, datetime

    from chunkq.core.status import Status

    now = datetime.now(UTC)
    return Job(id=1, name=None, entity_type="company", provider="p", status=Status.RUNNING, chunk_size=10,
               priority=0, total_count=10, processed_count=0, error_count=0, created_at=now, updated_at=now,
               started_at=now, finished_at=None, lease_owner=None, lease_expires_at=None, fail_reason=None,
               parent_id=None, **kw)


def _fails_on_odd(entity_id: str, _job: Any) -> None:
    if int(entity_id[1:]) % 2:
        raise ValueError(f"odd {entity_id}")


async def _fails_on_odd_async(entity_id: str, job: Any) -> None:
    await asyncio.sleep(0)
    _fails_on_odd(entity_id, job)


def _batch_fails_on_odd(ids: list[str], _job: Any) -> dict[str, str]:
    return {e: "odd" for e in ids if int(e[1:]) % 2}


@pytest.mark.parametrize("shape", ["sync loop", "each", "batch"])
@pytest.mark.parametrize("listening", [False, True])
async def test_every_path_counts_successes_and_keeps_failures(shape: str, listening: bool) -> None:
    processor = {
        "sync loop": Processor(on_process=_fails_on_odd),
        "each": Processor(on_process=_fails_on_odd_async, concurrency=3),
        "batch": Processor(on_chunk=_batch_fails_on_odd),
    }[shape]
    items = Items([f"e{i}" for i in range(6)], range(20, 26))
    reports: list[EntityResult] = []
    runner = ChunkRunner(processor, _job(), on_entity=reports.append if listening else None)
    out = await runner.run(items)
    await asyncio.sleep(0)  # a sync loop's reports arrive through the loop
    assert out.ok == 3 and [o.item for o in out.failures] == [items[1], items[3], items[5]]
    assert all(not o.ok for o in out.failures)
    assert list(out.succeeded) == [20, 22, 24]
    if listening:  # successes are reported (with their time) only to someone who listens
        assert sorted((r.entity_id, r.ok) for r in reports) == sorted((f"e{i}", i % 2 == 0) for i in range(6))
        assert all(r.duration >= 0 for r in reports)
    else:
        assert reports == []


async def test_job_failed_stops_the_loop_with_what_ran_and_its_culprit() -> None:
    def cb(entity_id: str, _job: Any) -> None:
        if entity_id == "e1":
            raise ValueError("bad")
        if entity_id == "e3":
            raise JobFailed("the key was revoked")

    items = Items([f"e{i}" for i in range(6)], range(6))
    with pytest.raises(ChunkAborted) as err:
        await ChunkRunner(Processor(on_process=cb), _job()).run(items)
    out = err.value.outcomes
    assert (out.ok, [o.item.entity_id for o in out.failures]) == (2, ["e1"])
    assert out.culprit is not None and out.culprit.item == items[3] and out.culprit.aborted_job


async def test_a_transient_failure_carries_its_retry_time() -> None:
    def cb(entity_id: str, _job: Any) -> None:
        raise Retry("429", after=30)

    out = await ChunkRunner(Processor(on_process=cb), _job(max_attempts=3), schedule_retries=lambda: 1000.0).run(
        Items(["a"], range(1)))
    assert out.ok == 0 and out.failures[0].retry_at == 1030.0
