"""Error groups (issue 16): failures grouped by fingerprint, searched, and acted on one group at a time.

Every test runs on a real SQLite file and on the real PostgreSQL (``db_url``).
"""

from __future__ import annotations

import uuid

import pytest
from chunkq.core import (
    COMPLETE,
    PENDING,
    InvalidInput,
    JobNotFound,
    Processor,
    Queue,
    Retry,
    RetryJobWaiting,
    fingerprint_as,
)
from chunkq.core import schema as s
from chunkq.core.error_groups import LEGACY_PREFIX, legacy_key
from chunkq.core.fingerprint import FingerprintCache, fingerprint
from chunkq.core.worker import Worker
from sqlalchemy import insert

from .fingerprint_corpus import CORPUS
from .test_leases import FakeClock

IDS = [f"s-{i:06d}" for i in range(40)]


class ProviderError(Exception):
    """What an HTTP client raises: the URL (with the entity in it) inside the message."""


def provider(eid: str, _job: object) -> None:
    """Three bugs, each with the entity's ID or URL in its message; every fourth entity succeeds."""
    i = int(eid.split("-")[1])
    if i % 4 == 0:
        raise RuntimeError(f"upstream 500 for {eid}")
    if i % 4 == 1:
        raise ProviderError(f"Client error '404 Not Found' for url 'https://api.example.com/v2/companies/{eid}"
                            f"?trace=req_{i:04d}abcdef12'")
    if i % 4 == 2:
        raise KeyError("email")


async def _job(q: Queue, ids: list[str] = IDS, **kw: object):
    kw.setdefault("chunk_size", 10)
    return await q.enqueue_job(ids, entity_type="company", provider="acme", **kw)


async def _drain(q: Queue, cb: object) -> None:
    while await q.process_next_chunk(cb) is not None:
        pass


def _ids(step: int) -> set[str]:
    return {eid for i, eid in enumerate(IDS) if i % 4 == step}


async def test_provider_messages_with_ids_and_urls_make_one_group_per_bug(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q)
        await _drain(q, provider)
        groups = await q.group_errors(job.id)
        assert len(groups) == 3
        by_type = {g.error_type.rsplit(".", 1)[-1]: g for g in groups}
        assert set(by_type) == {"RuntimeError", "ProviderError", "KeyError"}
        assert all((g.count, g.entities) == (10, 10) for g in groups)
        assert by_type["RuntimeError"].message == "upstream 500 for <id>"
        assert by_type["ProviderError"].message == (
            "Client error '404 Not Found' for url 'https://api.example.com/v2/companies/<id>?trace=<val>'")
        assert by_type["KeyError"].message == "'email'"
        # up to three distinct real messages, in the order logged; one for a bug whose message never varies
        assert by_type["RuntimeError"].samples == ("upstream 500 for s-000000", "upstream 500 for s-000004",
                                                   "upstream 500 for s-000008")
        assert by_type["KeyError"].samples == ("'email'",)
        assert by_type["RuntimeError"].location == "test_error_groups.py:provider"
        assert all(len(g.fingerprint) == 16 and not g.fingerprint.startswith(LEGACY_PREFIX) for g in groups)
        # the rows carry what grouped them
        for g in groups:
            rows = await q.list_errors(job.id, fingerprint=g.fingerprint, limit=100)
            assert len(rows) == 10 and {r.fingerprint for r in rows} == {g.fingerprint}
            assert {r.normalized for r in rows} == {g.message} and {r.location for r in rows} == {g.location}
            assert set(await q.group_entities(job.id, g.fingerprint)) == _ids(
                {"RuntimeError": 0, "ProviderError": 1, "KeyError": 2}[g.error_type.rsplit(".", 1)[-1]])
        # one group's page of entities, in job order
        key = by_type["RuntimeError"].fingerprint
        assert await q.group_entities(job.id, key, limit=3, offset=2) == ["s-000008", "s-000012", "s-000016"]
        assert (await q.group_errors(job.id, limit=1))[0].count == 10


