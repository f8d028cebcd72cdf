"""How many callbacks a worker runs at once: a fixed number, or one that finds the provider's limit.

``limit_for(processor)`` gives a worker its ``ConcurrencyLimit``: ``FixedLimit(n)`` for
``concurrency=n``, ``AIMDLimit`` for ``concurrency="auto"``. The worker (its
window of chunks) takes a slot before each call and says how the call went::

    limiter = limit_for(processor)          # once per worker: the limit is learned across chunks
    async with limiter.slot() as slot:
        await before_call()                 # the shared rate limiter (ratelimit.py), if any
        slot.started()                      # optional: latency is measured from here
        try:
            await call()
        except BaseException as exc:
            slot.done(ok=False, overloaded=is_overloaded(exc, processor))
            raise
        slot.done(ok=True, overloaded=False)

**Why AIMD.** Providers rarely publish how many concurrent calls they accept,
and the number moves. Like TCP's congestion window, ``AIMDLimit`` grows the
limit while calls succeed and their latency stays flat (additive increase:
about one more slot per round of ``limit`` calls), and cuts it at once when the
provider says it is overloaded (multiplicative decrease on ``Retry``, a 429 or a
timeout). Three refinements keep it close to the provider's limit with few 429s:

- *slow start*: until the first overload the limit doubles each round, so it
  reaches a limit of 80 in a handful of rounds rather than 80;
- *one cut per overload*: calls that started before the last cut report the old
  limit's overload and are not cut for again;
- *plateau*: near the level where the last overload happened, the limit creeps
  up much more slowly, and slower still each time the same level overloads
  again, so a steady provider sees rarer and rarer probes (a provider that
  raises its limit is found: past the old level the normal increase resumes).

The shared rate limit composes with it: a slot is held while ``before_call``
waits for a token, and a call that had to wait for the rate limiter does not
grow the limit (concurrency was not what held it back).

Everything here runs on the event loop (``done`` is called there even for a sync
callback's thread), and the clock is injected, so the logic is tested with a
scripted sequence of outcomes.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from .bounds import check_concurrency
from .errors import InvalidInput, Retry

if TYPE_CHECKING:
    from .processor import Processor

#: ``concurrency="auto"``'s defaults: where it starts, and the bounds it moves within
AUTO_INITIAL = 4
AUTO_MINIMUM = 1
AUTO_MAXIMUM = 1000

Clock = Callable[[], float]


class Slot(Protocol):
    """One call's place under the limit."""

    def started(self) -> None: ...

    def done(self, ok: bool, overloaded: bool = False) -> None: ...


class ConcurrencyLimit(Protocol):
    """What a worker asks before each call: ``async with limiter.slot() as slot: ...``."""

    @property
    def limit(self) -> int: ...

    @property
    def inflight(self) -> int: ...

    def slot(self) -> AbstractAsyncContextManager[Slot]: ...


# --------------------------------------------------------------------------- which failure means "slow down"

_OVERLOAD_WORDS = ("429", "too many requests", "rate limit", "ratelimit", "rate-limit", "throttl", "overloaded")


def is_overloaded(exc: BaseException, processor: Processor | None = None) -> bool:
    """Does this failure say the provider is overloaded (so the limit should come down)?

    Yes for a ``Retry`` (the callback's own "too many, later"), the processor's
    ``retry_on`` types, a timeout, an exception carrying a 429 status (``status``,
    ``status_code``, ``code``, or the same on its ``response``), or one whose type
    name or message says 429 / "Too Many Requests" / rate limit / throttled.
    Other failures (a 404, a bug) say nothing about load and leave the limit alone.
    """
    if isinstance(exc, Retry | TimeoutError):
        return True
    if processor is not None and processor.retry_on and isinstance(exc, processor.retry_on):
        return True
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status", "status_code", "code", "http_status"):
            try:
                value = getattr(holder, attr, None)
            except Exception:
                continue
            if value == 429 or (isinstance(value, str) and value.strip() == "429"):
                return True
    try:
        text = f"{type(exc).__name__} {exc}".lower()
    except Exception:
        text = type(exc).__name__.lower()
    return any(word in text for word in _OVERLOAD_WORDS)


# --------------------------------------------------------------------------- the shared waiting room


class _Gate:
    """Counts calls in flight and queues those waiting for ``capacity()`` to have room (FIFO)."""

    def __init__(self, capacity: Callable[[], int]) -> None:
        self.capacity = capacity
        self.inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if not self._waiters and self.inflight < self.capacity():
            self.inflight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():  # woken and cancelled at once: hand the place on
                self.inflight -= 1
                self.wake()
            raise

    def release(self) -> None:
        self.inflight -= 1
        self.wake()

    def wake(self) -> None:
        """Let waiters in while there is room (after a release, or when the limit grew)."""
        while self._waiters and self.inflight < self.capacity():
            fut = self._waiters.popleft()
            if not fut.done():
                self.inflight += 1
                fut.set_result(None)


# --------------------------------------------------------------------------- a number


class _FixedSlot:
    __slots__ = ()

    def started(self) -> None:
        return None

    def done(self, ok: bool, overloaded: bool = False) -> None:
        return None


