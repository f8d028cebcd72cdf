"""The breakpoint's scope (issue 27): "new" to the job, or new to every job of the job's processor.

Every test runs on a real SQLite file and on the real PostgreSQL (``db_url``).
The callbacks are plain sync functions at concurrency 1: the worker runs one
chunk at a time (``worker._runs_as_one_loop``), so where it stops is exact.
"""

from __future__ import annotations

from typing import Any

import pytest
from chunkq.core import InvalidInput, Processor, Queue, Worker, check_new_error_scope, fingerprint_as
from chunkq.core import schema as s
from chunkq.core.error_groups import KNOWN_SCAN, known_statement, known_to_processor
from sqlalchemy import text

P = "shop.enrich:run"


class PriceMissing(Exception):
    pass


class StockMissing(Exception):
    pass


def shop(eid: str, _job: object) -> None:
    """Bug X (``x…``) and bug Y (``y…``), each raised in one place with the entity in its message."""
    if eid.startswith("x"):
        raise PriceMissing(f"no price for sku {eid[1:]}")
    if eid.startswith("y"):
        raise StockMissing(f"no stock row for sku {eid[1:]}")


async def _job(q: Queue, ids: list[str], processor: str | None = P) -> int:
    job = await q.enqueue_job(ids, entity_type="sku", provider="shop", chunk_size=2, processor=processor)
    return job.id


async def _run(q: Queue, job_id: int, cb: Any = shop, **kw: Any):
    return await Worker(q, Processor(on_process=cb, name=P), job_id=job_id, stop_on_new_error=True, **kw).run()


async def _key(q: Queue, job_id: int, error_type: str) -> str:
    return next(g.fingerprint for g in await q.group_errors(job_id, include_resolved=True)
                if g.error_type.endswith(error_type))


#: today's job: bug X in the second chunk, bug Y in the fourth, of five
TODAY = ["a0", "a1", "x10", "a2", "a3", "a4", "y20", "a5", "a6", "a7"]


async def test_scope_job_stops_at_a_bug_known_from_yesterday_scope_processor_only_at_the_new_one(
    db_url: str,
) -> None:
    async with Queue(db_url) as q:
        yesterday = await _job(q, ["x1", "x2", "a9"])
        assert (await Worker(q, Processor(on_process=shop, name=P), job_id=yesterday).run()).stopped_by == "empty"
        # scope processor: X is yesterday's bug, so the run goes past it and stops at Y
        today = await _job(q, TODAY)
        summary = await _run(q, today, new_error_scope="processor")
        assert (summary.stopped_by, summary.chunks) == ("new_error", 4)
        assert (summary.new_error, summary.new_error_job) == (await _key(q, today, "StockMissing"), today)
        # scope job (the default, as before): a fresh job of the same processor stops at X
        again = await _job(q, TODAY)
        summary = await _run(q, again)
        assert (summary.stopped_by, summary.chunks) == ("new_error", 2)
        assert (summary.new_error, summary.new_error_job) == (await _key(q, again, "PriceMissing"), again)
        assert (await _run(q, again, new_error_scope="job")).new_error == await _key(q, again, "StockMissing")


async def test_only_jobs_of_the_same_processor_know_a_bug(db_url: str) -> None:
    """Another processor's job, or a job routed to none, knows nothing for P; jobs without a processor
    are one processor of their own."""
    async with Queue(db_url) as q:
        for other in ("shop.other:run", None):
            seen = await _job(q, ["x1"], processor=other)
            await Worker(q, Processor(on_process=shop, name=other), job_id=seen).run()
        today = await _job(q, TODAY)
        summary = await _run(q, today, new_error_scope="processor")
        assert (summary.new_error, summary.chunks) == (await _key(q, today, "PriceMissing"), 2)
        unrouted = await _job(q, TODAY, processor=None)
        summary = await _run(q, unrouted, new_error_scope="processor")
        assert (summary.new_error, summary.chunks) == (await _key(q, unrouted, "StockMissing"), 4)


def tenants(eid: str, _job: object) -> None:
    """One place, one bug whose message names a tenant; ``w…``: another bug there (another reason)."""
    name, _, n = eid.partition("-")
    if name == "w":
        raise ValueError(f"order {n} refused: 404 Not Found")
    if name != "ok":
        raise ValueError(f"order {n} for tenant {name}_{n} failed: 401 Unauthorized")