async def test_requeue_in_place_of_one_group_touches_only_its_entities(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q)
        await _drain(q, provider)
        groups = {g.error_type.rsplit(".", 1)[-1]: g for g in await q.group_errors(job.id)}
        before = await q.get_job(job.id)
        assert (before.status, before.failed_count) == (COMPLETE, 30)

        j = await q.requeue_failed(job.id, fingerprint=groups["KeyError"].fingerprint)
        assert (j.status, j.failed_count, j.waiting_count) == (PENDING, 20, 10)
        seen: list[str] = []

        def fixed(eid: str, _job: object) -> None:
            seen.append(eid)

        await _drain(q, fixed)
        assert set(seen) == _ids(2)  # the other bugs' entities were not run again
        j = await q.get_job(job.id)
        assert (j.status, j.failed_count, j.succeeded_count) == (COMPLETE, 20, 20)
        remaining = await q.group_errors(job.id)
        assert {g.error_type.rsplit(".", 1)[-1] for g in remaining} == {"RuntimeError", "ProviderError"}
        with pytest.raises(InvalidInput, match="no failed entities in group"):
            await q.requeue_failed(job.id, fingerprint=groups["KeyError"].fingerprint)


async def test_retry_of_one_group_as_a_new_job(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q)
        await _drain(q, provider)
        groups = {g.error_type.rsplit(".", 1)[-1]: g for g in await q.group_errors(job.id)}
        new = await q.retry_failed(job.id, fingerprint=groups["ProviderError"].fingerprint)
        assert (new.parent_id, new.total_count) == (job.id, 10)
        assert set(await q.entity_ids(new.id)) == _ids(1)
        old = await q.get_job(job.id)
        assert old.failed_count == 30  # a retry as a new job leaves the old one as it was
        with pytest.raises(RetryJobWaiting, match=f"job {new.id} \\(pending\\)"):
            await q.retry_failed(job.id)  # the group's retry job still waits with 10 of the 30
        with pytest.raises(RetryJobWaiting):
            await q.retry_failed(job.id, fingerprint=groups["ProviderError"].fingerprint)
        with pytest.raises(RetryJobWaiting):
            await q.requeue_failed(job.id, fingerprint=groups["ProviderError"].fingerprint)
        # another bug's entities are not in it: their retry job may wait beside it
        other = await q.retry_failed(job.id, fingerprint=groups["KeyError"].fingerprint)
        assert set(await q.entity_ids(other.id)) == _ids(2)
        await q.cancel(new.id)
        with pytest.raises(RetryJobWaiting, match=f"job {other.id} \\(pending\\)"):
            await q.retry_failed(job.id)
        await q.cancel(other.id)
        whole = await q.retry_failed(job.id)
        assert whole.total_count == 30
        with pytest.raises(InvalidInput, match="group"):
            await q.retry_failed(job.id, fingerprint="0000000000000000")


async def test_search_matches_entity_ids_and_messages_in_any_case_without_wildcards(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q)
        await _drain(q, provider)
        assert [e.entity_id for e in await q.list_errors(job.id, search="S-000001")] == ["s-000001"]
        assert len(await q.list_errors(job.id, search="UPSTREAM 500")) == 10
        assert len(await q.list_errors(job.id, search="api.example.com/v2")) == 10
        assert await q.list_errors(job.id, search="50%") == []  # % is a character, not a wildcard
        assert await q.list_errors(job.id, search="s_000001") == []  # and so is _
        assert await q.list_errors(job.id, search="no such text") == []
        (group,) = await q.group_errors(job.id, search="upstream")
        assert (group.count, group.message) == (10, "upstream 500 for <id>")
        (group,) = await q.group_errors(job.id, search="s-000005")  # a group's count is of what matched
        assert (group.count, group.entities) == (1, 1)
        both = await q.list_errors(job.id, search="s-00000", fingerprint=group.fingerprint)
        assert [e.entity_id for e in both] == ["s-000001", "s-000005", "s-000009"]
        with pytest.raises(InvalidInput, match="search"):
            await q.list_errors(job.id, search="bad\x00text")
        with pytest.raises(JobNotFound):
            await q.group_errors(job.id + 100, search="x")


