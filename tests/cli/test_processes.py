"""`chunkq` as real processes: exit codes, overlapping cron runs, signals, deadlines, imports.

Each process is bounded by a timeout; nothing asserts on wall-clock speed. The
processor modules are written into tmp_path, which ``python_env`` puts on the
subprocesses' PYTHONPATH; their callbacks append entity ids to a file opened
with O_APPEND, so counting lines counts calls across processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import (
    CHUNKQ,
    create_db,
    get_job,
    invoke_chunkq,
    list_chunks,
    list_jobs,
    log_lines,
    one_line_error,
    popen_chunkq,
    run_async,
    run_chunkq,
)

pytestmark = pytest.mark.slow


def enqueue(db: str, n: int, cwd: Path, *extra: str) -> int:
    """Set-up, not under test: `chunkq enqueue` in this process (a real one costs a second or two)."""
    data = "".join(f"e{i}\n" for i in range(n)).encode()
    res = invoke_chunkq(["--db", db, "enqueue", "-", "-t", "company", "-p", "p", *extra], cwd, input=data)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"process exited early ({proc.returncode}): {err.decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path.name} never appeared")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"process did not exit in {timeout}s: {err.decode()}")
    return proc.returncode, out.decode(), err.decode()


# ---------------------------------------------------------------------- exit codes and bad input


def test_exit_codes(env: dict[str, str], tmp_path: Path, sqlite_url: str,
                    write_processor: Callable[[str], str]) -> None:
    create_db(sqlite_url)
    ok = run_chunkq(["--db", sqlite_url, "process", "--processor", "chunkq.core.demo:enrich"], env, tmp_path)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "0 chunks, 0 entities done" in ok.stdout and "nothing left to do" in ok.stdout

    usage = run_chunkq(["--db", sqlite_url, "process", "--bogus"], env, tmp_path)
    assert usage.returncode == 2
    assert "No such option '--bogus'" in one_line_error(usage.stderr)

    # One real process per exit status (0, 2, 1); the other checks run the same `cli.main` in this process.
    config = invoke_chunkq(["--db", sqlite_url, "process", "--processor", "nowhere_mod:fn"], tmp_path)
    assert config.returncode == 2
    assert "no module named 'nowhere_mod'" in one_line_error(config.stderr)

    # Something no per-entity error handler can take (an async callback cancelling its own task;
    # raising CancelledError itself is just that entity's error) is an unexpected failure: exit 1,
    # one line, the traceback only with -v.
    mod = write_processor("""
        import asyncio
        async def fn(entity_id, job):
            asyncio.current_task().cancel()
            await asyncio.sleep(0)
    """)
    job_id = enqueue(sqlite_url, 3, tmp_path)
    crash = run_chunkq(["--db", sqlite_url, "process", "--processor", f"{mod}:fn"], env, tmp_path)
    assert crash.returncode == 1
    assert "unexpected CancelledError" in one_line_error(crash.stderr)
    assert "run with -v for the traceback" in crash.stderr
    verbose = invoke_chunkq(["--db", sqlite_url, "-v", "process", "--processor", f"{mod}:fn"], tmp_path)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    job = get_job(sqlite_url, job_id)
    assert (job.processed_count, job.leased_chunks) == (0, 1)  # the chunk's lease was released for a redo
    assert all(c.lease_expires_at is not None and c.lease_expires_at.timestamp() == 0
               for c in list_chunks(sqlite_url, job_id) if c.state == "leased")


@pytest.mark.parametrize("args", [["jobs"], ["--json", "jobs"], ["history"]])
def test_a_reader_that_went_away_ends_the_command_quietly_with_141(
    env: dict[str, str], tmp_path: Path, sqlite_url: str, args: list[str],
) -> None:
    """``chunkq jobs | head -1``: the status was 1 (an unexpected failure, with nothing said) or 0, by
    whether the rows fit the pipe's buffer before ``head`` exited. The pipe's read end is closed before
    the process starts here, so every write fails: the same every run."""
    import os

    enqueue(sqlite_url, 3, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([*CHUNKQ, "--db", sqlite_url, *args], env=env, cwd=tmp_path, stdout=write_end,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr.decode()) == (128 + signal.SIGPIPE, "")


BAD = [
    (["enqueue", "empty.txt"], "no entity IDs"),
    (["enqueue", "blank.txt"], "no entity IDs"),
    (["enqueue", "missing.txt"], "cannot read 'missing.txt': No such file or directory"),
    (["enqueue", "latin1.txt"], "latin1.txt, line 2: byte 0xe9 at column 4 is not valid UTF-8"),
    (["enqueue", "late-bad.txt"], "late-bad.txt, line 20001: the ID contains a NUL byte"),
    (["enqueue", "c.csv", "--format", "csv", "--column", "url"], "c.csv has no column 'url'; its columns are"),
    (["enqueue", "c.csv", "--format", "csv"], "c.csv has 2 columns ('name', 'domain'); pick one with --column"),
    (["enqueue", "ok.txt", "--chunk-size", "0"], "Invalid value for '--chunk-size': 0 is not in the range"),
    (["enqueue", "ok.txt", "--chunk-size", "10001"], "'--chunk-size': 10001 is not in the range"),
    (["enqueue", "ok.txt", "--priority", "1000001"], "'--priority': 1000001 is not in the range -1000000<=x<=1000000"),
    (["enqueue", "ok.txt", "--priority", "high"], "'--priority': 'high' is not a valid integer"),
    (["enqueue", "ok.txt", "--entity-type", " "], "entity_type is required"),
    (["enqueue", "ok.txt", "--max-attempts", "0"], "'--max-attempts'"),
    (["enqueue", "j.jsonl", "--format", "jsonl"], "j.jsonl, line 2: not valid JSON"),
]


#: the cases in BAD also run as real `chunkq` processes: a file that cannot be read, a bad line deep
#: in a large file, and a usage error (click's own, turned into one line by `cli.main`)
REAL_PROCESS_CASES = (
    ["enqueue", "missing.txt"], ["enqueue", "late-bad.txt"], ["enqueue", "ok.txt", "--chunk-size", "0"],
)


def test_every_bad_input_exits_2_with_one_line_and_creates_nothing(
    env: dict[str, str], tmp_path: Path, sqlite_url: str,
) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n \n\t\n")
    (tmp_path / "latin1.txt").write_bytes(b"acme\ncaf\xe9\n")
    (tmp_path / "late-bad.txt").write_bytes(b"".join(b"id-%d\n" % i for i in range(20_000)) + b"bad\x00id\n")
    (tmp_path / "c.csv").write_text("name,domain\nAcme,acme.com\n")
    (tmp_path / "ok.txt").write_text("a\nb\n")
    (tmp_path / "j.jsonl").write_text('"a"\n{oops\n')
    failures = []
    for args, message in BAD:
        full = ["--db", sqlite_url, *args]
        if "--entity-type" not in args:
            full += ["--entity-type", "company"]
        # Every case through the same `cli.main` in this process; a few (a usage error, a file that
        # cannot be read, a bad line deep in a file) also as real processes, for the real exit path.
        runs = [invoke_chunkq([*full, "--provider", "p"], tmp_path)]
        if args in REAL_PROCESS_CASES:
            runs.append(run_chunkq([*full, "--provider", "p"], env, tmp_path))
        for res in runs:
            if res.returncode != 2 or res.stdout or message not in one_line_error(res.stderr):
                failures.append((args, res.returncode, res.stdout, res.stderr))
    assert failures == []
    assert list_jobs(sqlite_url) == []


def test_unknown_job_ids_exit_2(env: dict[str, str], tmp_path: Path, sqlite_url: str) -> None:
    create_db(sqlite_url)
    for command in (["show", "77"], ["errors", "77"], ["cancel", "77"], ["retry", "77"],
                    ["process", "--job", "77", "--processor", "chunkq.core.demo:enrich"]):
        # one real process for the exit path; the others run the same `cli.main` in this process
        run = run_chunkq if command[0] == "show" else lambda a, e, c: invoke_chunkq(a, c)
        res = run(["--db", sqlite_url, *command], env, tmp_path)
        assert res.returncode == 2, command
        assert one_line_error(res.stderr) == "Error: no job with id 77"


# ---------------------------------------------------------------------- cron: overlapping runs

SHARED = """
import glob
def work(entity_id, job):
    # The first call in each process waits until two processes hold a chunk: the runs really overlap.
    global _seen
    if not globals().get("_seen"):
        _seen = True
        open(LOG + f".started-{os.getpid()}", "w").close()
        deadline = time.monotonic() + 30
        while len(glob.glob(LOG + ".started-*")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(0.002)
    record(entity_id)
    if entity_id.endswith("7"):
        raise ValueError("bad id")
"""


def test_overlapping_process_runs_finish_every_entity_exactly_once(
    db_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    mod = write_processor(SHARED)
    n = 600
    job_id = enqueue(db_url, n, tmp_path, "--chunk-size", "20", "--max-workers", "4")
    args = ["--db", db_url, "process", "--until-empty", "--processor", f"{mod}:work", "--json"]
    procs = [popen_chunkq(args, env, tmp_path) for _ in range(2)]
    results = [finish(p, timeout=90) for p in procs]
    summaries = []
    for code, out, err in results:
        assert code == 0, err
        summaries.append(json.loads(out))
    assert all(s["chunks"] > 0 for s in summaries), "both runs must have done part of the work"
    assert sum(s["entities"] for s in summaries) == n
    assert sum(s["errors"] for s in summaries) == 60
    assert sum(s["jobs_completed"] == [job_id] for s in summaries) == 1
    calls = Counter(log_lines(tmp_path, mod))
    assert len(calls) == n and set(calls.values()) == {1}, "every entity processed exactly once"
    job = get_job(db_url, job_id)
    assert (job.status, job.processed_count, job.succeeded_count, job.failed_count) == ("complete", n, 540, 60)


# ---------------------------------------------------------------------- worker and signals

SLOW = """
def slow(entity_id, job):
    if not os.path.exists(LOG + ".started"):
        open(LOG + ".started", "w").close()
    time.sleep(0.1)
    record(entity_id)
"""


def test_worker_first_sigterm_commits_the_chunk_in_flight(
    db_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    mod = write_processor(SLOW)
    job_id = enqueue(db_url, 40, tmp_path, "--chunk-size", "10")
    proc = popen_chunkq(["--db", db_url, "worker", "--processor", f"{mod}:slow", "--poll-interval", "0.1",
                         "--json"], env, tmp_path)
    wait_for(tmp_path / f"{mod}.log.started", proc)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == {"chunks", "entities", "errors", "retried", "discarded", "jobs_completed", "elapsed",
                            "stopped_by"}
    assert summary["stopped_by"] == "signal" and summary["chunks"] >= 1
    assert "SIGTERM: finishing the chunk in flight" in err
    # The chunk in flight when the signal came was finished and committed; no other was started after it.
    job = get_job(db_url, job_id)
    assert job.processed_count == 10 * summary["chunks"] == summary["entities"] < 40
    assert (job.leased_chunks, job.status) == (0, "pending")
    assert [c.state for c in list_chunks(db_url, job_id)] == ["done"] * summary["chunks"]
    assert len(log_lines(tmp_path, mod)) == job.processed_count


def test_worker_second_signal_gives_the_chunk_up(
    sqlite_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    mod = write_processor(SLOW)
    job_id = enqueue(sqlite_url, 20, tmp_path, "--chunk-size", "20")
    proc = popen_chunkq(["--db", sqlite_url, "worker", "--processor", f"{mod}:slow", "--json"], env, tmp_path)
    wait_for(tmp_path / f"{mod}.log.started", proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 128 + signal.SIGINT, err
    assert json.loads(out)["stopped_by"] == "aborted"
    assert "giving up the chunk in flight" in err
    job = get_job(sqlite_url, job_id)
    assert job.processed_count == 0 and job.status in ("pending", "running")
    # The lease was released, so the next run redoes the chunk at once instead of waiting 30 s.
    redo = run_chunkq(["--db", sqlite_url, "process", "--until-empty", "--processor", "chunkq.core.demo:enrich",
                       "--json"], env, tmp_path)
    assert redo.returncode == 0, redo.stderr
    assert json.loads(redo.stdout)["entities"] == 20
    assert get_job(sqlite_url, job_id).status == "complete"


def test_process_max_seconds_starts_no_chunk_after_the_deadline(
    db_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    mod = write_processor("""
        def slow(entity_id, job):
            time.sleep(0.2)
            record(entity_id)
    """)
    job_id = enqueue(db_url, 50, tmp_path, "--chunk-size", "2")
    res = run_chunkq(["--db", db_url, "process", "--max-seconds", "1", "--processor", f"{mod}:slow", "--json"],
                     env, tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    # Each chunk sleeps >= 0.4 s, so chunk 4 could only start after >= 1.2 s: past the deadline.
    assert summary["stopped_by"] == "max_seconds"
    assert 1 <= summary["chunks"] <= 3
    job = get_job(db_url, job_id)
    assert job.processed_count == 2 * summary["chunks"] and job.leased_chunks == 0
    assert all(c.state == "done" for c in list_chunks(db_url, job_id))
    assert len(log_lines(tmp_path, mod)) == job.processed_count


async def _registered(url: str) -> list[Any]:
    from chunkq.core import Queue

    async with Queue(url) as q:
        return await q.list_workers(include_stopped=True)


def test_worker_max_seconds_finishes_its_chunk_unregisters_and_exits_0(
    db_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    """A long-running worker recycled by its process manager: after --max-seconds it claims no more,
    commits what it holds, marks itself stopped in the registry and exits 0 (issue 30)."""
    mod = write_processor("""
        def slow(entity_id, job):
            time.sleep(0.2)
            record(entity_id)
    """)
    job_id = enqueue(db_url, 60, tmp_path, "--chunk-size", "2")
    proc = popen_chunkq(["--db", db_url, "worker", "--max-seconds", "1.5", "--poll-interval", "0.1",
                         "--processor", f"{mod}:slow", "--json"], env, tmp_path)
    code, out, err = finish(proc)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["stopped_by"] == "max_seconds" and summary["chunks"] >= 1
    assert "until 1.5s from now" in err
    job = get_job(db_url, job_id)
    # each chunk takes >= 0.4 s: the worker stopped well before the 30 chunks were done, holding none
    assert job.processed_count == 2 * summary["chunks"] < 60
    assert (job.leased_chunks, job.status) == (0, "pending")
    assert all(c.state == "done" for c in list_chunks(db_url, job_id))
    assert len(log_lines(tmp_path, mod)) == job.processed_count
    [registered] = run_async(_registered(db_url))
    assert registered.kind == "worker" and registered.state == "stopped"


def test_worker_max_seconds_ends_an_idle_worker_and_refuses_bad_values(
    sqlite_url: str, env: dict[str, str], tmp_path: Path,
) -> None:
    create_db(sqlite_url)
    idle = run_chunkq(["--db", sqlite_url, "worker", "--max-seconds", "0.5", "--poll-interval", "60",
                       "--processor", "chunkq.core.demo:enrich", "--json"], env, tmp_path, timeout=60)
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout)["stopped_by"] == "max_seconds"  # the 60 s poll was cut short
    # the refusals are click's parameter checks: the same `cli.main` in this process (a real process's
    # exit path is the idle run above and test_every_bad_input_exits_2_with_one_line_and_creates_nothing)
    for bad in ("0", "-1", "nan", "inf", "1e308", "soon"):
        refused = invoke_chunkq(["--db", sqlite_url, "worker", "--max-seconds", bad,
                                 "--processor", "chunkq.core.demo:enrich"], tmp_path)
        assert refused.returncode == 2, (bad, refused.stderr)
        assert "Invalid value for '--max-seconds'" in one_line_error(refused.stderr)


# ---------------------------------------------------------------------- what headless commands load

IMPORT_CHECK = """
import os, signal, sys, threading
from chunkq.tui.cli import cli
db = sys.argv[1]
codes = []
with open(os.path.join(sys.argv[2], "ids.txt"), "w") as f:
    f.write("a\\nb\\nc\\n")
codes.append(cli.main(["--help"], standalone_mode=False))
codes.append(cli.main(["--db", db, "enqueue", os.path.join(sys.argv[2], "ids.txt"), "-t", "x", "-p", "y"],
                      standalone_mode=False))
codes.append(cli.main(["--db", db, "process", "--processor", "chunkq.core.demo:enrich", "--until-empty"],
                      standalone_mode=False))
codes.append(cli.main(["--db", db, "jobs"], standalone_mode=False))
codes.append(cli.main(["--db", db, "show", "1"], standalone_mode=False))
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
codes.append(cli.main(["--db", db, "worker", "--processor", "chunkq.core.demo:enrich", "--poll-interval", "0.1"],
                      standalone_mode=False))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "starlette", "uvicorn")
               or m.startswith("chunkq.tui."))
