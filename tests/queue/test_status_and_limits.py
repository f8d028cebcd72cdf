"""The status type, the limits, and ``InvalidInput.field`` for every validated input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from chunkq.core import (
    ACTIVE_STATUSES,
    CANCELLED,
    COMPLETE,
    FAILED,
    FINISHED_STATUSES,
    PAUSED,
    PENDING,
    RUNNING,
    STATUSES,
    InvalidInput,
    Processor,
    ProcessorOptions,
    Queue,
    Status,
    limits,
)
from chunkq.core.status import DISPLAY_ORDER, rank

from .test_leases import enqueue

# --------------------------------------------------------------------------- Status


def test_status_ranks_put_live_work_first_then_what_needs_a_person_then_history() -> None:
    assert [s.value for s in DISPLAY_ORDER] == ["running", "pending", "paused", "failed", "complete", "cancelled"]
    assert [s.rank for s in DISPLAY_ORDER] == list(range(6))
    assert Status.by_rank() == DISPLAY_ORDER
    assert sorted(["complete", "pending", "failed", "running"], key=rank) == [
        "running", "pending", "failed", "complete"]
    assert rank("bogus") == 6  # an unknown status sorts last instead of crashing a list


def test_status_knows_active_and_finished() -> None:
    assert [s for s in Status if s.is_active] == [PENDING, RUNNING] == list(ACTIVE_STATUSES)
    assert [s for s in Status if s.is_finished] == [COMPLETE, FAILED, CANCELLED] == list(FINISHED_STATUSES)
    assert not PAUSED.is_active and not PAUSED.is_finished


def test_old_string_constants_are_the_status_members() -> None:
    assert PENDING is Status.PENDING and PENDING == "pending" and "pending" in ACTIVE_STATUSES
    assert {"pending": 1}[Status.PENDING] == 1 and {Status.RUNNING: 2}["running"] == 2
    assert f"{RUNNING}" == str(RUNNING) == "running"
    assert json.dumps({"s": FAILED}) == '{"s": "failed"}'
    assert STATUSES == (PENDING, RUNNING, PAUSED, COMPLETE, FAILED, CANCELLED)  # click's choices keep their order


def test_status_parse_names_the_field() -> None:
    assert Status.parse("paused") is PAUSED
    with pytest.raises(InvalidInput, match="unknown status 'done'; expected one of pending, running") as err:
        Status.parse("done")
    assert err.value.field == "status"


async def test_list_jobs_orders_by_status_rank_then_newest(queue: Queue) -> None:
    jobs = {name: await enqueue(queue, 2, name=name) for name in
            ("complete", "cancelled", "pending-old", "paused", "failed", "running", "pending-new")}
    await queue.process_next_chunk()  # would run the first pending job; redo the statuses by hand below
    for name, job in jobs.items():
        if name == "complete":
            while (await queue.get_job(job.id)).status != COMPLETE:
                await queue.process_chunk(job.id)
        elif name == "cancelled":
            await queue.cancel(job.id)
        elif name == "paused":
            await queue.pause(job.id)
        elif name == "failed":
            await queue.process_chunk(job.id, _fail_job)
        elif name == "running":
            assert await queue.claims.claim(job.id) is not None
    listed = await queue.list_jobs()
    statuses = [j.status for j in listed]
    assert statuses == sorted(statuses, key=lambda s: s.rank), statuses
    assert [j.name for j in listed if j.status == PENDING] == ["pending-new", "pending-old"]
    assert all(isinstance(j.status, Status) for j in listed) and listed[0].status.rank == 0
    assert listed[0].to_dict()["status"] == "running" and type(listed[0].to_dict()["status"]) is str


def _fail_job(entity_id: str, _job: Any) -> None:
    from chunkq.core import JobFailed

    raise JobFailed("bad key")


# --------------------------------------------------------------------------- limits


def test_int_limit_bounds_type_and_message() -> None:
    lim = limits.CHUNK_SIZE
    assert (lim.lo, lim.hi, lim.default) == (1, 10_000, 50)
    assert lim.check(1) == 1 and lim.check(10_000) == 10_000
    for bad, message in [(0, "between 1 and 10,000, got 0"), (10_001, "got 10,001"), (2.5, "whole number"),
                         ("50", "whole number, got '50'"), (True, "whole number")]:
        with pytest.raises(InvalidInput, match=message) as err:
            lim.check(bad)
        assert err.value.field == "chunk_size"
    assert limits.MAX_ERRORS.check_optional(None) is None


def test_float_limit_open_bounds_and_nan() -> None:
    ratio = limits.MAX_ERROR_RATIO
    assert ratio.check(1) == 1.0 and ratio.check(0.01) == 0.01
    for bad in (0, 1.01, math.nan, math.inf, True, "0.5"):
        with pytest.raises(InvalidInput, match=r"max_error_ratio must be a fraction in \(0, 1\]") as err:
            ratio.check(bad)
        assert err.value.field == "max_error_ratio"
    assert limits.POLL_INTERVAL.check(0.01) == 0.01  # a closed lower bound
    with pytest.raises(InvalidInput):
        limits.POLL_INTERVAL.check(0.009)
    # capped at a day: 1e308 s overflowed a datetime and a thread's wait (issue 24)
    assert limits.TIMEOUT.check(86_400) == 86_400.0
    for huge in (86_400.5, 10**9, 1e308, 10**400):
        with pytest.raises(InvalidInput, match="at most 86,400"):
            limits.TIMEOUT.check(huge)


def test_text_limit_required_optional_and_length() -> None:
    assert limits.PROVIDER.check("  p  ") == "p"
    assert limits.NAME.check("   ") is None and limits.NAME.check(None) is None
    assert limits.NAME.check("x" * 200) == "x" * 200
    with pytest.raises(InvalidInput, match="name must be at most 200 characters"):
        limits.NAME.check("x" * 201)
    with pytest.raises(InvalidInput, match="provider is required"):
        limits.PROVIDER.check(None)


def test_job_settings_registry_covers_every_checked_enqueue_argument() -> None:
    assert set(limits.JOB_SETTINGS) == {"entity_type", "provider", "name", "chunk_size", "priority", "max_workers",
                                         "max_attempts", "max_errors", "max_error_ratio"}
    assert all(name == lim.field for name, lim in limits.JOB_SETTINGS.items())


@pytest.mark.parametrize(
    ("value", "number", "reason"),
    [(5, 2, "is int 5, not a string"), ("  ", 2, "is blank"), ("a\x00b", 2, "contains a NUL byte"),
     ("x" * 2049, 2, "is 2,049 characters long; the limit is 2,048"),
     ("bad\udcff", 2, "is not valid UTF-8 text (a lone surrogate U+DCFF at position 4)"),
     ("a\x1bb", 2, "contains a control character (U+001B at position 2)")],
)
def test_entity_id_errors_carry_field_number_and_reason(value: object, number: int, reason: str) -> None:
    with pytest.raises(InvalidInput) as err:
        [limits.clean_entity_id(v, i) for i, v in enumerate(["ok", value], 1)]
    e = err.value
    assert (e.field, e.number, e.reason) == ("entity_ids", number, reason)
    assert str(e) == f"entity ID #{number} {reason}"


# --------------------------------------------------------------------------- InvalidInput.field, input by input

ENQUEUE_CASES = [
    ({"entity_type": " "}, "entity_type", "entity_type is required"),
    ({"provider": None}, "provider", "provider is required"),
    ({"chunk_size": 0}, "chunk_size", "chunk_size must be between 1 and 10,000"),
    ({"priority": 10**9}, "priority", "priority must be between"),
    ({"max_workers": 0}, "max_workers", "max_workers must be between"),
    ({"max_attempts": 101}, "max_attempts", "max_attempts must be between"),
    ({"max_errors": -1}, "max_errors", "max_errors must be between"),
    ({"max_error_ratio": 2.0}, "max_error_ratio", "max_error_ratio must be a fraction"),
    ({"name": "x\x00"}, "name", "name contains a NUL byte"),
    ({"name": 7}, "name", "name must be a string"),
    ({"params": ["x"]}, "params", "params must be a JSON object"),
    ({"params": {"x": math.nan}}, "params", "params must be plain JSON"),
    ({"entity_ids": "abc"}, "entity_ids", "not a single string"),
    ({"entity_ids": 7}, "entity_ids", "must be a list of strings, got int"),
    ({"entity_ids": []}, "entity_ids", "no entity IDs"),
    ({"entity_ids": lambda: iter([])}, "entity_ids", "no entity IDs"),  # a stream: made fresh per run
    ({"entity_ids": ["a", ""]}, "entity_ids", "entity ID #2 is blank"),
    ({"entity_ids": lambda: (x for x in ["a", "b", 3])}, "entity_ids", "entity ID #3 is int"),
]


@pytest.mark.parametrize(("kwargs", "field", "message"), ENQUEUE_CASES)
async def test_enqueue_errors_name_their_field(queue: Queue, kwargs: dict[str, Any], field: str, message: str) -> None:
    args: dict[str, Any] = {"entity_ids": ["a"], "entity_type": "company", "provider": "p", **kwargs}
    ids = args.pop("entity_ids")
    with pytest.raises(InvalidInput, match=message) as err:
        await queue.enqueue_job(ids() if callable(ids) else ids, **args)
    assert err.value.field == field
    assert await queue.count_jobs() == 0


async def test_read_and_control_errors_name_their_field(queue: Queue) -> None:
    cases = [
        (lambda: queue.list_jobs(status="done"), "status"),
        (lambda: queue.list_jobs(limit=-1), "limit"),
        (lambda: queue.list_jobs(offset=-1), "offset"),
        (lambda: queue.list_errors(1, limit=2_000_000), "limit"),
        (lambda: queue.count_jobs(["pending", "bogus"]), "status"),
        (lambda: queue.get_job(0), "job_id"),
        (lambda: queue.pause("7"), "job_id"),  # type: ignore[arg-type]
        (lambda: queue.get_error(-5), "error_id"),
        (lambda: queue.get_error(12345), "error_id"),
        (lambda: queue.next_retry_due(0), "job_id"),
        (lambda: queue.bulk("explode"), "action"),
        (lambda: queue.bulk("pause", status="nope"), "status"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as err:
            await call()
        assert err.value.field == field, (field, str(err.value))


def test_constructor_and_processor_errors_name_their_field(tmp_path: Any) -> None:
    cases = [
        (lambda: Queue(tmp_path / "x.db", lease_seconds=0), "lease_seconds", "lease_seconds must be"),
        (lambda: Queue("mysql://h/db"), "url", "unsupported database 'mysql'"),
        (lambda: Queue("sqlite://"), "url", "in-memory SQLite"),
        (lambda: Processor(concurrency=0), "concurrency", "concurrency must be at least 1"),
        (lambda: Processor(timeout=0), "timeout", "timeout must be a positive number of seconds"),
        (lambda: ProcessorOptions(concurrency=10_001), "concurrency", "concurrency must be between 1 and 10,000"),
        (lambda: ProcessorOptions(timeout=-1), "timeout", "timeout must be a positive number"),
        (lambda: ProcessorOptions(rate_limits={"p": 0}), "rate_limits", "rate for 'p' must be a positive"),
        (lambda: ProcessorOptions(capture_locals="yes"), "capture_locals", "true or false"),  # type: ignore[arg-type]
        (lambda: ProcessorOptions.from_mapping({"speed": 3}), "speed", "unknown processor option 'speed'"),
    ]
    for make, field, message in cases:
        with pytest.raises(InvalidInput, match=message) as err:
            make()
        assert err.value.field == field


async def test_missing_sqlite_folder_names_the_url(tmp_path: Any) -> None:
    with pytest.raises(InvalidInput, match="does not exist") as err:
        await Queue(tmp_path / "missing" / "x.db").open()
    assert err.value.field == "url"