async def test_a_walk_through_one_group_pages_by_error_id(db_url: str) -> None:
    """What the exports page by (the CLI's ``errors --group --format csv``, the dashboard's group export):
    after the last error seen, every error of the group once, in order, whatever the page size."""
    async with Queue(db_url) as q:
        job = await _job(q)
        await _drain(q, provider)
        group = next(g for g in await q.group_errors(job.id) if g.error_type.endswith("KeyError"))
        whole = await q.list_errors(job.id, fingerprint=group.fingerprint)
        assert len(whole) == 10
        walked, after = [], None
        while page := await q.list_errors(job.id, limit=3, after_id=after, fingerprint=group.fingerprint):
            walked += page
            after = page[-1].id
        assert [e.id for e in walked] == [e.id for e in whole]
        # the walk every export goes through, three at a time: the same errors, once each, in order
        assert [e.id async for e in q.iter_errors(job.id, fingerprint=group.fingerprint, page=3)] \
            == [e.id for e in whole]
        assert [e.id async for e in q.iter_errors(job.id, search="S-00000", page=2)] \
            == [e.id for e in await q.list_errors(job.id, search="s-00000")]
        assert [e.id for e in await q.list_errors(job.id, after_id=whole[4].id, limit=2)] \
            == [e.id for e in (await q.list_errors(job.id)) if e.id > whole[4].id][:2]
        for bad in (0, -3, "7", True):
            with pytest.raises(InvalidInput, match="error id"):
                await q.list_errors(job.id, after_id=bad)  # type: ignore[arg-type]


async def test_new_fingerprints_are_the_kinds_a_job_never_logged(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q, [f"ent{i}" for i in range(30)])

        def cb(eid: str, _job: object) -> None:
            i = int(eid[3:])
            if i in (3, 4, 13):
                raise RuntimeError(f"upstream 500 for {eid}")
            if i == 25:
                raise KeyError("phone")

        first = await q.process_next_chunk(cb)
        assert first is not None and first.errors == 2 and len(first.new_fingerprints) == 1
        second = await q.process_next_chunk(cb)
        assert second is not None and second.errors == 1 and second.new_fingerprints == ()
        third = await q.process_next_chunk(cb)
        assert third is not None and len(third.new_fingerprints) == 1
        assert third.new_fingerprints != first.new_fingerprints
        keys = {g.error_type: g.fingerprint for g in await q.group_errors(job.id)}
        assert first.new_fingerprints == (keys["RuntimeError"],)
        assert third.new_fingerprints == (keys["KeyError"],)
        assert first.to_dict()["new_fingerprints"] == [keys["RuntimeError"]]
        # another job logging the same bug: new to that job
        other = await _job(q, ["ent3"])
        r = await q.process_chunk(other.id, cb)
        assert r is not None and r.new_fingerprints == (keys["RuntimeError"],)