print(json.dumps({"codes": codes, "heavy": heavy}) if (json := __import__("json")) else "")
"""


def test_headless_commands_never_import_textual(env: dict[str, str], tmp_path: Path, sqlite_url: str) -> None:
    res = subprocess.run([sys.executable, "-c", IMPORT_CHECK, sqlite_url, str(tmp_path)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0, 0, 0, 0]
    assert report["heavy"] and all(m.startswith(("chunkq.tui.cli", "chunkq.tui.humanize")) for m in report["heavy"])


# ---------------------------------------------------------------------- on a terminal


def run_on_terminal(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run `chunkq` with a pseudo-terminal as stdin/stdout/stderr; returns (status, everything it drew)."""
    import os
    import pty
    import select

    from tests.cli.helpers import CHUNKQ

    master, slave = pty.openpty()
    term_env = {**env, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    term_env.pop("NO_COLOR", None)
    proc = subprocess.Popen([*CHUNKQ, *args], stdin=slave, stdout=slave, stderr=slave, env=term_env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail("process on the terminal did not finish in time")
    finally:
        os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_until_empty_on_a_terminal_draws_a_progress_bar(
    sqlite_url: str, env: dict[str, str], tmp_path: Path,
) -> None:
    # No ID ends in 3: demo.enrich answers some of those "429, retry after 1 s" at random, which only
    # made the run seconds longer (and its length random); the IDs ending in 7 still fail for good.
    ids = [f"e{i}" for i in range(250) if not f"e{i}".endswith("3")][:200]
    res = invoke_chunkq(["--db", sqlite_url, "enqueue", "-", "-t", "company", "-p", "p", "--chunk-size", "20"],
                        tmp_path, input="".join(f"{i}\n" for i in ids))
    assert res.returncode == 0, res.stderr
    code, screen = run_on_terminal(["--db", sqlite_url, "process", "--until-empty", "--processor",
                                    "chunkq.core.demo:enrich", "--concurrency", "8"], env, tmp_path)
    assert code == 0, screen
    assert "━" in screen and "200/200" in screen, screen
    assert "\x1b[" in screen  # colour and cursor control on a terminal ...
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert "process: 1" in text and "200 entities done" in text and "1 job completed (#1)" in text
    plain = run_chunkq(["--db", sqlite_url, "jobs"], env, tmp_path)
    assert "\x1b[" not in plain.stdout  # ... and none in a pipe


def test_untrusted_text_on_a_terminal_is_shown_as_plain_text(
    sqlite_url: str, env: dict[str, str], tmp_path: Path, write_processor: Callable[[str], str],
) -> None:
    """Job names and provider messages with markup and terminal escapes are printed, never interpreted."""
    mod = write_processor("""
        def fail(entity_id, job):
            raise ValueError("\\x1b]2;pwned\\x07 [/x] [b]boom")
    """)
    # set-up in this process (the same commands); what is drawn on the terminal is read from real ones
    res = invoke_chunkq(["--db", sqlite_url, "enqueue", "-", "-t", "[red]co", "-p", "p", "--name", "[/x] [b]import",
                         "--max-attempts", "1"], tmp_path, input=b"a\nb\n")
    assert res.returncode == 0, res.stderr
    res = invoke_chunkq(["--db", sqlite_url, "process", "--until-empty", "--processor", f"{mod}:fail"], tmp_path)
    assert res.returncode == 0, res.stderr
    import re

    for args in (["jobs"], ["show", "1"], ["errors", "1"]):
        code, screen = run_on_terminal(["--db", sqlite_url, *args], env, tmp_path)
        assert code == 0, screen
        assert "\x1b]2;" not in screen, f"{args}: a provider message retitled the terminal"
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
        if args == ["jobs"]:
            assert "[/x] [b]import" in text and "[red]co" in text, text
        elif args == ["errors", "1"]:  # the message, its escape made visible
            assert "\\x1b]2;pwned\\x07 [/x] [b]boom" in text, text
        else:  # the group's normalised message (the number is a placeholder), its escape made visible
            assert "\\x1b]<n>;pwned\\x07 [/x] [b]boom" in text, text
        if args == ["show", "1"]:
            assert "[/x] [b]import" in text and "[red]co via p" in text and "max 1 worker at once" in text, text
