"""A queue written by chunkq 0.1.0 (tests/fixtures/chunkq-0.1.0.db, made by its own code) upgrades in place:
every row survives, new columns get their defaults, and the current code finishes the work."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chunkq.core import Queue, schema_status, upgrade_schema

from .support import PAUSED_JOB, assert_rows_survived, legacy_db, process_everything, rows_of


def test_a_0_1_0_database_upgrades_with_every_row_and_finishes_its_work(db_url: str, tmp_path: Path) -> None:
    url = legacy_db(db_url, tmp_path)
    assert asyncio.run(schema_status(url)).kind == "legacy"
    before = rows_of(url)
    assert {r["status"] for r in before["chunkq_jobs"]} == {"pending", "running", "paused", "complete", "failed",
                                                            "cancelled"}
    assert {r["state"] for r in before["chunkq_chunks"]} >= {"done", "leased"}
    assert before["chunkq_retries"] and before["chunkq_rate_limits"]
    assert {r["resolved_at"] is None for r in before["chunkq_errors"] if r["final"]} == {True, False}

    result = asyncio.run(upgrade_schema(url))
    assert result.upgraded and (result.before.kind, result.after.kind) == ("legacy", "current")
    assert_rows_survived(before, rows_of(url))
    asyncio.run(_read_back_through_the_api(url, before))

    jobs = {j.id: j for j in asyncio.run(process_everything(url))}
    old_status = {r["id"]: r["status"] for r in before["chunkq_jobs"]}
    for job_id, job in jobs.items():
        if old_status[job_id] in ("failed", "cancelled", "complete"):
            assert job.status == old_status[job_id], job_id
        else:
            assert job.status == "complete", (job_id, job.status, job.fail_reason)
            assert job.processed_count == job.total_count and job.waiting_count == 0
    assert PAUSED_JOB in jobs and not rows_of(url)["chunkq_retries"]
    assert {r["state"] for r in rows_of(url)["chunkq_chunks"]} <= {"done", "aborted"}


async def _read_back_through_the_api(url: str, before: dict[str, list[dict]]) -> None:
    """What the current code reads is what 0.1.0 wrote: names, unicode params, errors and their resolution."""
    async with Queue(url, readonly=True) as q:
        for row in before["chunkq_jobs"]:
            job = await q.get_job(row["id"])
            assert (job.name, job.status, job.params, job.total_count, job.parent_id) == (
                row["name"], row["status"], row["params"] or {}, row["total_count"], row["parent_id"])
            assert await q.entity_ids(row["id"], limit=1000) == [
                e["entity_id"] for e in before["chunkq_entities"] if e["job_id"] == row["id"]]
        for row in before["chunkq_errors"]:
            err = await q.get_error(row["id"])
            assert (err.entity_id, err.message, err.final) == (row["entity_id"], row["message"], row["final"])
            assert (err.resolved_at is None) == (row["resolved_at"] is None)
            assert len(err.stacks) == len(row["stacks"] or [])
        chunks = await q.list_chunks(4)
        assert [c.state for c in chunks] == ["done", "done", "leased"]