async def test_stop_on_new_error_stops_after_the_chunk_that_logged_it(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q, [f"e{i:02d}" for i in range(40)], chunk_size=5)
        seen: list[str] = []

        def cb(eid: str, _job: object) -> None:
            seen.append(eid)
            if eid in ("e12", "e31"):
                raise ValueError(f"bad row {eid}")

        summary = await Worker(q, cb, stop_on_new_error=True).run()
        # the chunk holding e12 (the third) committed, and the worker claimed nothing after it; chunks it had
        # claimed already (its window runs the next ones while one commits) still finished and committed
        assert summary.stopped_by == "new_error" and 3 <= summary.chunks < 8
        assert len(seen) == summary.entities == 5 * summary.chunks and "e12" in seen and "e39" not in seen
        assert (await q.get_job(job.id)).processed_count == len(seen)
        (group,) = await q.group_errors(job.id)
        assert (summary.new_error, summary.new_error_job) == (group.fingerprint, job.id)
        assert summary.to_dict()["new_error"] == group.fingerprint
        assert (await q.get_job(job.id)).status == PENDING
        # the same kind again is no breakpoint: the run goes to the end
        again = await Worker(q, cb, stop_on_new_error=True).run()
        assert (again.stopped_by, again.new_error) == ("empty", None)
        assert "new_error" not in again.to_dict()
        assert (await q.get_job(job.id)).status == COMPLETE
        # without the option nothing stops
        other = await _job(q, ["a1", "a2"], chunk_size=1)
        plain = await Worker(q, lambda eid, j: (_ for _ in ()).throw(OSError(eid)), job_id=other.id).run()
        assert plain.stopped_by == "empty" and plain.chunks == 2


