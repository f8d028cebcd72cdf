"""Model-based test: random sequences of queue operations against a tiny in-memory model.

Hypothesis drives enqueue / process (a callback that fails some entities) /
crash (claim a chunk with the internal ``_claim`` and abandon it) / late commit
(the abandoned worker wakes up and commits: fenced off if its chunk was taken
over) / advancing an injected clock past the lease / cancel / pause / resume /
retry_failed, and after every step checks that ``get_job``, ``list_jobs``,
``list_errors`` and ``list_chunks`` agree with the model. Claims are checked too:
a claim must return the oldest expired lease or the next range of the best
claimable job, never anything else. Deterministic (``derandomize``), bounded
examples, run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from chunkq.core import InvalidInput, InvalidTransition, Processor, Queue
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ._support import SOAK, backend

LEASE = 30.0
MAX_EXAMPLES = 20 * SOAK
STEPS = 25
# Shrinking a failing run replays it hundreds of times (minutes, past pytest's timeout): CI reports
# the first failing sequence as found; set CHUNKQ_SHRINK=1 to get the minimal one.
PHASES = [p for p in Phase if p != Phase.shrink or os.environ.get("CHUNKQ_SHRINK") == "1"]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class MChunk:
    index: int
    positions: list[int]
    attempt: int = 1
    state: str = "leased"
    expires: float = 0.0


@dataclass
class MJob:
    id: int
    entities: list[str]
    chunk_size: int
    max_workers: int
    priority: int
    parent_id: int | None = None
    status: str = "pending"
    next_pos: int = 0
    next_chunk: int = 0
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    chunks: dict[int, MChunk] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)  # (pos, entity id), all final

    @property
    def leased(self) -> int:
        return sum(1 for c in self.chunks.values() if c.state == "leased")

    def ids(self, chunk: MChunk) -> list[str]:
        return [self.entities[p] for p in chunk.positions]


class QueueModel(RuleBasedStateMachine):
    url = ""  # set per backend by the test
    stats: ClassVar[Counter[str]] = Counter()  # what the run exercised, for the report

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.tmp: str | None = None
        url = self.url
        if backend(url) == "sqlite":
            self.tmp = tempfile.mkdtemp(prefix="chunkq-model-")
            url = f"{self.tmp}/model.db"
        else:
            from tests.conftest import _reset_pg

            self.run(_reset_pg(url))
        self.q = Queue(url, lease_seconds=LEASE, clock=self.clock, breaker_chunks=10**6, owner="model:1:a")
        self.run(self.q.open())
        self.jobs: dict[int, MJob] = {}
        self.bad: set[str] = set()
        self.abandoned: list[Any] = []
        self.serial = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    def teardown(self) -> None:
        try:
            self.run(self.q.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            if self.tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ the model's rules

    def _callback(self, heal: bool) -> Any:
        seen: list[str] = []

        def cb(entity_id: str, _job: Any) -> None:
            seen.append(entity_id)
            if not heal and entity_id in self.bad:
                raise ValueError(f"no match for {entity_id}")

        return cb, seen

    def _options(self) -> tuple[tuple[MJob, MChunk] | None, MJob | None]:
        """What a claim may return: the first expired lease, or the next range of the best job."""
        now = self.clock()
        live = [j for j in self.jobs.values() if j.status in ("pending", "running")]
        order = sorted(live, key=lambda j: (-j.priority, j.id))
        expired = [(j, c) for j in order for c in sorted(j.chunks.values(), key=lambda c: c.index)
                   if c.state == "leased" and c.expires < now]
        fresh = [j for j in order if j.leased < j.max_workers and j.next_pos < len(j.entities)]
        return (expired[0] if expired else None), (fresh[0] if fresh else None)

    def _apply_claim(
        self, job_id: int, index: int, attempt: int | None, items: list[str]
    ) -> tuple[MJob, MChunk]:
        """Check a claim against the model and record it (``attempt`` None: not reported)."""
        reclaim, fresh = self._options()
        if reclaim is not None and (reclaim[0].id, reclaim[1].index) == (job_id, index):
            job, chunk = reclaim
            self.stats["reclaimed"] += 1
            assert attempt in (None, chunk.attempt + 1), "a reclaim must bump the fencing token"
            chunk.attempt += 1
        else:
            assert fresh is not None and (fresh.id, fresh.next_chunk) == (job_id, index), (
                f"claimed chunk {index} of job {job_id}; allowed: "
                f"{reclaim and (reclaim[0].id, reclaim[1].index)} or {fresh and (fresh.id, fresh.next_chunk)}")
            job = fresh
            chunk = MChunk(index, list(range(job.next_pos, min(job.next_pos + job.chunk_size, len(job.entities)))))
            job.chunks[index] = chunk
            job.next_pos += job.chunk_size
            job.next_chunk += 1
            assert attempt in (None, 1)
        assert items == job.ids(chunk), f"chunk {index} of job {job_id} held {items}, expected {job.ids(chunk)}"
        chunk.expires = self.clock() + LEASE
        job.status = "running"
        return job, chunk

    def _apply_commit(self, job: MJob, chunk: MChunk, heal: bool) -> None:
        chunk.state = "done"
        ids = job.ids(chunk)
        fails = [(p, e) for p, e in zip(chunk.positions, ids, strict=True) if not heal and e in self.bad]
        job.processed += len(ids)
        job.failed += len(fails)
        job.succeeded += len(ids) - len(fails)
        job.errors += fails
        left = job.leased
        if job.status in ("pending", "running", "paused") and job.next_pos >= len(job.entities) and left == 0:
            job.status = "complete"
        elif job.status == "running" and left == 0:
            job.status = "pending"

    def _pick(self, data: st.DataObject) -> MJob:
        return self.jobs[data.draw(st.sampled_from(sorted(self.jobs)), label="job")]

    @initialize(n=st.integers(1, 7), chunk_size=st.integers(1, 3), max_workers=st.integers(1, 2),
                priority=st.sampled_from([0, 0, 1]), data=st.data())
    def first_job(self, n: int, chunk_size: int, max_workers: int, priority: int, data: st.DataObject) -> None:
        self.enqueue(n, chunk_size, max_workers, priority, data)

    @precondition(lambda self: len(self.jobs) < 6)
    @rule(n=st.integers(1, 7), chunk_size=st.integers(1, 3), max_workers=st.integers(1, 2),
          priority=st.sampled_from([0, 0, 1]), data=st.data())
    def enqueue(self, n: int, chunk_size: int, max_workers: int, priority: int, data: st.DataObject) -> None:
        self.serial += 1
        ids = [f"j{self.serial}-e{i}" for i in range(n)]
        mask = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="fails")
        self.bad.update(e for e, b in zip(ids, mask, strict=True) if b)
        job = self.run(self.q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=chunk_size,
                                          max_workers=max_workers, priority=priority))
        self.jobs[job.id] = MJob(job.id, ids, chunk_size, max_workers, priority)

    @rule(heal=st.booleans(), chunks=st.integers(1, 3))
    def process(self, heal: bool, chunks: int) -> None:
        for _ in range(chunks):
            self._process_one(heal)

    def _process_one(self, heal: bool) -> None:
        cb, seen = self._callback(heal)
        r = self.run(self.q.process_next_chunk(cb))
        if r is None:
            assert self._options() == (None, None), "work was claimable but nothing was claimed"
            assert not seen
            return
        job, chunk = self._apply_claim(r.job_id, r.chunk_index, None, seen)
        assert r.committed
        self._apply_commit(job, chunk, heal)
        assert (r.processed, r.status) == (len(seen), job.status)
        self.stats["chunks"] += 1
        self.stats["completed jobs"] += job.status == "complete"

    @rule(advance=st.booleans())
    def crash(self, advance: bool) -> None:
        claim = self.run(self.q._claim())
        if claim is None:
            assert self._options() == (None, None)
        else:
            self._apply_claim(claim.job.id, claim.chunk_index, claim.attempt, [i.entity_id for i in claim.items])
            self.abandoned.append(claim)
            self.stats["crashes"] += 1
        if advance:
            self.clock.t += LEASE + 1

    @rule()
    def advance_clock(self) -> None:
        self.clock.t += LEASE + 1

    @precondition(lambda self: self.abandoned)
    @rule(data=st.data(), heal=st.booleans())
    def late_commit(self, data: st.DataObject, heal: bool) -> None:
        self._late_commit(self.abandoned.pop(data.draw(st.integers(0, len(self.abandoned) - 1), label="claim")),
                          heal)

    @precondition(lambda self: self.abandoned)
    @rule(heal=st.booleans())
    def takeover_then_late_commit(self, heal: bool) -> None:
        """The oldest abandoned worker is presumed dead, another takes over, then the first wakes up."""
        self.clock.t += LEASE + 1
        self.crash(advance=False)
        self._late_commit(self.abandoned.pop(0), heal)

    def _late_commit(self, claim: Any, heal: bool) -> None:
        cb, _seen = self._callback(heal)
        r = self.run(self.q._run_claim(claim, Processor(on_process=cb), None))
        job = self.jobs[claim.job.id]
        chunk = job.chunks[claim.chunk_index]
        if chunk.state == "leased" and chunk.attempt == claim.attempt:
            assert r.committed, "the lease holder's commit was refused"
            self._apply_commit(job, chunk, heal)
            self.stats["late commit accepted"] += 1
        else:
            assert not r.committed, "a commit with a stale fencing token was accepted"
            self.stats["late commit fenced off"] += 1
            # the sharpest case: the chunk is leased again (by a newer claim), so only the token tells
            self.stats["fenced off while re-leased"] += chunk.state == "leased"

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        job = self._pick(data)
        if job.status in ("pending", "running"):
            assert self.run(self.q.pause(job.id)).status == "paused"
            job.status = "paused"
        else:
            with pytest.raises(InvalidTransition):
                self.run(self.q.pause(job.id))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        job = self._pick(data)
        if job.status == "paused":
            job.status = "running" if job.leased else "pending"
            assert self.run(self.q.resume(job.id)).status == job.status
        else:
            with pytest.raises(InvalidTransition):
                self.run(self.q.resume(job.id))

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job = self._pick(data)
        if job.status in ("pending", "running", "paused"):
            assert self.run(self.q.cancel(job.id)).status == "cancelled"
            job.status = "cancelled"
            self.stats["cancelled"] += 1
        else:
            with pytest.raises(InvalidTransition):
                self.run(self.q.cancel(job.id))

    @precondition(lambda self: self.jobs and len(self.jobs) < 8)
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        job = self._pick(data)
        wanted = dict(job.errors)
        if job.status in ("failed", "cancelled"):
            wanted.update((p, job.entities[p]) for p in range(job.next_pos, len(job.entities)))
            for c in job.chunks.values():
                if c.state == "leased":
                    wanted.update((p, job.entities[p]) for p in c.positions)
        if not wanted:
            with pytest.raises(InvalidInput):
                self.run(self.q.retry_failed(job.id))
            return
        new = self.run(self.q.retry_failed(job.id))
        self.stats["retry jobs"] += 1
        ids = [wanted[p] for p in sorted(wanted)]
        assert self.run(self.q.entity_ids(new.id)) == ids
        self.jobs[new.id] = MJob(new.id, ids, job.chunk_size, job.max_workers, job.priority, parent_id=job.id)

    # ------------------------------------------------------------------ the check after every step

    @invariant()
    def database_agrees(self) -> None:
        self.stats["steps checked"] += 1
        listed = {j.id: j for j in self.run(self.q.list_jobs(limit=1000))}
        assert set(listed) == set(self.jobs)
        for jid, m in self.jobs.items():
            j = listed[jid]
            got = (j.status, j.total_count, j.processed_count, j.succeeded_count, j.failed_count, j.error_count,
                   j.leased_chunks, j.waiting_count, j.parent_id, j.chunk_size, j.max_workers, j.priority)
            want = (m.status, len(m.entities), m.processed, m.succeeded, m.failed, len(m.errors), m.leased, 0,
                    m.parent_id, m.chunk_size, m.max_workers, m.priority)
            assert got == want, f"job {jid}: database {got} != model {want}"
            if m.status == "complete":
                assert j.processed_count == j.total_count
            errors = self.run(self.q.list_errors(jid, limit=1000)) if m.chunks else []
            assert sorted((e.entity_id, e.final) for e in errors) == sorted((e, True) for _p, e in m.errors)
            chunks = self.run(self.q.list_chunks(jid, limit=1000)) if m.chunks else []
            assert [(c.chunk_index, c.state, c.attempt) for c in chunks] == [
                (c.index, c.state, c.attempt) for c in sorted(m.chunks.values(), key=lambda c: c.index)]


def test_queue_agrees_with_the_model(db_url: str) -> None:
    stats: Counter[str] = Counter()
    machine = type("QueueModelRun", (QueueModel,), {"url": db_url, "stats": stats})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False, phases=PHASES))
    # The run must have reached the interesting states, or it proved little.
    for what in ("chunks", "crashes", "reclaimed", "late commit accepted", "fenced off while re-leased",
                 "retry jobs", "cancelled", "completed jobs"):
        assert stats[what] > 0, f"the model run never exercised {what!r}: {dict(stats)}"
    print(f"\n[model {backend(db_url)}] {MAX_EXAMPLES} examples x up to {STEPS} steps: {dict(sorted(stats.items()))}")
