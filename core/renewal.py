"""Keeping a chunk's lease while its callback runs, and knowing when it is gone.

(Renewal, not "heartbeat": in chunkq a heartbeat is a registered worker's sign of life, ``registry.py``.)

The lease is renewed every third of ``lease_seconds``. Where the backend can
run a transaction from a plain thread (SQLite), the renewals run on a thread of
their own, so an async callback that blocks the event loop (``time.sleep``
inside ``async def``, CPU-bound parsing) cannot starve them. PostgreSQL has
only an async driver here: its renewals run on the loop, and a loop blocked for
longer than the lease is *reported*, once, naming the lease and how long the
loop was stuck - another worker may take the chunk over meanwhile, and only the
poison bound (``claims.py``: a chunk that lost its lease 3 times is isolated)
ends such a ping-pong.

A runner asks ``held()`` before it starts each entity (cheap: renewed recently
enough?) and ``confirm()`` when that is no longer sure (a renewal now). A
worker frozen past its lease (SIGSTOP, a suspended laptop, a long GC) thus
finds out *before* calling the provider again for a chunk another worker owns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .errors import DatabaseUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from .claims import Claims
    from .lease import Claim

log = logging.getLogger("chunkq")

#: the part of ``lease_seconds`` after a renewal began for which the lease is taken as held
#: without asking (the rest covers the renewal's round trip and clocks that disagree a little)
TRUSTED_PART = 0.8
#: the loop is checked for blocking at least this often while a chunk runs (PostgreSQL)
LOOP_CHECK_SECONDS = 0.1


class LeaseRenewal:
    """Renews one claim's lease while its chunk runs (``async with``); ``on_lost`` is called once
    when the database says the chunk belongs to someone else."""

    def __init__(self, claims: Claims, claim: Claim, *, on_lost: Callable[[], None] | None = None) -> None:
        self.claims = claims
        self.claim = claim
        self.lease_seconds = claims.lease_seconds
        self.interval = max(self.lease_seconds / 3, 0.05)
        self.on_lost = on_lost
        self.lost = False
        self._renewed_at = time.monotonic()
        self._next_beat = self._renewed_at + self.interval
        self._done = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._lost_lock = threading.Lock()

    @property
    def valid_until(self) -> float:
        return self._renewed_at + self.lease_seconds * TRUSTED_PART

    def held(self) -> bool:
        return not self.lost and time.monotonic() < self.valid_until

    async def confirm(self) -> bool:
        """Renew now unless that happened recently; False only when the lease is known lost."""
        async with self._lock:
            if self.lost:
                return False
            if time.monotonic() < self.valid_until:
                return True
            return await self._renew()

    async def __aenter__(self) -> LeaseRenewal:
        self._renewed_at = time.monotonic()
        self._next_beat = self._renewed_at + self.interval
        if self.claims.backend.blocking_writes:
            _beater(self.claims).add(self)
        else:
            self._task = asyncio.create_task(self._beat_on_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._done.set()
        if self._task is not None:
            self._task.cancel()
        else:
            _beater(self.claims).remove(self)

    # ------------------------------------------------------------------ renewing

    async def _renew(self) -> bool:
        started = time.monotonic()
        try:
            ok = await self.claims.renew(self.claim)
        except DatabaseUnavailable as exc:  # cannot tell: go on; the fenced commit decides
            log.warning("could not renew lease: %s", exc)
            return True
        return self._after_renewal(ok, started)

    def _after_renewal(self, ok: bool, started: float) -> bool:
        if ok:
            self._renewed_at = max(self._renewed_at, started)
            return True
        with self._lost_lock:
            if self.lost or self._done.is_set():  # told already, or the chunk is over
                return False
            self.lost = True
        log.warning("lost the lease on chunk %s of job %s (another worker took it over): "
                    "starting none of its remaining entities", self.claim.chunk_index, self.claim.job.id)
        if self.on_lost is not None:
            self.on_lost()
        return False

    def beat_blocking(self, now: float) -> None:
        """One renewal from the queue's renewal thread, if one is due."""
        if now < self._next_beat or self.lost or self._done.is_set():
            return
        self._next_beat = now + self.interval
        try:
            ok = self.claims.renew_blocking(self.claim)
        except Exception as exc:  # the database is busy or away: try again next beat
            log.warning("could not renew lease: %s", _one_line(exc))
            return
        self._after_renewal(ok, now)

    async def _beat_on_loop(self) -> None:
        step = min(self.interval, LOOP_CHECK_SECONDS)
        next_renewal = time.monotonic() + self.interval
        while True:
            slept = time.monotonic()
            await asyncio.sleep(step)
            woke = time.monotonic()
            self._check_blocked(woke - slept - step, woke)
            if woke < next_renewal:
                continue
            next_renewal = woke + self.interval
            if not await self._renew_now():
                return

    async def _renew_now(self) -> bool:
        async with self._lock:
            return False if self.lost else await self._renew()

    def _check_blocked(self, blocked: float, now: float) -> None:
        """Say once per queue when a blocked loop let the lease lapse: nothing else would tell."""
        unrenewed = now - self._renewed_at
        if blocked <= 2 * LOOP_CHECK_SECONDS or unrenewed <= self.lease_seconds:
            return
        if getattr(self.claims, "warned_blocked_loop", False):
            return
        self.claims.warned_blocked_loop = True
        log.warning(
            "the event loop was blocked for %.1f s and the lease of chunk %s of job %s went %.1f s without "
            "a renewal, longer than the %g s lease: another worker may take the chunk over. A callback "
            "blocks the loop (time.sleep or CPU-bound work inside an async def?): make it a plain def (it "
            "then runs in a thread), await non-blocking calls, or raise --lease-seconds above the longest block",
            blocked, self.claim.chunk_index, self.claim.job.id, unrenewed, self.lease_seconds)

class _Beater:
    """One daemon thread per queue that renews the lease of every chunk it has in flight.

    Started on demand, it ends after ``IDLE_SECONDS`` without chunks: no thread
    is made per chunk, and a closed queue leaves none behind for long.
    """

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._beats: set[LeaseRenewal] = set()
        self._thread: threading.Thread | None = None

    def add(self, beat: LeaseRenewal) -> None:
        with self._lock:
            self._beats.add(beat)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chunkq-lease-renewal", daemon=True)
                self._thread.start()

    def remove(self, beat: LeaseRenewal) -> None:
        with self._lock:
            self._beats.discard(beat)

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            with self._lock:
                beats = list(self._beats)
                if beats:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since > self.IDLE_SECONDS:
                    self._thread = None
                    return
            for beat in beats:
                beat.beat_blocking(time.monotonic())
            step = min((b.interval for b in beats), default=1.0)
            time.sleep(min(max(step / 4, 0.02), 1.0))


def _beater(claims: Claims) -> _Beater:
    if claims.beater is None:
        claims.beater = _Beater()
    beater: _Beater = claims.beater
    return beater


def _one_line(exc: Any) -> str:
    return " ".join(str(exc).split())[:300]
