"""`chunkq prune`, `export` and `import`, both backends: what they do, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import Processor, Queue
from chunkq.core.retention import DAY

from tests import forkserver

from .helpers import CHUNKQ, one_line_error

pytestmark = pytest.mark.timeout(300)


def old_jobs(url: str, *specs: tuple[int, float, str]) -> list[int]:
    """One finished job per (entities, days ago, status), its last change that long ago."""
    import time

    now = time.time()

    async def go() -> list[int]:
        ids = []
        for n, days, status in specs:
            async with Queue(url, clock=lambda days=days: now - days * DAY) as q:
                job = await q.enqueue_job([f"x{i}" for i in range(n)], entity_type="t", provider="p",
                                          chunk_size=5, max_attempts=1)

                def cb(eid: str, job: Any) -> None:
                    if eid == "x1":
                        raise ValueError("no such company")

                if status == "cancelled":
                    await q.cancel(job.id)
                else:
                    while (await q.get_job(job.id)).status != "complete":
                        await q.process_chunk(job.id, Processor(cb))
                ids.append(job.id)
        return ids

    return asyncio.run(go())


def job_ids(url: str) -> list[int]:
    async def go() -> list[int]:
        async with Queue(url) as q:
            return sorted(j.id for j in await q.list_jobs(limit=1000))

    return asyncio.run(go())


def test_prune_dry_run_then_prune(cli: Any, db_url: str) -> None:
    ids = old_jobs(db_url, (6, 20, "complete"), (6, 3, "complete"), (4, 20, "cancelled"))
    dry = cli("prune", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["jobs"] == 2 and job_ids(db_url) == ids
    only = cli("prune", "--status", "cancelled", "--json")
    assert json.loads(only.output)["job_ids"] == [ids[2]]
    done = cli("prune")
    assert done.exit_code == 0 and "Pruned 1 finished job" in done.output, done.output
    assert job_ids(db_url) == [ids[1]]
    assert json.loads(cli("prune", "--older-than", "1d", "--json").output)["job_ids"] == [ids[1]]
    assert job_ids(db_url) == []


@pytest.mark.parametrize("args, words", [
    (["--status", "running"], "'running' is not one of"),
    (["--status", "nonsense"], "is not one of"),
    (["--older-than", "-3d"], "cannot be negative"),
    (["--older-than", "nan"], "age like"),
    (["--older-than", "inf"], "age like"),
    (["--older-than", "1e400d"], "age like"),
    (["--older-than", "9999999999w"], "hundred years"),
    (["--older-than", "3 fortnights"], "age like"),
    (["--archive", "/nonexistent/folder"], "does not exist"),
])
def test_bad_input_exits_2_and_deletes_nothing(cli: Any, db_url: str, args: list[str], words: str) -> None:
    ids = old_jobs(db_url, (3, 40, "complete"))
    result = cli("prune", *args)
    assert result.exit_code == 2, result.output
    line = one_line_error(result.output)
    assert words in line, line
    assert job_ids(db_url) == ids


def test_an_archive_folder_that_cannot_be_written(cli: Any, db_url: str, tmp_path: Path) -> None:
    """A file where the folder should be, and a folder this user may not write (run without root's override)."""
    ids = old_jobs(db_url, (3, 40, "complete"))
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    result = cli("prune", "--archive", str(not_a_folder))
    assert result.exit_code == 2 and "not a folder" in one_line_error(result.output)
    assert job_ids(db_url) == ids


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root's file permission override")
def test_a_read_only_archive_folder_as_another_user(db_url: str, tmp_path: Path, env: dict[str, str]) -> None:
    """A 0555 folder, for a process to which file permissions apply: root without its capabilities to
    override them (the same user, so the checkout and its venv stay readable wherever CI clones it)."""
    ids = old_jobs(db_url, (3, 40, "complete"))
    folder = Path(tempfile.mkdtemp(prefix="chunkq-ro-"))
    folder.chmod(0o555)
    drop = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}"] if os.geteuid() == 0 else []
    cmd = [*prefix, *CHUNKQ, "--db", db_url, "prune", "--archive", str(folder)]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        folder.rmdir()
    assert done.returncode == 2, done.stderr
    assert "cannot write into archive folder" in one_line_error(done.stderr)
    assert job_ids(db_url) == ids


