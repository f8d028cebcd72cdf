"""Every command through click's CliRunner, on a real SQLite file and on PostgreSQL.

Output here is not a terminal, so it is the plain/pipe form: bare ids, tab-
separated tables, timestamped summary lines; ``--json`` is checked for shape.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import ProcessorOptions, Worker
from click.testing import CliRunner, Result

from tests.cli.helpers import create_db, get_job, list_chunks, list_jobs, log_lines, one_line_error

Cli = Callable[..., Result]

JOB_KEYS = {
    "id", "name", "entity_type", "provider", "status", "chunk_size", "priority", "total_count",
    "processed_count", "error_count", "created_at", "updated_at", "started_at", "finished_at", "lease_owner",
    "lease_expires_at", "fail_reason", "parent_id", "max_workers", "succeeded_count", "failed_count",
    "waiting_count", "next_retry_at", "heartbeat_at", "leased_chunks", "max_attempts", "max_errors",
    "max_error_ratio", "params", "processor", "reason_error_id", "released_by", "released_at", "reason",
    "tenant",
}
SUMMARY_KEYS = {"chunks", "entities", "errors", "retried", "discarded", "jobs_completed", "elapsed",
                "stopped_by"}
ERROR_KEYS = {"id", "job_id", "entity_id", "error_type", "message", "traceback", "chunk_index", "attempt",
              "final", "created_at", "resolved_at", "fingerprint", "normalized", "location"}

FAILING = """
def fail_some(entity_id, job):
    record(entity_id)
    if entity_id.endswith("3"):
        raise LookupError(f"no match for {entity_id}")
"""


def doc(result: Result) -> Any:
    """The one JSON document on stdout (json.loads fails on anything extra)."""
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def enqueue(cli: Cli, n: int, *extra: str) -> int:
    data = "".join(f"e{i}\n" for i in range(n))
    result = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", *extra, input=data)
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.strip())


# ---------------------------------------------------------------------- enqueue


def test_enqueue_prints_the_bare_id_for_scripts(cli: Cli, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a\n\n  b  \nc\n")
    result = cli("enqueue", str(path), "--entity-type", "company", "--provider", "clearbit",
                 "--chunk-size", "2", "--priority", "-3", "--name", "batch 1")
    assert result.exit_code == 0, result.stderr
    job_id = int(result.stdout.strip())
    job = get_job(db_url, job_id)
    assert (job.total_count, job.chunk_size, job.priority, job.name, job.entity_type, job.provider) == (
        3, 2, -3, "batch 1", "company", "clearbit")


def test_enqueue_json_shape_and_job_options(cli: Cli, db_url: str) -> None:
    job = doc(cli("enqueue", "-", "-t", "person", "-p", "prospeo", "--max-workers", "3", "--max-attempts",
                  "5", "--max-errors", "10", "--max-error-ratio", "0.25", "--dedupe", "--json",
                  input="x\ny\nx\n"))
    assert set(job) == JOB_KEYS
    assert (job["total_count"], job["max_workers"], job["max_attempts"], job["max_errors"],
            job["max_error_ratio"], job["status"]) == (2, 3, 5, 10, 0.25, "pending")


def test_global_json_flag_works_too(cli: Cli) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli("--json", "jobs")
    assert doc(result) == {"jobs": []}


def test_enqueue_csv_and_jsonl(cli: Cli, db_url: str, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("name,domain\nAcme,acme.com\nBig,big.com\n")
    first = doc(cli("enqueue", str(tmp_path / "c.csv"), "--format", "csv", "--column", "domain",
                    "-t", "company", "-p", "p", "--json"))
    (tmp_path / "j.jsonl").write_text('{"id": "u1"}\n{"id": 2}\n')
    second = doc(cli("enqueue", str(tmp_path / "j.jsonl"), "--format", "jsonl", "--column", "id",
                     "-t", "url", "-p", "p", "--json"))
    assert (first["total_count"], second["total_count"]) == (2, 2)


def test_enqueue_streams_a_generator_not_a_list(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI hands core an iterator, so a huge file is never a huge list (core batches inserts)."""
    from chunkq.core import Queue

    seen: list[type] = []
    real = Queue.enqueue_job

    async def spy(self: Queue, entity_ids: Any, **kw: Any) -> Any:
        seen.append(type(entity_ids))
        return await real(self, entity_ids, **kw)

    monkeypatch.setattr(Queue, "enqueue_job", spy)
    enqueue(cli, 12_000)
    assert seen and not issubclass(seen[0], list | tuple)


