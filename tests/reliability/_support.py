"""Shared pieces of the reliability suites: sizes, worker processes, records, dumps.

``CHUNKQ_SOAK=N`` (default 1) multiplies the number of kills, workers' jobs,
hypothesis examples and the like, for a longer run by hand; CI runs N=1.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chunkq.core import Queue

from tests import forkserver

ROOT = Path(__file__).resolve().parents[2]
SOAK = max(1, int(os.environ.get("CHUNKQ_SOAK", "1") or "1"))


def backend(url: str) -> str:
    return "postgres" if url.startswith("postgres") else "sqlite"


@dataclass
class Driver:
    """One worker process running ``tests/reliability/driver.py``."""

    proc: subprocess.Popen[bytes]
    hook: str | None
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid


def spawn(env: dict[str, str], db: str, tmp: Path, *extra: str, hook: str | None = None) -> Driver:
    args = [sys.executable, "-m", "tests.reliability.driver", "--db", db,
            "--record", str(tmp / "record.tsv"), "--claims", str(tmp / "claims.tsv"), *extra]
    if hook:
        args += ["--hook", hook]
    p = forkserver.popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Driver(p, hook)


def wait_line(drivers: list[Driver], timeout: float) -> tuple[Driver, str] | None:
    """The next stdout line of any driver (``""`` when that driver's stdout closed)."""
    sel = selectors.DefaultSelector()
    for d in drivers:
        if d.proc.stdout is not None and not d.proc.stdout.closed:
            sel.register(d.proc.stdout, selectors.EVENT_READ, d)
    try:
        events = sel.select(timeout)
    finally:
        sel.close()
    if not events:
        return None
    key, _ = events[0]
    d = key.data
    line = d.proc.stdout.readline().decode().strip()
    d.lines.append(line)
    return d, line


def wait_for(driver: Driver, prefix: str, timeout: float) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = wait_line([driver], end - time.monotonic())
        if got is None:
            break
        if got[1] == "":
            raise AssertionError(f"driver {driver.pid} exited before {prefix!r}: {finish(driver)}")
        if got[1].startswith(prefix):
            return got[1]
    raise AssertionError(f"driver {driver.pid} did not say {prefix!r} within {timeout}s")


def finish(driver: Driver, timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a driver to exit; (exit status, stdout, stderr)."""
    try:
        out, err = driver.proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            driver.proc.send_signal(signal.SIGUSR1)  # the driver prints where it hangs (``dump_stacks``)
        with contextlib.suppress(subprocess.TimeoutExpired):
            driver.proc.wait(2)
        driver.proc.kill()
        out, err = driver.proc.communicate()
        raise AssertionError(
            f"driver {driver.pid} did not finish within {timeout}s; stderr:\n{err.decode()}") from None
    return driver.proc.returncode, "\n".join([*driver.lines, out.decode()]), err.decode()


# ---------------------------------------------------------------------- records


@dataclass
class Records:
    """What the callbacks wrote outside the database, and what each process claimed/committed."""

    processed: dict[str, list[int]]  # entity id -> pids that ran it, in order
    last_claim: dict[int, tuple[int, int, int, list[str]]]  # pid -> (job, chunk, attempt, ids)
    committed: set[tuple[int, int, int, int]]  # (pid, job, chunk, attempt)
    discarded: dict[int, set[str]]  # pid -> entity ids of claims whose commit was fenced off or failed
    claims: list[tuple[int, int, int, int, list[str]]]


def read_records(tmp: Path) -> Records:
    processed: dict[str, list[int]] = defaultdict(list)
    rec = tmp / "record.tsv"
    for line in rec.read_text().splitlines() if rec.exists() else []:
        eid, pid, *_ = line.split("\t")
        processed[eid].append(int(pid))
    last_claim: dict[int, tuple[int, int, int, list[str]]] = {}
    committed: set[tuple[int, int, int, int]] = set()
    discarded: dict[int, set[str]] = defaultdict(set)
    claims = []
    by_key: dict[tuple[int, int, int, int], list[str]] = {}
    log = tmp / "claims.tsv"
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, pid, job, chunk, attempt, rest = line.split("\t")
        key = (int(pid), int(job), int(chunk), int(attempt))
        if kind == "claim":
            ids = rest.split(",") if rest else []
            by_key[key] = ids
            last_claim[key[0]] = (*key[1:], ids)  # type: ignore[assignment]
            claims.append((*key, ids))
        elif rest == "1":
            committed.add(key)
        else:  # "0": fenced off (the lease was lost), "-1": the commit raised (database down)
            discarded[key[0]].update(by_key.get(key, []))
    return Records(dict(processed), last_claim, committed, dict(discarded), claims)  # type: ignore[arg-type]


def in_flight_at_death(records: Records, killed: set[int]) -> dict[int, set[str]]:
    """For each killed pid, the IDs of every claim of it that never logged a commit: a worker's
    window holds several chunks at once (issue 14), and all of them may be redone."""
    out: dict[int, set[str]] = {}
    for pid, chunks in uncommitted_claims(records, killed).items():
        out[pid] = {eid for ids in chunks.values() for eid in ids}
    return out


def uncommitted_claims(records: Records, killed: set[int]) -> dict[int, dict[tuple[int, int, int], list[str]]]:
    """For each killed pid with any, its claims (job, chunk, attempt) -> IDs that never logged a commit."""
    out: dict[int, dict[tuple[int, int, int], list[str]]] = {}
    for pid, job, chunk, attempt, ids in records.claims:
        if pid in killed and (pid, job, chunk, attempt) not in records.committed:
            out.setdefault(pid, {})[(job, chunk, attempt)] = ids
    return out


def check_at_least_once(records: Records, expected: set[str], killed: set[int]) -> dict[str, int]:
    """Every entity ran; a second run is excused only by a death or a fenced-off commit.

    Returns numbers for the report: duplicates and how many were excused by each cause.
    """
    missing = expected - records.processed.keys()
    assert not missing, f"{len(missing)} entities never processed, e.g. {sorted(missing)[:5]}"
    unknown = records.processed.keys() - expected
    assert not unknown, f"processed IDs that were never enqueued: {sorted(unknown)[:5]}"
    flight = in_flight_at_death(records, killed)
    dup = 0
    for eid, pids in records.processed.items():
        if len(pids) == 1:
            continue
        dup += 1
        unexcused = [
            p for p in pids
            if not (eid in flight.get(p, ()) or eid in records.discarded.get(p, ()))
        ]
        assert len(unexcused) <= 1, (
            f"entity {eid} was processed {len(pids)} times by {pids}; only the runs by a worker that "
            f"died with it in flight (or whose commit was fenced off) may repeat it, "
            f"but {unexcused} were neither"
        )
    return {"duplicates": dup, "killed_in_flight": len(flight)}


# ---------------------------------------------------------------------- database dumps


async def dump(q: Queue) -> dict[str, Any]:
    """Everything core's read API shows, to compare before/after a rejected call."""
    jobs = await q.list_jobs(limit=100_000)
    out: dict[str, Any] = {"count": await q.count_jobs(), "jobs": {}}
    st = await q.stats()
    out["stats"] = (st.jobs_by_status, st.total_entities, st.processed_entities, st.error_count,
                    st.waiting_entities)
    for j in jobs:
        errors = await q.list_errors(j.id, limit=1_000_000)
        out["jobs"][j.id] = {
            "job": j.to_dict(),
            "entities": await q.entity_ids(j.id, limit=10_000_000),
            "chunks": [c.to_dict() for c in await q.list_chunks(j.id, limit=1_000_000)],
            "errors": [e.to_dict() for e in errors],
            "groups": [(g.error_type, g.message, g.count) for g in await q.group_errors(j.id)],
        }
    return out


async def check_complete(q: Queue, job_ids: list[int]) -> dict[str, int]:
    """Every job complete with exact counters and every chunk committed once."""
    reclaimed = 0
    for jid in job_ids:
        j = await q.get_job(jid)
        assert j.status == "complete", f"job {jid} is {j.status} ({j.fail_reason})"
        assert j.processed_count == j.total_count, (jid, j.processed_count, j.total_count)
        assert j.succeeded_count + j.failed_count == j.total_count
        assert (j.leased_chunks, j.waiting_count) == (0, 0)
        chunks = await q.list_chunks(jid, limit=1_000_000)
        # "split": a chunk that lost its lease 3 times, closed and rerun one entity per chunk (issue 13)
        assert all(c.state in ("done", "split") for c in chunks), [c for c in chunks if c.state != "done"]
        assert sum(c.ok for c in chunks) == j.succeeded_count, "a chunk's successes were counted twice"
        reclaimed += sum(1 for c in chunks if c.attempt > 1)
    return {"reclaimed_chunks": reclaimed}


def counter_summary(c: Counter[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
