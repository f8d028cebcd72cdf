"""``GET /metrics``: the queue in the Prometheus exposition format, with the official client library.

Nothing is counted in this process: a scrape reads the queue (one short read per
family, the cost flat in the size of jobs), and a custom ``Collector`` turns that
snapshot into metric families, in a registry of its own per scrape, so what one
`serve` process answers is the whole queue's truth - the same from any replica.

* ``chunkq_jobs{status}`` - jobs by status (gauge); ``chunkq_jobs_stale`` - running
  jobs whose lease holder stopped heartbeating
* ``chunkq_entities_processed_total{provider}`` / ``chunkq_entities_failed_total{provider}``
  - entities finished / failed for good, summed over the jobs on the database
  (counters; they go down only when jobs are requeued)
* ``chunkq_retries_waiting{provider}`` - entities waiting for a retry (gauge)
* ``chunkq_tenant_entities_processed_total{tenant}`` / ``chunkq_tenant_jobs_live{tenant}`` -
  each tenant's share (fair scheduling); ``tenant=""``: the jobs enqueued without one
* ``chunkq_chunk_duration_seconds`` - chunks finished in the last hour by duration
  (a gauge histogram: a sliding window, not a counter since the start of time)
* ``chunkq_workers_alive{kind}`` / ``chunkq_workers_lost`` - from the workers registry
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from chunkq import core
from chunkq.core import DURATION_BOUNDS, WORKER_KINDS
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

#: the window of the chunk duration histogram
DURATION_MINUTES = 60


@dataclass
class Snapshot:
    """What one scrape read from the queue."""

    jobs_by_status: dict[str, int]
    stale_jobs: int
    providers: dict[str, tuple[int, int, int]]
    durations: tuple[list[int], int, float]
    workers: list[core.WorkerInfo] = field(default_factory=list)
    tenants: dict[str, tuple[int, int]] = field(default_factory=dict)


async def read_snapshot(queue: core.Queue) -> Snapshot:
    stats = await queue.stats()
    return Snapshot(
        jobs_by_status=dict(stats.jobs_by_status), stale_jobs=stats.stale_jobs,
        providers=await queue.provider_totals(), durations=await queue.chunk_durations(minutes=DURATION_MINUTES),
        workers=await queue.list_workers(), tenants=await queue.tenant_totals(),
    )


class QueueCollector(Collector):
    """Metric families from a ``Snapshot`` read at scrape time."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        jobs = GaugeMetricFamily("chunkq_jobs", "Jobs by status.", labels=["status"])
        for status, n in sorted(snap.jobs_by_status.items()):
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily("chunkq_jobs_stale", "Running jobs whose lease holder stopped heartbeating.",
                                value=snap.stale_jobs)
        processed = CounterMetricFamily("chunkq_entities_processed", "Entities finished (succeeded or failed for "
                                        "good), by provider.", labels=["provider"])
        failed = CounterMetricFamily("chunkq_entities_failed", "Entities failed for good, by provider.",
                                     labels=["provider"])
        waiting = GaugeMetricFamily("chunkq_retries_waiting", "Entities waiting for a retry, by provider.",
                                    labels=["provider"])
        for provider, (p, f, w) in snap.providers.items():
            processed.add_metric([provider], p)
            failed.add_metric([provider], f)
            waiting.add_metric([provider], w)
        yield processed
        yield failed
        yield waiting
        by_tenant = CounterMetricFamily("chunkq_tenant_entities_processed", "Entities finished, by tenant "
                                        "(fair scheduling; \"\": jobs without one).", labels=["tenant"])
        live = GaugeMetricFamily("chunkq_tenant_jobs_live", "Pending and running jobs, by tenant.", labels=["tenant"])
        for tenant, (p, n) in snap.tenants.items():
            by_tenant.add_metric([tenant], p)
            live.add_metric([tenant], n)
        yield by_tenant
        yield live
        cumulative, count, total = snap.durations
        buckets = [(repr(float(b)), n) for b, n in zip(DURATION_BOUNDS, cumulative, strict=True)]
        buckets.append(("+Inf", count))
        yield GaugeHistogramMetricFamily(
            "chunkq_chunk_duration_seconds", f"Chunks finished in the last {DURATION_MINUTES} minutes, by duration.",
            buckets=buckets, gsum_value=total)
        alive = GaugeMetricFamily("chunkq_workers_alive", "Registered processes that heartbeat, by kind.",
                                  labels=["kind"])
        by_kind = dict.fromkeys(WORKER_KINDS, 0)
        for worker in snap.workers:
            if worker.alive:
                by_kind[worker.kind] = by_kind.get(worker.kind, 0) + 1
        for kind, n in by_kind.items():
            alive.add_metric([kind], n)
        yield alive
        yield GaugeMetricFamily("chunkq_workers_lost", "Registered processes whose heartbeat is over two "
                                "intervals old.", value=sum(1 for w in snap.workers if w.state == "lost"))


def exposition(snapshot: Snapshot) -> bytes:
    """The text format Prometheus scrapes."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(snapshot))
    return generate_latest(registry)