_FIXED_SLOT = _FixedSlot()


class _GatedLimit:
    """What every limiter shares: a gate that lets ``limit`` calls through, a slot per call."""

    _gate: _Gate

    @property
    def inflight(self) -> int:
        return self._gate.inflight

    def _new_slot(self) -> Slot:
        raise NotImplementedError

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        await self._gate.acquire()
        try:
            yield self._new_slot()
        finally:
            self._gate.release()


class FixedLimit(_GatedLimit):
    """``concurrency=n``: at most ``n`` calls at once, whatever happens."""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"a fixed limit must be a whole number of at least 1, got {n!r}")
        self._limit = n
        self._gate = _Gate(lambda: self._limit)

    @property
    def limit(self) -> int:
        return self._limit

    def _new_slot(self) -> Slot:
        return _FIXED_SLOT

    def __repr__(self) -> str:
        return f"FixedLimit({self._limit})"


# --------------------------------------------------------------------------- "auto"


class _AIMDSlot:
    __slots__ = ("epoch", "inflight", "limit", "owner", "reported", "t0", "waited")

    def __init__(self, owner: AIMDLimit, inflight: int) -> None:
        self.owner = owner
        self.epoch = owner.epoch
        self.t0 = owner.clock()
        self.inflight = inflight  # calls in flight when this one started, itself included
        self.limit = owner.limit
        self.waited = 0.0  # seconds between taking the slot and ``started`` (the rate limiter's wait)
        self.reported = False

    def started(self) -> None:
        now = self.owner.clock()
        self.waited, self.t0 = max(now - self.t0, 0.0), now

    def done(self, ok: bool, overloaded: bool = False) -> None:
        if self.reported:
            return
        self.reported = True
        self.owner.record(self, ok=ok, overloaded=overloaded, latency=max(self.owner.clock() - self.t0, 0.0))


