"""The hot path (issue 14): the claim's and the commit's statements on the driver connection.

``core/hot.py`` falls back to SQLAlchemy's execution whenever it cannot take the
fast path, silently and correctly; so these tests pin down that the fast path is
really taken on both backends (a refactor that loses it would otherwise only
show as a slower benchmark), that it means exactly what SQLAlchemy's path means,
and that a short SQLite transaction whose lock is taken waits for it instead of failing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from chunkq.core import Queue, Retry
from chunkq.core.hot import _Compiled
from sqlalchemy import event


def _fast(statement: Any) -> bool:
    return any(isinstance(c, _Compiled) for c in statement._compiled.values())


def _fail_some(entity_id: str, _job: Any) -> None:
    n = int(entity_id[1:])
    if n % 5 == 0:
        raise ValueError(f"bad {entity_id}")
    if n % 7 == 0:
        raise Retry("later", after=3600)


async def test_claim_and_commit_run_on_the_driver_connection(db_url: str) -> None:
    params = {"tier": ["gold", 1], "note": "ünï \u2028 [b]x[/b]"}
    async with Queue(db_url) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(30)], entity_type="company", provider="p",
                                  chunk_size=10, params=params)
        seen: list[Any] = []

        def cb(entity_id: str, j: Any) -> None:
            seen.append(j.params)
            _fail_some(entity_id, j)

        results = [await q.process_next_chunk(cb) for _ in range(3)]
        st, ct = q.claims.statements, q.committer.statements
        # a chunk's IDs come gathered into one row on both backends (claims.range_items)
        assert st.range_gathered is not None
        for statement in (st.claim, st.range_gathered, st.lease, ct.fence, ct.book):
            assert _fast(statement), statement.statement
        # what the rows say is what SQLAlchemy's path would have said: the JSON column decoded
        assert seen and all(p == params for p in seen)
        # e0,e5 | e10,e15 | e20,e25 fail for good; e7 | e14 | e21,e28 wait for a retry
        assert [r.processed for r in results if r] == [9, 9, 8]
        j = await q.get_job(job.id)
        assert (j.processed_count, j.failed_count, j.waiting_count, j.status) == (26, 6, 4, "pending")
        assert j.params == params


async def test_statement_listeners_still_see_every_statement(db_url: str) -> None:
    """Tracing and the reliability suite's crash points listen to cursor executions: with a
    listener on the engine, the hot statements go through SQLAlchemy so that it is told."""
    async with Queue(db_url) as q:
        await q.enqueue_job([f"e{i}" for i in range(4)], entity_type="company", provider="p", chunk_size=2)
        seen: list[str] = []

        def listen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            seen.append(" ".join(statement.split())[:40])

        for engine in (q.engine.sync_engine, q._thread_engine):
            if engine is not None:
                event.listen(engine, "after_cursor_execute", listen)
        r = await q.process_next_chunk(lambda e, j: None)
        assert r is not None and r.committed
        assert any(s.startswith("INSERT INTO chunkq_chunks") for s in seen), seen
        assert any(s.startswith("UPDATE chunkq_chunks SET state") for s in seen), seen
        assert any(s.startswith("UPDATE chunkq_jobs SET") for s in seen), seen


async def test_a_claim_waits_for_a_write_lock_another_connection_holds(sqlite_url: str, tmp_path: Path) -> None:
    """The claim first tries to run at once (busy timeout 0); with the lock taken it must wait
    for it in the writer thread, and the event loop stays free meanwhile."""
    async with Queue(sqlite_url) as q:
        await q.enqueue_job(["a", "b"], entity_type="company", provider="p", chunk_size=2)
        other = sqlite3.connect(str(Path(sqlite_url.split("///", 1)[1])), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            task = asyncio.create_task(q.process_next_chunk(lambda e, j: None))
            ticks = 0
            for _ in range(20):  # the loop keeps running while the claim waits
                await asyncio.sleep(0.02)
                ticks += 1
            assert not task.done() and ticks == 20
            other.execute("COMMIT")
            r = await asyncio.wait_for(task, 20)
        finally:
            other.close()
        assert r is not None and r.committed and r.processed == 2
        assert (await q.get_job(r.job_id)).status == "complete"


async def test_gathered_ids_keep_their_positions_whatever_order_they_come_in(db_url: str) -> None:
    """SQLite promises no order for an aggregate: ``range_items`` checks the gathered positions
    and sorts when they are not ``start..end-1`` in order. Here they come reversed; every
    entity must still be run once, in position order, and its error logged at its own position."""
    async with Queue(db_url) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(20)], entity_type="company", provider="p", chunk_size=10)
        gathered = q.backend.gathered
        q.backend.gathered = lambda value: list(reversed(gathered(value)))  # type: ignore[method-assign]
        seen: list[str] = []

        def cb(entity_id: str, _job: Any) -> None:
            seen.append(entity_id)
            if int(entity_id[1:]) % 3 == 0:
                raise ValueError(entity_id)

        while await q.process_next_chunk(cb) is not None:
            pass
        assert seen == [f"e{i}" for i in range(20)]
        errors = await q.list_errors(job.id, limit=100)
        logged = sorted([(await q.reads.error_pos(e.id), e.entity_id, e.message) for e in errors])
        assert logged == [(i, f"e{i}", f"e{i}") for i in range(0, 20, 3)]


async def test_short_sqlite_transactions_keep_one_connection(sqlite_url: str) -> None:
    """A claim and a commit on the loop's thread reuse one connection instead of a pool checkout
    each (``backend._AtOnce``); after a connection error the next transaction takes a fresh one."""
    async with Queue(sqlite_url) as q:
        await q.enqueue_job([f"e{i}" for i in range(200)], entity_type="company", provider="p", chunk_size=10)
        engine = q._thread_engine
        assert engine is not None
        checkouts: list[int] = []
        event.listen(engine, "checkout", lambda *_: checkouts.append(1))
        for _ in range(10):
            r = await q.process_next_chunk(lambda e, j: None)
            assert r is not None and r.committed
        assert len(checkouts) <= 1, f"{len(checkouts)} checkouts for 10 claims and 10 commits"
        q.backend.close_idle_connection()  # type: ignore[attr-defined]
        r = await q.process_next_chunk(lambda e, j: None)
        assert r is not None and r.committed and len(checkouts) == 2

