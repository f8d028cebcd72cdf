"""GET /workers, POST /workers/{id}/stop and GET /metrics (parsed by Prometheus' own parser), both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from chunkq.core import Queue, Registration, Worker
from prometheus_client.parser import text_string_to_metric_families

from .helpers import AUTH

pytestmark = pytest.mark.timeout(60)


async def _seed(url: str) -> dict[str, Any]:
    """A processed job with failures, a routed job, one live registered worker and one lost one."""
    async with Queue(url) as q:
        done = await q.enqueue_job([f"e{i}" for i in range(10)], entity_type="c", provider="clearbit",
                                   chunk_size=5, max_attempts=1)

        def half(entity_id: str, job: Any) -> None:
            if int(entity_id[1:]) % 2:
                raise ValueError("odd")

        await Worker(q, half).run()
        routed = await q.enqueue_job(["x"], entity_type="c", provider="apollo", processor="mod:b")
        live = Registration(q, Worker(q, None), kind="worker", processor_name="mod:a", interval=3600)
        await live.__aenter__()
        live._task.cancel()  # type: ignore[union-attr]  # its row stays "idle" for two hours of this clock
        lost = Registration(q, Worker(q, None), kind="process", interval=0.05)
        await lost.__aenter__()
        lost._task.cancel()  # type: ignore[union-attr]  # it stops heartbeating: lost after 0.1 s
        await asyncio.sleep(0.3)
        return {"done": done.id, "routed": routed.id, "live": live.id, "lost": lost.id}


def test_workers_list_and_stop(make_client: Any, db_url: str) -> None:
    ids = asyncio.run(_seed(db_url))
    client = make_client()
    got = client.get("/workers", headers=AUTH)
    assert got.status_code == 200
    states = {w["id"]: (w["state"], w["alive"], w["kind"]) for w in got.json()["workers"]}
    assert states[ids["live"]] == ("idle", True, "worker") and states[ids["lost"]] == ("lost", False, "process")
    assert client.get("/workers").status_code == 401  # behind the token like every route but /health

    stop = client.post(f"/workers/{ids['live']}/stop?now=true", headers=AUTH)
    assert stop.status_code == 202 and stop.json()["stop_request"] == "release"
    gentler = client.post(f"/workers/{ids['live']}/stop", headers=AUTH)  # never downgrades a release
    assert gentler.json()["stop_request"] == "release"
    assert client.post("/workers/nope/stop", headers=AUTH).status_code == 404
    assert client.post(f"/workers/{ids['lost']}/stop", headers=AUTH).status_code == 422
    assert client.post(f"/workers/{ids['live']}/stop?now=maybe", headers=AUTH).status_code == 422
    assert client.get("/workers?bogus=1", headers=AUTH).status_code == 422

    job = client.get(f"/jobs/{ids['routed']}", headers=AUTH).json()
    assert job["processor"] == "mod:b"
    created = client.post("/jobs", headers=AUTH, json={"entity_ids": ["y"], "entity_type": "c", "provider": "p",
                                                        "processor": "mod:a"})
    assert created.status_code == 201 and created.json()["processor"] == "mod:a"


def test_metrics_parse_with_the_prometheus_parser(make_client: Any, db_url: str) -> None:
    asyncio.run(_seed(db_url))
    client = make_client()
    got = client.get("/metrics", headers=AUTH)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(got.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("chunkq_jobs", (("status", "complete"),))] == 1
    assert samples[("chunkq_jobs", (("status", "pending"),))] == 1
    assert samples[("chunkq_entities_processed_total", (("provider", "clearbit"),))] == 10
    assert samples[("chunkq_entities_failed_total", (("provider", "clearbit"),))] == 5
    assert samples[("chunkq_retries_waiting", (("provider", "apollo"),))] == 0
    assert samples[("chunkq_workers_alive", (("kind", "worker"),))] == 1
    assert samples[("chunkq_workers_lost", ())] == 1
    assert samples[("chunkq_chunk_duration_seconds_gcount", ())] == 2
    assert samples[("chunkq_chunk_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert families["chunkq_chunk_duration_seconds"].type in ("histogram", "gaugehistogram")  # 0.0.4 text: histogram
    assert client.get("/metrics?x=1", headers=AUTH).status_code == 422