BAD_INPUTS = [
    pytest.param([], b"", "no entity IDs", id="empty"),
    pytest.param([], b"\n  \n\n", "no entity IDs", id="only-blank-lines"),
    pytest.param(["missing.txt"], None, "cannot read 'missing.txt'", id="missing-file"),
    pytest.param([], b"a\nb\n\xff\xfe\n", "stdin, line 3: byte 0xff at column 1 is not valid UTF-8",
                 id="not-utf8"),
    pytest.param(["--format", "csv", "--column", "url"], b"name,domain\nx,y\n",
                 "has no column 'url'; its columns are 'name', 'domain'", id="unknown-column"),
    pytest.param(["--chunk-size", "0"], b"a\n", "'--chunk-size': 0 is not in the range", id="chunk-size-0"),
    # click's range is core's limit (limits.PRIORITY), so the bound is found before the file is read
    pytest.param(["--priority", "-2000000"], b"a\n", "'--priority': -2000000 is not in the range -1000000<=x<=1000000",
                 id="priority-out-of-range"),
    pytest.param(["--max-workers", "0"], b"a\n", "'--max-workers'", id="max-workers-0"),
    pytest.param(["--max-error-ratio", "1.5"], b"a\n", "'--max-error-ratio'", id="ratio-above-1"),
    pytest.param(["--format", "xml"], b"a\n", "'--format'", id="unknown-format"),
    pytest.param([], b"a\n" * 12_000 + b"x" * 5000 + b"\n", "stdin, line 12001: the ID is 5,000 characters long",
                 id="bad-line-after-12000-good-ones"),
]


