"""`--processes N`: the supervisor as real processes - restart after kill -9, stop on SIGTERM, drain and exit.

Every wait is bounded; nothing asserts on speed. Children are found through
/proc (Linux), and the supervisor's output goes to files, so a chatty child can
never fill a pipe nobody reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from chunkq.core.supervisor import strip_option, time_left

from tests import forkserver
from tests.cli.helpers import CHUNKQ, create_db, get_job, list_chunks, log_lines, one_line_error, run_chunkq

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

CALLBACK = """
def work(entity_id, job):
    time.sleep(0.02)
    record(entity_id)
"""


_SEEN: set[int] = set()


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    found = {int(p) for p in text.split()}
    _SEEN.update(found)
    return found


@pytest.fixture(autouse=True)
def _no_child_outlives_its_test() -> object:
    """A failed assertion or a killed supervisor must not leave a worker running on after the test."""
    _SEEN.clear()
    yield
    for pid in _SEEN:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def until(what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], err: Path,
          timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what}: not within {timeout}s\n{err.read_text()}")
        time.sleep(0.05)


def exit_code(proc: subprocess.Popen[bytes], err: Path, what: str, timeout: float = 60) -> int:
    """The supervisor's exit status once it has ended; killed and failed if it does not ``what`` in time."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the supervisor did not {what}\n{err.read_text()}")


def start(args: list[str], env: dict[str, str], cwd: Path, *, fresh: bool = False,
          ) -> tuple[subprocess.Popen[bytes], Path]:
    """``fresh``: a new interpreter, not a child of the test fork server (``tests/forkserver.py``), for a
    test that reads what only a fresh start has (its command line in /proc)."""
    err = cwd / "supervisor.err"
    with open(cwd / "supervisor.out", "wb") as out, open(err, "wb") as e:
        spawn = subprocess.Popen if fresh else forkserver.popen
        proc = spawn([*CHUNKQ, *args], env=env, cwd=cwd, stdout=out, stderr=e)
    _SEEN.add(proc.pid)
    return proc, err


def enqueue(db: str, n: int, env: dict[str, str], cwd: Path, *extra: str) -> int:
    data = "".join(f"e{i}\n" for i in range(n)).encode()
    res = run_chunkq(["--db", db, "enqueue", "-", "-t", "company", "-p", "p", *extra], env, cwd, input=data)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def test_strip_option() -> None:
    assert strip_option(["--db", "x", "worker", "--processes", "4", "--concurrency", "2"], "--processes") == [
        "--db", "x", "worker", "--concurrency", "2"]
    assert strip_option(["worker", "--processes=4"], "--processes") == ["worker"]


def test_worker_processes_restart_a_killed_child_and_stop_on_sigterm(
    env: dict[str, str], tmp_path: Path, db_url: str, write_processor: Callable[[str], str]
) -> None:
    create_db(db_url)
    mod = write_processor(CALLBACK)
    job = enqueue(db_url, 100_000, env, tmp_path, "--max-workers", "4", "--chunk-size", "20")
    proc, err = start(["--db", db_url, "worker", "--processes", "2", "--processor", f"{mod}:work",
                       "--poll-interval", "0.1"], env, tmp_path)
    try:
        until("two children", lambda: len(children(proc.pid)) == 2, proc, err)
        until("both working", lambda: len(log_lines(tmp_path, mod)) > 0, proc, err)
        first = children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        until("the killed child replaced",
              lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid), proc, err)
        now = children(proc.pid)
        assert len(now - first) == 1, "exactly the killed child was replaced"
        replaced = (now - first).pop()
        until("the new child working", lambda: "restarted: pid" in err.read_text(), proc, err)

        proc.send_signal(signal.SIGTERM)
        code = exit_code(proc, err, "stop on SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 0, text
    assert f"pid {victim}) was killed by SIGKILL; restarting it in" in text
    assert f"restarted: pid {replaced}" in text
    assert "SIGTERM: stopping 2 worker processes" in text
    for pid in now:
        until(f"child {pid} gone", lambda pid=pid: not alive(pid), proc, err, timeout=10)
    # a graceful stop: every entity counted done was called; none was called twice except the chunk
    # the killed child held (redone once its lease expires, or still pending: never lost)
    done = get_job(db_url, job).processed_count
    calls = Counter(log_lines(tmp_path, mod))
    assert done <= len(calls)
    assert max(calls.values()) <= 2


def test_worker_processes_max_seconds_end_every_child_cleanly(
    env: dict[str, str], tmp_path: Path, sqlite_url: str, write_processor: Callable[[str], str]
) -> None:
    """``worker --processes 2 --max-seconds S``: the run's one budget; each child exits 0 when it is
    spent, none is restarted, the supervisor exits 0 and no chunk is left leased (issue 30)."""
    create_db(sqlite_url)
    mod = write_processor(CALLBACK)
    job = enqueue(sqlite_url, 100_000, env, tmp_path, "--max-workers", "4", "--chunk-size", "20")
    proc, err = start(["--db", sqlite_url, "worker", "--processes", "2", "--max-seconds", "2",
                       "--processor", f"{mod}:work", "--poll-interval", "0.1"], env, tmp_path)
    try:
        until("two children", lambda: len(children(proc.pid)) == 2, proc, err)
        code = exit_code(proc, err, "end at --max-seconds")
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.read_text()
    assert code == 0, text
    assert "restarting it" not in text
    assert (tmp_path / "supervisor.out").read_text().count("reached --max-seconds") == 2  # each child's summary
    done = get_job(sqlite_url, job)
    assert 0 < done.processed_count < 100_000 and done.leased_chunks == 0
    assert all(c.state == "done" for c in list_chunks(sqlite_url, job))


def test_process_until_empty_with_processes_drains_the_queue_once(
    env: dict[str, str], tmp_path: Path, db_url: str, write_processor: Callable[[str], str]
) -> None:
    create_db(db_url)
    mod = write_processor(CALLBACK)
    job = enqueue(db_url, 300, env, tmp_path, "--max-workers", "3", "--chunk-size", "10")
    proc, err = start(["--db", db_url, "process", "--until-empty", "--processes", "3",
                       "--processor", f"{mod}:work"], env, tmp_path)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"process --processes 3 did not finish\n{err.read_text()}")
    text = err.read_text()
    assert code == 0, text
    calls = Counter(log_lines(tmp_path, mod))
    assert sorted(calls) == sorted(f"e{i}" for i in range(300)) and set(calls.values()) == {1}
    assert get_job(db_url, job).status == "complete"
    summaries = (tmp_path / "supervisor.out").read_text()
    assert summaries.count("chunkq process:") == 3, "each process reports its own run"