async def test_known_means_the_template_would_take_it_not_the_same_key(db_url: str) -> None:
    """Yesterday's first message and today's normalise differently (another group key), yet differ only in
    values: known. A word that differs (another reason phrase, at the same place): new."""
    async with Queue(db_url) as q:
        yesterday = await _job(q, ["acme-11", "acme-12"])
        await Worker(q, Processor(on_process=tenants, name=P), job_id=yesterday).run()
        today = await _job(q, ["ok-1", "ok-2", "globex-7", "ok-3", "ok-4", "ok-5", "w-9", "ok-6"])
        summary = await _run(q, today, tenants, new_error_scope="processor")
        assert (summary.stopped_by, summary.chunks) == ("new_error", 4)
        groups = {g.message: g.fingerprint for g in await q.group_errors(today, include_resolved=True)}
        assert summary.new_error == next(k for m, k in groups.items() if "404" in m)
        old = {g.fingerprint for g in await q.group_errors(yesterday, include_resolved=True)}
        assert not old & set(groups.values())  # not the same key: the templates told it


def named(eid: str, _job: object) -> None:
    """A processor that names its bug: every message of it is one group, whatever it says."""
    raise fingerprint_as(RuntimeError(f"provider said {eid} {'x' * len(eid)}"), "provider-down")


async def test_a_bug_the_processor_named_is_known_by_its_name_and_a_merged_group_is_known(db_url: str) -> None:
    async with Queue(db_url) as q:
        yesterday = await _job(q, ["a", "bb"])
        await Worker(q, Processor(on_process=named, name=P), job_id=yesterday).run()
        today = await _job(q, ["ccc totally different words", "dd"])
        summary = await _run(q, today, named, new_error_scope="processor")
        assert (summary.stopped_by, summary.new_error) == ("empty", None)
        # yesterday's X merged by an operator into another group: still a bug the processor has seen
        merged = await _job(q, ["x1", "y1", "a1"])
        await Worker(q, Processor(on_process=shop, name=P), job_id=merged).run()
        x, y = await _key(q, merged, "PriceMissing"), await _key(q, merged, "StockMissing")
        await q.merge_error_groups(merged, [x], into=y)
        keys = await q.backend.read(lambda conn: known_to_processor(conn, today, [x]), "test")
        assert keys == set()  # not a group of today's job: nothing to say about it
        fresh = await _job(q, ["x7"])
        r = await q.process_chunk(fresh, Processor(on_process=shop, name=P))
        assert r is not None and len(r.new_fingerprints) == 1
        known = await q.backend.read(lambda conn: known_to_processor(conn, fresh, r.new_fingerprints), "test")
        assert known == set(r.new_fingerprints)


@pytest.mark.plans
async def test_the_lookup_is_an_index_walk_that_reads_no_error_row(db_url: str) -> None:
    """The same plan at any size: the family's index entries, newest job first, cut at KNOWN_SCAN before the
    jobs are joined; no sort, and ``chunkq_errors`` is not in it (its million rows cost nothing here)."""
    async with Queue(db_url) as q:
        await _job(q, ["x1"])

        def plan(conn: Any) -> str:
            compiled = known_statement(1, "0123456789abcdef", P).compile(conn, compile_kwargs={"literal_binds": True})
            if conn.dialect.name == "sqlite":
                return "\n".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + str(compiled))))
            conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask for the index it has
            conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            return "\n".join(str(r[0]) for r in conn.execute(text("EXPLAIN " + str(compiled))))

        shown = await q.backend.read(plan, "explain")
    assert "ix_chunkq_error_groups_family_job" in shown, shown
    assert s.errors.name not in shown, shown
    assert "TEMP B-TREE" not in shown and "Sort" not in shown, shown  # the index's order, no sort
    assert f"LIMIT {KNOWN_SCAN}" in str(known_statement(1, "f", P).compile(compile_kwargs={"literal_binds": True}))


def test_a_scope_other_than_job_or_processor_is_refused() -> None:
    assert check_new_error_scope("processor") == "processor"
    with pytest.raises(InvalidInput, match="job, processor"):
        check_new_error_scope("tenant")
    with pytest.raises(InvalidInput) as info:
        Worker(Queue("sqlite:///unused.db"), shop, new_error_scope="Job")
    assert info.value.field == "new_error_scope"
