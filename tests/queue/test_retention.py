"""Retention, pruning, export and import (issue 26), on a real SQLite file and on the real PostgreSQL.

Jobs are made old with an injected clock (``Queue(clock=...)``), never by
sleeping; the pruner then runs on the real clock.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import (
    ArchiveWriter,
    InvalidInput,
    InvalidTransition,
    JobFailed,
    MalformedArchive,
    Processor,
    Pruner,
    Queue,
    RetentionPolicy,
    Retry,
    import_jobs,
    parse_age,
)
from chunkq.core import schema as s
from chunkq.core.retention import DAY, format_age
from sqlalchemy import func, select, text

pytestmark = pytest.mark.timeout(300)

NOW = time.time()


def clock(days_ago: float):
    return lambda: NOW - days_ago * DAY


async def make_job(url: str, n: int, *, days_ago: float, fail: set[str] = frozenset(), status: str = "complete",
                   chunk_size: int = 10, retry: bool = False, transient: set[str] = frozenset(), **kw: Any) -> int:
    """A finished job of ``n`` entities whose last change was ``days_ago`` days ago (``transient``: entities
    that ask for a retry in an hour, left waiting by a cancel)."""

    def cb(eid: str, job: Any) -> None:
        if eid in fail:
            raise ValueError(f"bad {eid}")
        if eid in transient:
            raise Retry("429", after=3600)

    async with Queue(url, clock=clock(days_ago)) as q:
        job = await q.enqueue_job([f"e{i}" for i in range(n)], entity_type="company", provider="p",
                                  chunk_size=chunk_size, max_attempts=1 if not transient else 3, **kw)
        if status == "cancelled":
            await q.process_chunk(job.id, Processor(cb))
            await q.cancel(job.id)
        elif status == "failed":
            def boom(eid: str, job: Any) -> None:
                raise JobFailed("the API key was revoked")
            await q.process_chunk(job.id, Processor(boom))
        elif status == "complete":
            while (await q.get_job(job.id)).status != "complete":
                await q.process_chunk(job.id, Processor(cb))
        got = await q.get_job(job.id)
        assert got.status == status, got
        if retry:
            await q.retry_failed(job.id)
        return job.id


async def table_counts(url: str) -> dict[str, int]:
    async with Queue(url) as q:
        def read(conn: Any) -> dict[str, int]:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                    for t in (s.jobs, s.entities, s.chunks, s.errors, s.retries)}
        return await q.backend.read(read, "counting")


# ------------------------------------------------------------------ ages and policies


@pytest.mark.parametrize("raw, seconds", [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("45s", 45),
                                          ("2w", 14 * DAY), (" 1.5D ", 1.5 * DAY), ("0d", 0), ("forever", None),
                                          (3600, 3600.0)])
def test_ages_people_type(raw: object, seconds: float | None) -> None:
    assert parse_age(raw) == seconds
    assert parse_age(format_age(seconds)) == seconds


@pytest.mark.parametrize("raw, words", [("-5d", "negative"), ("5", "age like"), ("5y", "age like"),
                                        ("nan", "age like"), ("inf", "age like"), ("1e308d", "age like"),
                                        (float("nan"), "NaN"), (float("inf"), "infinite"), (-1, "negative"),
                                        ("99999999999d", "hundred years"), (True, "age like"), ("", "age like"),
                                        (None, "age like")])
def test_bad_ages_are_refused_naming_the_field(raw: object, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_age(raw, field="older_than")
    assert err.value.field == "older_than" and words in str(err.value) and "\n" not in str(err.value)


def test_policies() -> None:
    assert RetentionPolicy().to_dict() == {"complete": "14d", "cancelled": "14d", "failed": "30d"}
    assert RetentionPolicy.parse("off") is None
    assert RetentionPolicy.parse("7d") == RetentionPolicy(7 * DAY, 7 * DAY, 7 * DAY)
    assert RetentionPolicy.parse("complete=1d,failed=forever") == RetentionPolicy(DAY, 14 * DAY, None)
    assert RetentionPolicy.only(DAY, ["failed"]) == RetentionPolicy(None, None, DAY)
    for bad in ("running=1d", "complete=", "complete=-1d", "complete=1d,bogus"):
        with pytest.raises(InvalidInput):
            RetentionPolicy.parse(bad)
    for bad_status in (["running"], ["paused"], ["nonsense"]):
        with pytest.raises(InvalidInput) as err:
            RetentionPolicy.only(DAY, bad_status)
        assert err.value.field == "status"


# ------------------------------------------------------------------ what goes and what stays


@pytest.mark.slow
async def test_prune_keeps_what_the_policy_and_the_rules_keep(db_url: str) -> None:
    old_complete = await make_job(db_url, 5, days_ago=20, fail={"e1"})
    recent_complete = await make_job(db_url, 5, days_ago=10)
    old_cancelled = await make_job(db_url, 30, days_ago=20, status="cancelled")
    failed_20 = await make_job(db_url, 5, days_ago=20, status="failed")  # failed: kept 30 days
    failed_40 = await make_job(db_url, 5, days_ago=40, status="failed")
    parent = await make_job(db_url, 4, days_ago=40, fail={"e0"}, retry=True)  # its retry job is still pending
    async with Queue(db_url, clock=clock(50)) as q:  # active and paused jobs, however old, stay
        pending = (await q.enqueue_job(["a"], entity_type="t", provider="p")).id
        paused = (await q.enqueue_job(["b"], entity_type="t", provider="p")).id
        await q.pause(paused)
    async with Queue(db_url) as q:
        pruner = Pruner(q)
        dry = await pruner.count(RetentionPolicy())
        assert (dry.jobs, dry.entities) == (3, 5 + 30 + 5)
        assert await table_counts(db_url) == await table_counts(db_url)  # the dry run deleted nothing
        result = await pruner.prune(RetentionPolicy())
        assert sorted(result.job_ids) == sorted([old_complete, old_cancelled, failed_40])
        assert (result.jobs, result.entities, result.errors) == (3, 40, 1 + 1)
        left = {j.id for j in await q.list_jobs(limit=1000)}
        assert left == {recent_complete, failed_20, parent, pending, paused, parent + 1}
        # the retry finishes: its parent may go with the next prune
        retry_job = parent + 1
        while (await q.get_job(retry_job)).status != "complete":
            await q.process_chunk(retry_job, Processor(lambda e, j: None))
        assert (await pruner.prune(RetentionPolicy())).job_ids == [parent]
        # nothing of the pruned jobs is left in any table
        def orphans(conn: Any) -> int:
            gone = [old_complete, old_cancelled, failed_40, parent]
            return sum(conn.execute(select(func.count()).select_from(t).where(t.c.job_id.in_(gone))).scalar()
                       for t in (s.entities, s.chunks, s.errors, s.retries))
        assert await q.backend.read(orphans, "orphans") == 0
        assert await q.backend.read(lambda c: c.execute(select(func.count()).select_from(s.meta)
                                                        .where(s.meta.c.key == "pruner")).scalar(), "lease") == 0
        # per status, forever, and --older-than
        assert (await pruner.prune(RetentionPolicy(None, None, None))).jobs == 0
        assert (await pruner.prune(RetentionPolicy.only(5 * DAY, ["failed"]))).job_ids == [failed_20]
        assert sorted((await pruner.prune(RetentionPolicy.only(0))).job_ids) == [recent_complete, retry_job]


@pytest.mark.slow
async def test_a_big_job_goes_in_small_transactions(db_url: str) -> None:
    """A 12,000-entity job with 3,000 errors, pruned in transactions of at most 1,000 rows."""
    fail = {f"e{i}" for i in range(0, 12_000, 4)}
    big = await make_job(db_url, 12_000, days_ago=40, fail=fail, chunk_size=500)
    small = [await make_job(db_url, 3, days_ago=40) for _ in range(5)]
    async with Queue(db_url) as q:
        pruner = Pruner(q, batch_rows=1000)
        sizes: list[int] = []
        original = pruner.backend.write

        async def counting(fn: Any, what: str, **kw: Any) -> Any:
            before = await table_counts(db_url)
            got = await original(fn, what, **kw)
            after = await table_counts(db_url)
            sizes.append(sum(before.values()) - sum(after.values()))
            return got

        pruner.backend.write = counting  # type: ignore[method-assign]
        try:
            result = await pruner.prune(RetentionPolicy())
        finally:
            del pruner.backend.write
        assert sorted(result.job_ids) == sorted([big, *small])
        assert result.entities == 12_000 + 15 and result.errors == 3000
        assert max(sizes) <= 1000 + 1  # a slice of rows (+ the job row, in the last one)
        assert len([n for n in sizes if n > 0]) >= 15
    assert await table_counts(db_url) == {"chunkq_jobs": 0, "chunkq_entities": 0, "chunkq_chunks": 0,
                                          "chunkq_errors": 0, "chunkq_retries": 0}


async def test_one_pruner_at_a_time(db_url: str) -> None:
    """The second pruner reads leases on a clock the test moves (it waited out a 0.5 s lease in real time,
    and a loaded CI machine took longer than that between taking the lease and asking)."""
    await make_job(db_url, 3, days_ago=40)
    clock = [time.time()]
    async with Queue(db_url) as q1, Queue(db_url, clock=lambda: clock[0]) as q2:
        first, second = Pruner(q1), Pruner(q2)
        assert await first._take_lease()
        busy = await second.prune(RetentionPolicy())
        assert busy.busy and busy.jobs == 0
        await first._release_lease()
        assert (await second.prune(RetentionPolicy())).jobs == 1
        # a lease left by a pruner that died runs out
        dead = Pruner(q1, lease_seconds=0.5)
        assert await dead._take_lease()  # until q1's (real) now + 0.5 s: ahead of the clock standing still
        await make_job(db_url, 3, days_ago=40)
        assert (await second.prune(RetentionPolicy())).busy
        clock[0] = time.time() + 1.0  # past it, however long the above took
        assert (await second.prune(RetentionPolicy())).jobs == 1


@pytest.mark.plans
async def test_candidates_come_through_the_updated_at_index(db_url: str) -> None:
    """The batch query reads ``ix_chunkq_jobs_updated``, and the live-retry check the claim index."""
    from chunkq.core.retention import _size, eligible

    await make_job(db_url, 3, days_ago=40)
    async with Queue(db_url) as q:
        where = eligible(RetentionPolicy(), q.now())
        query = select(s.jobs.c.id, _size()).where(*where).order_by(s.jobs.c.updated_at, s.jobs.c.id).limit(200)

        def plan(conn: Any) -> str:
            compiled = query.compile(conn, compile_kwargs={"literal_binds": True})
            prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "
            if conn.dialect.name == "postgresql":  # a tiny table: ask for the indexes it has, each by name
                conn.execute(text("SET LOCAL enable_seqscan = off"))
                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            return "\n".join(str(r[-1]) for r in conn.execute(text(prefix + str(compiled))))

        shown = await q.backend.read(plan, "explain")
    assert "ix_chunkq_jobs_updated" in shown, shown
    # any index that starts with the status (the claim index, or the jobs list's of revision 0008)
    assert "ix_chunkq_jobs_claim" in shown or "ix_chunkq_jobs_list" in shown, shown


@pytest.mark.plans
async def test_deletes_go_through_the_job_id_indexes_whatever_the_statistics(db_url: str) -> None:
    """Each pruning transaction deletes a job's rows through the job_id index even where the planner would
    rather read the whole table. Here the tables are a few rows (a scan is cheaper); at a million jobs it was
    tables no ANALYZE had seen, where PostgreSQL takes each id of ``job_id IN (...)`` for 0.5% of the table
    and read a million jobs' entities whole in every transaction (issue 26). The plans are read in the
    pruner's own transactions, after its statements: a plan, not a time."""
    jobs = [await make_job(db_url, 3, days_ago=40) for _ in range(3)]
    many = ", ".join(str(i) for i in range(1, 201))  # a full batch's ids (BATCH_JOBS)
    async with Queue(db_url) as q:
        pruner = Pruner(q)
        plans: list[str] = []
        original = pruner.backend.write

        async def explaining(fn: Any, what: str, **kw: Any) -> Any:
            def tx(conn: Any) -> Any:
                got = fn(conn)
                if not what.startswith("pruning"):  # the lease's own transactions
                    return got
                prefix = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
                for table in ("chunkq_entities", "chunkq_chunks", "chunkq_errors"):
                    plans.append("\n".join(str(r[-1]) for r in conn.exec_driver_sql(
                        f"{prefix}DELETE FROM {table} WHERE job_id IN ({many})")))
                return got

            return await original(tx, what, **kw)

        pruner.backend.write = explaining  # type: ignore[method-assign]
        try:
            result = await pruner.prune(RetentionPolicy())
        finally:
            del pruner.backend.write
    assert sorted(result.job_ids) == sorted(jobs)
    assert plans and len(plans) % 3 == 0
    for shown in plans:
        assert "Seq Scan" not in shown and "SCAN chunkq" not in shown, shown
        assert "Index" in shown or "SEARCH chunkq" in shown, shown  # PostgreSQL's index scans, SQLite's searches


