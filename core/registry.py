"""The workers registry: every process that processes work says who it is, what it holds, that it is alive.

Sidekiq's "Busy" page and Oban's "Nodes" answer "who is working, on what, and is
it still there?" from rows the processes write themselves; so does this. A
``Registration`` (``async with worker.registered(...)`` around ``worker.run()``) inserts the process's
row in ``chunkq_workers`` (host, pid, kind, processor, version), then
heartbeats it from a task of its own every ``interval`` seconds: busy or idle,
the chunks it holds, entities done and failed since it started.

Liveness is decided on read, never by the process: a row whose heartbeat is
more than ``STALE_HEARTBEATS`` (2) intervals old reads as ``lost`` - a process
killed with ``kill -9`` cannot say it died. Its chunks' leases expire on their
own (``claims.py``); the registry only makes that visible.

Stopping travels through the database, so an operator on any host can stop a
worker on any other: ``request_stop`` writes ``stop_request`` ("finish": finish
the chunk in flight and exit; "release": give it up now, its lease released for
another worker), and the worker reads it with its next heartbeat.

Rows of processes that stopped, or were lost, more than ``FORGET_SECONDS`` ago
are deleted by any registration or list (one indexed ``DELETE``), so the table
stays the size of the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from . import schema as s
from .backend import Backend
from .bounds import text_problem
from .claims import release_tag
from .errors import InvalidInput, WorkerNotFound
from .models import STALE_HEARTBEATS, WORKER_KINDS, WorkerInfo, to_datetime
from .version import __version__

log = logging.getLogger("chunkq.registry")

#: seconds between heartbeats of a registered process (``chunkq worker --heartbeat``)
DEFAULT_INTERVAL = 5.0
MIN_INTERVAL = 0.05
#: rows of processes gone (stopped or lost) this long are deleted
FORGET_SECONDS = 3600.0
#: what an operator may ask of a worker: finish the chunk in flight, or release it now
STOP_REQUESTS = {False: "finish", True: "release"}
#: states a process writes itself; ``lost`` is only ever computed on read
WRITTEN_STATES = ("busy", "idle", "stopping", "stopped")


def chunkq_version() -> str:
    """This chunkq's version, as the registry shows it (mixed versions during a rolling upgrade).

    Read from ``version.py``, not the installed metadata, which an editable checkout leaves stale."""
    return __version__


def new_worker_id() -> str:
    """Short enough to type (``chunkq workers stop 3f2a9c1b7d04``), random enough to be unique across hosts."""
    return secrets.token_hex(6)


def _info(row: Any, now: float) -> WorkerInfo:
    m = row._mapping
    state = m["state"]
    if state != "stopped" and m["heartbeat_at"] < now - STALE_HEARTBEATS * m["heartbeat_interval"]:
        state = "lost"
    return WorkerInfo(
        id=m["id"], host=m["host"], pid=int(m["pid"]), kind=m["kind"], processor=m["processor"],
        version=m["version"], started_at=to_datetime(m["started_at"]),
        heartbeat_at=to_datetime(m["heartbeat_at"]),
        heartbeat_interval=float(m["heartbeat_interval"]), state=state, job_id=m["job_id"],
        chunks=int(m["chunks"] or 0), concurrency=m["concurrency"], done=int(m["done"] or 0),
        failed=int(m["failed"] or 0), stop_request=m["stop_request"], stopped_at=to_datetime(m["stopped_at"]),
        detail=m["detail"],
    )


def alive_condition(now: float) -> Any:
    """Rows of processes that heartbeat (not stopped, not lost), for counting in SQL."""
    w = s.workers.c
    return and_(w.state != "stopped", w.heartbeat_at >= now - STALE_HEARTBEATS * w.heartbeat_interval)


def _forget(conn: Connection, now: float) -> None:
    w = s.workers.c
    conn.execute(delete(s.workers).where(w.heartbeat_at < now - FORGET_SECONDS))


def check_worker_id(worker_id: object) -> str:
    text_ = str(worker_id).strip() if worker_id is not None else ""
    if not text_ or len(text_) > 64 or text_problem(text_, controls=False) is not None:
        raise InvalidInput(f"not a worker id: {str(worker_id)[:70]!r}", field="worker_id")
    return text_


class Registry:
    """Reads and writes ``chunkq_workers`` for one queue."""

    def __init__(self, backend: Backend, now: Callable[[], float], *, writable: bool = True) -> None:
        self.backend = backend
        self.now = now
        self.writable = writable

    async def register(self, values: dict[str, Any]) -> None:
        def tx(conn: Connection) -> None:
            _forget(conn, self.now())
            conn.execute(insert(s.workers).values(**values))

        await self.backend.write(tx, "registering a worker")

    async def beat(self, worker_id: str, values: dict[str, Any]) -> str | None:
        """Write a heartbeat; returns the stop request waiting for this process, if any."""

        def tx(conn: Connection) -> str | None:
            w = s.workers.c
            row = conn.execute(update(s.workers).where(w.id == worker_id)
                               .values(heartbeat_at=self.now(), **values).returning(w.stop_request)).first()
            return None if row is None else row[0]

        return await self.backend.write(tx, "heartbeating a worker")

    async def list(self, *, include_stopped: bool = False) -> list[WorkerInfo]:
        """Every registered process, newest first; lost ones included, stopped ones on request."""
        now = self.now()
        w = s.workers.c
        q = select(s.workers).order_by(w.started_at.desc(), w.id)
        if not include_stopped:
            q = q.where(w.state != "stopped")
        if self.writable:
            with contextlib.suppress(Exception):  # cleaning up is a courtesy; a busy database must not fail a list
                await self.backend.write(lambda conn: _forget(conn, now), "forgetting old workers")
        found = await self.backend.read(lambda conn: list(conn.execute(q).all()), "listing workers")
        return [_info(r, now) for r in found]

    async def get(self, worker_id: str) -> WorkerInfo:
        wid = check_worker_id(worker_id)
        row = await self.backend.read(
            lambda conn: conn.execute(select(s.workers).where(s.workers.c.id == wid)).first(), "reading a worker")
        if row is None:
            raise WorkerNotFound(wid)
        return _info(row, self.now())

    async def request_stop(self, worker_id: str, *, now: bool = False) -> WorkerInfo:
        """Ask a worker (on any host) to stop after its chunk, or at once (``now``: its chunk is released).

        A stopped or lost worker cannot act on it: that is said, nothing is written.
        A ``release`` request is never downgraded to ``finish`` by a later, gentler one.
        """
        current = await self.get(worker_id)
        if current.state in ("stopped", "lost"):
            raise InvalidInput(f"worker {current.id} ({current.host_pid}) is {current.state}: there is nothing "
                               "to stop", field="worker_id")
        wanted = STOP_REQUESTS[bool(now)]

        def tx(conn: Connection) -> None:
            w = s.workers.c
            keep = and_(w.stop_request.is_not(None), w.stop_request == STOP_REQUESTS[True])
            conn.execute(update(s.workers).where(w.id == current.id, ~keep).values(stop_request=wanted))

        await self.backend.write(tx, f"asking worker {current.id} to stop")
        return await self.get(current.id)

    async def mark_stopped(self, worker_id: str, values: dict[str, Any]) -> None:
        def tx(conn: Connection) -> None:
            now = self.now()
            conn.execute(update(s.workers).where(s.workers.c.id == worker_id)
                         .values(state="stopped", stopped_at=now, heartbeat_at=now, job_id=None, chunks=0, **values))

        await self.backend.write(tx, "unregistering a worker")

    @staticmethod
    def count_alive(conn: Connection, now: float) -> int:
        return int(conn.execute(select(func.count()).select_from(s.workers).where(alive_condition(now))).scalar()
                   or 0)


class Counts(Protocol):
    """What a run has done so far (``RunSummary``): entities, failures, and failures to be retried;
    why it stopped, once it did."""

    entities: int
    errors: int
    retried: int
    stopped_by: str


class Registrant(Protocol):
    """What a registration reads from the process it registers and asks of it: a ``Worker``
    (``Worker.registered`` is how one registers itself; tests register stand-ins of this shape)."""

    @property
    def in_flight(self) -> list[tuple[int, int]]: ...  # (job_id, chunk_index) held right now

    @property
    def stopping(self) -> bool: ...

    @property
    def summary(self) -> Counts: ...

    @property
    def concurrency_limit(self) -> int | None: ...  # None: it runs no callbacks of its own

    def stop(self) -> None: ...  # an operator's "finish"

    def abort(self) -> None: ...  # an operator's "release"


class RegistryQueue(Protocol):
    """What a registration uses of its queue: a ``Queue``, which builds the ``Registry`` (a protocol, so
    that this module needs nothing of ``queue.py``, which imports it)."""

    @property
    def registry(self) -> Registry: ...

    def now(self) -> float: ...


class Registration:
    """``async with worker.registered(kind="worker", processor_name=path): await worker.run()``.

    Registers the process, heartbeats it while the block runs, acts on an
    operator's stop request (``worker.stop()`` for "finish", ``worker.abort()``
    for "release") and marks the row stopped on the way out, however the block
    ends. A database that is briefly unavailable costs heartbeats, never the
    worker: the row reads ``lost`` meanwhile and recovers with the next beat.
    (Which jobs the worker claims is its own: ``Worker`` passes its processor's name
    to every claim, ``claims.Claims.claim``.)
    """

    def __init__(
        self,
        queue: RegistryQueue,
        worker: Registrant,
        *,
        kind: str,
        processor_name: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        worker_id: str | None = None,
    ) -> None:
        if kind not in WORKER_KINDS:
            raise InvalidInput(f"unknown worker kind {kind!r}; expected one of {', '.join(WORKER_KINDS)}",
                               field="kind")
        if not interval >= MIN_INTERVAL:
            raise InvalidInput(f"heartbeat interval must be at least {MIN_INTERVAL:g}s", field="interval")
        self.queue = queue
        self.worker = worker
        self.kind = kind
        self.processor_name = processor_name
        self.interval = float(interval)
        self.id = worker_id or new_worker_id()
        self.stop_request: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._registered = False

    @property
    def registry(self) -> Registry:
        return self.queue.registry

    def _snapshot(self) -> dict[str, Any]:
        summary = self.worker.summary
        # the limit right now: what ``--concurrency auto`` has found so far moves
        return {"done": summary.entities, "failed": max(summary.errors - summary.retried, 0),
                "concurrency": self.worker.concurrency_limit}

    def _values(self, held: list[tuple[int, int]]) -> dict[str, Any]:
        state = "stopping" if self.worker.stopping else ("busy" if held else "idle")
        detail = None
        if held:
            jobs: dict[int, list[int]] = {}
            for j, c in held:
                jobs.setdefault(j, []).append(c)
            detail = "; ".join(f"job {j} chunk{'s' if len(cs) > 1 else ''} {', '.join(map(str, cs))}"
                               for j, cs in jobs.items())[:500]
        return {"state": state, "job_id": held[0][0] if held else None, "chunks": len(held), "detail": detail,
                **self._snapshot()}

    async def _beat_once(self) -> None:
        request = await self.registry.beat(self.id, self._values(self.worker.in_flight))
        if request and request != self.stop_request:
            self.stop_request = request
            if request == STOP_REQUESTS[True]:
                log.warning("worker %s: asked through the database to stop now; releasing the chunk in flight",
                            self.id)
                self.worker.abort()
            else:
                log.warning("worker %s: asked through the database to stop; finishing the chunk in flight",
                            self.id)
                self.worker.stop()

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._beat_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the worker goes on; its row reads lost until the next beat lands
                log.warning("worker %s: heartbeat failed: %s", self.id, exc)

    async def __aenter__(self) -> Registration:
        now = self.queue.now()
        await self.registry.register({
            "id": self.id, "host": socket.gethostname()[:200], "pid": os.getpid(), "kind": self.kind,
            "processor": self.processor_name, "version": chunkq_version(), "started_at": now, "heartbeat_at": now,
            "heartbeat_interval": self.interval, "state": "idle", "chunks": 0, "done": 0, "failed": 0,
            **{k: v for k, v in self._snapshot().items() if k == "concurrency"},
        })
        self._registered = True
        self._task = asyncio.ensure_future(self._beat_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        summary = self.worker.summary
        if self.stop_request == STOP_REQUESTS[False] and summary.stopped_by == "signal":
            # the graceful stop came through the database (``request_stop``), not a signal: say so
            summary.stopped_by = "requested"
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._registered:
            snap = self._snapshot()
            try:
                await asyncio.shield(self.registry.mark_stopped(self.id, {
                    "done": snap["done"], "failed": snap["failed"], "detail": None}))
            except Exception as exc:  # the row reads lost, then is forgotten
                log.warning("worker %s: could not mark itself stopped: %s", self.id, exc)


__all__ = ["DEFAULT_INTERVAL", "FORGET_SECONDS", "Registrant", "Registration", "Registry", "alive_condition",
           "chunkq_version", "new_worker_id", "release_tag"]
