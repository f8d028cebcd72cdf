"""The design's own scenarios, then the lifecycle the design left out.

Every test runs on a real SQLite file and on the real PostgreSQL (the ``db_url``
fixture is parametrized).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from chunkq.core import (
    COMPLETE,
    FAILED,
    PAUSED,
    PENDING,
    InvalidInput,
    InvalidTransition,
    JobFailed,
    JobNotFound,
    Processor,
    Queue,
)


async def enqueue(q: Queue, n: int, **kw):
    kw.setdefault("entity_type", "company")
    kw.setdefault("provider", "clearbit")
    return await q.enqueue_job([f"e{i}" for i in range(n)], **kw)


# ------------------------------------------------------------------ the design's scenarios


async def test_enqueue_creates_pending_job(queue: Queue) -> None:
    job = await enqueue(queue, 3, name="batch")
    assert (job.status, job.total_count, job.processed_count, job.error_count) == (PENDING, 3, 0, 0)
    assert (job.entity_type, job.provider, job.name) == ("company", "clearbit", "batch")
    assert await queue.entity_ids(job.id) == ["e0", "e1", "e2"]


async def test_empty_ids_rejected_and_nothing_written(queue: Queue) -> None:
    with pytest.raises(InvalidInput, match="no entity IDs"):
        await queue.enqueue_job([], entity_type="company", provider="p")
    with pytest.raises(InvalidInput, match="no entity IDs"):
        await queue.enqueue_job(iter(()), entity_type="company", provider="p")
    assert await queue.list_jobs() == []


async def test_default_chunk_size_is_50(queue: Queue) -> None:
    job = await enqueue(queue, 120)
    assert job.chunk_size == 50
    result = await queue.process_next_chunk()
    assert result is not None and result.processed == 50


async def test_nothing_pending_returns_none(queue: Queue) -> None:
    assert await queue.process_next_chunk() is None
    job = await enqueue(queue, 2)
    await queue.process_next_chunk()
    assert (await queue.get_job(job.id)).status == COMPLETE
    assert await queue.process_next_chunk() is None


async def test_full_last_chunk_completes_job(queue: Queue) -> None:
    job = await enqueue(queue, 50)
    result = await queue.process_next_chunk()
    assert result is not None
    assert (result.job_id, result.chunk_index, result.processed, result.errors, result.status) == (
        job.id, 0, 50, 0, COMPLETE)
    done = await queue.get_job(job.id)
    assert done.status == COMPLETE and done.processed_count == 50 and done.finished_at is not None
    assert done.lease_owner is None and done.leased_chunks == 0


async def test_partial_chunk_leaves_job_pending(queue: Queue) -> None:
    job = await enqueue(queue, 120)
    result = await queue.process_next_chunk()
    assert result is not None and result.status == PENDING
    j = await queue.get_job(job.id)
    assert (j.status, j.processed_count, j.leased_chunks) == (PENDING, 50, 0)
    assert j.started_at is not None and j.finished_at is None


async def test_callback_called_once_per_entity_with_the_job(queue: Queue) -> None:
    job = await enqueue(queue, 7, chunk_size=10)
    calls = []
    await queue.process_next_chunk(lambda eid, j: calls.append((eid, j.id, j.provider)))
    assert calls == [(f"e{i}", job.id, "clearbit") for i in range(7)]


async def test_entity_errors_logged_and_job_goes_on(queue: Queue) -> None:
    job = await enqueue(queue, 10, chunk_size=10)
    seen = []

    def cb(eid: str, _job: object) -> None:
        seen.append(eid)
        if eid in ("e3", "e7"):
            raise ValueError(f"no match for {eid}")

    result = await queue.process_next_chunk(cb)
    assert result is not None and (result.processed, result.errors, result.status) == (10, 2, COMPLETE)
    assert len(seen) == 10
    errors = await queue.list_errors(job.id)
    assert [(e.entity_id, e.error_type, e.message, e.chunk_index, e.attempt) for e in errors] == [
        ("e3", "ValueError", "no match for e3", 0, 1),
        ("e7", "ValueError", "no match for e7", 0, 1),
    ]
    assert "Traceback" in errors[0].traceback and "no match for e3" in errors[0].traceback
    assert errors[0].stacks and errors[0].stacks[-1].frames[-1].name == "cb"
    j = await queue.get_job(job.id)
    assert (j.error_count, j.failed_count, j.succeeded_count) == (2, 2, 8)


async def test_errors_merged_across_chunks(queue: Queue) -> None:
    job = await enqueue(queue, 30, chunk_size=10)

    def cb(eid: str, _job: object) -> None:
        if eid.endswith("5"):
            raise RuntimeError(eid)

    while await queue.process_next_chunk(cb):
        pass
    errors = await queue.list_errors(job.id)
    assert [(e.entity_id, e.chunk_index) for e in errors] == [("e5", 0), ("e15", 1), ("e25", 2)]
    assert (await queue.get_job(job.id)).error_count == 3


async def test_resume_from_processed_offset(db_url: str) -> None:
    seen: list[str] = []
    async with Queue(db_url) as q:
        job = await enqueue(q, 25, chunk_size=10)
        await q.process_next_chunk(lambda e, j: seen.append(e))
    # A new process (a new Queue) picks up where the last one committed.
    async with Queue(db_url) as q:
        while await q.process_next_chunk(lambda e, j: seen.append(e)):
            pass
        assert (await q.get_job(job.id)).processed_count == 25
    assert seen == [f"e{i}" for i in range(25)]


# ------------------------------------------------------------------ order, validation


async def test_priority_then_fifo(queue: Queue) -> None:
    low1 = await enqueue(queue, 1, name="low1")
    high = await enqueue(queue, 1, name="high", priority=5)
    low2 = await enqueue(queue, 1, name="low2")
    neg = await enqueue(queue, 1, name="neg", priority=-1)
    order = []
    while (r := await queue.process_next_chunk()) is not None:
        order.append(r.job_id)
    assert order == [high.id, low1.id, low2.id, neg.id]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", 5], r"entity ID #2 is int"),
        (["a", "   "], r"entity ID #2 is blank"),
        (["a", "b\x00c"], r"#2 contains a NUL byte"),
        (["x" * 5000], r"#1 is 5,000 characters long"),
        (["ok", "bad\udcff"], r"#2 is not valid UTF-8"),
        ("abc", r"not a single string"),
        (None, r"must be a list"),
    ],
)
async def test_bad_ids_rejected_with_position_and_nothing_written(queue: Queue, ids: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await queue.enqueue_job(ids, entity_type="company", provider="p")  # type: ignore[arg-type]
    assert await queue.list_jobs() == []


async def test_bad_id_late_in_a_stream_leaves_nothing(queue: Queue) -> None:
    def stream():
        for i in range(12_000):
            yield f"id{i}"
        yield ""

    with pytest.raises(InvalidInput, match=r"#12001 is blank"):
        await queue.enqueue_job(stream(), entity_type="company", provider="p")
    assert await queue.list_jobs() == []
    assert await queue.count_jobs() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk_size must be between 1 and 10,000"),
        ({"chunk_size": -1}, "chunk_size must be between"),
        ({"chunk_size": 10_001}, "chunk_size must be between"),
        ({"chunk_size": "50"}, "chunk_size must be a whole number"),
        ({"entity_type": " "}, "entity_type is required"),
        ({"provider": ""}, "provider is required"),
        ({"max_workers": 0}, "max_workers must be between"),
        ({"max_error_ratio": 2.0}, "max_error_ratio must be a fraction"),
    ],
)
async def test_bad_settings_rejected(queue: Queue, kwargs: dict, message: str) -> None:
    args = {"entity_type": "company", "provider": "p", **kwargs}
    with pytest.raises(InvalidInput, match=message):
        await queue.enqueue_job(["a"], **args)
    assert await queue.list_jobs() == []


async def test_whitespace_stripped_and_dedupe_keeps_first_order(queue: Queue) -> None:
    job = await queue.enqueue_job([" b ", "a", "b", "c", "a"], entity_type="t", provider="p", dedupe=True)
    assert await queue.entity_ids(job.id) == ["b", "a", "c"]
    assert job.total_count == 3
    nodedupe = await queue.enqueue_job(["a", "a"], entity_type="t", provider="p")
    assert nodedupe.total_count == 2


async def test_unknown_job_ids(queue: Queue) -> None:
    for call in (queue.get_job, queue.pause, queue.resume, queue.cancel, queue.retry_failed):
        with pytest.raises(JobNotFound):
            await call(999)
    with pytest.raises(InvalidInput):
        await queue.get_job(-1)


# ------------------------------------------------------------------ control


async def test_pause_resume_cancel(queue: Queue) -> None:
    a = await enqueue(queue, 100, chunk_size=10)
    b = await enqueue(queue, 10, chunk_size=10)
    await queue.pause(a.id)
    r = await queue.process_next_chunk()
    assert r is not None and r.job_id == b.id  # paused jobs are skipped
    assert await queue.process_next_chunk() is None
    with pytest.raises(InvalidTransition, match="it is paused"):
        await queue.pause(a.id)
    with pytest.raises(InvalidTransition, match="is paused"):
        await queue.process_chunk(a.id)
    resumed = await queue.resume(a.id)
    assert resumed.status == PENDING
    r = await queue.process_next_chunk()
    assert r is not None and r.job_id == a.id
    cancelled = await queue.cancel(a.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert await queue.process_next_chunk() is None
    with pytest.raises(InvalidTransition, match=r"cannot resume job \d+: it is cancelled"):
        await queue.resume(a.id)
    with pytest.raises(InvalidTransition):
        await queue.cancel(b.id)  # complete


async def test_chunk_in_flight_commits_after_pause(queue: Queue) -> None:
    job = await enqueue(queue, 20, chunk_size=10)

    async def cb(eid: str, j: object) -> None:
        if eid == "e0":
            await queue.pause(job.id)

    r = await queue.process_next_chunk(cb)
    assert r is not None and r.processed == 10 and r.status == PAUSED
    j = await queue.get_job(job.id)
    assert (j.status, j.processed_count, j.leased_chunks) == (PAUSED, 10, 0)


async def test_retry_failed_makes_new_job_of_failed_entities(queue: Queue) -> None:
    job = await enqueue(queue, 20, chunk_size=20)

    def cb(eid: str, _j: object) -> None:
        if eid in ("e2", "e11"):
            raise KeyError(eid)

    await queue.process_next_chunk(cb)
    retry = await queue.retry_failed(job.id)
    assert retry.parent_id == job.id and retry.status == PENDING and retry.total_count == 2
    assert await queue.entity_ids(retry.id) == ["e2", "e11"]
    assert (retry.entity_type, retry.provider, retry.chunk_size) == ("company", "clearbit", 20)
    clean = await enqueue(queue, 3)
    await queue.process_chunk(clean.id)
    with pytest.raises(InvalidInput, match="no failed entities"):
        await queue.retry_failed(clean.id)
    assert await queue.count_jobs() == 3


async def test_job_failed_fails_the_job_and_retry_takes_the_rest(queue: Queue) -> None:
    job = await enqueue(queue, 30, chunk_size=10)
    await queue.process_next_chunk()

    def cb(eid: str, _j: object) -> None:
        if eid == "e13":
            raise JobFailed("API key revoked")

    r = await queue.process_next_chunk(cb)
    assert r is not None and r.status == FAILED
    j = await queue.get_job(job.id)
    assert j.status == FAILED and j.fail_reason == "JobFailed: API key revoked"
    assert j.processed_count == 10  # the aborted chunk is not counted
    assert await queue.process_next_chunk() is None
    retry = await queue.retry_failed(job.id)
    assert await queue.entity_ids(retry.id, limit=100) == [f"e{i}" for i in range(10, 30)]


async def test_circuit_breaker_pauses_after_dead_chunks(db_url: str) -> None:
    async with Queue(db_url, breaker_chunks=3) as q:
        job = await enqueue(q, 100, chunk_size=5)

        def dead(eid: str, _j: object) -> None:
            raise ConnectionError("provider down")

        statuses = []
        for _ in range(3):
            r = await q.process_next_chunk(dead)
            assert r is not None
            statuses.append(r.status)
        assert statuses == [PENDING, PENDING, PAUSED]
        j = await q.get_job(job.id)
        assert j.fail_reason is not None and "circuit breaker" in j.fail_reason
        assert await q.process_next_chunk(dead) is None  # no more credits burnt
        await q.resume(job.id)
        r = await q.process_next_chunk()
        assert r is not None and r.status == PENDING


async def test_breaker_counts_only_consecutive_dead_chunks(db_url: str) -> None:
    async with Queue(db_url, breaker_chunks=2) as q:
        job = await enqueue(q, 30, chunk_size=5)
        flip = iter([True, False, True, False, True, False])

        def cb(eid: str, _j: object) -> None:
            raise ValueError("x")

        for _ in range(6):
            await q.process_next_chunk(cb if next(flip) else None)
        assert (await q.get_job(job.id)).status == COMPLETE


# ------------------------------------------------------------------ callback forms


async def test_async_callback_with_concurrency(queue: Queue) -> None:
    await enqueue(queue, 20, chunk_size=20)
    active = peak = 0

    async def cb(eid: str, _j: object) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    r = await queue.process_next_chunk(Processor(on_process=cb, concurrency=5))
    assert r is not None and r.processed == 20
    assert peak == 5


async def test_sync_callback_runs_off_the_event_loop(queue: Queue) -> None:
    import threading

    await enqueue(queue, 3)
    threads = set()
    main = threading.get_ident()
    await queue.process_next_chunk(lambda e, j: threads.add(threading.get_ident()))
    assert threads and main not in threads


async def test_entity_timeout_recorded_as_error(queue: Queue) -> None:
    job = await enqueue(queue, 3)

    async def cb(eid: str, _j: object) -> None:
        if eid == "e1":
            await asyncio.sleep(60)

    r = await queue.process_next_chunk(Processor(on_process=cb, timeout=0.2))
    assert r is not None and (r.processed, r.errors, r.status) == (3, 1, COMPLETE)
    (err,) = await queue.list_errors(job.id)
    assert err.entity_id == "e1" and err.error_type == "TimeoutError" and "timed out after 0.2s" in err.message


async def test_batch_callback(queue: Queue) -> None:
    job = await enqueue(queue, 12, chunk_size=5)
    batches = []

    def bulk(ids: list[str], _j: object) -> dict[str, object]:
        batches.append(ids)
        return {"e3": "not found", "e8": ValueError("bad")}

    while await queue.process_next_chunk(Processor(on_chunk=bulk)):
        pass
    assert batches == [["e0", "e1", "e2", "e3", "e4"], ["e5", "e6", "e7", "e8", "e9"], ["e10", "e11"]]
    errs = await queue.list_errors(job.id)
    assert [(e.entity_id, e.error_type, e.message) for e in errs] == [
        ("e3", "Error", "not found"), ("e8", "ValueError", "bad")]
    assert (await queue.get_job(job.id)).status == COMPLETE


async def test_batch_callback_raising_fails_every_entity_of_the_chunk(queue: Queue) -> None:
    job = await enqueue(queue, 4, chunk_size=4)

    async def bulk(ids: list[str], _j: object) -> None:
        raise RuntimeError("bulk endpoint 500")

    r = await queue.process_next_chunk(Processor(on_chunk=bulk))
    assert r is not None and r.errors == 4
    assert {e.message for e in await queue.list_errors(job.id)} == {"bulk endpoint 500"}


async def test_base_exceptions_from_callback_are_entity_errors(queue: Queue) -> None:
    job = await enqueue(queue, 3)

    def cb(eid: str, _j: object) -> None:
        if eid == "e0":
            raise KeyboardInterrupt
        if eid == "e1":
            raise SystemExit(3)

    r = await queue.process_next_chunk(cb)
    assert r is not None and (r.processed, r.errors, r.status) == (3, 2, COMPLETE)
    assert [e.error_type for e in await queue.list_errors(job.id)] == ["KeyboardInterrupt", "SystemExit"]


async def test_on_entity_hook_reports_each_result(queue: Queue) -> None:
    await enqueue(queue, 3)
    results = []

    def cb(eid: str, _j: object) -> None:
        if eid == "e1":
            raise ValueError("nope")

    await queue.process_next_chunk(cb, on_entity=results.append)
    await asyncio.sleep(0)  # hooks from the worker thread arrive via call_soon_threadsafe
    assert [(r.entity_id, r.ok, r.error_type) for r in results] == [
        ("e0", True, None), ("e1", False, "ValueError"), ("e2", True, None)]


# ------------------------------------------------------------------ reads


async def test_list_jobs_filters_and_changed_since(queue: Queue) -> None:
    a = await enqueue(queue, 5, name="Alpha companies")
    b = await enqueue(queue, 5, name="beta people", provider="prospeo")
    assert [j.id for j in await queue.list_jobs()] == [b.id, a.id]
    assert [j.id for j in await queue.list_jobs(search="PROSPEO")] == [b.id]
    assert [j.id for j in await queue.list_jobs(search="alpha")] == [a.id]
    mark = queue.now()
    await asyncio.sleep(0.01)
    await queue.process_chunk(a.id)
    changed = await queue.list_jobs(changed_since=mark)
    assert [j.id for j in changed] == [a.id]
    assert [j.id for j in await queue.list_jobs(status="complete")] == [a.id]
    assert await queue.count_jobs(["pending", "complete"]) == 2
    with pytest.raises(InvalidInput, match="unknown status 'done'"):
        await queue.list_jobs(status="done")


async def test_active_jobs_listed_first(queue: Queue) -> None:
    done = await enqueue(queue, 1)
    await queue.process_chunk(done.id)
    pending = await enqueue(queue, 1)
    paused = await enqueue(queue, 1)
    await queue.pause(paused.id)
    assert [j.id for j in await queue.list_jobs()] == [pending.id, paused.id, done.id]


async def test_chunk_history_and_stats(queue: Queue) -> None:
    job = await enqueue(queue, 25, chunk_size=10)

    def cb(eid: str, _j: object) -> None:
        if eid == "e12":
            raise ValueError("x")

    while await queue.process_next_chunk(cb):
        pass
    chunks = await queue.list_chunks(job.id)
    assert [(c.chunk_index, c.size, c.ok, c.errors, c.state, c.kind) for c in chunks] == [
        (0, 10, 10, 0, "done", "range"), (1, 10, 9, 1, "done", "range"), (2, 5, 5, 0, "done", "range")]
    assert all(c.worker == queue.owner and c.duration is not None for c in chunks)
    stats = await queue.stats()
    assert stats.jobs_by_status["complete"] == 1
    assert (stats.total_entities, stats.processed_entities, stats.error_count) == (25, 25, 1)
    assert stats.entities_per_second > 0
    groups = await queue.group_errors(job.id)
    assert [(g.error_type, g.message, g.count) for g in groups] == [("ValueError", "x", 1)]


async def test_schema_version_newer_than_code_is_refused(db_url: str) -> None:
    from chunkq.core import DatabaseUnavailable
    from chunkq.core import schema as s
    from sqlalchemy import update

    async with Queue(db_url) as q, q.engine.begin() as conn:
        await conn.execute(update(s.meta).where(s.meta.c.key == "schema_version").values(value="999"))
    with pytest.raises(DatabaseUnavailable, match=r"version 999\), newer than this chunkq understands"):
        async with Queue(db_url):
            pass


async def test_batch_callback_returning_the_wrong_type_fails_its_entities(queue: Queue) -> None:
    job = await enqueue(queue, 3, chunk_size=3)
    r = await queue.process_next_chunk(Processor(on_chunk=lambda ids, j: ["not", "a", "dict"]))
    assert r is not None and (r.errors, r.status) == (3, COMPLETE)
    errs = await queue.list_errors(job.id)
    assert {e.error_type for e in errs} == {"TypeError"}
    assert "on_chunk returned list; it must return a dict" in errs[0].message


@pytest.mark.parametrize(("returned", "stray"), [
    ({"E1": "bad"}, "'E1'"),  # normalised
    ({"e1": "bad", 2: "bad"}, "2"),  # a number for a numeric-looking ID
])
async def test_batch_errors_keyed_by_something_else_are_said_not_dropped_silently(
    queue: Queue, caplog: pytest.LogCaptureFixture, returned: dict[object, str], stray: str,
) -> None:
    """Keys that are not the chunk's IDs are not recorded (the callback may know errors of other chunks'
    IDs), but no longer without a word: the callback whose failures were counted as successes is told."""
    job = await enqueue(queue, 3, chunk_size=3)
    with caplog.at_level(logging.WARNING, logger="chunkq"):
        r = await queue.process_next_chunk(Processor(on_chunk=lambda ids, j: returned))
    assert r is not None and r.errors == ("e1" in returned)
    warned = [rec.getMessage() for rec in caplog.records if "on_chunk returned errors" in rec.getMessage()]
    assert warned == [f"job {job.id}: on_chunk returned errors for 1 key not among the chunk's 3 IDs (e.g. {stray}): "
                      "not recorded; key the dict by the IDs it was given, exactly as given"]