class AIMDLimit(_GatedLimit):
    """``concurrency="auto"``: additive increase, multiplicative decrease (see the module's docstring).

    ``initial``/``minimum``/``maximum`` bound the limit; ``increase`` is slots
    added per round of ``limit`` good calls; ``backoff`` multiplies the limit on
    an overload; a call counts as slow (no increase) when the recent latency is
    above ``latency_tolerance`` times the best recent latency; ``probe_rounds``
    is how many rounds the limit takes to creep one slot past the level that
    last overloaded (doubling, up to ``max_probe_rounds``, each time that same
    level overloads again). ``wait_tolerance`` is how long a call may wait for
    the rate limiter and still count towards growing the limit.
    """

    def __init__(
        self,
        initial: int = AUTO_INITIAL,
        minimum: int = AUTO_MINIMUM,
        maximum: int = AUTO_MAXIMUM,
        *,
        increase: float = 1.0,
        backoff: float = 0.9,
        latency_tolerance: float = 2.0,
        probe_rounds: float = 4.0,
        max_probe_rounds: float = 64.0,
        wait_tolerance: float = 0.005,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got minimum={minimum!r} maximum={maximum!r}")
        if not 0.0 < backoff < 1.0:
            raise ValueError(f"backoff must be a fraction in (0, 1), got {backoff!r}")
        if increase <= 0 or latency_tolerance <= 1.0 or probe_rounds < 1 or max_probe_rounds < probe_rounds:
            raise ValueError("increase > 0, latency_tolerance > 1 and 1 <= probe_rounds <= max_probe_rounds")
        self.minimum, self.maximum = minimum, maximum
        self.increase, self.backoff = increase, backoff
        self.latency_tolerance = latency_tolerance
        self.base_probe_rounds, self.max_probe_rounds = probe_rounds, max_probe_rounds
        self.wait_tolerance = wait_tolerance
        self.clock = clock
        self.window = float(min(max(initial, minimum), maximum))  # the limit, before rounding down
        self.slow_start = True
        self.epoch = 0  # bumped on every cut: slots of an older epoch cannot cut again
        self.ceiling: float | None = None  # the level the last overload happened at
        self.probe_rounds = probe_rounds
        self.fast_latency: float | None = None  # EWMA of recent good calls' latency
        self.base_latency: float | None = None  # the best recent latency: follows down at once, up slowly
        #: counters, for progress lines and benchmarks
        self.calls = self.overloads = self.cuts = 0
        self.spec = "auto"  # the ``concurrency`` text it was made for (``limit_for``)
        self._gate = _Gate(lambda: self.limit)

    # -- the ConcurrencyLimit interface

    @property
    def limit(self) -> int:
        return max(self.minimum, min(self.maximum, int(self.window + 1e-9)))

    def _new_slot(self) -> Slot:
        return _AIMDSlot(self, self._gate.inflight)  # the load it starts at, this call included

    # -- the pure logic

    def record(self, slot: _AIMDSlot, *, ok: bool, overloaded: bool, latency: float) -> None:
        """Move the limit for one call's outcome (``slot`` says when and at what load it started)."""
        self.calls += 1
        before = self.limit
        if overloaded:
            self.overloads += 1
            if slot.epoch == self.epoch:  # an overload of the current limit, not of one already cut
                self._cut(slot)
        elif ok:
            self._track_latency(latency)
            if self._may_grow(slot):
                self._grow()
        if self.limit > before:
            self._gate.wake()

    def _cut(self, slot: _AIMDSlot) -> None:
        level = float(min(self.limit, slot.inflight))  # what the provider refused: the load it was under
        if self.ceiling is not None and abs(level - self.ceiling) <= 1.0:
            self.probe_rounds = min(self.probe_rounds * 2, self.max_probe_rounds)  # same wall again: probe rarer
        else:
            self.probe_rounds = self.base_probe_rounds
        self.ceiling = level
        self.window = max(float(self.minimum), min(self.window, level) * self.backoff)
        self.slow_start = False
        self.epoch += 1
        self.cuts += 1

    def _track_latency(self, latency: float) -> None:
        if self.fast_latency is None:
            self.fast_latency = self.base_latency = latency
            return
        self.fast_latency += (latency - self.fast_latency) * 0.1
        assert self.base_latency is not None
        if self.fast_latency < self.base_latency:
            self.base_latency = self.fast_latency
        else:
            self.base_latency += (self.fast_latency - self.base_latency) * 0.0005

    def _may_grow(self, slot: _AIMDSlot) -> bool:
        if self.limit >= self.maximum:
            return False
        if slot.waited > self.wait_tolerance:  # the rate limiter held it back, not the concurrency
            return False
        if max(slot.inflight, self._gate.inflight) * 2 < slot.limit:  # the limit was not in use: no evidence
            return False
        fast, base = self.fast_latency, self.base_latency
        if fast is not None and base is not None and fast > base * self.latency_tolerance + 1e-6:
            self.slow_start = False  # latency rises: the provider is queueing, stop doubling
            return False
        return True

    def _grow(self) -> None:
        w = self.window
        if self.slow_start:
            step = self.increase  # one more per good call: the limit doubles each round
        elif self.ceiling is not None and self.ceiling - 1.0 <= w < self.ceiling + 1.0:
            step = self.increase / (w * self.probe_rounds)  # near the last wall: creep
        else:
            step = self.increase / w  # about one more per round
            if self.ceiling is not None and w >= self.ceiling + 1.0:
                self.ceiling = None  # past the old wall without an overload: it moved
                self.probe_rounds = self.base_probe_rounds
        self.window = min(float(self.maximum), w + step)

    def __repr__(self) -> str:
        return f"AIMDLimit(limit={self.limit}, window={self.window:.2f}, ceiling={self.ceiling})"


# --------------------------------------------------------------------------- choosing


def parse_auto(value: str) -> int | None:
    """``"auto"`` -> None (the default maximum), ``"auto:200"`` -> 200 (checked by ``bounds.check_concurrency``)."""
    checked = check_concurrency(value)
    if not isinstance(checked, str):
        raise InvalidInput(f"concurrency {value!r} is a number, not auto", field="concurrency")
    _, _, cap = checked.partition(":")
    return int(cap) if cap else None


def limit_for(processor: Processor, *, clock: Clock = time.monotonic) -> ConcurrencyLimit:
    """The limiter for ``processor``: a fresh ``FixedLimit`` for a number; for ``auto``, the one
    ``AIMDLimit`` of this processor object in this process, so what it learned carries from one
    chunk to the next, and workers of one process sharing a processor share one provider's limit.
    """
    concurrency = processor.concurrency
    if not isinstance(concurrency, str):
        return FixedLimit(concurrency)
    key = id(processor)
    cached = _AUTO.get(key)
    if cached is not None and cached.spec == concurrency:
        return cached
    maximum = parse_auto(concurrency) or AUTO_MAXIMUM
    limiter = AIMDLimit(min(AUTO_INITIAL, maximum), AUTO_MINIMUM, maximum, clock=clock)
    limiter.spec = concurrency
    if key not in _AUTO:
        weakref.finalize(processor, _AUTO.pop, key, None)  # before the id can be reused
    _AUTO[key] = limiter
    return limiter


#: each ``auto`` processor object's ``AIMDLimit`` (by identity: a ``Processor`` compares by value, so it
#: is unhashable), until the object is collected. Kept here, not on the user's object, which is theirs.
_AUTO: dict[int, AIMDLimit] = {}


def current_limit(processor: Processor) -> int | None:
    """The limit ``auto`` has found so far for ``processor`` (None before its first call, or not auto)."""
    cached = _AUTO.get(id(processor))
    return cached.limit if cached is not None and cached.spec == processor.concurrency else None


def is_auto(concurrency: object) -> bool:
    """Is this a ``concurrency`` that adapts (``"auto"`` or ``"auto:N"``)?"""
    return isinstance(concurrency, str)


def nominal(concurrency: int | str) -> int:
    """A number to size things by before any call ran (thread pools, abandoned-thread budgets):
    the number itself, or where ``auto`` starts."""
    if isinstance(concurrency, str):
        maximum = parse_auto(concurrency) or AUTO_MAXIMUM
        return min(AUTO_INITIAL, maximum)
    return concurrency