# ------------------------------------------------------------------ export and import


async def dump(url: str, job_id: int) -> dict[str, Any]:
    """A job's contents without its id: the job's fields, entity outcomes, chunks and errors."""
    buf = _Buffer()
    async with Queue(url) as q:
        with ArchiveWriter(buf, gzip=False) as w:
            await w.add_job(q, job_id)
    lines = [json.loads(x) for x in buf.getvalue().decode().splitlines()][1:]
    out: dict[str, Any] = {"entity": [], "chunk": [], "error": []}
    for rec in lines:
        rec.pop("job", None)
        kind = rec.pop("type")
        if kind == "job":
            rec.pop("id")
            rec.pop("reason_error_id")
            rec.pop("parent_id")
            out["job"] = rec
        elif kind == "end":
            out["end"] = rec
        else:
            rec.pop("id", None)
            out[kind].append(rec)
    return out


class _Buffer:
    def __init__(self) -> None:
        import io

        self._b = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self._b.write(data)

    def flush(self) -> None:
        pass

    def getvalue(self) -> bytes:
        return self._b.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("compress", [False, True])
async def test_export_prune_import_round_trip(db_url: str, tmp_path: Path, compress: bool) -> None:
    complete = await make_job(db_url, 250, days_ago=40, fail={"e3", "e77"}, chunk_size=30,
                              params={"k": ["v", 1]}, name="nightly \u00e9 [red]x[/]")
    cancelled = await make_job(db_url, 90, days_ago=40, status="cancelled", fail={"e2"}, transient={"e5"})
    failed = await make_job(db_url, 12, days_ago=40, status="failed")
    before = {j: await dump(db_url, j) for j in (complete, cancelled, failed)}
    assert {e["outcome"] for e in before[cancelled]["entity"]} == {"succeeded", "failed", "waiting", "unprocessed"}
    assert before[failed]["job"]["fail_reason"]
    archive = tmp_path / "archive"
    archive.mkdir()
    from chunkq.core.retention import archive_folder

    async with Queue(db_url) as q:
        folder = archive_folder(archive)
        name = folder / ("a.jsonl.gz" if compress else "a.jsonl")
        with ArchiveWriter(name) as writer:
            result = await Pruner(q, batch_rows=100).prune(RetentionPolicy(), archive=writer)
        assert sorted(result.job_ids) == sorted(before)
        assert await q.list_jobs() == []
        raw = name.read_bytes()
        assert raw[:2] == b"\x1f\x8b" if compress else raw.startswith(b'{"type":"header"')
        imported = await import_jobs(q, name)
        assert [a for a, _ in imported.jobs] == sorted(before)
        for old, new in imported.jobs:
            after = await dump(db_url, new)
            assert after == before[old]
            job = await q.get_job(new)
            if job.reason_error_id is not None:
                assert (await q.get_error(job.reason_error_id)).job_id == new
        # the imported job is a job like any other: its failures can be retried
        new_complete = dict(imported.jobs)[complete]
        retry = await q.retry_failed(new_complete)
        assert sorted(await q.entity_ids(retry.id)) == ["e3", "e77"]


