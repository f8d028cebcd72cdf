"""Numbers and search texts at every door: refused with exit 2 / 422 naming the field, never exit 1.

Issue 24, finding 7: ``--lease-seconds 1e308`` exited 1 with an OverflowError,
``--max-seconds nan`` blamed the database, and a 100,000-character search reached
SQLite as a LIKE pattern ("pattern too complex": HTTP 503, a database error in
the CLI). Every numeric option now goes through core's ``IntLimit.parse`` /
``FloatLimit.parse`` (``core/bounds.py``) and every search through
``limits.check_search`` (``sql.contains_pattern``). The bulk of the option surface
runs in-process (click's CliRunner, hypothesis); a few real processes prove the
exit status and that nothing was touched.
"""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import InvalidInput, Processor, ProcessorOptions, Queue, limits
from chunkq.tui.cli import cli
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.helpers import run_chunkq
from tests.http.helpers import AUTH, TOKEN
from tests.reliability._support import SOAK

TOO_LONG = "a" * 100_000

# ---------------------------------------------------------------------- search


async def _seed(url: str) -> tuple[int, int]:
    async with Queue(url) as q:
        a = await q.enqueue_job(["x_1", "x%2", "y"], entity_type="co", provider="p", name="50%_off")
        b = await q.enqueue_job(["z"], entity_type="co", provider="p", name="50xxoff")

        def fail(entity_id: str, job: Any) -> None:
            raise ValueError(f"quota 100% used for {entity_id}")

        await q.process_chunk(a.id, Processor(on_process=fail))
        return a.id, b.id