@pytest.mark.parametrize("args, message", [
    (["process", "--processes", "2"], "--processes needs --until-empty"),
    (["process", "--until-empty", "--max-chunks", "3", "--processes", "2"], "--processes needs --until-empty"),
    (["worker", "--processes", "2", "--json"], "--processes cannot be combined with --json"),
    (["worker", "--processes", "0"], "'--processes'"),
    (["worker", "--processes", "two"], "'--processes'"),
    (["worker", "--concurrency", "fast"], "auto"),
    (["worker", "--concurrency", "auto:0"], "auto"),
    (["worker", "--processes", "2", "--processor", "nowhere_mod:fn"], "nowhere_mod"),
])
def test_bad_processes_or_concurrency_is_one_line_and_exit_2(
    env: dict[str, str], tmp_path: Path, sqlite_url: str, args: list[str], message: str
) -> None:
    create_db(sqlite_url)
    full = [*args] if "--processor" in args else [*args, "--processor", "chunkq.core.demo:enrich"]
    res = run_chunkq(["--db", sqlite_url, *full], env, tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in one_line_error(res.stderr)
    assert "started" not in res.stderr, "nothing was started"


def test_concurrency_auto_shows_its_limit_on_each_chunk_line(
    env: dict[str, str], tmp_path: Path, sqlite_url: str, write_processor: Callable[[str], str]
) -> None:
    create_db(sqlite_url)
    mod = write_processor("""
async def work(entity_id, job):
    await asyncio.sleep(0.001)
    record(entity_id)
""")
    enqueue(sqlite_url, 120, env, tmp_path, "--chunk-size", "40")
    res = run_chunkq(["--db", sqlite_url, "process", "--until-empty", "--concurrency", "auto:16",
                      "--processor", f"{mod}:work"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    chunk_lines = [line for line in res.stderr.splitlines() if " chunk " in line and " done, " in line]
    assert len(chunk_lines) == 3
    assert all(", concurrency " in line for line in chunk_lines), chunk_lines
    limits_seen = [int(line.split(", concurrency ")[1].split()[0]) for line in chunk_lines]
    assert all(1 <= n <= 16 for n in limits_seen) and limits_seen[-1] > 4, "grew from 4 without overloads"
    plain = run_chunkq(["--db", sqlite_url, "process", "--processor", f"{mod}:work"], env, tmp_path)
    assert ", concurrency" not in plain.stderr, "a fixed number is not repeated on every line"


def _supervise(code: str, processes: int, **kw: object) -> tuple[int, list[str], object]:
    from chunkq.core.supervisor import Supervisor

    lines: list[str] = []
    sup = Supervisor([sys.executable, "-c", code], processes, backoff_base=0.05,
                     say=lambda level, line: lines.append(line), **kw)  # type: ignore[arg-type]
    return sup.run(), lines, sup


def test_supervisor_exit_statuses_without_a_database() -> None:
    """0 is done (not restarted), 2 stops the others, crashes are restarted up to max_crashes."""
    status, lines, _ = _supervise("pass", 3)
    assert status == 0 and not any("restart" in line for line in lines)

    # child 1 refuses its input at once; child 2 would run for a minute: it is stopped, the status is 2
    code = ("import os, time, sys\n"
            "if os.environ['CHUNKQ_SUPERVISED'] == '1': sys.exit(2)\n"
            "time.sleep(60)")
    t0 = time.monotonic()
    status, lines, _ = _supervise(code, 2)
    assert status == 2 and time.monotonic() - t0 < 30
    assert any("refused its input" in line for line in lines)

    status, lines, _ = _supervise("import sys; sys.exit(5)", 1, max_crashes=3)
    assert status == 5
    assert sum("restarting it in" in line for line in lines) == 3
    assert "3 crashes in a row" not in lines[-1] and "4 crashes in a row, not restarting it" in lines[-1]


def test_supervisor_deadline_is_the_whole_runs_and_exit_4_is_final(tmp_path: Path) -> None:
    """``process --processes N --max-seconds S``: a restarted child gets what is left of S, not S again,
    and a crash when no time is left is final; a child out of time with work left (4) is not restarted."""
    seen = tmp_path / "left.txt"
    code = ("import sys, time\n"
            "from chunkq.core.supervisor import time_left\n"
            f"open({str(seen)!r}, 'a').write(f'{{time_left(None):.3f}} {{time_left(100.0):.3f}}\\n')\n"
            "time.sleep(0.3); sys.exit(5)")
    t0 = time.monotonic()
    # 5 s: room for two children even when each takes 1.5 s to import chunkq (a loaded machine)
    status, lines, _ = _supervise(code, 1, deadline=5.0)
    assert status == 5 and time.monotonic() - t0 < 30
    assert "the run's time is up, not restarting it" in lines[-1]
    left = [tuple(map(float, line.split())) for line in seen.read_text().splitlines()]
    assert len(left) >= 2, "restarted while time was left"
    # the two reads of the clock are a moment apart: equal but for that (1.861 and 1.86 seen)
    assert all(abs(a - b) <= 0.01 and 0 < a <= 5.0 for a, b in left), left
    assert left[-1][0] < left[0][0] - 0.25, "a restarted child gets what is left, not the whole budget"
    assert time_left(7.0) == 7.0, "not supervised: the option as given"

    status, lines, _ = _supervise("import sys; sys.exit(4)", 2)
    assert status == 4 and not any("restarting it in" in line for line in lines)
    assert sum("stopped with work left when its time ran out" in line for line in lines) == 2


GATED = """
GO = os.path.join(os.path.dirname(LOG), "go")

def work(entity_id, job):
    record(f"{os.getpid()} {entity_id}")
    deadline = time.monotonic() + 60
    while not os.path.exists(GO) and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_processes_are_one_worker_to_max_workers(
    env: dict[str, str], tmp_path: Path, db_url: str, write_processor: Callable[[str], str]
) -> None:
    """``--processes 2`` on one job of the default ``max_workers`` 1 runs it in both children (they are
    one worker, their supervisor's team), while an independent worker still waits for that one slot and
    says why it did nothing. Each call blocks until the test lets go: both children hold chunks at once."""
    create_db(db_url)
    mod = write_processor(GATED)
    job = enqueue(db_url, 40, env, tmp_path, "--chunk-size", "5")
    proc, err = start(["--db", db_url, "process", "--until-empty", "--processes", "2",
                       "--processor", f"{mod}:work"], env, tmp_path, fresh=True)
    try:
        until("both children running a chunk of the one job",
              lambda: len({line.split()[0] for line in log_lines(tmp_path, mod)}) == 2, proc, err)
        # forked from the supervisor (chunkq already imported), not executed afresh: its command line
        for pid in children(proc.pid):
            assert "--processes" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        other = run_chunkq(["--db", db_url, "process", "--until-empty", "--json", "--processor", f"{mod}:work"],
                           env, tmp_path)
        assert other.returncode == 0, other.stderr
        summary = json.loads(other.stdout)
        assert (summary["chunks"], summary["stopped_by"]) == (0, "empty")
        assert f"job {job} is at its max_workers (1), held by another worker" in summary["held_back"]
        (tmp_path / "go").touch()
        code = proc.wait(timeout=120)
    finally:
        (tmp_path / "go").touch()
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err.read_text()
    assert get_job(db_url, job).status == "complete"
    chunks = list_chunks(db_url, job)
    owners = Counter(c.worker for c in chunks)
    assert len(owners) == 2 and sum(owners.values()) == 8, owners
    assert len({line.split()[1] for line in log_lines(tmp_path, mod)}) == 40
    plain = run_chunkq(["--db", db_url, "process", "--processor", f"{mod}:work"], env, tmp_path)
    assert "nothing left to do" in plain.stdout and "max_workers" not in plain.stdout
