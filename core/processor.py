"""``Processor``: what the user hands chunkq, the callback and the knobs around it.

The main user-facing type, in a module of its own: everything that runs,
routes or sizes work takes one (the worker, the queue's one-off runs, the
loader that imports one by name), while only ``runner.py`` calls it. It holds
no state of chunkq's: what a worker learns about it (the ``auto`` limit) is kept
by the worker's side (``adaptive.limit_for``), never on the user's object.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .bounds import CONCURRENCY, RATE, TIMEOUT, check_concurrency
from .errors import InvalidInput
from .models import EntityResult, Job
from .threads import CALLBACK_THREADS, CallbackThreads

EntityCallback = Callable[[str, Job], Any]
BatchCallback = Callable[[list[str], Job], Any]
EntityHook = Callable[[EntityResult], None]


@dataclass
class Processor:
    """How to run a chunk: the callback and the knobs around it.

    ``on_process(entity_id, job)`` is called once per entity (sync callbacks run
    in a worker thread, so they never block the event loop); ``on_chunk(ids, job)``
    is the batch form for providers with bulk APIs and returns
    ``{entity_id: error}`` for the entities that failed.
    """

    on_process: EntityCallback | None = None
    on_chunk: BatchCallback | None = None
    #: calls at once: a number, or ``"auto"`` (``"auto:N"``: at most N) to find the provider's limit (``adaptive.py``)
    concurrency: int | str = 1
    timeout: float | None = None
    #: exception types treated like ``Retry`` (e.g. a client's 429 error)
    retry_on: tuple[type[BaseException], ...] = ()
    #: decides for any exception whether it is transient (e.g. by HTTP status)
    is_transient: Callable[[BaseException], bool] | None = None
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    capture_locals: bool = False
    #: provider name -> calls per second, enforced across every worker on the database
    rate_limits: dict[str, float] = field(default_factory=dict)
    #: the name jobs are routed by (``enqueue_job(processor=...)``): a worker claims only jobs routed to its
    #: name, and jobs routed to no one. The CLI names a processor by its import path; None: unnamed.
    name: str | None = None

    def __post_init__(self) -> None:
        if self.on_process is not None and self.on_chunk is not None:
            raise InvalidInput("give on_process or on_chunk, not both")
        if isinstance(self.concurrency, str):
            self.concurrency = check_concurrency(self.concurrency)
        elif isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int):
            raise InvalidInput(f"concurrency must be a whole number or 'auto', got {self.concurrency!r}",
                               field="concurrency")
        elif self.concurrency < CONCURRENCY.lo:
            raise InvalidInput("concurrency must be at least 1", field="concurrency")
        # a processor's own knobs meet the same limits as the command line's (nan or 1e308 overflowed later)
        self.timeout = TIMEOUT.check_optional(self.timeout)
        self.rate_limits = {provider: RATE.check(rate) for provider, rate in self.rate_limits.items()}

    @classmethod
    def coerce(cls, value: Processor | EntityCallback | None) -> Processor:
        if isinstance(value, Processor):
            return value
        if value is None:
            return cls(on_process=noop)
        if not callable(value):
            raise TypeError(f"a processor must be callable, got {type(value).__name__}")
        return cls(on_process=value)

    @property
    def threads(self) -> CallbackThreads:
        """The daemon threads sync callbacks run on (``threads.py``): one pool per process, so a
        processor made per call (``queue.process_next_chunk(fn)`` in a loop) leaves no idle threads
        behind; how many run at once is the runner's ``concurrency``."""
        return CALLBACK_THREADS

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential, capped, jittered."""
        raw = min(self.backoff_cap, self.backoff_base * (2 ** max(attempt - 1, 0)))
        return raw * (0.5 + random.random() / 2) if raw > 0 else 0.0


#: what every "run this" API accepts: a ``Processor``, a bare per-entity callback, or None (do nothing)
ProcessorLike = Processor | EntityCallback | None


def noop(entity_id: str, job: Job) -> None:
    """The callback of a processor given none: each entity succeeds as it is (a dry run of the plumbing)."""
    return None