@pytest.mark.parametrize(("args", "data", "message"), BAD_INPUTS)
def test_enqueue_bad_input_exits_2_and_creates_nothing(
    cli: Cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
    data: bytes | None, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    source = [] if args and not args[0].startswith("-") else ["-"]
    result = cli("enqueue", *source, *args, "-t", "company", "-p", "p", input=data)
    assert result.exit_code == 2
    assert message in one_line_error(result.stderr)
    assert result.stdout == ""
    assert list_jobs(db_url) == []


def test_enqueue_missing_required_option_is_one_line(cli: Cli) -> None:
    result = cli("enqueue", "-", "--provider", "p", input="a\n")
    assert result.exit_code == 2
    assert "Missing option '--entity-type'" in one_line_error(result.stderr)


# ---------------------------------------------------------------------- process


def test_process_one_chunk_by_default_then_until_empty(
    cli: Cli, db_url: str, write_processor: Callable[[str], str], tmp_path: Path,
) -> None:
    mod = write_processor(FAILING)
    job_id = enqueue(cli, 25, "--chunk-size", "10")
    first = doc(cli("process", "--processor", f"{mod}:fail_some", "--json"))
    assert set(first) == SUMMARY_KEYS
    assert (first["chunks"], first["entities"], first["stopped_by"]) == (1, 10, "max_chunks")
    rest = cli("process", "--until-empty", "--processor", f"{mod}:fail_some")
    assert rest.exit_code == 0, rest.stderr
    assert "chunkq process: 2 chunks, 15 entities done, 2 errors, 1 job completed (#" in rest.stdout
    assert "nothing left to do" in rest.stdout
    assert f"job {job_id} chunk 1: 10 done" in rest.stderr  # a timestamped log line per chunk
    job = get_job(db_url, job_id)
    assert (job.status, job.processed_count, job.failed_count) == ("complete", 25, 3)
    assert sorted(log_lines(tmp_path, mod)) == sorted(f"e{i}" for i in range(25))


def test_process_nothing_to_do_exits_0(cli: Cli) -> None:
    assert cli("db", "upgrade").exit_code == 0
    summary = doc(cli("process", "--processor", "chunkq.core.demo:processor", "--until-empty", "--json"))
    assert (summary["chunks"], summary["stopped_by"]) == (0, "empty")


def test_process_until_empty_waits_for_due_retries(
    cli: Cli, db_url: str, write_processor: Callable[[str], str],
) -> None:
    mod = write_processor("""
        from chunkq.core import Retry
        def flaky(entity_id, job):
            record(entity_id)
            if entity_id == "e1" and open(LOG).read().count("e1") < 2:
                raise Retry("busy", after=0.3)
    """)
    job_id = enqueue(cli, 3)
    summary = doc(cli("process", "--until-empty", "--processor", f"{mod}:flaky", "--json"))
    assert (summary["chunks"], summary["retried"], summary["jobs_completed"]) == (2, 1, [job_id])
    job = get_job(db_url, job_id)
    assert (job.status, job.succeeded_count, job.waiting_count) == ("complete", 3, 0)


def test_process_job_option_and_max_chunks(cli: Cli, db_url: str) -> None:
    a = enqueue(cli, 30, "--chunk-size", "10")
    b = enqueue(cli, 30, "--chunk-size", "10", "--priority", "5")
    summary = doc(cli("process", "--job", str(a), "--max-chunks", "2", "--processor", "chunkq.core.demo:enrich",
                      "--json"))
    assert (summary["chunks"], summary["stopped_by"]) == (2, "max_chunks")
    assert get_job(db_url, a).processed_count == 20
    assert get_job(db_url, b).processed_count == 0


@pytest.mark.slow
def test_process_rate_and_concurrency_reach_the_processor(
    cli: Cli, db_url: str, write_processor: Callable[[str], str], tmp_path: Path,
) -> None:
    """--concurrency runs entities of a chunk at once; --rate limits calls (tokens live in the database)."""
    mod = write_processor("""
        active = 0
        peak = 0
        async def track(entity_id, job):
            global active, peak
            started = time.monotonic()
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.2)
            active -= 1
            record(f"{entity_id} {peak} {started}")
    """)
    enqueue(cli, 8, "--chunk-size", "8")
    assert cli("process", "--processor", f"{mod}:track", "--concurrency", "4").exit_code == 0
    peaks = [int(line.split()[1]) for line in log_lines(tmp_path, mod)]
    assert max(peaks) == 4
    (tmp_path / f"{mod}.log").unlink()
    enqueue(cli, 6, "--chunk-size", "6")
    result = cli("process", "--processor", f"{mod}:track", "--concurrency", "6", "--rate", "p=10/s")
    assert result.exit_code == 0, result.stderr
    stamps = sorted(float(line.split()[2]) for line in log_lines(tmp_path, mod))
    # 6 calls at 10/s with a burst of 1: the last starts >= 0.5 s after the first.
    assert stamps[-1] - stamps[0] >= 0.45


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no processor: give --processor"),
        (["--processor", "nope_module_q:f"], "no module named 'nope_module_q'"),
        (["--processor", "core.demo"], "must look like 'package.module:function'"),
        (["--processor", "chunkq.core.demo:enrich", "--rate", "p=fast"], "rate 'p=fast': expected PROVIDER=N/s"),
        (["--processor", "chunkq.core.demo:enrich", "--concurrency", "0"], "'--concurrency'"),
        (["--processor", "chunkq.core.demo:enrich", "--timeout", "-1"], "'--timeout'"),
        (["--processor", "chunkq.core.demo:enrich", "--job", "999"], "no job with id 999"),
    ],
)
def test_process_config_errors_exit_2_before_claiming(
    cli: Cli, db_url: str, args: list[str], message: str,
) -> None:
    job_id = enqueue(cli, 5)
    result = cli("process", *args)
    assert result.exit_code == 2
    assert message in one_line_error(result.stderr)
    job = get_job(db_url, job_id)
    assert (job.status, job.processed_count, list_chunks(db_url, job_id)) == ("pending", 0, [])


