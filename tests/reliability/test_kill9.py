"""kill -9: worker processes die at the worst moments and nothing is lost.

Each worker is a real process (``tests/reliability/driver.py``) that stops at a
chosen point (inside the callback, after the last entity before the commit,
inside the commit transaction, inside the claim transaction) or at a seeded
random delay, and is then SIGKILLed. Two workers run at once, replacements are
started after every kill, and finally a fresh worker finishes everything. The
callback's own record, kept outside the database, is the judge. Workers holding
windows of several chunks are killed too, among them a poison entity that ends
every worker running it (issue 24): it alone may end as ``WorkerLost``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Queue
from chunkq.core.poison import ISOLATE_AFTER

from ._support import (
    SOAK,
    Driver,
    backend,
    check_at_least_once,
    check_complete,
    counter_summary,
    finish,
    read_records,
    spawn,
    uncommitted_claims,
    wait_for,
    wait_line,
)

LEASE = 1.0
KILLS_PER_BACKEND = 12 * SOAK  # SQLite + PostgreSQL: 24 per CI run
POINTS = ("callback", "before_commit", "in_commit", "in_claim", "random")


async def _enqueue(url: str, jobs: int, per_job: int) -> tuple[list[int], set[str]]:
    ids: set[str] = set()
    job_ids = []
    rng = random.Random(7)
    async with Queue(url) as q:
        for j in range(jobs):
            batch = [f"j{j}-e{i}" for i in range(per_job)]
            ids.update(batch)
            job = await q.enqueue_job(batch, entity_type="company", provider="p",
                                      chunk_size=rng.choice([4, 6, 8]), max_workers=rng.choice([1, 2, 3]))
            job_ids.append(job.id)
    return job_ids, ids


async def _verify(url: str, job_ids: list[int]) -> dict[str, int]:
    async with Queue(url) as q:
        return await check_complete(q, job_ids)


async def _errors(url: str, job_ids: list[int]) -> tuple[list[Any], int]:
    """Every job's errors, and how many chunks were split (run one entity at a time)."""
    async with Queue(url) as q:
        errors = [e for jid in job_ids for e in await q.list_errors(jid, limit=100_000)]
        chunks = [c for jid in job_ids for c in await q.list_chunks(jid, limit=1_000_000)]
    return errors, sum(1 for c in chunks if c.state == "split")


def _plan(rng: random.Random, n: int) -> list[tuple[str, str | None, float]]:
    """(point, --hook value, random kill delay) for each kill, every point covered."""
    plan = []
    for i in range(n):
        point = POINTS[i % len(POINTS)]
        if point == "random":
            plan.append((point, None, rng.uniform(0.05, 0.5)))
        elif point == "callback":
            plan.append((point, f"callback:{rng.randint(1, 14)}", 0.0))
        else:
            plan.append((point, f"{point}:{rng.randint(1, 3)}", 0.0))
    rng.shuffle(plan)
    return plan


@dataclass
class Slot:
    driver: Driver
    point: str
    delay: float | None  # random kill: seconds after READY
    kill_at: float | None = None


