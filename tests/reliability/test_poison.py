"""Poison entities: a callback that takes its worker down with it (issue 13).

Before: the chunk was reclaimed and retried without end, its good entities
called again on every attempt, and the job never finished. Now a chunk that
loses its lease ``ISOLATE_AFTER`` (3) times without a commit is run one entity
at a time, each entity that kills workers is recorded as failed for good
(``WorkerLost``), and everything else completes.

The "supervisor" here is the test: it keeps two real worker processes
(``driver.py``) running, starting a new one whenever one dies, until a worker
exits 0 because every job is finished. Deaths are real: a segfault
(``ctypes.string_at(0)``), ``os._exit`` and SIGKILL from inside (what the OOM
killer does). Two poison entities share one chunk: the first kills every run
of the chunk, the second is only found once the chunk is isolated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from chunkq.core import Queue
from chunkq.core.poison import ISOLATE_AFTER

from ._support import Driver, backend, finish, read_records, spawn

LEASE = 1.0
CHUNK = 6
WORKERS = 2
POISON_AT = (2, 4)  # both in chunk 1 (positions 8 and 10 of the job)


async def _enqueue(url: str, kinds: tuple[str, str]) -> tuple[int, list[str]]:
    poison = {CHUNK + p: k for p, k in zip(POISON_AT, kinds, strict=True)}
    ids = [f"e{i:02d}{poison.get(i, '')}" for i in range(3 * CHUNK)]
    async with Queue(url) as q:
        job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=CHUNK,
                                  max_workers=WORKERS)
    return job.id, ids


async def _state(url: str, job_id: int) -> tuple[object, list[object], list[object]]:
    async with Queue(url) as q:
        return await q.get_job(job_id), await q.list_errors(job_id), await q.list_chunks(job_id, limit=1000)


def _supervise(url: str, tmp: Path, env: dict[str, str], deadline: float) -> Counter[int]:
    """Keep WORKERS drivers alive, starting one for each that dies, until one finishes cleanly;
    the exit statuses of the dead."""
    args = ["--lease", str(LEASE), "--work-ms", "2", "--deadline", "60"]
    deaths: Counter[int] = Counter()
    live: list[Driver] = [spawn(env, url, tmp, *args) for _ in range(WORKERS)]
    finished = False
    try:
        while live:
            assert time.monotonic() < deadline, f"the job did not finish in time; deaths so far: {deaths}"
            for d in list(live):
                if d.proc.poll() is None:
                    continue
                status, _out, err = finish(d)
                live.remove(d)
                if status == 0:
                    finished = True
                    continue
                assert status in (70, -11, -9), f"driver {d.pid} failed unexpectedly ({status}):\n{err}"
                deaths[status] += 1
                if not finished:
                    live.append(spawn(env, url, tmp, *args))
            time.sleep(0.05)
    finally:
        for d in live:
            d.proc.kill()
            d.proc.wait()
    return deaths


def test_poison_entities_are_isolated_and_the_job_finishes(
    db_url: str, tmp_path: Path, python_env: dict[str, str]
) -> None:
    kinds = ("!segv", "!exit") if backend(db_url) == "sqlite" else ("!kill", "!exit")
    job_id, ids = asyncio.run(_enqueue(db_url, kinds))
    t0 = time.monotonic()
    deaths = _supervise(db_url, tmp_path, python_env, t0 + 90)
    took = time.monotonic() - t0

    job, errors, chunks = asyncio.run(_state(db_url, job_id))
    first, second = (ids[CHUNK + p] for p in POISON_AT)
    assert (job.status, job.processed_count, job.failed_count) == ("complete", len(ids), 2), job
    assert {e.entity_id for e in errors} == {first, second}
    for e in errors:
        assert e.error_type == "WorkerLost" and e.final
        assert e.message == f"the worker died or lost its lease while processing this entity, {ISOLATE_AFTER} times"
    # The first poison kills every run of the chunk (ISOLATE_AFTER) and of itself alone (ISOLATE_AFTER);
    # the second is only reached alone.
    assert sum(deaths.values()) == 3 * ISOLATE_AFTER, deaths
    [split] = [c for c in chunks if c.state == "split"]
    assert (split.chunk_index, split.size) == (1, CHUNK)
    assert sum(c.ok for c in chunks) == job.succeeded_count == len(ids) - 2

    calls = Counter({eid: len(pids) for eid, pids in read_records(tmp_path).processed.items()})
    assert set(calls) == set(ids), "every entity was called"
    chunk1 = ids[CHUNK:2 * CHUNK]
    before, after = chunk1[:POISON_AT[0]], [e for e in chunk1[POISON_AT[0] + 1:] if e != second]
    assert all(calls[e] == 1 for e in ids if e not in chunk1), calls
    assert [calls[e] for e in before] == [ISOLATE_AFTER + 1] * len(before), calls  # 3 chunk runs + alone
    assert [calls[e] for e in after] == [1] * len(after), calls  # never reached before the isolation
    assert (calls[first], calls[second]) == (2 * ISOLATE_AFTER, ISOLATE_AFTER), calls
    good = before + after
    print(f"\n[poison {backend(db_url)}] 2 poison entities in one chunk ({', '.join(kinds)}): both WorkerLost "
          f"after {sum(deaths.values())} worker deaths ({dict(deaths)}), job complete in {took:.1f}s; calls per "
          f"good entity of the poison chunk: mean {sum(calls[e] for e in good) / len(good):.1f}, "
          f"max {max(calls[e] for e in good)}; elsewhere 1")