def test_processor_from_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    job_id = enqueue(cli, 3)
    monkeypatch.setenv("CHUNKQ_PROCESSOR", "chunkq.core.demo:enrich")
    assert doc(cli("process", "--json"))["entities"] == 3
    assert get_job(db_url, job_id).status == "complete"


# ---------------------------------------------------------------------- reading and managing jobs


def _job_with_errors(cli: Cli, write_processor: Callable[[str], str]) -> int:
    mod = write_processor(FAILING)
    job_id = enqueue(cli, 30, "--chunk-size", "10")
    assert cli("process", "--until-empty", "--processor", f"{mod}:fail_some", "-q").exit_code == 0
    assert cli("-q", "jobs").exit_code == 0
    return job_id


def test_jobs_list_filter_and_json(cli: Cli) -> None:
    a = enqueue(cli, 3)
    b = enqueue(cli, 3)
    assert cli("pause", str(a)).exit_code == 0
    listed = doc(cli("jobs", "--json"))
    assert [j["id"] for j in listed["jobs"]] == [b, a]  # active first
    assert all(set(j) == JOB_KEYS for j in listed["jobs"])
    paused = doc(cli("jobs", "--status", "paused", "--json"))
    assert [j["id"] for j in paused["jobs"]] == [a]
    table = cli("jobs", "--limit", "1")
    rows = [line.split("\t") for line in table.stdout.splitlines()]
    assert rows[0][:5] == ["id", "name", "type", "provider", "status"]
    assert len(rows) == 2 and rows[1][0] == str(b)
    bad = cli("jobs", "--status", "done")
    assert bad.exit_code == 2
    assert "'--status'" in one_line_error(bad.stderr)


def test_show_json_has_chunk_summary_and_error_groups(
    cli: Cli, write_processor: Callable[[str], str],
) -> None:
    job_id = _job_with_errors(cli, write_processor)
    shown = doc(cli("show", str(job_id), "--json"))
    assert set(shown) == {"job", "chunks", "error_groups", "error_groups_total"}
    assert shown["error_groups_total"] == 1  # issue 27: how many in all, not only the 20 shown
    assert set(shown["job"]) == JOB_KEYS and shown["job"]["failed_count"] == 3
    assert shown["chunks"]["done"] == 3 and shown["chunks"]["leased"] == 0 and shown["chunks"]["errors"] == 3
    # grouped by fingerprint, the entity's ID normalised away (issue 16), a two-character one ("e3") too
    assert len(shown["error_groups"]) == 1
    assert set(shown["error_groups"][0]) == {
        "fingerprint", "error_type", "message", "location", "count", "entities", "first_at", "last_at", "samples",
        "merged"}
    group = shown["error_groups"][0]
    assert (group["error_type"], group["message"], group["count"], group["entities"]) == (
        "LookupError", "no match for <id>", 3, 3)
    assert group["samples"] == ["no match for e3", "no match for e13", "no match for e23"]
    text = cli("show", str(job_id))
    assert "chunks\t3 done" in text.stdout and "LookupError\tno match for <id>" in text.stdout