async def test_only_finished_jobs_are_exported(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await q.enqueue_job(["a"], entity_type="t", provider="p")
        with pytest.raises(InvalidTransition, match="only finished jobs"), ArchiveWriter(_Buffer()) as w:
            await w.add_job(q, job.id)


def _export_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("damage, line, words", [
    (lambda ls: ls[:-1], 0, "cut short"),
    (lambda ls: [ls[0], "not json", *ls[1:]], 2, "not JSON"),
    (lambda ls: [ls[0], ls[1].replace('"status":"complete"', '"status":"running"'), *ls[2:]], 2, "only finished"),
    (lambda ls: [ls[0], ls[1], ls[2].replace('"pos":0', '"pos":-1'), *ls[3:]], 3, "negative"),
    (lambda ls: [ls[0], ls[1], ls[2].replace('"outcome":"succeeded"', '"outcome":"meh"'), *ls[3:]], 3, "outcome"),
    (lambda ls: [ls[1], *ls[1:]], 1, "header"),
    (lambda ls: [ls[0], ls[1], ls[2].replace('"entity_id":"e0"', '"entity_id":"a\\u0000"'), *ls[3:]], 3, "NUL"),
    (lambda ls: [ls[0], ls[1].replace('"total_count":4', '"total_count":1e999'), *ls[2:]], 2, "whole number"),
    (lambda ls: [ls[0], ls[1].replace('"chunk_size":10', '"chunk_size":"10"'), *ls[2:]], 2, "chunk_size"),
    (lambda ls: [*ls[:-1], ls[-1].replace('"entities":4', '"entities":5')], -1, "counts"),
    (lambda ls: [ls[0], ls[1].replace('"name":null', '"nombre":1'), *ls[2:]], 2, "unknown field"),
])
async def test_a_malformed_file_is_refused_with_its_line_and_nothing_is_created(
    db_url: str, tmp_path: Path, damage: Any, line: int, words: str,
) -> None:
    job = await make_job(db_url, 4, days_ago=40)
    good = tmp_path / "good.jsonl"
    async with Queue(db_url) as q:
        with ArchiveWriter(good) as w:
            await w.add_job(q, job)
            await w.add_job(q, job)
    lines = _export_lines(good)
    broken = damage(lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(broken) + "\n")
    before = await table_counts(db_url)
    async with Queue(db_url) as q:
        with pytest.raises(MalformedArchive) as err:
            await import_jobs(q, bad)
    expected = len(broken) if line == -1 else line or len(broken) + 1
    assert err.value.number == expected, str(err.value)
    assert words in str(err.value) and str(err.value).startswith(f"line {expected}: ")
    assert await table_counts(db_url) == before


def _edit(lines: list[str], kind: str, **values: Any) -> tuple[list[str], int]:
    """The export's lines with the first ``kind`` record holding the fields set to ``values``; and its line's number."""
    i = next(i for i, x in enumerate(lines) if json.loads(x)["type"] == kind and set(values) <= set(json.loads(x)))
    rec = {**json.loads(lines[i]), **values}
    return [*lines[:i], json.dumps(rec), *lines[i + 1:]], i + 1


#: (record, field, value, words): what no queue writes, each refused before anything is imported
_OUT_OF_RANGE = [
    ("job", "created_at", 1e300, "the year 9999"),
    ("job", "updated_at", 253402300800, "the year 9999"),
    ("job", "finished_at", -1.0, "the year 9999"),
    ("job", "served_at", 1e300, "the year 9999"),
    ("job", "next_retry_at", 1e300, "the year 9999"),
    ("entity", "due_at", 1e300, "the year 9999"),
    ("chunk", "finished_at", 1e300, "the year 9999"),
    ("chunk", "lease_expires_at", 1e300, "the year 9999"),
    ("chunk", "duration", -0.5, "seconds from 0"),
    ("chunk", "duration", 1e300, "seconds from 0"),
    ("error", "created_at", 1e300, "the year 9999"),
    ("error", "resolved_at", 1e300, "the year 9999"),
    ("job", "error_count", -1, "negative"),
    ("job", "next_chunk", 2**31, "at most 2,147,483,647"),
    ("job", "processed_count", 2**62 + 1, "at most"),
    ("job", "processed_count", 5, "more than job.total_count"),
    ("job", "chunk_size", 10_001, "chunk_size must be between"),
    ("job", "max_attempts", 0, "max_attempts must be between"),
    ("job", "max_error_ratio", 2.0, "max_error_ratio must be"),
    ("chunk", "size", -3, "negative"),
    ("chunk", "attempt", -1, "negative"),
    ("error", "attempt", 2**31, "at most"),
    ("error", "pos", -1, "negative"),
]
#: (record, field, value, words): text enqueue refuses, refused by import with the same check
_BAD_TEXT = [
    ("job", "name", "N\x1b[31mred\rcr", "job.name contains a control character"),
    ("job", "provider", "p\x1b", "job.provider contains a control character"),
    ("job", "entity_type", " ", "job.entity_type is required"),
    ("job", "tenant", "t\x1b", "job.tenant contains a control character"),
    ("job", "processor", "m:f\x9b", "job.processor contains a control character"),
    ("job", "name", "x" * 201, "job.name must be at most 200 characters"),
    ("job", "params", {"k": "a\x00"}, "job.params['k'] contains a NUL"),
    ("job", "params", {"rate_limit": 1e-300}, "job.params['rate_limit'] must be"),
    ("job", "params", ["a"], "job.params must be a JSON object"),
    ("entity", "entity_id", "a\x1b", "entity.entity_id contains a control character"),
    ("entity", "entity_id", "  ", "entity.entity_id is blank"),
    ("error", "entity_id", "e\x1b]0;x\x07", "error.entity_id contains a control character"),
]


async def test_import_refuses_numbers_and_text_no_queue_writes(db_url: str, tmp_path: Path) -> None:
    """Every time an import writes is one a reader can show (1e300 seconds stored, every listing failed
    with an OverflowError), every count a whole number from 0, and every label, ID and params what enqueue
    takes, by enqueue's own checks; refused with the line and the field, and nothing is imported."""
    job = await make_job(db_url, 4, days_ago=40, fail={"e1"}, transient={"e2"}, status="cancelled")
    good = tmp_path / "good.jsonl"
    async with Queue(db_url) as q:
        with ArchiveWriter(good) as w:
            await w.add_job(q, job)
    lines = _export_lines(good)
    assert any('"outcome":"waiting"' in x for x in lines) and any('"type":"error"' in x for x in lines)
    before = await table_counts(db_url)
    bad = tmp_path / "bad.jsonl"
    async with Queue(db_url) as q:
        for kind, name, value, words in [*_OUT_OF_RANGE, *_BAD_TEXT]:
            broken, line = _edit(lines, kind, **{name: value})
            bad.write_text("\n".join(broken) + "\n")
            with pytest.raises(MalformedArchive) as err:
                await import_jobs(q, bad)
            assert err.value.number == line and str(err.value).startswith(f"line {line}: {kind}."), (name, err.value)
            assert words in str(err.value), (name, value, str(err.value))
        assert await table_counts(db_url) == before
        assert [j.id for j in await q.list_jobs()] == [job]  # and every reader still reads


async def test_import_takes_any_text_a_worker_records(db_url: str, tmp_path: Path) -> None:
    """An error's type is the exception class's name, which may hold anything (a control character, a
    newline), and its message, traceback and output are the callback's text: a genuine export holds them,
    so import takes them as they are (they are escaped when shown)."""
    odd = type("Odd\x1b[31mError\r", (Exception,), {})

    def cb(eid: str, job: Any) -> None:
        if eid == "b":
            raise odd("bad \x1b[2J\nline two\x07")

    async with Queue(db_url) as q:
        job = await q.enqueue_job(["a", "b"], entity_type="t", provider="p", max_attempts=1)
        while (await q.get_job(job.id)).status != "complete":
            await q.process_chunk(job.id, Processor(cb))
        path = tmp_path / "x.jsonl"
        with ArchiveWriter(path) as w:
            await w.add_job(q, job.id)
        imported = await import_jobs(q, path)
        (new,) = [b for _, b in imported.jobs]
        (error,) = await q.list_errors(new)
        assert "\x1b" in error.error_type and error.message == "bad \x1b[2J\nline two\x07"


async def test_an_import_that_fails_half_way_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    """The database refuses a row of the second job (its chunk duplicated): the first job goes again too."""
    job = await make_job(db_url, 40, days_ago=40, chunk_size=10)
    path = tmp_path / "x.jsonl"
    async with Queue(db_url) as q:
        with ArchiveWriter(path) as w:
            await w.add_job(q, job)
            await w.add_job(q, job)
    lines = _export_lines(path)
    chunk = next(i for i, x in enumerate(lines) if '"type":"chunk"' in x and i > len(lines) // 2)
    lines.insert(chunk, lines[chunk])  # the same chunk index twice: a primary key violation
    end = len(lines) - 1
    lines[end] = lines[end].replace('"chunks":4', '"chunks":5')
    path.write_text("\n".join(lines) + "\n")
    before = await table_counts(db_url)
    async with Queue(db_url) as q:
        with pytest.raises(Exception):  # noqa: B017 - the database's own error
            await import_jobs(q, path)
    assert await table_counts(db_url) == before


# ------------------------------------------------------------------ memory


@pytest.mark.slow
def test_export_memory_stays_flat_for_a_big_job(tmp_path: Path, python_env: dict[str, str]) -> None:
    """Peak RSS exporting a 100,000-entity job (25,000 errors, 28 MB of tracebacks: held at once, they
    would raise the peak by half) vs a 2,000-entity one, each in a fresh process."""
    url = f"sqlite:///{tmp_path / 'big.db'}"

    async def seed() -> tuple[int, int]:
        async with Queue(url) as q:
            small = await q.enqueue_job([f"s{i}" for i in range(2_000)], entity_type="t", provider="p")
            big = await q.enqueue_job([f"b{i:07d}" for i in range(100_000)], entity_type="t", provider="p",
                                      chunk_size=5000)

            def finish(conn: Any) -> None:  # a fast bulk write of a finished job, not 40 chunk runs
                now = time.time()
                conn.execute(s.jobs.update().values(status="complete", next_pos=s.jobs.c.total_count,
                                                    processed_count=s.jobs.c.total_count, finished_at=now))
                conn.execute(s.errors.insert(), [
                    {"job_id": big.id, "pos": p, "entity_id": f"b{p:07d}", "error_type": "ValueError",
                     "message": "bad " * 20, "traceback": "Traceback ...\n" * 80, "chunk_index": p // 5000,
                     "attempt": 1, "final": True, "created_at": now} for p in range(0, 100_000, 4)])

            await q.backend.write(finish, "seeding")
            return small.id, big.id

    small, big = asyncio.run(seed())
    script = textwrap.dedent("""
        import asyncio, resource, sys
        from chunkq.core import Queue, open_export
        async def main():
            async with Queue(sys.argv[1]) as q:
                with open_export(sys.argv[3]) as w:
                    await w.add_job(q, int(sys.argv[2]))
        asyncio.run(main())
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    peaks = {}
    for job_id in (small, big):
        out = tmp_path / f"{job_id}.jsonl.gz"
        done = subprocess.run([sys.executable, "-c", script, url, str(job_id), str(out)], env=python_env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
        peaks[job_id] = int(done.stdout.split()[-1])
    with gzip.open(tmp_path / f"{big}.jsonl.gz", "rt") as f:
        kinds: dict[str, int] = {}
        for line in f:
            kind = json.loads(line)["type"]
            kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds["entity"] == 100_000 and kinds["error"] == 25_000
    ratio = peaks[big] / peaks[small]
    print(f"peak RSS: small job {peaks[small] / 1024:.0f} MB, big job {peaks[big] / 1024:.0f} MB, ratio {ratio:.2f}")
    assert ratio < 1.15, peaks  # holding the tracebacks would add ~28 MB to ~110
