"""Model-based test: random sequences of queue operations against a tiny in-memory model.

Hypothesis drives enqueue / process (a callback that fails some entities) /
crash (claim a chunk with ``queue.claims.claim`` and abandon it) / late commit
(the abandoned worker wakes up and commits: fenced off if its chunk was taken
over) / advancing an injected clock past the lease / cancel / pause / resume /
retry_failed, and after every step checks that ``get_job``, ``list_jobs``,
``list_errors`` and ``list_chunks`` agree with the model. Claims are checked too:
the model predicts each one exactly - the oldest expired lease of a job with a
free worker slot (looked for first at most every few seconds, and whenever
nothing fresh is left) or the next range of the best claimable job - including
what a claim does to a poison chunk on the way (a chunk whose third lost lease
is counted is split into one-entity chunks; a one-entity chunk, recorded as
``WorkerLost``). Lost leases are counted as a worker's window needs (issue 24):
the first, then only those of a run alone (``Claims.run_alone``: written when a
``crash`` rule's worker started its suspect claim before dying, and by every
suspect run to its commit), never a suspect a dead worker's window held without
running it; the model predicts each chunk's ``lost_leases`` and ``solo_at``, and
the ``poison`` rule kills a window of several chunks with one entity, then
settles it as workers would. Deterministic (``derandomize``), bounded examples,
run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from chunkq.core import (
    InvalidInput,
    InvalidTransition,
    Processor,
    Pruner,
    Queue,
    RetentionPolicy,
    RetryJobWaiting,
    counts,
)
from chunkq.core import schema as s
from chunkq.core.chunk import run_claimed
from chunkq.core.claims import STALE_CHECK_SECONDS
from chunkq.core.poison import ISOLATE_AFTER
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
from sqlalchemy import select

from tests.conftest import _fresh_pg, fresh_sqlite

from ._support import SOAK, backend

LEASE = 30.0
STALE_EVERY = min(LEASE / 2, STALE_CHECK_SECONDS)
MAX_EXAMPLES = 20 * SOAK  # 12 already reach every state asserted below (derandomized: the same 20 each run)
STEPS = 25
FINISHED = ("complete", "failed", "cancelled")
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
    lost: int = 0  # leases that expired under a worker (a split's new chunks start released, at 0)
    owned: bool = True  # a worker's (a split's new chunks belong to nobody until taken)
    solo: bool = False  # its current lease's worker started running it alone (``solo_at``)


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
    served: float = 0.0  # when a fresh claim last took a chunk of it (``served_at``: the fair order)

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
        # Each example starts from empty tables at the newest revision, as every test does: migrating from
        # nothing for each of them was a third of this test's time.
        if backend(url) == "sqlite":
            self.tmp = tempfile.mkdtemp(prefix="chunkq-model-")
            url = str(fresh_sqlite(Path(self.tmp) / "model.db"))
        else:
            self.run(_fresh_pg(url))
        self.q = Queue(url, lease_seconds=LEASE, clock=self.clock, breaker_chunks=10**6, owner="model:1:a")
        self.run(self.q.open())
        self.jobs: dict[int, MJob] = {}
        self.bad: set[str] = set()
        self.abandoned: list[Any] = []
        self.serial = 0
        self.next_stale = 0.0  # the queue's own schedule of looks for expired leases
        self.poisoned = False

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

    def _live(self) -> list[MJob]:
        return sorted((j for j in self.jobs.values() if j.status in ("pending", "running")),
                      key=lambda j: (-j.priority, j.id))

    def _expired(self, mine: int | None = None) -> tuple[MJob, MChunk] | None:
        """The first expired lease of a job with a free worker slot: fewer *other* workers than its
        ``max_workers`` hold a live lease of it (issue 25). This model has one worker, so none do."""
        now = self.clock()
        for j in self._live():
            others: set[str] = set()  # one worker: every live lease is its own
            if len(others) >= j.max_workers:
                continue
            for c in sorted(j.chunks.values(), key=lambda c: c.index):
                if c.state == "leased" and c.expires < now:
                    return j, c
        return None

    def _fresh(self, mine: int | None = None) -> MJob | None:
        """``max_workers`` counts workers, not chunks (issue 14), and only the *other* workers holding
        the job (issue 25): this model has one worker, so its jobs always have a slot for it."""
        def slot(j: MJob) -> bool:
            others = 0  # one worker: every leased chunk is its own (or a split's, nobody's)
            return j.leased < j.max_workers or j.id == mine or others < j.max_workers

        # the fair order (issue 25): priority, then the job served least recently (never: 0), then the oldest
        fresh = sorted((j for j in self._live() if slot(j) and j.next_pos < len(j.entities)),
                       key=lambda j: (-j.priority, j.served, j.id))
        return fresh[0] if fresh else None

    def _reclaim(self, mine: int | None = None) -> tuple[MJob, MChunk] | None:
        """Take over the first expired lease, settling poison chunks on the way (as the claim transaction does)."""
        while (found := self._expired(mine)) is not None:
            job, chunk = found
            chunk.attempt += 1
            chunk.owned = True
            if chunk.expires > 0:  # a lease given back on purpose is no death
                # the first loss makes a suspect; after that only a loss while running alone counts
                counted = chunk.lost == 0 or chunk.solo
                chunk.lost += counted
                self.stats["lost lease counted" if counted and chunk.lost == 1 else
                           "solo lost lease counted" if counted else "suspect lost unstarted, not counted"] += 1
            chunk.solo = False
            chunk.expires = self.clock() + LEASE
            job.status = "running"
            if chunk.lost < ISOLATE_AFTER:
                self.stats["reclaimed"] += 1
                return job, chunk
            if len(chunk.positions) > 1:  # isolated: one released chunk per entity
                self.stats["isolated"] += 1
                chunk.state = "split"
                for p in chunk.positions:
                    job.chunks[job.next_chunk] = MChunk(job.next_chunk, [p], owned=False)
                    job.next_chunk += 1
            else:  # its entity took down ISOLATE_AFTER workers: failed for good
                self.stats["worker lost"] += 1
                self._apply_commit(job, chunk, heal=False, lost=True)
        return None

    def _expect_claim(self, mine: int | None = None) -> tuple[MJob, MChunk] | None:
        """What the next claim returns, and what it does on the way (the queue's own order of looks)."""
        now = self.clock()
        if now >= self.next_stale:
            self.next_stale = now + STALE_EVERY
            found = self._reclaim(mine)
            if found is not None:
                return found
            return self._take_fresh(mine)
        found = self._take_fresh(mine)
        if found is None:
            self.next_stale = now + STALE_EVERY
            found = self._reclaim(mine)
        return found

    def _take_fresh(self, mine: int | None = None) -> tuple[MJob, MChunk] | None:
        job = self._fresh(mine)
        if job is None:
            return None
        chunk = MChunk(job.next_chunk, list(range(job.next_pos, min(job.next_pos + job.chunk_size,
                                                                    len(job.entities)))))
        job.chunks[chunk.index] = chunk
        job.next_pos += job.chunk_size
        job.next_chunk += 1
        job.served = self.clock()
        chunk.expires = self.clock() + LEASE
        job.status = "running"
        return job, chunk

    def _apply_claim(
        self, job_id: int | None, index: int | None, attempt: int | None, items: list[str], mine: int | None = None,
    ) -> tuple[MJob, MChunk] | None:
        """Check a claim (None: nothing was claimed) against the model's prediction and record it."""
        expected = self._expect_claim(mine)
        if expected is None:
            assert job_id is None, f"claimed chunk {index} of job {job_id}; the model expected nothing"
            return None
        job, chunk = expected
        assert (job.id, chunk.index) == (job_id, index), (
            f"claimed chunk {index} of job {job_id}; the model expected chunk {chunk.index} of job {job.id}")
        assert attempt in (None, chunk.attempt), "a reclaim must bump the fencing token"
        assert items == job.ids(chunk), f"chunk {index} of job {job_id} held {items}, expected {job.ids(chunk)}"
        return job, chunk

    def _apply_commit(self, job: MJob, chunk: MChunk, heal: bool, lost: bool = False) -> None:
        chunk.state = "done"
        ids = job.ids(chunk)
        fails = [(p, e) for p, e in zip(chunk.positions, ids, strict=True) if lost or (not heal and e in self.bad)]
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
            assert self._apply_claim(None, None, None, seen) is None
            assert not seen
            return
        claimed = self._apply_claim(r.job_id, r.chunk_index, None, seen)
        assert claimed is not None
        job, chunk = claimed
        assert r.committed
        chunk.solo = chunk.lost > 0  # a suspect runs alone (process_next_chunk runs nothing else anyway)
        self._apply_commit(job, chunk, heal)
        assert (r.processed, r.status) == (len(seen), job.status)
        self.stats["chunks"] += 1
        self.stats["completed jobs"] += job.status == "complete"

    @rule(advance=st.booleans(), alone=st.booleans())
    def crash(self, advance: bool, alone: bool = True) -> None:
        """A worker claims and dies; ``alone``: having started the chunk, as it would a suspect, alone."""
        claim = self.run(self.q.claims.claim())
        if claim is None:
            assert self._apply_claim(None, None, None, []) is None
        else:
            claimed = self._apply_claim(claim.job.id, claim.chunk_index, claim.attempt,
                                        [i.entity_id for i in claim.items])
            assert claimed is not None
            _job, chunk = claimed
            assert claim.suspect == (chunk.lost > 0), f"suspect {claim.suspect}, the model has lost {chunk.lost}"
            if alone and claim.suspect:
                assert self.run(self.q.claims.run_alone(claim)), "the holder could not start its suspect alone"
                chunk.solo = True
                chunk.expires = self.clock() + LEASE  # renewed by the same write
                self.stats["suspects run alone"] += 1
            self.abandoned.append(claim)
            self.stats["crashes"] += 1
        if advance:
            self.clock.t += LEASE + 1

    @rule(claims=st.integers(1, 3))
    def window(self, claims: int) -> None:
        """A worker's window (issue 14): a claim, then more chunks of the same job past ``max_workers``
        (``mine``); all held, and maybe abandoned, like a crashed worker's."""
        self._window(claims)

    def _window(self, claims: int, worker: bool = False) -> list[Any]:
        """``worker``: as ``worker.py`` does, claim nothing more after a suspect (issue 24), which runs alone."""
        mine = None
        held: list[Any] = []
        for _ in range(claims + 1):
            claim = self.run(self.q.claims.claim(mine=mine))
            if claim is None:
                assert self._apply_claim(None, None, None, [], mine) is None
                return held
            self._apply_claim(claim.job.id, claim.chunk_index, claim.attempt, [i.entity_id for i in claim.items],
                              mine)
            self.abandoned.append(claim)
            held.append(claim)
            if mine is not None:
                self.stats["window claims"] += 1
                job = self.jobs[claim.job.id]
                self.stats["window claims past max_workers"] += claim.job.id == mine and job.leased > job.max_workers
            if worker and claim.suspect:
                break
            mine = claim.job.id
        return held

    @rule()
    def advance_clock(self) -> None:
        self.clock.t += LEASE + 1

    @precondition(lambda self: not self.poisoned)
    @rule()
    def poison(self) -> None:
        """A callback that kills every worker that runs one entity, the first of the first chunk of a window
        (issue 24): every chunk of the window loses one lease (each is a suspect now). The next workers take
        them over one at a time, as workers do (a claim while nothing else is due, a suspect run alone):
        the innocent ones commit, the poison chunk kills its worker alone until it is split, its poison
        entity's own chunk likewise until it is given up (``WorkerLost``). Innocent chunks lose one lease."""
        held = self._window(2, worker=True)
        if not held:
            return
        self.poisoned = True
        self.stats["poison windows"] += len(held) > 1
        job_id, pos = held[0].job.id, held[0].items[0].pos
        innocent = [(c.job.id, c.chunk_index) for c in held[1:]]
        poison = self.jobs[job_id]
        first = {held[0].chunk_index}  # the poison entity's chunks: the window's, then its own after the split
        self.clock.t += LEASE + 1  # the worker is dead: every lease of its window expires
        for _ in range(200):
            if (pos, poison.entities[pos]) in poison.errors and all(
                    self.jobs[j].chunks[i].state != "leased" for j, i in innocent):
                break
            claim = self.run(self.q.claims.claim())
            if claim is None:
                assert self._apply_claim(None, None, None, []) is None
                self.clock.t += LEASE + 1  # the next claim looks for expired leases again
                continue
            job, chunk = self._apply_claim(claim.job.id, claim.chunk_index, claim.attempt,  # type: ignore[misc]
                                           [i.entity_id for i in claim.items])
            assert claim.suspect == (chunk.lost > 0)
            if job.id == job_id and pos in chunk.positions:  # it kills this worker too (alone, if a suspect)
                first.add(chunk.index)
                if claim.suspect:
                    assert self.run(self.q.claims.run_alone(claim))
                    chunk.solo, chunk.expires = True, self.clock() + LEASE
                self.abandoned.append(claim)
                self.clock.t += LEASE + 1
                continue
            cb, _seen = self._callback(True)  # anything else completes, run alone if a suspect
            r = self.run(run_claimed(self.q, claim, Processor(on_process=cb), None))
            assert r.committed
            chunk.solo = claim.suspect
            self._apply_commit(job, chunk, heal=True)
            self.stats["window suspects completed alone"] += (job.id, chunk.index) in innocent
        else:
            raise AssertionError("the poison window was not settled in 200 claims")
        for j, i in innocent:
            assert (self.jobs[j].chunks[i].state, self.jobs[j].chunks[i].lost) == ("done", 1)
        assert [poison.chunks[i].lost for i in sorted(first)] == [ISOLATE_AFTER] * len(first)

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
        r = self.run(run_claimed(self.q, claim, Processor(on_process=cb), None))
        job = self.jobs[claim.job.id]
        chunk = job.chunks[claim.chunk_index]
        if chunk.state == "leased" and chunk.attempt == claim.attempt:
            assert r.committed, "the lease holder's commit was refused"
            chunk.solo = claim.suspect
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
        waiting = self._retry_waiting(job, set(wanted.values()))
        if waiting is not None:  # a retry job holding some of them still waits: not a second one
            with pytest.raises(RetryJobWaiting, match=f"job {waiting} "):
                self.run(self.q.retry_failed(job.id))
            self.stats["retries refused"] += 1
            return
        if not wanted:
            with pytest.raises(InvalidInput):
                self.run(self.q.retry_failed(job.id))
            return
        new = self.run(self.q.retry_failed(job.id))
        self.stats["retry jobs"] += 1
        ids = [wanted[p] for p in sorted(wanted)]
        assert self.run(self.q.entity_ids(new.id)) == ids
        self.jobs[new.id] = MJob(new.id, ids, job.chunk_size, job.max_workers, job.priority, parent_id=job.id)

    def _retry_waiting(self, job: MJob, ids: set[str]) -> int | None:
        """The first unfinished job of ``job``'s retry family (descended from its first ancestor, not
        ``job`` nor its ancestors) holding one of ``ids``: what refuses a retry (``control.py``)."""
        line = [job.id]
        while (parent := self.jobs[line[-1]].parent_id) is not None and parent in self.jobs:
            line.append(parent)
        family: set[int] = set()
        frontier = {line[-1]}
        while frontier:
            frontier = {jid for jid, m in self.jobs.items() if m.parent_id in frontier} - family
            family |= frontier
        return min((jid for jid in family - set(line)
                    if self.jobs[jid].status not in FINISHED and ids & set(self.jobs[jid].entities)), default=None)

    @precondition(lambda self: any(m.status in FINISHED for m in self.jobs.values()))
    @rule()
    def prune(self) -> None:
        """Retention deletes every finished job no live retry names (issue 26); the counts follow."""
        self.clock.t += 1  # finished before now
        result = self.run(Pruner(self.q, batch_rows=7).prune(RetentionPolicy.only(0)))
        named = {m.parent_id for m in self.jobs.values() if m.status not in FINISHED}
        gone = {jid for jid, m in self.jobs.items() if m.status in FINISHED and jid not in named}
        assert set(result.job_ids) == gone
        for jid in gone:
            del self.jobs[jid]
        for m in self.jobs.values():
            m.parent_id = None if m.parent_id in gone else m.parent_id
        self.abandoned = [c for c in self.abandoned if c.job.id not in gone]
        self.stats["pruned jobs"] += len(gone)

    # ------------------------------------------------------------------ the check after every step

    @invariant()
    def counts_agree(self) -> None:
        """The maintained counts (``core/counts.py``) equal a full recount, and the views that read them
        agree with the model (issue 26)."""
        read = self.q.backend.read
        assert self.run(read(counts.maintained, "counts")) == self.run(read(counts.finished_recount, "recount"))
        stats = self.run(self.q.stats())
        want = Counter(m.status for m in self.jobs.values())
        assert dict(stats.jobs_by_status) == {k: want[k] for k in stats.jobs_by_status}
        assert (stats.total_entities, stats.processed_entities, stats.failed_entities) == (
            sum(len(m.entities) for m in self.jobs.values()), sum(m.processed for m in self.jobs.values()),
            sum(m.failed for m in self.jobs.values()))
        assert self.run(self.q.count_jobs(["complete", "failed", "cancelled"])) == sum(want[k] for k in FINISHED)

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
            if m.chunks:
                blame = [(c.index, c.lost, c.solo) for c in sorted(m.chunks.values(), key=lambda c: c.index)]
                assert self._blame(jid) == blame, f"job {jid}: (chunk, lost_leases, solo) {self._blame(jid)} != {blame}"

    def _blame(self, job_id: int) -> list[tuple[int, int, bool]]:
        """Each chunk's (index, lost_leases, solo_at set): not in core's read API."""
        col = s.chunks.c
        query = (select(col.chunk_index, col.lost_leases, col.solo_at.is_not(None))
                 .where(col.job_id == job_id).order_by(col.chunk_index))
        return self.run(self.q.backend.read(lambda conn: [tuple(r) for r in conn.execute(query)], "reading chunks"))


@pytest.mark.slow
def test_queue_agrees_with_the_model(db_url: str) -> None:
    stats: Counter[str] = Counter()
    machine = type("QueueModelRun", (QueueModel,), {"url": db_url, "stats": stats})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False, phases=PHASES))
    # The run must have reached the interesting states, or it proved little.
    for what in ("chunks", "crashes", "reclaimed", "late commit accepted", "fenced off while re-leased",
                 "retry jobs", "cancelled", "completed jobs", "isolated", "worker lost", "window claims",
                 "window claims past max_workers", "suspects run alone", "solo lost lease counted",
                 "suspect lost unstarted, not counted", "poison windows", "window suspects completed alone",
                 "pruned jobs"):
        assert stats[what] > 0, f"the model run never exercised {what!r}: {dict(stats)}"
    print(f"\n[model {backend(db_url)}] {MAX_EXAMPLES} examples x up to {STEPS} steps: {dict(sorted(stats.items()))}")
