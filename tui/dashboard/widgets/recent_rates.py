"""Each job's rate on the home screen, from the job rows a poll reads anyway.

With fair scheduling (issue 25) several jobs run at once and share the workers;
what an operator wants from the Rate column is each job's share *now*. Reading it
from chunk history (``Queue.job_rates``: every chunk a job finished in the last
minute) makes each poll cost more as jobs grow and as more of them run. The job
rows already carry ``processed_count``: its increase over the last
``RATE_WINDOW`` seconds of polls is the job's rate, exact to the entity, for the
cost of remembering a few numbers per row on the page - and the rows' rates add
up to the queue's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from chunkq import core

#: seconds of polls a rate is taken over: long enough to span a few slow chunks' commits,
#: short enough that a job that stops shows idle (no rate, no ETA) soon after
RATE_WINDOW = 20.0


class RecentRates:
    """Entities a second per job, from the growth of its ``processed_count`` between polls.

    ``observe(jobs, now)`` is given every job on the page at each poll (changed or not: a
    job that did not change did nothing) and returns the rates of those that moved within
    the window. A job seen once has no rate yet; one not on the page is forgotten.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: dict[int, deque[tuple[float, int]]] = {}

    def observe(self, jobs: Iterable[core.Job], now: float) -> dict[int, float]:
        rates: dict[int, float] = {}
        seen: set[int] = set()
        for job in jobs:
            seen.add(job.id)
            samples = self._samples.setdefault(job.id, deque())
            if samples and samples[-1][1] > job.processed_count:  # requeued: counted afresh
                samples.clear()
            samples.append((now, job.processed_count))
            # the base is the newest sample at or before the window's start (or the oldest there is)
            while len(samples) > 2 and samples[1][0] <= now - self.window:
                samples.popleft()
            t0, n0 = samples[0]
            if job.status in core.ACTIVE_STATUSES and now > t0 and job.processed_count > n0:
                rates[job.id] = (job.processed_count - n0) / (now - t0)
        for gone in self._samples.keys() - seen:
            del self._samples[gone]
        return rates
