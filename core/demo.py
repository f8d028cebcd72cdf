"""A demo processor and data set: what a newcomer sees on `chunkq demo`.

It behaves like a real enrichment provider: variable latency, a few IDs it does
not know (permanent errors), rate-limit answers (transient, retried), and one ID
that hangs until the per-entity timeout cuts it off.
"""

from __future__ import annotations

import asyncio
import random
import zlib

from .models import Job, Retry
from .processor import Processor
from .queue import Queue

#: IDs ending with these digits fail in a deterministic, explainable way
_UNKNOWN = "7"
_RATE_LIMITED = "3"
HANGS = "acme-hangs"


class ProviderError(Exception):
    """What a provider client raises for an ID it cannot enrich."""


async def enrich(entity_id: str, job: Job) -> None:
    seed = zlib.crc32(entity_id.encode())
    await asyncio.sleep(0.01 + (seed % 40) / 1000)
    if entity_id == HANGS:
        await asyncio.sleep(3600)
    if entity_id.endswith(_UNKNOWN) and seed % 3 == 0:
        raise ProviderError(f"{job.provider}: 404 no {job.entity_type} matches this ID")
    if entity_id.endswith(_RATE_LIMITED) and seed % 4 == 0 and random.random() < 0.7:
        raise Retry("429 Too Many Requests", after=1.0)


#: what `chunkq demo` runs: a timeout so the hanging ID fails instead of hanging the worker
processor = Processor(on_process=enrich, concurrency=8, timeout=2.0, backoff_base=1.0)

DEMO_JOBS = [
    ("Fortune 500 companies", "company", "clearbit", 500, 50, 0),
    ("Conference attendees", "person", "prospeo", 1200, 100, 0),
    ("Product URLs (priority)", "url", "scraper", 300, 25, 5),
    ("SKU catalogue", "sku", "pricing-api", 2000, 200, 0),
]


async def seed(queue: Queue) -> list[Job]:
    """Create the demo jobs, one of them with a few chunks already done."""
    jobs = []
    for name, entity_type, provider, n, chunk, prio in DEMO_JOBS:
        ids = [f"{entity_type}-{i:05d}" for i in range(n)]
        if entity_type == "company":
            ids[17] = HANGS
        jobs.append(
            await queue.enqueue_job(ids, entity_type=entity_type, provider=provider, chunk_size=chunk,
                                    priority=prio, name=name)
        )
    for _ in range(3):
        await queue.process_chunk(jobs[0].id, processor)
    await queue.pause(jobs[3].id)
    return [await queue.get_job(j.id) for j in jobs]