async def test_search_is_bounded_and_literal_in_every_core_call(db_url: str) -> None:
    a, b = await _seed(db_url)
    async with Queue(db_url) as q:
        before = [(j.id, j.status) for j in await q.list_jobs()]
        calls = {
            "list_jobs": lambda s: q.list_jobs(search=s),
            "count_jobs": lambda s: q.count_jobs(search=s),
            "list_errors": lambda s: q.list_errors(a, search=s),
            "group_errors": lambda s: q.group_errors(a, search=s),
            "bulk pause": lambda s: q.bulk("pause", search=s),
        }
        for name, call in calls.items():
            for too_long in (TOO_LONG, "é" * 1001, "%" * 50_000):
                with pytest.raises(InvalidInput, match=r"^search must be at most 1,000 characters, got ") as err:
                    await call(too_long)
                assert err.value.field == "search", name
            # the longest allowed, of 4-byte characters and of characters that need escaping: no database error
            for longest in ("\U0001f600" * limits.SEARCH_LENGTH, "%_\\" * (limits.SEARCH_LENGTH // 3)):
                await call(longest)
        assert [(j.id, j.status) for j in await q.list_jobs()] == before, "a refused bulk action changed jobs"
        # % and _ are matched as themselves in both searches (they were wildcards in the jobs search)
        assert [j.id for j in await q.list_jobs(search="50%")] == [a]
        assert [j.id for j in await q.list_jobs(search="0_O")] == []
        assert {j.id for j in await q.list_jobs(search="OFF")} == {a, b}
        assert [e.entity_id for e in await q.list_errors(a, search="x_")] == ["x_1"]
        assert len(await q.list_errors(a, search="100%")) == 3


@pytest.mark.slow
def test_search_too_long_is_422_over_http(db_url: str) -> None:
    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    a, _b = asyncio.run(_seed(db_url))
    with TestClient(create_app(db_url, None, token=TOKEN), headers=AUTH) as client:
        for route in (f"/jobs/{a}/errors", f"/jobs/{a}/error-groups"):
            r = client.get(route, params={"search": TOO_LONG[:60_000]})  # httpx's URL limit is 64 KiB
            assert r.status_code == 422, (route, r.status_code, r.text[:300])
            assert r.json() == {"error": "search must be at most 1,000 characters, got 60,000"}
            r = client.get(route, params={"search": "100%"})
            assert r.status_code == 200, r.text
        assert len(client.get(f"/jobs/{a}/errors", params={"search": "x_"}).json()["errors"]) == 1


@pytest.mark.slow
def test_search_too_long_is_exit_2_in_the_cli(db_url: str, python_env: dict[str, str], tmp_path: Path) -> None:
    a, _b = asyncio.run(_seed(db_url))
    for argv in (["jobs", "--search", TOO_LONG], ["errors", str(a), "--search", TOO_LONG],
                 ["errors", str(a), "--groups", "--search", TOO_LONG],
                 ["errors", str(a), "--format", "csv", "--search", TOO_LONG]):
        r = run_chunkq(["--db", db_url, *argv], python_env, tmp_path)
        assert r.returncode == 2, (argv[:2], r.returncode, r.stderr[-500:])
        assert r.stderr == "Error: search must be at most 1,000 characters, got 100,000\n", r.stderr[-500:]
        assert r.stdout == "", argv[:2]


# ---------------------------------------------------------------------- numeric options

DAY = 86_400
_ROW = 2**62
PROCESS = ["process", "--until-empty", "--processor", "nope_mod:fn"]
WORKER = ["worker", "--processor", "nope_mod:fn"]
ENQUEUE = ["enqueue", "no-such-ids.txt", "-t", "x", "-p", "y"]
SERVE = ["serve", "--processor", "nope_mod:fn", "--insecure-no-auth"]
#: (command, option, lo, hi, lo_open, whole number): written out here, not read from core, so a bound
#: that moves in core without a decision fails this table
NUMBER_OPTIONS: list[tuple[list[str], str, float, float, bool, bool]] = [
    (PROCESS, "--lease-seconds", 0.3, DAY, False, False),  # under 0.3 s it runs out between renewals
    (PROCESS, "--max-seconds", 0, 366 * DAY, True, False),
    (PROCESS, "--timeout", 0, DAY, True, False),
    (PROCESS, "--heartbeat", 0.05, 3600, False, False),
    (PROCESS, "--max-chunks", 1, _ROW, False, True),
    (PROCESS, "--processes", 1, 256, False, True),
    (WORKER, "--poll-interval", 0.01, 3600, False, False),
    (WORKER, "--lease-seconds", 0.3, DAY, False, False),
    (WORKER, "--prune-every", 1, 7 * DAY, False, False),
    (SERVE, "--body-timeout", 0, 3600, True, False),
    (SERVE, "--timeout", 0, DAY, True, False),
    (ENQUEUE, "--chunk-size", 1, 10_000, False, True),
    (ENQUEUE, "--priority", -1_000_000, 1_000_000, False, True),
    (ENQUEUE, "--max-workers", 1, 1000, False, True),
    (ENQUEUE, "--max-attempts", 1, 100, False, True),
    (ENQUEUE, "--max-errors", 0, _ROW, False, True),
    (ENQUEUE, "--max-error-ratio", 0, 1, True, False),
]
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _acceptable(text: str, lo: float, hi: float, lo_open: bool, whole: bool) -> bool:
    """The spec: ASCII decimal notation, finite, within the range (nothing else: no nan, inf, 1_000, ١٢)."""
    t = text.strip()
    if whole:
        if re.fullmatch(r"[+-]?[0-9]{1,4000}", t) is None:  # longer is out of every range anyway
            return False
        value: float = int(t)
    else:
        if _DECIMAL.fullmatch(t) is None or not math.isfinite(value := float(t)):
            return False
    return (value > lo if lo_open else value >= lo) and value <= hi


_SPECIAL = ["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity", "infinity", "1e308", "1e309", "-1e308",
            "1e-320", "5e-324", "-0", "0", "0.0", "1_000", "١٢", "0x10", " 5 ", "5.", ".5", "", " ", "1e3", "1.5",
            "86400", "86400.0001", "3600", "10000", "10001", "1000000", "4611686018427387904",
            "4611686018427387905", "9" * 40, "1" * 5000, "256", "257", "-1", "1", "0.01", "0.009", "0.05", "0.049",
            "0.3", "0.29", "0.001"]
_VALUES = st.one_of(
    st.sampled_from(_SPECIAL),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e6, max_value=1e8).map(lambda f: f"{f:g}"),
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.text(alphabet="0123456789.eE+-_ ", max_size=12),
)
_RUNNER = CliRunner()


def _invoke(argv: list[str]) -> Any:
    return _RUNNER.invoke(cli, argv, catch_exceptions=True)


@pytest.mark.slow
@settings(max_examples=1000 * SOAK, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(NUMBER_OPTIONS), value=_VALUES)
def test_every_numeric_option_is_exit_2_never_1(tmp_path: Path, case: tuple[Any, ...], value: str) -> None:
    command, option, lo, hi, lo_open, whole = case
    db = f"sqlite:///{tmp_path / 'missing' / 'q.db'}"  # never created: an accepted value fails further on
    result = _invoke(["--db", db, *command, f"{option}={value}"])
    text = result.output
    assert result.exit_code == 2, f"{option}={value!r}: exit {result.exit_code}: {text[-400:]}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text[-600:]
    refused = f"Invalid value for '{option}'" in text
    assert refused != _acceptable(value, lo, hi, lo_open, whole), f"{option}={value!r}: {text}"
    if refused:  # the message says what is allowed (click's own for a whole number's range)
        assert re.search(r"must be (a whole|between|at least|a positive|a fraction)|not (in the range|a valid)",
                         text), text
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(("option", "value", "ok"), [
    ("--concurrency", "nan", False), ("--concurrency", "inf", False), ("--concurrency", "1e3", False),
    ("--concurrency", "10001", False), ("--concurrency", "auto:1e9", False), ("--concurrency", "auto:8", True),
    ("--concurrency", "16", True), ("--rate", "p=1e999/s", False), ("--rate", "p=1e-300/s", False),
    ("--rate", "p=nan/s", False), ("--rate", "p=inf/s", False), ("--rate", "p=2000000/s", False),
    ("--rate", "p=1/h", True), ("--rate", "p=30/m", True),
])
def test_concurrency_and_rate_refuse_what_is_not_a_finite_number(tmp_path: Path, option: str, value: str,
                                                                  ok: bool) -> None:
    result = _invoke(["--db", f"sqlite:///{tmp_path / 'q.db'}", *PROCESS, option, value])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert (f"Invalid value for '{option}'" not in result.output) == ok, result.output


def test_core_refuses_the_same_values_itself() -> None:
    """What a processor module or a front end hands to core directly meets the same limits."""
    for bad in (math.nan, math.inf, 1e308, -1.0, 0):
        with pytest.raises(InvalidInput, match="timeout"):
            Processor(on_process=lambda e, j: None, timeout=bad)
        with pytest.raises(InvalidInput, match="timeout"):
            ProcessorOptions(timeout=bad)
        with pytest.raises(InvalidInput, match="rate"):
            Processor(on_process=lambda e, j: None, rate_limits={"p": bad})
        with pytest.raises(InvalidInput, match="lease_seconds"):
            Queue("sqlite:///unused.db", lease_seconds=bad)
    for too_short in (0.001, 0.29):  # runs out between renewals: a healthy job's chunks counted as lost
        with pytest.raises(InvalidInput, match=r"lease_seconds must be between 0\.3 and 86,400 seconds"):
            Queue("sqlite:///unused.db", lease_seconds=too_short)
    assert Queue("sqlite:///unused.db", lease_seconds=0.3).lease_seconds == 0.3
    for bad in (10**400, 10**30):
        with pytest.raises(InvalidInput, match="max_error_ratio must be a fraction in"):
            limits.MAX_ERROR_RATIO.check(bad)
        with pytest.raises(InvalidInput, match=r"chunk_size must be between 1 and 10,000, got a number of \d+ digits"):
            limits.CHUNK_SIZE.check(bad)


def test_http_numbers_refuse_nan_inf_and_overflow(sqlite_url: str) -> None:
    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    body = '{"entity_ids": ["a"], "entity_type": "t", "provider": "p", %s}'
    with TestClient(create_app(sqlite_url, Processor(on_process=lambda e, j: None), token=TOKEN),
                    headers=AUTH) as client:
        for field, raw in (("max_error_ratio", "1e400"), ("max_error_ratio", "-1e400"), ("chunk_size", "1e308"),
                           ("chunk_size", "1" + "0" * 40), ("max_errors", "1" + "0" * 40),
                           ("params", '{"rate_limit": 1e-300}'), ("params", '{"rate_limit": 1e400}')):
            r = client.post("/jobs", content=body % f'"{field}": {raw}',
                            headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and r.json()["error"].startswith(field), (field, raw, r.text)
            assert len(r.json()["error"]) < 200, r.text
        for query in ("max_seconds=nan", "max_seconds=inf", "max_seconds=1e308", "max_seconds=%D9%A1",
                      "max_seconds=1_0", "max_seconds=-0"):
            r = client.post(f"/jobs/process?{query}")
            assert r.status_code == 422 and r.json()["error"].startswith("max_seconds must be"), (query, r.text)
        for query in ("limit=1e3", "limit=%D9%A1%D9%A2", "limit=1_0", "offset=" + "9" * 40):
            r = client.get(f"/jobs?{query}")
            assert r.status_code == 422 and len(r.json()["error"]) < 200, (query, r.text)
        assert client.get("/jobs").json()["total"] == 0


# ---------------------------------------------------------------------- real processes: the exit status


@pytest.mark.slow
def test_overflowing_and_nan_seconds_are_usage_errors_in_a_real_run(db_url: str, python_env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    (tmp_path / "ok_proc.py").write_text("def fn(entity_id, job):\n    return None\n")

    async def enqueue() -> int:
        async with Queue(db_url) as q:
            return (await q.enqueue_job(["a", "b"], entity_type="t", provider="p")).id

    job_id = asyncio.run(enqueue())
    for option, value in (("--lease-seconds", "1e308"), ("--max-seconds", "nan"), ("--timeout", "inf"),
                          ("--max-seconds", "1e308")):
        r = run_chunkq(["--db", db_url, "process", "--until-empty", "--processor", "ok_proc:fn", option, value],
                       python_env, tmp_path)
        assert r.returncode == 2, (option, value, r.returncode, r.stderr)
        assert re.match(f"Error: Invalid value for '{option}': must be (a positive number of seconds, at most "
                        "|between 0.3 and 86,400 seconds)", r.stderr), r.stderr
        assert len(r.stderr.splitlines()) == 1 and "database" not in r.stderr, r.stderr

    async def job() -> Any:
        async with Queue(db_url) as q:
            return await q.get_job(job_id)

    after = asyncio.run(job())
    assert (after.status, after.processed_count, after.leased_chunks) == ("pending", 0, 0)
