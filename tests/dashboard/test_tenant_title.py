"""The detail screen's title names a job's tenant (issue 25: fair scheduling)."""

from __future__ import annotations

from pathlib import Path

from chunkq.core import Queue
from chunkq.tui.dashboard.widgets.job_summary import title_text


async def test_the_title_names_the_tenant_only_when_there_is_one(tmp_path: Path) -> None:
    async with Queue(tmp_path / "t.db") as q:
        acme = await q.enqueue_job(["a"], entity_type="company", provider="p", tenant="acme [bold]")
        plain = await q.enqueue_job(["a"], entity_type="company", provider="p")
    assert "for acme [bold]" in title_text(acme).plain  # markup brackets are text
    assert " for " not in title_text(plain).plain