def test_errors_table_csv_jsonl_json(cli: Cli, write_processor: Callable[[str], str]) -> None:
    job_id = _job_with_errors(cli, write_processor)
    table = cli("errors", str(job_id))
    assert table.stdout.splitlines()[0].split("\t")[:3] == ["id", "entity_id", "error_type"]
    assert len(table.stdout.splitlines()) == 4
    rows = list(csv.DictReader(io.StringIO(cli("errors", str(job_id), "--format", "csv").stdout)))
    assert sorted(r["entity_id"] for r in rows) == ["e13", "e23", "e3"]
    assert rows[0]["error_type"] == "LookupError"
    lines = cli("errors", str(job_id), "--format", "jsonl", "--limit", "2").stdout.splitlines()
    assert len(lines) == 2 and all(set(json.loads(line)) == ERROR_KEYS for line in lines)
    listed = doc(cli("errors", str(job_id), "--json"))
    assert listed["job_id"] == job_id and len(listed["errors"]) == 3


def test_pause_resume_cancel_and_transitions(cli: Cli, db_url: str) -> None:
    job_id = enqueue(cli, 3)
    paused = cli("pause", str(job_id))
    assert paused.stdout.strip() == f"{job_id}\tpaused"
    resumed = doc(cli("resume", str(job_id), "--json"))
    assert set(resumed) == JOB_KEYS and resumed["status"] == "pending"
    assert doc(cli("cancel", str(job_id), "--json"))["status"] == "cancelled"
    again = cli("resume", str(job_id))
    assert again.exit_code == 2
    assert f"cannot resume job {job_id}: it is cancelled" in one_line_error(again.stderr)


def test_retry_prints_the_new_job_id(cli: Cli, db_url: str, write_processor: Callable[[str], str]) -> None:
    job_id = _job_with_errors(cli, write_processor)
    result = cli("retry", str(job_id))
    assert result.exit_code == 0, result.stderr
    new = get_job(db_url, int(result.stdout))
    assert (new.parent_id, new.total_count) == (job_id, 3)
    assert cli("cancel", str(new.id)).exit_code == 0  # over: a retry of the same failures may be made again
    again = doc(cli("retry", str(job_id), "--json"))
    assert set(again) == JOB_KEYS and (again["parent_id"], again["total_count"]) == (job_id, 3)
    nothing = cli("retry", str(again["id"]))
    assert nothing.exit_code == 2
    assert "no failed entities to retry" in one_line_error(nothing.stderr)


@pytest.mark.parametrize("how", [[], ["--in-place"], ["--json"]])
def test_retry_refuses_while_a_retry_job_of_the_failures_waits(
    cli: Cli, db_url: str, write_processor: Callable[[str], str], how: list[str]
) -> None:
    """A second `chunkq retry 1` (or `retry 1 --in-place`) had every failed entity processed, and billed, twice."""
    job_id = _job_with_errors(cli, write_processor)
    first = int(cli("retry", str(job_id)).stdout)
    before = [(j.id, j.status, j.total_count, j.failed_count, j.waiting_count) for j in list_jobs(db_url)]
    refused = cli("retry", str(job_id), *how)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert one_line_error(refused.stderr) == (f"Error: job {job_id} already has a retry job waiting: job {first} "
                                              "(pending); process or cancel it first")
    assert [(j.id, j.status, j.total_count, j.failed_count, j.waiting_count) for j in list_jobs(db_url)] == before


@pytest.mark.parametrize("command", ["show", "errors", "pause", "resume", "cancel", "retry"])
def test_unknown_job_id_exits_2(cli: Cli, command: str) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli(command, "4242")
    assert result.exit_code == 2
    assert one_line_error(result.stderr) == "Error: no job with id 4242"
    bad = cli(command, "abc")
    assert bad.exit_code == 2
    assert "'abc' is not a valid integer" in one_line_error(bad.stderr)


# ---------------------------------------------------------------------- demo, dashboard, serve


