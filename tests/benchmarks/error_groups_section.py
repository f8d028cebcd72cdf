"""Section 9: error groups (issues 16, 27) - reading a job's errors by kind at 1,000 and 100,000 errors (SQLite).

Two jobs in one database, one with 1,000 logged errors and one with 100,000, in
the same five kinds, grouped as migration 0009 groups stored rows
(``error_groups.rebuild``: the same templates and counters a commit writes).
Measured through the public API, median of several reads:

* ``group_errors`` - the grouped view. Since issue 27 it reads the job's group
  rows and their counters (``chunkq_error_groups``), not its errors: flat in the
  number of errors. The baseline of the second row normalises every message at
  read (``normalise at read``), as a view would without stored groups.
* one group's first page (``list_errors(fingerprint=...)``) and its entities
  (``group_entities``): an index seek, flat in the job's size.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from chunkq.core import Queue
from chunkq.core import schema as s
from chunkq.core.error_groups import rebuild
from chunkq.core.fingerprint import fingerprint
from sqlalchemy import insert, select

from .common import Row, median

SMALL, BIG = 1_000, 100_000
KINDS = (
    ("RuntimeError", "upstream 500 for {eid}"),
    ("httpx.HTTPStatusError", "Client error '404 Not Found' for url 'https://api.example.com/v2/companies/{eid}'"),
    ("KeyError", "'email'"),
    ("TimeoutError", "read timed out after {n}.5s"),
    ("ValueError", "invalid literal for int() with base 10: '{eid}'"),
)


async def _seed(db: Path) -> tuple[int, int]:
    async with Queue(db) as q:
        jobs = []
        for n in (SMALL, BIG):
            job = await q.enqueue_job([f"company-{i:08d}" for i in range(n)], entity_type="company",
                                      provider="bench", chunk_size=50)
            jobs.append(job.id)
            prints = {}
            batch = []
            for i in range(n):
                eid = f"company-{i:08d}"
                error_type, template = KINDS[i % len(KINDS)]
                message = template.format(eid=eid, n=i % 97)
                if (error_type, template) not in prints:
                    prints[(error_type, template)] = fingerprint(error_type, message, None, entity_id=eid)
                fp = prints[(error_type, template)]
                batch.append({"job_id": job.id, "pos": i, "entity_id": eid, "error_type": error_type,
                              "message": message, "traceback": "", "stacks": [], "chunk_index": i // 50,
                              "attempt": 1, "final": True, "created_at": 1_800_000_000.0 + i,
                              "fingerprint": fp.key, "normalized": fp.normalized, "location": fp.where})
                if len(batch) == 5000 or i == n - 1:
                    async with q.engine.begin() as conn:
                        await conn.execute(insert(s.errors), batch)
                    batch = []
            async with q.engine.begin() as conn:
                await conn.run_sync(lambda c, job_id=job.id: rebuild(c, job_id))
        return jobs[0], jobs[1]


async def _times(db: Path, job_id: int, reps: int) -> dict[str, float]:
    async with Queue(db, readonly=True) as q:
        out: dict[str, list[float]] = {"group": [], "page": [], "entities": [], "normalise": []}
        key = (await q.group_errors(job_id))[0].fingerprint
        reads = {"group": lambda: q.group_errors(job_id),
                 "page": lambda: q.list_errors(job_id, fingerprint=key, limit=100),
                 "entities": lambda: q.group_entities(job_id, key, limit=100)}
        for name, read in reads.items():  # each read in its own loop, after a warm-up: no read evicts another's
            await read()
            for _ in range(reps):
                t0 = time.perf_counter()
                await read()
                out[name].append(time.perf_counter() - t0)
        er = s.errors.c
        for _ in range(max(1, reps // 3)):
            t0 = time.perf_counter()
            async with q.engine.connect() as conn:
                found = (await conn.execute(select(er.error_type, er.message, er.entity_id)
                                            .where(er.job_id == job_id))).all()
            counts: dict[str, int] = {}
            for r in found:
                k = fingerprint(r.error_type, r.message, None, entity_id=r.entity_id).key
                counts[k] = counts.get(k, 0) + 1
            out["normalise"].append(time.perf_counter() - t0)
        return {k: median(v) for k, v in out.items()}


def error_groups(work: Path, reps: int = 9) -> list[Row]:
    db = work / "error-groups.db"
    small, big = asyncio.run(_seed(db))
    t_small = asyncio.run(_times(db, small, reps))
    t_big = asyncio.run(_times(db, big, reps))
    sec = "9 error groups"
    return [
        Row(sec, "group_errors, 100k errors vs 1k (grouped view)", t_big["group"] * 1000, "ms",
            t_small["group"] * 1000, "same read at 1k", 2.0,
            note="reads the job's group rows (counters kept at write): flat",
            extra={"small_ms": t_small["group"] * 1000}),
        Row(sec, "group_errors vs normalising every message at read (100k)", t_big["group"] * 1000, "ms",
            t_big["normalise"] * 1000, "normalise at read", 0.5,
            note="the stored, indexed fingerprint"),
        Row(sec, "one group's first page, 100k errors vs 1k", t_big["page"] * 1000, "ms",
            t_small["page"] * 1000, "same read at 1k", 2.0, note="index seek: flat"),
        Row(sec, "one group's entities (100), 100k errors vs 1k", t_big["entities"] * 1000, "ms",
            t_small["entities"] * 1000, "same read at 1k", 2.0,
            note="read in index order, made distinct as it goes: flat"),
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for row in error_groups(Path(d)):
            print(f"{row.metric}: {row.value:.2f} {row.unit} vs {row.baseline:.2f} ({row.baseline_name}); "
                  f"ratio {row.ratio:.2f} target {row.target}")