def test_prune_archive_then_import_round_trip(cli: Any, db_url: str, tmp_path: Path) -> None:
    ids = old_jobs(db_url, (12, 40, "complete"), (7, 40, "cancelled"))
    shown = {i: json.loads(cli("show", str(i), "--json").output) for i in ids}
    archive = tmp_path / "archive"
    archive.mkdir()
    done = cli("prune", "--archive", str(archive), "--json")
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    assert result["jobs"] == 2 and job_ids(db_url) == []
    files = list(archive.iterdir())
    assert [Path(result["archive"])] == files and files[0].name.endswith(".jsonl.gz")
    with gzip.open(files[0], "rt") as f:
        kinds = [json.loads(line)["type"] for line in f]
    assert kinds.count("job") == 2 and kinds.count("entity") == 19
    imported = cli("import", str(files[0]), "--json")
    assert imported.exit_code == 0, imported.output
    pairs = {p["from"]: p["id"] for p in json.loads(imported.output)["jobs"]}
    assert sorted(pairs) == ids
    for old, new in pairs.items():
        again = json.loads(cli("show", str(new), "--json").output)
        for doc in (again, shown[old]):
            for key in ("id", "reason_error_id", "lease_owner", "lease_expires_at", "heartbeat_at"):
                doc["job"].pop(key)  # a new id; the last lease of a finished job is not kept
        assert again == shown[old]
    # nothing to prune: no empty archive is left behind
    assert cli("prune", "--archive", str(archive), "--older-than", "90d").exit_code == 0
    assert len(list(archive.iterdir())) == 1


def test_export_and_import_commands(cli: Any, db_url: str, tmp_path: Path) -> None:
    ids = old_jobs(db_url, (8, 40, "complete"), (3, 1, "complete"))
    out = tmp_path / "jobs.jsonl"
    done = cli("export", str(ids[0]), str(ids[1]), "-o", str(out))
    assert done.exit_code == 0, done.output
    assert [json.loads(x)["type"] for x in out.read_text().splitlines()].count("job") == 2
    to_stdout = cli("export", "--older-than", "10d")
    assert to_stdout.exit_code == 0
    assert [json.loads(x).get("id") for x in to_stdout.output.splitlines() if '"type":"job"' in x] == [ids[0]]
    again = cli("export", str(ids[0]), "-o", str(out))  # never overwrites
    assert again.exit_code == 2 and "already exists" in one_line_error(again.output)
    imported = cli("import", str(out))
    assert imported.exit_code == 0
    assert [line.split("\t") for line in imported.output.splitlines()] == [[str(ids[0]), str(ids[1] + 1)],
                                                                           [str(ids[1]), str(ids[1] + 2)]]


@pytest.mark.parametrize("args, words", [
    ([], "give job ids or --older-than"),
    (["1", "--older-than", "3d"], "not both"),
    (["--status", "failed"], "give job ids"),
    (["--older-than", "-1d"], "cannot be negative"),
    (["99"], "no job with id 99"),
])
def test_export_bad_input(cli: Any, db_url: str, args: list[str], words: str) -> None:
    old_jobs(db_url, (3, 40, "complete"))
    result = cli("export", *args)
    assert result.exit_code == 2, result.output
    assert words in one_line_error(result.output)


def test_export_refuses_an_active_job_before_writing(cli: Any, db_url: str, tmp_path: Path) -> None:
    done = old_jobs(db_url, (3, 40, "complete"))

    async def active() -> int:
        async with Queue(db_url) as q:
            return (await q.enqueue_job(["a"], entity_type="t", provider="p")).id

    pending = asyncio.run(active())
    out = tmp_path / "x.jsonl"
    result = cli("export", str(done[0]), str(pending), "-o", str(out))
    assert result.exit_code == 2 and "only finished jobs" in one_line_error(result.output)
    assert not out.exists()