@pytest.fixture
def fake_dashboard(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Stand in for tui.app (its own tests drive the real one with Pilot) and pretend to be a terminal."""
    import types

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    module = types.ModuleType("chunkq.tui.dashboard.app")
    module.run_dashboard = lambda *a, **kw: calls.append((a, kw))  # type: ignore[attr-defined]
    module.DashboardCrashed = type("DashboardCrashed", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chunkq.tui.dashboard.app", module)
    monkeypatch.setattr("chunkq.tui.cli.dashboard._interactive", lambda: True)
    return calls


def test_tui_passes_the_processing_options(cli: Cli, db_url: str, fake_dashboard: list[Any]) -> None:
    assert cli("db", "upgrade").exit_code == 0
    result = cli("tui", "--processor", "chunkq.core.demo:enrich", "--concurrency", "3", "--timeout", "2",
                 "--rate", "clearbit=120/m", "--capture-locals")
    assert result.exit_code == 0, result.stderr
    assert fake_dashboard == [((db_url, "chunkq.core.demo:enrich"), {"options": ProcessorOptions(
        capture_locals=True, rate_limits={"clearbit": 2.0}, concurrency=3, timeout=2.0)})]


OWN_RATE_LIMITS = """
from chunkq.core import Processor
def lookup(entity_id, job):
    record(entity_id)
processor = Processor(on_process=lookup, rate_limits={"clearbit": 5.0})
"""


def test_tui_and_process_merge_rate_with_the_processors_own_limits_alike(
    cli: Cli, write_processor: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`chunkq tui --rate hunter=2/s` used to drop the processor's own {"clearbit": 5}; `process` kept it.

    The dashboard is launched for real (its ``run_dashboard`` builds the app; only the
    terminal loop is left out), and `process` runs its worker for real.
    """
    app_module = pytest.importorskip("chunkq.tui.dashboard.app")
    launched: list[Any] = []
    monkeypatch.setattr(app_module.ChunkqApp, "run", lambda self, *a, **kw: launched.append(self))
    monkeypatch.setattr("chunkq.tui.cli.dashboard._interactive", lambda: True)
    workers: list[Worker] = []

    class RecordingWorker(Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            workers.append(self)

    monkeypatch.setattr("chunkq.tui.cli.processing.Worker", RecordingWorker)
    path = f"{write_processor(OWN_RATE_LIMITS)}:processor"

    assert cli("db", "upgrade").exit_code == 0
    assert cli("tui", "--processor", path, "--rate", "hunter=2/s").exit_code == 0
    (app,) = launched
    enqueue(cli, 1)
    assert cli("process", "--processor", path, "--rate", "hunter=2/s").exit_code == 0
    (worker,) = workers
    both = {"clearbit": 5.0, "hunter": 2.0}
    assert app.processor_handle.processor.rate_limits == worker.processor.rate_limits == both
    app.processor_handle.reload()
    assert app.processor_handle.processor.rate_limits == both, "a reload in the dashboard keeps the rule"


def test_bare_chunkq_opens_the_dashboard(db_url: str, fake_dashboard: list[Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from chunkq.tui.cli import cli as command

    monkeypatch.setenv("CHUNKQ_DB", db_url)
    monkeypatch.setenv("CHUNKQ_PROCESSOR", "chunkq.core.demo:processor")
    create_db(db_url)
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 0, result.stderr
    assert fake_dashboard[0][0] == (db_url, "chunkq.core.demo:processor")


@pytest.mark.slow
def test_demo_seeds_once_then_opens_the_dashboard(
    bare_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dashboard: list[Any],
) -> None:
    cli = bare_cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHUNKQ_DB", str(tmp_path / "my-real-queue.db"))  # never seeded by the demo
    first = doc(cli("demo", "--no-ui", "--json"))
    assert first["seeded"] is True and first["db"] == "chunkq-demo.db"
    assert (tmp_path / "chunkq-demo.db").exists() and not (tmp_path / "my-real-queue.db").exists()
    assert set(first) == {"db", "url", "seeded", "processor", "jobs"}
    assert first["processor"] == "chunkq.core.demo:processor" and all(set(j) == JOB_KEYS for j in first["jobs"])
    assert {j["name"] for j in first["jobs"]} >= {"Fortune 500 companies", "SKU catalogue"}
    again = cli("demo", "--no-ui")
    assert again.exit_code == 0 and again.stdout.startswith("chunkq-demo.db already has jobs; nothing seeded")
    assert "process --until-empty --processor chunkq.core.demo:processor" in again.stderr
    assert "Open the dashboard with 'chunkq demo'" in again.stderr
    other = cli("demo", "--no-ui", "--db", "other.db")  # its own file: the hint opens that one, not the default
    assert other.exit_code == 0 and "Open the dashboard with 'chunkq --db other.db demo'" in other.stderr
    assert fake_dashboard == []
    assert cli("demo").exit_code == 0
    assert fake_dashboard == [(("chunkq-demo.db", "chunkq.core.demo:processor"), {"options": ProcessorOptions()})]
    assert len(list_jobs(str(tmp_path / "chunkq-demo.db"))) == len(first["jobs"])


def test_tui_refuses_a_bad_processor_before_opening(cli: Cli, fake_dashboard: list[Any]) -> None:
    result = cli("tui", "--processor", "chunkq.core.demo:missing")
    assert result.exit_code == 2
    assert "has no attribute 'missing'" in one_line_error(result.stderr)
    assert fake_dashboard == []


def test_tui_without_a_terminal_says_so(cli: Cli) -> None:
    result = cli("tui")
    assert result.exit_code == 2
    assert "needs an interactive terminal" in one_line_error(result.stderr)


def test_serve_is_lazy_and_fails_clearly_when_missing(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from chunkq.tui.cli import cli as command

    monkeypatch.delitem(sys.modules, "chunkq.tui.http", raising=False)
    help_text = cli("--help")
    assert "serve" in help_text.stdout and "HTTP trigger" in help_text.stdout
    assert "chunkq.tui.http" not in sys.modules, "the group's --help must not import the serve module"

    real_import = importlib.import_module

    def no_http(name: str, *a: Any) -> Any:
        if name == "chunkq.tui.http":
            raise ModuleNotFoundError("No module named 'chunkq.tui.http'", name="chunkq.tui.http")
        return real_import(name, *a)

    monkeypatch.setattr(importlib, "import_module", no_http)
    result = CliRunner().invoke(command, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "'chunkq serve' is not available" in one_line_error(result.stderr)


def test_serve_loads_tui_http_serve_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import click
    from chunkq.tui.cli import cli as command

    seen = []
    module = types.ModuleType("chunkq.tui.http")

    @click.command("serve")
    @click.option("--port", type=int)
    def serve_command(port: int) -> None:
        seen.append(port)

    module.serve_command = serve_command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chunkq.tui.http", module)
    result = CliRunner().invoke(command, ["serve", "--port", "8787"])
    assert result.exit_code == 0, result.stderr
    assert seen == [8787]


def test_version_and_help_mention_the_default_db(cli: Cli) -> None:
    from chunkq.tui.cli import cli as command

    version = CliRunner().invoke(command, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("chunkq, version ")
    help_text = CliRunner().invoke(command, ["--help"]).stdout
    assert "default:" in help_text and "chunkq.db" in help_text and "CHUNKQ_DB" in help_text


def test_unknown_command_and_option_are_one_line(cli: Cli) -> None:
    for args in (["frobnicate"], ["jobs", "--colour"]):
        result = cli(*args)
        assert result.exit_code == 2
        assert "--help" in one_line_error(result.stderr)


def test_bad_database_url_exits_2(cli: Cli, tmp_path: Path) -> None:
    for db, message in [
        ("mysql://x/y", "unsupported database 'mysql'"),
        (str(tmp_path / "no" / "such" / "dir" / "q.db"), "no chunkq database at"),
    ]:
        result = cli("jobs", db=db)
        assert result.exit_code == 2
        assert message in one_line_error(result.stderr)
    result = cli("enqueue", "-", "-t", "x", "-p", "y", input="a\n", db=str(tmp_path / "no" / "such" / "q.db"))
    assert result.exit_code == 2
    assert "does not exist" in one_line_error(result.stderr)
