"""Deterministic data for the workers view and the history sparklines (snapshots and Pilot tests).

Workers are registered through core's own ``Registration`` (the rows are real), with
the host name, pid and chunkq version fixed for the moment of registering, so a snapshot
reads the same on every machine, every run and every release. A registration left open (no ``__aexit__``) is a
worker that is still there; its heartbeat task is cancelled so nothing moves.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from unittest import mock

from chunkq.core import JobFailed, Processor, Queue, registry
from chunkq.core.registry import Registration

from tests.dashboard.conftest import FIXED_NOW

NOW = FIXED_NOW.timestamp()


@dataclass
class Summary:
    entities: int = 0
    errors: int = 0
    retried: int = 0
    stopped_by: str = ""  # not stopped yet


@dataclass
class FakeRun:
    """Stands in for ``core.Worker`` under a registration: what it holds, what it did, what it was asked."""

    in_flight: list[tuple[int, int]] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    stopping: bool = False
    asked: list[str] = field(default_factory=list)
    concurrency_limit: int | None = None  # it runs no callbacks (the registry shows none)

    def stop(self) -> None:
        self.asked.append("stop")
        self.stopping = True

    def abort(self) -> None:
        self.asked.append("abort")
        self.stopping = True


@contextlib.contextmanager
def as_host(host: str, pid: int) -> Iterator[None]:
    """``socket.gethostname()``/``os.getpid()`` answer ``host``/``pid`` inside the block (registering only)."""
    with mock.patch.object(socket, "gethostname", lambda: host), mock.patch.object(os, "getpid", lambda: pid):
        yield


class Clock:
    """A queue clock the seeding moves by hand."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


async def register(q: Queue, clock: Clock, run: FakeRun, *, worker_id: str, host: str, pid: int, kind: str,
                   processor: str | None, at: float, interval: float = 5.0) -> Registration:
    """A registered worker that last heartbeat at ``at`` and is still registered (never exited)."""
    clock.at = at - 600
    reg = Registration(q, run, kind=kind, processor_name=processor, interval=interval, worker_id=worker_id)
    with as_host(host, pid), mock.patch.object(registry, "chunkq_version", lambda: "0.1.0"):
        await reg.__aenter__()
    assert reg._task is not None
    reg._task.cancel()  # nothing beats on its own: the snapshot must not move
    clock.at = at
    await reg._beat_once()
    return reg


async def seed_workers(url: str) -> dict[str, str]:
    """A job being worked on and five workers: busy, idle, stopping (asked), lost, stopped."""
    clock = Clock(NOW - 3600)
    async with Queue(url, clock=clock) as q:
        job = await q.enqueue_job([f"company-{i:04d}" for i in range(500)], entity_type="company",
                                  provider="clearbit", chunk_size=50, name="Fortune 500 companies",
                                  processor="myapp.enrich:enrich_company")
        busy = await register(q, clock, FakeRun([(job.id, 3)], Summary(1_200, 30, 3)), worker_id="a1b2c3d4e5f6",
                              host="worker-a", pid=4101, kind="worker", processor="myapp.enrich:enrich_company",
                              at=NOW - 2)
        idle = await register(q, clock, FakeRun([], Summary(50)), worker_id="b2c3d4e5f6a1", host="cron-host",
                              pid=230, kind="process", processor="myapp.enrich:enrich_company", at=NOW - 4)
        stopping = await register(q, clock, FakeRun([], Summary(8)), worker_id="c3d4e5f6a1b2",
                                  host="laptop.local", pid=77012, kind="dashboard", processor="myapp.scrape:page",
                                  at=NOW - 1)
        clock.at = NOW - 1
        await q.request_worker_stop(stopping.id)
        lost = await register(q, clock, FakeRun([(job.id, 4)], Summary(400, 2)), worker_id="d4e5f6a1b2c3",
                              host="worker-b", pid=4102, kind="worker", processor="myapp.enrich:enrich_company",
                              at=NOW - 40)
        gone = await register(q, clock, FakeRun(), worker_id="e5f6a1b2c3d4", host="worker-c", pid=9,
                              kind="worker", processor=None, at=NOW - 300)
        await gone.__aexit__(None, None, None)
        return {"busy": busy.id, "idle": idle.id, "stopping": stopping.id, "lost": lost.id, "gone": gone.id}


def fails_on_seven(entity_id: str, job: object) -> None:
    if entity_id.endswith("7"):
        raise ValueError("no company matches this domain")


def revoked_key(entity_id: str, job: object) -> None:
    if entity_id.endswith("3"):
        raise JobFailed("401 Unauthorized: API key revoked")


async def seed_history_job(url: str) -> int:
    """A job that ran in spurts over the last hour (fewer and fewer ok), then failed by ``JobFailed``."""
    clock = Clock(NOW - 3600)
    async with Queue(url, clock=clock) as q:
        job = await q.enqueue_job([f"company-{i:04d}" for i in range(600)], entity_type="company",
                                  provider="clearbit", chunk_size=20, name="Fortune 500 companies",
                                  processor="myapp.enrich:enrich_company")
        ok = Processor(on_process=fails_on_seven, name="myapp.enrich:enrich_company")
        for minute, chunks in ((55, 3), (48, 4), (40, 5), (31, 3), (22, 2), (12, 4), (6, 2), (3, 1), (1, 2)):
            for step in range(chunks):
                clock.at = NOW - minute * 60 + step * 7
                await q.process_chunk(job.id, ok)
        clock.at = NOW - 20
        await q.process_chunk(job.id, Processor(on_process=revoked_key, name="myapp.enrich:enrich_company"))
        return job.id


def minutes_ago(minutes: float) -> float:
    return (FIXED_NOW - timedelta(minutes=minutes)).timestamp()