def test_import_refuses_a_malformed_file(cli: Any, db_url: str, tmp_path: Path) -> None:
    ids = old_jobs(db_url, (3, 40, "complete"))
    out = tmp_path / "x.jsonl"
    cli("export", str(ids[0]), "-o", str(out))
    lines = out.read_text().splitlines()
    lines[2] = lines[2][:-3]
    out.write_text("\n".join(lines) + "\n")
    result = cli("import", str(out))
    assert result.exit_code == 2
    assert one_line_error(result.output).startswith("Error: line 3: not JSON")
    assert job_ids(db_url) == ids
    missing = cli("import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "no export file" in one_line_error(missing.output)


@pytest.mark.parametrize("kind, values, words", [
    ("job", {"created_at": 1e300}, "line 2: job.created_at must be epoch seconds from 0 to 253,402,300,799"),
    ("error", {"created_at": 1e300}, "error.created_at must be epoch seconds"),
    ("job", {"name": "N\x1b[31mred\rcr"}, "line 2: job.name contains a control character (U+001B at position 2)"),
    ("error", {"entity_id": "x1\x1b"}, "error.entity_id contains a control character"),
])
def test_import_refuses_what_no_queue_writes(cli: Any, db_url: str, tmp_path: Path, kind: str,
                                             values: dict[str, Any], words: str) -> None:
    """A time no reader can show (1e300 seconds: every `jobs`, `show` and `export` failed after it) or a
    label enqueue refuses: exit 2, one line naming the line and the field, nothing imported."""
    ids = old_jobs(db_url, (3, 40, "complete"))
    out = tmp_path / "x.jsonl"
    assert cli("export", str(ids[0]), "-o", str(out)).exit_code == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    next(r for r in records if r["type"] == kind).update(values)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("import", str(out))
    assert result.exit_code == 2, result.output
    assert words in one_line_error(result.output)
    assert job_ids(db_url) == ids
    assert cli("jobs").exit_code == 0 and cli("show", str(ids[0])).exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("retention, pruned", [("default", True), ("off", False)])
def test_a_long_running_worker_prunes_in_the_background(
    db_url: str, tmp_path: Path, env: dict[str, str], write_processor: Any, retention: str, pruned: bool,
) -> None:
    """A real `chunkq worker --prune-every 1`: the 40-day-old job goes, the 3-day-old one stays, while the worker
    keeps processing; `--retention off` prunes nothing."""
    import signal
    import time

    old, recent = old_jobs(db_url, (3, 40, "complete"), (3, 3, "complete"))
    module = write_processor("def go(entity_id, job):\n    record(entity_id)\n")
    proc = forkserver.popen([*CHUNKQ, "--db", db_url, "worker", "--processor", f"{module}:go", "--prune-every", "1",
                             "--retention", retention, "--poll-interval", "0.2", "-v"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def enqueue() -> int:
            async with Queue(db_url) as q:
                return (await q.enqueue_job(["n1", "n2"], entity_type="t", provider="p")).id

        fresh = asyncio.run(enqueue())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = job_ids(db_url)
            if old not in left or (not pruned and time.monotonic() > deadline - 55):
                break
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    left = job_ids(db_url)
    assert (old not in left) is pruned, err
    assert recent in left and fresh in left
    if not pruned:
        assert "retention: pruned" not in err, err


@pytest.mark.slow
def test_prune_waits_for_a_background_pruner_then_gives_up(cli: Any, db_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease held by another pruner: `chunkq prune` waits for it, prunes once it runs out, or gives up (exit 1)."""
    from chunkq.core import Pruner
    from chunkq.tui.cli import retention

    ids = old_jobs(db_url, (3, 40, "complete"))

    def hold(seconds: float) -> None:
        async def go() -> None:
            async with Queue(db_url) as q:
                assert await Pruner(q, lease_seconds=seconds)._take_lease()  # and never renewed: it dies here

        asyncio.run(go())

    monkeypatch.setattr(retention, "BUSY_WAIT_SECONDS", 1.5)
    hold(600)
    busy = cli("prune")
    lines = busy.output.splitlines()
    assert busy.exit_code == 1 and len(lines) == 2 and "waiting for it" in lines[0], busy.output
    assert lines[1].startswith("Error: ") and "held this database's lease for 1.5 s" in lines[1]
    assert job_ids(db_url) == ids

    async def free() -> None:
        async with Queue(db_url) as q:
            await q.backend.write(lambda c: c.exec_driver_sql("DELETE FROM chunkq_meta WHERE key = 'pruner'"), "x")

    asyncio.run(free())
    monkeypatch.setattr(retention, "BUSY_WAIT_SECONDS", 30)
    hold(2)
    done = cli("prune", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["job_ids"] == ids
