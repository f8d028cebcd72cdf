"""chunkq 0.1.0 itself against an upgraded database: a worker that was already running keeps working
(the migrations are additive), and one that starts afterwards refuses the newer schema, saying what to do.

The 0.1.0 code comes from this repository's history (``git archive``); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chunkq.core import schema as s
from chunkq.core import upgrade_schema

from .support import ROOT, rows_of

pytestmark = pytest.mark.slow

RELEASE_0_1_0 = "e59a6d9"  # the last commit of chunkq 0.1.0 (before the chunkq.* package names)

OLD_WORKER = textwrap.dedent("""
    import asyncio, json, sys
    import core
    from core.queue import Queue

    async def main(url):
        async with Queue(url) as q:  # 0.1.0 creates its own schema here
            print("open", flush=True)
            sys.stdin.readline()  # the test upgrades the schema meanwhile
            job = await q.enqueue_job(["o1", "o2", "o3", "o4", "o5"], entity_type="company", provider="p",
                                      chunk_size=2)
            while (await q.get_job(job.id)).status in ("pending", "running"):
                await q.process_chunk(job.id, lambda entity_id, job: None)
            done = await q.get_job(job.id)
            print(json.dumps({"id": done.id, "status": done.status, "processed": done.processed_count}), flush=True)
        try:
            async with Queue(url):
                print("opened a newer schema", flush=True)
        except core.DatabaseUnavailable as exc:
            print("refused:", exc, flush=True)

    asyncio.run(main(sys.argv[1]))
""")


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("chunkq-0.1.0")
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", RELEASE_0_1_0, "core"], capture_output=True,
                                 check=True, timeout=60)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"chunkq 0.1.0's source is not in this checkout's history: {exc}")
    (dest / "old_worker.py").write_text(OLD_WORKER)
    return dest


def test_a_running_0_1_0_worker_keeps_working_after_the_upgrade_and_a_new_one_refuses(
    empty_db_url: str, old_tree: Path, tmp_path: Path,
) -> None:
    url = empty_db_url if empty_db_url.startswith("postgres") else str(tmp_path / "q.db")
    env = {k: v for k, v in os.environ.items() if k not in ("CHUNKQ_DB", "PYTHONPATH")}
    env["PYTHONPATH"] = str(old_tree)  # `import core` is 0.1.0
    proc = subprocess.Popen([sys.executable, str(old_tree / "old_worker.py"), url], cwd=old_tree, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "open", proc.stderr.read() if proc.stderr else ""
        result = asyncio.run(upgrade_schema(url))
        assert (result.before.kind, result.after.kind) == ("legacy", "current")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = out.splitlines()
    assert json.loads(lines[0]) == {"id": 1, "status": "complete", "processed": 5}, err
    assert lines[1] == (f"refused: database schema version {s.SCHEMA_VERSION} is newer than this chunkq "
                        "understands (1); "
                        "upgrade chunkq"), err
    rows = rows_of(url)
    assert [(r["id"], r["processor"]) for r in rows["chunkq_jobs"]] == [(1, None)]
    assert [r["lost_leases"] for r in rows["chunkq_chunks"]] == [0, 0, 0]  # the database's default
