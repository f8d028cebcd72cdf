"""POST /jobs with a tenant, GET /jobs?tenant= (issue 25: fair scheduling), both backends."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import AUTH

pytestmark = pytest.mark.timeout(60)


def test_a_job_carries_its_tenant_and_jobs_filter_by_it(make_client: Any) -> None:
    client = make_client()
    body = {"entity_ids": ["a"], "entity_type": "c", "provider": "p"}
    made = client.post("/jobs", headers=AUTH, json={**body, "tenant": "acme"})
    assert made.status_code == 201 and made.json()["tenant"] == "acme"
    plain = client.post("/jobs", headers=AUTH, json=body)
    assert plain.status_code == 201 and plain.json()["tenant"] is None
    listed = client.get("/jobs?tenant=acme", headers=AUTH).json()
    assert ([j["id"] for j in listed["jobs"]], listed["total"]) == ([made.json()["id"]], 1)
    assert [j["id"] for j in client.get("/jobs?tenant=", headers=AUTH).json()["jobs"]] == [plain.json()["id"]]


def test_a_bad_tenant_is_a_422_and_creates_nothing(make_client: Any) -> None:
    client = make_client()
    body = {"entity_ids": ["a"], "entity_type": "c", "provider": "p"}
    for bad in ("a\x1b[2Jb", "x" * 201, 5):
        got = client.post("/jobs", headers=AUTH, json={**body, "tenant": bad})
        assert got.status_code == 422 and "tenant" in got.json()["error"], got.text
    assert client.get("/jobs?tenant=a%1Bb", headers=AUTH).status_code == 422
    assert client.get("/jobs", headers=AUTH).json()["total"] == 0


def test_metrics_give_each_tenant_its_share(make_client: Any) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = make_client()
    for tenant, n in (("acme", 3), ("bolt", 1), (None, 2)):
        body = {"entity_ids": [f"e{i}" for i in range(n)], "entity_type": "c", "provider": "p", "tenant": tenant}
        assert client.post("/jobs", headers=AUTH, json=body).status_code == 201
    text = client.get("/metrics", headers=AUTH).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("chunkq_tenant_jobs_live", (("tenant", "acme"),))] == 1
    assert samples[("chunkq_tenant_jobs_live", (("tenant", ""),))] == 1
    assert samples[("chunkq_tenant_entities_processed_total", (("tenant", "bolt"),))] == 0
