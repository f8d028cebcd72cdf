"""Many workers on one database: 8 real processes, 50 jobs, nothing twice, no lock errors.

Some jobs allow several workers at once (``max_workers`` > 1), some entities fail
for good (``!fail``) and some fail transiently once (``!retry``), so retry chunks
are contended too. The workers start together behind a barrier file.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest
from chunkq.core import Queue

from ._support import SOAK, backend, check_complete, finish, read_records, spawn, wait_for

WORKERS = 8
JOBS = 50 * SOAK


async def _enqueue(url: str) -> tuple[list[int], dict[str, str]]:
    rng = random.Random(50)
    kinds: dict[str, str] = {}
    job_ids = []
    async with Queue(url) as q:
        for j in range(JOBS):
            ids = []
            for i in range(rng.randint(8, 30)):
                roll = rng.random()
                kind = "fail" if roll < 0.04 else "retry" if roll < 0.08 else "ok"
                eid = f"j{j}-e{i}" + ("" if kind == "ok" else f"!{kind}")
                kinds[eid] = kind
                ids.append(eid)
            job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=rng.choice([4, 5, 10]),
                                      max_workers=rng.choice([1, 1, 2, 4, 8]), priority=rng.choice([0, 0, 5]))
            job_ids.append(job.id)
    return job_ids, kinds


async def _check_db(url: str, job_ids: list[int], kinds: dict[str, str]) -> dict[str, int]:
    async with Queue(url) as q:
        numbers = await check_complete(q, job_ids)
        finals: Counter[str] = Counter()
        transients: Counter[str] = Counter()
        multi = 0
        for jid in job_ids:
            job = await q.get_job(jid)
            for e in await q.list_errors(jid, limit=100_000):
                (finals if e.final else transients)[e.entity_id] += 1
            owners = {c.worker for c in await q.list_chunks(jid, limit=100_000)}
            multi += job.max_workers > 1 and len(owners) > 1
        fails = {e for e, k in kinds.items() if k == "fail"}
        retries = {e for e, k in kinds.items() if k == "retry"}
        assert set(finals) == fails and all(n == 1 for n in finals.values()), "a final error is missing or doubled"
        assert set(transients) == retries and all(n == 1 for n in transients.values())
        numbers["jobs_shared_by_workers"] = multi
        return numbers


async def _unfinished(url: str) -> list[dict[str, object]]:
    async with Queue(url) as q:
        return [
            {k: j.to_dict()[k] for k in ("id", "status", "total_count", "processed_count", "waiting_count",
                                          "next_retry_at", "leased_chunks", "max_workers")}
            for j in await q.list_jobs(["pending", "running", "paused"])
        ]


@pytest.mark.slow
def test_eight_workers_fifty_jobs_every_entity_exactly_once(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    job_ids, kinds = asyncio.run(_enqueue(db_url))
    flags = tmp_path / "flags"
    flags.mkdir()
    start = tmp_path / "go"
    drivers = [
        spawn(python_env, db_url, tmp_path, "--work-ms", "1", "--flags-dir", str(flags), "--start-file", str(start),
              "--concurrency", "1" if i % 2 else "3")
        for i in range(WORKERS)
    ]
    try:
        for d in drivers:
            wait_for(d, "READY", 60)
        start.touch()
        try:
            results = [finish(d, timeout=90) for d in drivers]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nunfinished jobs: {asyncio.run(_unfinished(db_url))}") from None
    finally:
        for d in drivers:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
    for d, (status, _out, err) in zip(drivers, results, strict=True):
        assert status == 0, f"worker {d.pid} exited with {status}:\n{err}"
        assert "locked" not in err.lower() and err.strip() == "", f"worker {d.pid} wrote to stderr:\n{err}"

    records = read_records(tmp_path)
    succeeded = {e for e, k in kinds.items() if k != "fail"}
    counts = {e: len(p) for e, p in records.processed.items()}
    assert set(counts) == succeeded, "an entity was lost, or a failing one recorded as done"
    twice = {e: n for e, n in counts.items() if n != 1}
    assert not twice, f"entities processed more than once: {list(twice.items())[:5]}"
    assert not records.discarded, f"a worker lost a lease under contention: {records.discarded}"
    numbers = asyncio.run(_check_db(db_url, job_ids, kinds))
    assert numbers["reclaimed_chunks"] == 0, "a lease expired although every worker was alive"
    workers_used = len({c[0] for c in records.claims})
    assert workers_used >= 2, "the workers did not share the work"
    print(f"\n[many workers {backend(db_url)}] {WORKERS} workers ({workers_used} got chunks), {JOBS} jobs, "
          f"{len(kinds)} entities, {len(records.claims)} chunks; {numbers}")
