"""A provider's rate limit, shared by every worker on the database.

Each provider has one token bucket, a row in the database: every worker on every
host that uses this database draws from the same one, so ten workers at
``prospeo=10/s`` make ten calls a second between them, not a hundred.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from . import schema as s
from .backend import Backend
from .models import Job
from .processor import Processor

BeforeCall = Callable[[], Awaitable[None]]


class RateLimiter:
    def __init__(self, backend: Backend, now: Callable[[], float]) -> None:
        self.backend = backend
        self.now = now

    def for_job(self, processor: Processor, job: Job) -> BeforeCall | None:
        """What to await before each call of ``job``'s chunks; None when its provider has no limit.

        The processor's limit for the job's provider applies, and a job may ask for
        a lower one (``params={"rate_limit": 2}``): the lower of the two wins.
        """
        rate = processor.rate_limits.get(job.provider)
        job_rate = job.params.get("rate_limit") if isinstance(job.params, dict) else None
        if isinstance(job_rate, int | float) and job_rate > 0:
            rate = job_rate if rate is None else min(rate, float(job_rate))
        if not rate:
            return None
        provider, per_second = job.provider, float(rate)

        async def before_call() -> None:
            await self.acquire(provider, per_second)

        return before_call

    async def acquire(self, provider: str, rate: float, burst: float = 1.0) -> None:
        """Wait for one call's worth of ``provider``'s bucket (``rate`` tokens a second, ``burst`` at most)."""
        rl = s.rate_limits.c

        def take(conn: Connection) -> float:
            """Take a token if one is there (0.0); else how long until one will be."""
            self.backend.lock_bucket(conn, provider)
            now = self.now()
            row = conn.execute(select(rl.tokens, rl.updated_at).where(rl.provider == provider)).first()
            if row is None:
                conn.execute(insert(s.rate_limits).values(provider=provider, rate=rate, burst=burst,
                                                          tokens=burst - 1.0, updated_at=now))
                return 0.0
            tokens: float = min(burst, row.tokens + max(now - row.updated_at, 0.0) * rate)
            if tokens >= 1.0:
                conn.execute(update(s.rate_limits).where(rl.provider == provider)
                             .values(tokens=tokens - 1.0, updated_at=now, rate=rate, burst=burst))
                return 0.0
            return (1.0 - tokens) / rate

        while True:
            wait = await self.backend.write(take, "rate limiting")
            if wait <= 0:
                return
            await asyncio.sleep(wait)  # until the bucket has refilled one token