async def test_transient_failures_are_logged_with_their_fingerprint(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        job = await _job(q, ["ent1", "ent2"])

        def cb(eid: str, _job: object) -> None:
            raise Retry(f"429 Too Many Requests for {eid}")

        r = await q.process_next_chunk(Processor(on_process=cb))
        assert r is not None and r.retried == 2 and len(r.new_fingerprints) == 1
        (group,) = await q.group_errors(job.id)
        assert (group.message, group.count, group.entities) == ("429 Too Many Requests for <id>", 2, 2)


async def test_rows_without_a_fingerprint_group_by_exact_message_as_legacy_groups(db_url: str) -> None:
    """Rows an older worker wrote during a rolling upgrade: grouped, listed and requeued like the others."""
    async with Queue(db_url) as q:
        job = await _job(q, ["a1", "a2", "a3", "a4"])
        await _drain(q, lambda eid, j: None)
        rows = [{"job_id": job.id, "pos": pos, "entity_id": eid, "error_type": "ValueError", "message": msg,
                 "traceback": "", "stacks": [], "chunk_index": 0, "attempt": 1, "final": True,
                 "created_at": 1_800_000_000.0 + pos}
                for pos, eid, msg in ((0, "a1", "bad a1"), (1, "a2", "bad a2"), (2, "a3", "bad a2"))]
        async with q.engine.begin() as conn:
            await conn.execute(insert(s.errors), rows)
            await conn.execute(s.jobs.update().where(s.jobs.c.id == job.id).values(
                failed_count=3, succeeded_count=1))
        groups = await q.group_errors(job.id)
        assert [(g.message, g.count, g.samples) for g in groups] == [
            ("bad a2", 2, ("bad a2",)), ("bad a1", 1, ("bad a1",))]
        assert all(g.fingerprint.startswith(LEGACY_PREFIX) and g.location is None for g in groups)
        key = legacy_key("ValueError", "bad a2")
        assert groups[0].fingerprint == key
        assert [e.entity_id for e in await q.list_errors(job.id, fingerprint=key)] == ["a2", "a3"]
        assert await q.group_entities(job.id, key) == ["a2", "a3"]
        j = await q.requeue_failed(job.id, fingerprint=key)
        assert (j.failed_count, j.waiting_count) == (1, 2)
        with pytest.raises(InvalidInput, match=f"job {job.id} has no error group legacy:"):
            await q.list_errors(job.id, fingerprint=legacy_key("ValueError", "no such"))


async def test_bad_group_keys_are_refused(queue: Queue) -> None:
    job = await _job(queue, ["a1"])
    for bad in ("", "x" * 65, "bad\nkey"):
        with pytest.raises(InvalidInput, match="group"):
            await queue.list_errors(job.id, fingerprint=bad)
        with pytest.raises(InvalidInput, match="group"):
            await queue.requeue_failed(job.id, fingerprint=bad)
    with pytest.raises(JobNotFound):
        await queue.group_entities(job.id + 100, "0000000000000000")
    # a well-formed key of no group of the job: a typo is said to be one, not shown as an empty group
    with pytest.raises(InvalidInput, match=f"job {job.id} has no error group 0000000000000000"):
        await queue.list_errors(job.id, fingerprint="0000000000000000")
    with pytest.raises(JobNotFound):  # an unknown job is still that, first
        await queue.list_errors(job.id + 100, fingerprint="0000000000000000")


def test_the_per_chunk_cache_gives_the_fingerprint_of_each_failure() -> None:
    cache = FingerprintCache()
    for bug in CORPUS:
        for msg, entity in bug.failures:
            assert cache(bug.error_type, msg, None, entity_id=entity) == fingerprint(
                bug.error_type, msg, None, entity_id=entity)
    # a chunk of failures alike but for their entity: one normalisation, one cached value
    cache = FingerprintCache()
    prints = {id(cache("RuntimeError", f"upstream 500 for s-{i:06d}", None, entity_id=f"s-{i:06d}"))
              for i in range(50)}
    assert len(prints) == 1
    long = "x " * 3000 + "12345"
    assert cache("E", long, None).normalized == fingerprint("E", long, None).normalized


async def test_every_write_path_stores_a_fingerprint(db_url: str) -> None:
    """A poison entity given up (``WorkerLost``, written inside a claim) and a retry of one entity
    (``retry_entity``) log fingerprinted rows too, grouped with the rest."""
    from chunkq.core.poison import ISOLATE_AFTER

    clock = FakeClock()
    async with Queue(db_url, lease_seconds=30, clock=clock) as q:
        job = await _job(q, ["ent1"], chunk_size=1)
        for _ in range(2 * ISOLATE_AFTER + 1):  # a worker claims it, starts it (alone once suspect), dies
            claim = await q.claims.claim()
            if claim is None:
                break
            if claim.suspect:
                assert await q.claims.run_alone(claim)
            clock.advance(31)
        (lost,) = await q.list_errors(job.id)
        assert lost.error_type == "WorkerLost" and lost.fingerprint is not None and lost.normalized
        assert lost.normalized == "the worker died or lost its lease while processing this entity, <n> times"

        other = await _job(q, ["ent2"])
        await q.process_next_chunk(lambda eid, j: provider("s-000000", j))
        (first,) = await q.list_errors(other.id)
        result = await q.retry_entity(first.id, lambda eid, j: provider("s-000004", j))
        assert not result.ok
        errs = await q.list_errors(other.id)
        assert len(errs) == 2 and errs[1].chunk_index == -1
        assert errs[1].fingerprint == errs[0].fingerprint is not None  # upstream 500 for <some ID>: one group
        (group,) = await q.group_errors(other.id)
        assert (group.count, group.entities) == (2, 1)


# --------------------------------------------------------------------------- issue 27: templates, totals, merges

def four_bugs(eid: str, _job: object) -> None:
    """The four processors of issue 27 (103 groups, shown as "100 bugs", before)."""
    n = int(eid.split("-")[1])
    d, m = n % 28 + 1, n % 60
    kind = n % 4
    if kind == 0:
        {}[f"sku_{n}"]  # KeyError with a varying key
    if kind == 1:
        raise ConnectionError(f"connect to 10.0.{n % 256}.{n % 7}:443 timed out after {n / 13:.2f}s "
                              f"(trace {uuid.UUID(int=n * 7919)})")
    if kind == 2:
        raise ValueError(f"invalid email 'user{n}@example{n % 9}.com' for account #{n} "
                         f"(hash {n * 2654435761 % 2**32:08x})")
    raise RuntimeError(f"Order ORD-{n:06d} for tenant acme_{n % 50} failed: status={n % 3 + 500} "
                       f"at 2024-01-{d:02d}T10:{m:02d}:00Z")


@pytest.mark.slow
async def test_the_issues_four_bugs_are_four_groups_with_whole_counts(db_url: str) -> None:
    async with Queue(db_url, breaker_chunks=10**6) as q:  # every entity fails: no circuit breaker
        job = await _job(q, [f"s-{i:06d}" for i in range(600)], chunk_size=50)
        await _drain(q, four_bugs)
        page = await q.error_group_page(job.id)
        assert page.total == 4 and len(page.groups) == 4
        assert sorted(g.count for g in page.groups) == [150] * 4
        assert all(g.entities == 150 for g in page.groups)
        assert sum(1 for g in page.groups if g.samples) == 4
        # each group's rows are its own, all of them
        for g in page.groups:
            rows = await q.list_errors(job.id, fingerprint=g.fingerprint, limit=1000)
            assert len(rows) == 150 and len({r.error_type for r in rows}) == 1
        # paged: the total stays, the page moves
        second = await q.error_group_page(job.id, limit=3, offset=3)
        assert second.total == 4 and [g.fingerprint for g in second.groups] == [page.groups[3].fingerprint]


async def test_names_without_digits_become_one_group_and_reason_phrases_stay_two(db_url: str) -> None:
    names = ["Acme Corp", "Globex", "Initech", "Umbrella Inc", "Hooli", "Stark Industries", "Wayne", "Cyberdyne"]

    def cb(eid: str, _job: object) -> None:
        n = int(eid.split("-")[1])
        if n % 2:
            raise LookupError(f"company {names[n // 2 % len(names)]} not found")
        raise ProviderError(f"Client error '{'401 Unauthorized' if n % 4 else '404 Not Found'}' for url "
                            f"'https://api.example.com/v2/companies/{eid}'")

    async with Queue(db_url, breaker_chunks=10**6) as q:
        job = await _job(q, [f"s-{i:06d}" for i in range(64)], chunk_size=8)
        await _drain(q, cb)
        groups = await q.group_errors(job.id)
        assert sorted((g.error_type.rsplit(".", 1)[-1], g.count) for g in groups) == [
            ("LookupError", 32), ("ProviderError", 16), ("ProviderError", 16)]
        (company,) = [g for g in groups if g.error_type == "LookupError"]
        assert company.message == "company <*> not found"
        assert len(await q.list_errors(job.id, fingerprint=company.fingerprint, limit=100)) == 32


async def test_a_processor_names_the_bug(db_url: str) -> None:
    def cb(eid: str, _job: object) -> None:
        n = int(eid.split("-")[1])
        if n % 2:
            raise fingerprint_as(ValueError(f"VAT number {eid} rejected"), "bad-vat")
        raise fingerprint_as(KeyError(f"no such field {'abc'[n % 3]}x"), "bad-vat")

    async with Queue(db_url, breaker_chunks=10**6) as q:
        job = await _job(q, IDS)
        await _drain(q, cb)
        (group,) = await q.group_errors(job.id)
        assert (group.count, group.entities) == (40, 40)


async def test_an_operator_merges_two_groups_for_future_errors_too_and_undoes_it(db_url: str) -> None:
    async with Queue(db_url) as q:
        job = await _job(q, IDS[:20])
        await _drain(q, provider)
        before = await q.error_group_page(job.id)
        assert before.total == 3
        by_type = {g.error_type.rsplit(".", 1)[-1]: g for g in before.groups}
        a, b = by_type["KeyError"].fingerprint, by_type["RuntimeError"].fingerprint
        assert await q.merge_error_groups(job.id, [a], b) == [a]
        page = await q.error_group_page(job.id)
        assert page.total == 2
        merged = next(g for g in page.groups if g.fingerprint == b)
        assert (merged.count, merged.merged) == (10, (a,))
        assert len(await q.list_errors(job.id, fingerprint=b)) == 10
        assert len(await q.group_entities(job.id, b)) == 10
        # the rule holds for the job's future errors of that template
        more = await q.requeue_failed(job.id, fingerprint=b)
        assert more.waiting_count == 10
        await _drain(q, provider)
        merged = next(g for g in (await q.error_group_page(job.id)).groups if g.fingerprint == b)
        assert merged.count == 20
        with pytest.raises(InvalidInput, match="already"):
            await q.merge_error_groups(job.id, [a], b)
        assert await q.unmerge_error_group(job.id, a) == b
        after = {g.fingerprint: g.count for g in (await q.error_group_page(job.id)).groups}
        assert after[a] == 10 and after[b] == 10 and len(after) == 3
        with pytest.raises(InvalidInput, match="not merged"):
            await q.unmerge_error_group(job.id, a)
        with pytest.raises(InvalidInput, match="no error group"):
            await q.merge_error_groups(job.id, ["0123456789abcdef"], b)


async def test_recovered_entities_leave_the_open_counts(db_url: str) -> None:
    clock = FakeClock()
    async with Queue(db_url, clock=clock) as q:
        job = await _job(q, ["ent1", "ent2", "ent3"], max_attempts=3)
        failing = {"ent1", "ent2", "ent3"}

        def cb(eid: str, _job: object) -> None:
            if eid in failing:
                raise Retry(f"503 Service Unavailable for {eid}")

        await q.process_next_chunk(cb)
        (group,) = await q.group_errors(job.id)
        assert (group.count, group.entities) == (3, 3)
        failing = {"ent1"}
        clock.advance(3600)
        await _drain(q, cb)
        (group,) = await q.group_errors(job.id)
        assert (group.count, group.entities) == (2, 1)  # ent1's two attempts, not yet resolved
        (everything,) = await q.group_errors(job.id, include_resolved=True)
        assert (everything.count, everything.entities) == (4, 3)


async def test_rebuild_regroups_stored_rows_as_the_migration_does(db_url: str) -> None:
    from chunkq.core.error_groups import rebuild

    async with Queue(db_url, breaker_chunks=10**6) as q:
        job = await _job(q, [f"s-{i:06d}" for i in range(200)], chunk_size=50)
        await _drain(q, four_bugs)
        live = sorted((g.count, g.entities, g.message) for g in await q.group_errors(job.id))
        async with q.engine.begin() as conn:
            await conn.execute(s.errors.update().where(s.errors.c.job_id == job.id).values(fingerprint=None))
            made = await conn.run_sync(lambda c: rebuild(c, job.id, batch=37))
        assert made >= 4
        assert sorted((g.count, g.entities, g.message) for g in await q.group_errors(job.id)) == live


def test_migration_0009_groups_the_errors_a_0_1_0_database_logged(db_url: str, tmp_path) -> None:
    """Stored errors get a group in the upgrade (``rebuild``): every row counted, every row found by its group."""
    import asyncio

    from chunkq.core import upgrade_schema

    from tests.migrations.support import legacy_db, rows_of

    url = legacy_db(db_url, tmp_path)
    before = rows_of(url)["chunkq_errors"]
    assert before
    asyncio.run(upgrade_schema(url))

    async def read() -> None:
        async with Queue(url, readonly=True) as q:
            for job_id in sorted({r["job_id"] for r in before}):
                rows = [r for r in before if r["job_id"] == job_id]
                page = await q.error_group_page(job_id, include_resolved=True, limit=1000)
                assert sum(g.count for g in page.groups) == len(rows) and page.total == len(page.groups)
                listed = [e.id for g in page.groups
                          for e in await q.list_errors(job_id, fingerprint=g.fingerprint, limit=1000)]
                assert sorted(listed) == sorted(r["id"] for r in rows)

    asyncio.run(read())
