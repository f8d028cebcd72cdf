"""Section 4: ``chunkq enqueue`` of a 1,000,000-line file against a raw ``executemany`` insert.

Both sides run as their own process (same interpreter start-up on each side),
and each process's peak RSS is read from ``os.wait4`` - the kernel's account of
that one child, not of every child this process ever had.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from .common import Row

N = 1_000_000


def write_ids(path: Path, n: int = N) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(f"company-{i:08d}\n")


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stderr) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read the pipes before waiting so a chatty child cannot block on a full pipe.
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}… exited {proc.returncode}: {err.strip()[-500:]}")
    return elapsed, usage.ru_maxrss / 1024, err


def chunkq_command(ids_file: Path, db: Path) -> list[str]:
    exe = shutil.which("chunkq", path=str(Path(sys.executable).parent)) or "chunkq"
    return [exe, "--db", str(db), "enqueue", str(ids_file), "--entity-type", "company", "--provider", "bench",
            "--chunk-size", "50"]


def raw_insert(ids_file: Path, db: Path) -> None:
    """The baseline: one transaction, one ``executemany`` of (job, pos, id) tuples into the same layout."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE entities (job_id INTEGER NOT NULL, pos INTEGER NOT NULL, entity_id TEXT NOT NULL,"
                 " PRIMARY KEY (job_id, pos)) WITHOUT ROWID")
    conn.execute("BEGIN IMMEDIATE")
    with ids_file.open() as f:
        conn.executemany("INSERT INTO entities VALUES (1, ?, ?)",
                         ((pos, line.strip()) for pos, line in enumerate(f) if line.strip()))
    conn.execute("COMMIT")
    conn.close()


def enqueue(work: Path) -> tuple[list[Row], Path]:
    """Returns the rows and the chunkq database holding the 1M-entity job (section 1 reuses it)."""
    ids_file = work / "ids-1m.txt"
    write_ids(ids_file)
    raw_t, raw_rss, _ = _run([sys.executable, "-m", "tests.benchmarks.enqueue_section", str(ids_file),
                              str(work / "raw-enqueue.db")])
    db = work / "enqueue-1m.db"
    cq_t, cq_rss, _ = _run(chunkq_command(ids_file, db))
    rows = [
        Row("4 enqueue", "chunkq enqueue of a 1M-line file", cq_t, "s", raw_t,
            "raw sqlite3 executemany", 3.0, note="wall time of each process, start-up included"),
        Row("4 enqueue", "peak RSS of that chunkq enqueue", cq_rss, "MB", None, "", 200.0,
            note=f"raw executemany process: {raw_rss:.0f} MB", extra={"raw_rss_mb": raw_rss}),
    ]
    return rows, db


if __name__ == "__main__":  # the baseline's own process
    raw_insert(Path(sys.argv[1]), Path(sys.argv[2]))