@pytest.mark.slow
def test_kill9_at_random_moments_loses_nothing(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    rng = random.Random(20261128 + (backend(db_url) == "postgres"))
    job_ids, expected = asyncio.run(_enqueue(db_url, 10, 100 * SOAK))
    plan = _plan(rng, KILLS_PER_BACKEND)
    common = ["--lease", str(LEASE), "--work-ms", "3"]
    live: dict[int, Slot] = {}
    killed: set[int] = set()
    kills: Counter[str] = Counter()
    end = time.monotonic() + 90

    def kill(slot: Slot) -> None:
        os.kill(slot.driver.pid, signal.SIGKILL)
        slot.driver.proc.wait(10)
        killed.add(slot.driver.pid)
        kills[slot.point] += 1
        del live[slot.driver.pid]

    try:
        while plan or live:
            assert time.monotonic() < end, f"kill loop ran out of time; kills so far: {kills}"
            while plan and len(live) < 2:
                point, hook, delay = plan.pop()
                conc = "1" if hook is None else rng.choice(["1", "4"])
                d = spawn(python_env, db_url, tmp_path, *common, "--concurrency", conc, hook=hook)
                live[d.pid] = Slot(d, point, delay if hook is None else None)
            now = time.monotonic()
            timers = [s.kill_at - now for s in live.values() if s.kill_at is not None]
            got = wait_line([s.driver for s in live.values()], timeout=max(0.0, min([0.5, *timers])))
            now = time.monotonic()
            if got is not None:
                d, line = got
                slot = live[d.pid]
                if line == "READY" and slot.delay is not None:
                    # Random kills count from READY, so they land in the work, not in the imports.
                    slot.kill_at = now + slot.delay
                elif line.startswith("AT "):
                    assert line == f"AT {slot.point}", (line, slot.point)
                    kill(slot)
                elif line == "" or line.startswith("SUMMARY"):
                    # Ran out of work before its hook: fine, if it exited cleanly.
                    status, _out, err = finish(d)
                    assert status == 0, f"driver {d.pid} ({slot.point}) failed with {status}:\n{err}"
                    del live[d.pid]
            for slot in list(live.values()):
                if slot.kill_at is not None and now >= slot.kill_at:
                    kill(slot)
    finally:
        for slot in live.values():
            slot.driver.proc.kill()
            slot.driver.proc.wait()

    total_kills = sum(kills.values())
    assert total_kills == KILLS_PER_BACKEND, f"only {total_kills} kills happened: {counter_summary(kills)}"
    for point in ("callback", "before_commit", "in_commit", "in_claim"):
        assert kills[point] >= 1, f"no kill at {point}: {counter_summary(kills)}"

    # A fresh worker finishes everything (waiting out the dead workers' 1 s leases).
    fresh = spawn(python_env, db_url, tmp_path, *common)
    status, _out, err = finish(fresh, timeout=90)
    assert status == 0, f"the fresh worker failed ({status}):\n{err}"
    assert err.strip() == "", f"the fresh worker complained:\n{err}"

    records = read_records(tmp_path)
    numbers = check_at_least_once(records, expected, killed)
    numbers.update(asyncio.run(_verify(db_url, job_ids)))
    assert numbers["killed_in_flight"] >= 1
    print(f"\n[kill -9 {backend(db_url)}] kills: {total_kills} ({counter_summary(kills)}); "
          f"entities: {len(expected)}; {counter_summary(Counter(numbers))}")


@pytest.mark.slow
def test_a_frozen_worker_wakes_up_and_its_late_commit_is_discarded(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    """SIGSTOP mid-chunk past the lease; another worker takes the chunk over and is still working
    on it when the first one gets SIGCONT and tries to commit: only the fencing token can refuse it."""
    job_ids, expected = asyncio.run(_enqueue(db_url, 2, 24))
    rel_a, rel_b = tmp_path / "release-a", tmp_path / "release-b"
    common = ["--lease", str(LEASE), "--work-ms", "2"]
    zombie = spawn(python_env, db_url, tmp_path, *common, "--release-file", str(rel_a), hook="callback:2")
    taker: Driver | None = None
    try:
        wait_for(zombie, "AT callback", 60)
        os.kill(zombie.pid, signal.SIGSTOP)
        time.sleep(LEASE + 0.5)  # its lease runs out while it cannot renew it
        # A fresh worker checks for expired leases first: it takes the frozen worker's chunk over
        # and stops inside its callback, holding (and renewing) the new lease.
        taker = spawn(python_env, db_url, tmp_path, *common, "--release-file", str(rel_b), hook="callback:1")
        wait_for(taker, "AT callback", 60)
        rel_a.touch()
        os.kill(zombie.pid, signal.SIGCONT)
        end = time.monotonic() + 30
        while not read_records(tmp_path).discarded.get(zombie.pid):
            assert time.monotonic() < end and zombie.proc.poll() is None, "the woken worker never committed"
            time.sleep(0.05)
        rel_b.touch()
        z_status, _out, z_err = finish(zombie, timeout=60)
        t_status, _out, t_err = finish(taker, timeout=60)
    finally:
        for d in (zombie, taker):
            if d is not None and d.proc.poll() is None:
                os.kill(d.pid, signal.SIGCONT)
                d.proc.kill()
                d.proc.wait()
    assert z_status == 0, f"the woken worker failed ({z_status}):\n{z_err}"
    assert t_status == 0 and t_err.strip() == "", f"the worker that took over failed ({t_status}):\n{t_err}"
    assert "discarded" in z_err, z_err  # it says so
    records = read_records(tmp_path)
    fenced = records.discarded[zombie.pid]
    taken = [c for c in records.claims if c[0] == taker.pid and c[3] > 1]  # type: ignore[union-attr]
    assert taken and set(taken[0][4]) == fenced, "the chunk taken over is the one whose commit was refused"
    numbers = check_at_least_once(records, expected, killed=set())
    numbers.update(asyncio.run(_verify(db_url, job_ids)))  # the refused results changed no count
    assert numbers["reclaimed_chunks"] == 1 and numbers["duplicates"] >= 1
    print(f"\n[zombie {backend(db_url)}] fenced-off late commit of {len(fenced)} entities; {numbers}")


WINDOW_KILLS = 6 * SOAK  # per backend
#: an entity that ends its worker (``os._exit``) each time it runs, early in the first job: the first windows hold it
WINDOW_POISON = "w0-e5!exit"
POISONED = 70  # its worker's exit status


@pytest.mark.slow
def test_kill9_of_workers_holding_windows_of_several_chunks_loses_nothing(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    """Issue 14: a worker keeps its slots busy across chunks, holding several leases at once. Killed
    at any point, at most the chunks of its window are redone, and nothing is lost. Issue 24: one entity
    kills every worker that runs it, in a window of several chunks too; it alone ends as ``WorkerLost``."""
    rng = random.Random(20261214 + (backend(db_url) == "postgres"))
    ids: set[str] = set()
    job_ids = []

    async def setup() -> None:
        async with Queue(db_url) as q:
            for j in range(4):
                batch = [f"w{j}-e{i}" for i in range(250 * SOAK)]
                if j == 0:
                    batch[5] = WINDOW_POISON
                ids.update(batch)
                job = await q.enqueue_job(batch, entity_type="company", provider="p",
                                          chunk_size=rng.choice([2, 3, 4]), max_workers=rng.choice([1, 2]))
                job_ids.append(job.id)

    asyncio.run(setup())
    plan = _plan(rng, WINDOW_KILLS)
    common = ["--lease", str(LEASE), "--work-ms", "4", "--mode", "worker", "--concurrency", "6", "--deadline", "60"]
    killed: set[int] = set()  # by the test, or by the poison entity
    kills: Counter[str] = Counter()
    poisoned = 0
    end = time.monotonic() + 90

    def ended(d: Driver, status: int, err: str) -> bool:
        """A driver exited before its kill: cleanly (out of work), or of the poison entity (True)."""
        nonlocal poisoned
        if status == POISONED:
            killed.add(d.pid)
            poisoned += 1
            return True
        assert status == 0, f"driver {d.pid} failed ({status}):\n{err}"
        return False

    try:
        while plan:
            assert time.monotonic() < end, f"kill loop ran out of time; kills so far: {kills}"
            point, hook, delay = plan.pop()
            d = spawn(python_env, db_url, tmp_path, *common, hook=hook)
            wait_for(d, "READY", 60)
            if hook is None:
                time.sleep(delay)
            else:
                got = wait_line([d], 60)
                assert got is not None, f"driver {d.pid} neither reached {point} nor exited"
                if got[1] != f"AT {point}":  # it ran out of work first, or ran the poison entity
                    assert not got[1].startswith("AT "), got
                    if ended(d, *finish(d)[::2]):
                        plan.append((point, hook, delay))  # the poison killed it: this kill is still due
                    continue
            if d.proc.poll() is not None:  # done before the random kill, or poisoned
                if ended(d, *finish(d)[::2]):
                    plan.append((point, hook, delay))
                continue
            os.kill(d.pid, signal.SIGKILL)
            d.proc.wait(10)
            killed.add(d.pid)
            kills[point] += 1
    except BaseException:
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise

    while True:  # fresh workers finish (windows again), one more for each the poison entity ends
        assert poisoned <= 2 * ISOLATE_AFTER, f"the poison entity ended {poisoned} workers"
        fresh = spawn(python_env, db_url, tmp_path, *common)
        if not ended(fresh, *finish(fresh, timeout=90)[::2]):
            break
    records = read_records(tmp_path)
    numbers = check_at_least_once(records, ids, killed)
    numbers.update(asyncio.run(_verify(db_url, job_ids)))
    # the blame (issue 24): of the chunks in the windows the poison entity and the kills took down,
    # only the poison entity failed; every other entity succeeded
    errors, numbers["split_chunks"] = asyncio.run(_errors(db_url, job_ids))
    assert [(e.entity_id, e.error_type, e.final) for e in errors] == [(WINDOW_POISON, "WorkerLost", True)], errors
    numbers["poison_deaths"] = poisoned
    assert sum(kills.values()) >= WINDOW_KILLS // 2, f"too few kills landed: {counter_summary(kills)}"
    widest = max((len(c) for c in uncommitted_claims(records, killed).values()), default=0)
    assert widest >= 2, f"no worker died holding more than one chunk: {numbers}"
    print(f"\n[kill -9 windows {backend(db_url)}] kills: {sum(kills.values())} ({counter_summary(kills)}); "
          f"widest window at death: {widest} chunks; {counter_summary(Counter(numbers))}")
