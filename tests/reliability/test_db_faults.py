"""Database faults mid-run: a clear error, no corrupted job, and a clean resume.

* PostgreSQL: a throw-away cluster of our own (``initdb``/``pg_ctl`` on a free
  port, trust auth, in a temp dir) is crashed (``pg_ctl stop -m immediate``)
  while a real worker process is in the middle of a job, kept down long enough
  that the worker's own retries give up, and started again. The shared server
  on 5432 is never touched.
* SQLite, disk full: the database lives on a 2 MB tmpfs that a filler file fills
  from inside the callback, so the chunk's commit hits ENOSPC.
* SQLite, read-only: the folder is a bind mount remounted read-only. Linux
  refuses to remount read-only while a file is open for writing (EBUSY), so the
  fault lands between connections (the pool is emptied first, as after any
  reconnect). ``chmod`` would prove nothing: the tests run as root.
* Without mount privileges the two SQLite cases fall back to SQLite's own limits,
  set on every connection by a test hook: ``PRAGMA max_page_count`` (the disk
  is full) and ``PRAGMA query_only`` (the file is read-only). Those variants run
  everywhere, and hit the commit of the chunk in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import DatabaseUnavailable, Processor, Queue
from chunkq.core.chunk import run_claimed
from sqlalchemy import event

from ._support import check_at_least_once, check_complete, finish, read_records, spawn, wait_for

REQUIRE_PG = os.environ.get("CHUNKQ_REQUIRE_PG") == "1"


# ---------------------------------------------------------------------- PostgreSQL restart


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A private PostgreSQL cluster: initdb, start, crash, restart, remove."""

    def __init__(self, bindir: str, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.log = root / "data", root / "server.log"
        self.port = _free_port()
        self.as_postgres = os.geteuid() == 0  # the server refuses to run as root

    def _run(self, *args: str, timeout: float = 60) -> None:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {r.stderr.strip()}\n{log[-2000:]}")

    def init(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        # A slow WAL writer: an asynchronously committed transaction stays in memory (and is lost
        # by a crash) until a synchronous commit flushes past it, so crash tests are deterministic.
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections=40 -c shared_buffers=16MB -c wal_writer_delay=10000ms "
                f"-c wal_writer_flush_after=0")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def crash(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or (
        [shutil.which("initdb")] if shutil.which("initdb") else [])
    why = None
    if not found:
        why = "no initdb/pg_ctl binaries (looked in /usr/lib/postgresql/*/bin and PATH)"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            why = "running as root and there is no 'postgres' OS user to run a private server"
    if why:
        if REQUIRE_PG:
            pytest.fail(f"CHUNKQ_REQUIRE_PG=1 but {why}", pytrace=False)
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="chunkq-pg-"))
    c = Cluster(os.path.dirname(found[-1]), root)
    try:
        c.init()
        c.start()
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.crash()
        shutil.rmtree(root, ignore_errors=True)


async def _enqueue(url: str, jobs: int, per_job: int, chunk: int) -> tuple[list[int], set[str]]:
    ids: set[str] = set()
    out = []
    async with Queue(url) as q:
        for j in range(jobs):
            batch = [f"j{j}-e{i}" for i in range(per_job)]
            ids.update(batch)
            out.append((await q.enqueue_job(batch, entity_type="company", provider="p", chunk_size=chunk)).id)
    return out, ids


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_postgres_crash_and_restart_mid_run(cluster: Cluster, tmp_path: Path, python_env: dict[str, str]) -> None:
    job_ids, expected = asyncio.run(_enqueue(cluster.url, 3, 80, 10))
    d = spawn(python_env, cluster.url, tmp_path, "--mode", "worker", "--lease", "2", "--work-ms", "15")
    try:
        wait_for(d, "READY", 60)
        end = time.monotonic() + 60
        while _lines(tmp_path / "record.tsv") < 40:
            assert time.monotonic() < end and d.proc.poll() is None, "the worker made no progress"
            time.sleep(0.05)
        cluster.crash()
        at_crash = _lines(tmp_path / "record.tsv")
        # Down longer than the worker's own retries of one transaction (~8 s of backoff),
        # so the outage reaches the worker loop, which must report it and wait.
        time.sleep(10)
        cluster.start()
        status, _out, err = finish(d, timeout=90)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    assert status == 0, f"worker exited with {status}:\n{err}"
    assert at_crash < len(expected), "the crash came after the work was done"
    reports = [ln for ln in err.splitlines() if "database unavailable" in ln]
    assert reports, f"the worker did not report the outage:\n{err}"
    assert "Traceback" not in err, err
    records = read_records(tmp_path)
    numbers = check_at_least_once(records, expected, killed=set())
    async def verify() -> dict[str, int]:
        async with Queue(cluster.url) as q:
            return await check_complete(q, job_ids)
    numbers.update(asyncio.run(verify()))
    print(f"\n[pg restart] {len(expected)} entities, crash after {at_crash}; worker said: {reports[0][:160]!r}; "
          f"{numbers}")


@pytest.mark.slow
def test_a_claim_lost_in_a_server_crash_cannot_fence_in_another_workers_chunk(cluster: Cluster) -> None:
    """A claim is committed asynchronously, so a crash can undo it while its worker goes on.

    After the restart the same chunk index is handed out again, with the same
    attempt number, possibly for different entities (here: a retry chunk where the
    lost claim held a fresh range). The old holder's commit must not land on it.
    """
    from chunkq.core import Retry

    def flaky(entity_id: str, _job: Any) -> None:
        if entity_id == "e0":
            raise Retry("429", after=1.0)

    async def run() -> None:
        async with Queue(cluster.url, owner="old:1:a") as a:
            job = await a.enqueue_job(["e0", "e1", "e2"], entity_type="company", provider="p",
                                      chunk_size=1, max_workers=2)
            await a.process_next_chunk(flaky)  # e0 waits 1 s for a retry (durable: a synchronous commit)
            lost = await a.claims.claim()  # chunk 1 = e1, committed asynchronously ...
            assert lost is not None and [i.entity_id for i in lost.items] == ["e1"]
            cluster.crash()  # ... and gone
            cluster.start()
            await asyncio.sleep(1.2)  # the retry of e0 is due
            async with Queue(cluster.url, owner="new:2:b") as b:
                taken = await b.claims.claim()
                assert taken is not None
                if (taken.chunk_index, taken.attempt) != (lost.chunk_index, lost.attempt):
                    pytest.skip("the crash did not undo the asynchronous claim (WAL flushed in time)")
                assert taken.kind == "retry" and [i.entity_id for i in taken.items] == ["e0"]
                late = await run_claimed(a, lost, Processor(on_process=flaky), None)
                assert not late.committed, "a claim lost in the crash committed over another worker's chunk"
                ok = await run_claimed(b, taken, Processor(on_process=lambda e, j: None), None)
                assert ok.committed
                while await b.process_next_chunk(lambda e, j: None) is not None:
                    pass
                j = await b.get_job(job.id)
                assert (j.status, j.processed_count, j.waiting_count) == ("complete", 3, 0), j

    asyncio.run(asyncio.wait_for(run(), 90))


# ---------------------------------------------------------------------- SQLite: helpers


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    probe = tempfile.mkdtemp(prefix="chunkq-mnt-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot mount a tmpfs here: {r.stderr.strip()}"
        subprocess.run(["umount", probe], check=True)
        return None
    finally:
        os.rmdir(probe)


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[Path]:
    """A size-limited tmpfs, and a bind mount of it that can be remounted read-only."""
    why = _can_mount()
    if why:
        pytest.skip(why + " (the PRAGMA variant of this fault still runs)")
    real = Path(tempfile.mkdtemp(prefix="chunkq-fs-"))
    view = Path(tempfile.mkdtemp(prefix="chunkq-view-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(real)], check=True)
    try:
        subprocess.run(["mount", "--bind", str(real), str(view)], check=True)
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
    finally:
        subprocess.run(["umount", "-l", str(real)], check=False)
        shutil.rmtree(real, ignore_errors=True)
        shutil.rmtree(view, ignore_errors=True)


class Clock:
    """Wall time plus a skew the test advances to expire a lease without sleeping."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


def _engines(q: Queue) -> list[Any]:
    return [e for e in (q.engine.sync_engine, getattr(q, "_thread_engine", None)) if e is not None]


def _integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def _bad(entity_id: str, _job: Any) -> None:
    """Every third entity fails with a long message, so a commit needs fresh pages."""
    if int(entity_id.rsplit("e", 1)[1]) % 3 == 0:
        raise ValueError(f"provider rejected {entity_id}: " + "x" * 4000)


def _fails(ids: set[str]) -> set[str]:
    return {e for e in ids if int(e.rsplit("e", 1)[1]) % 3 == 0}


async def _state(q: Queue, job_id: int) -> tuple[Any, ...]:
    """What must not change when a write fails: counters, errors, finished chunks."""
    j = await q.get_job(job_id)
    assert j.status in ("pending", "running")  # running: the failed chunk's lease waits to expire
    errors = [(e.entity_id, e.final) for e in await q.list_errors(job_id, limit=10_000)]
    done = [(c.chunk_index, c.ok, c.errors) for c in await q.list_chunks(job_id) if c.state == "done"]
    return (j.total_count, j.processed_count, j.succeeded_count, j.failed_count, j.error_count,
            errors, done)


async def _resume_and_check(q: Queue, clock: Clock, job_id: int, ids: set[str]) -> dict[str, int]:
    """The fault is gone: let the stuck lease expire, finish, and check every count."""
    clock.skew += q.lease_seconds + 1
    seen: list[str] = []

    def cb(entity_id: str, job: Any) -> None:
        seen.append(entity_id)
        _bad(entity_id, job)

    while await q.process_next_chunk(cb) is not None:
        pass
    numbers = await check_complete(q, [job_id])
    j = await q.get_job(job_id)
    assert j.failed_count == len(_fails(ids)) and j.error_count == len(_fails(ids))
    errors = await q.list_errors(job_id, limit=10_000)
    assert sorted(e.entity_id for e in errors) == sorted(_fails(ids)), "an error row was lost or doubled"
    return numbers


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ---------------------------------------------------------------------- SQLite: disk full


async def _disk_full_run(url: str, db: Path, fill: Any, unfill: Any) -> str:
    clock = Clock()
    async with Queue(url, lease_seconds=5, clock=clock) as q:
        ids = [f"e{i}" for i in range(90)]
        job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=15)
        await q.process_next_chunk(_bad)
        before = await _state(q, job.id)

        def filling(entity_id: str, j: Any) -> None:
            if entity_id == "e15":
                fill(q)  # the disk fills while the chunk is in the callback
            _bad(entity_id, j)

        with pytest.raises(DatabaseUnavailable) as err:
            await q.process_next_chunk(filling)
        message = _one_line(err.value)
        assert "disk is full" in message, message
        assert await _state(q, job.id) == before, "a failed commit changed the job"
        unfill(q)
        assert _integrity(db) == "ok"
        await _resume_and_check(q, clock, job.id, set(ids))
    assert _integrity(db) == "ok"
    return message


def test_sqlite_disk_full_on_a_small_tmpfs(tmp_path: Path) -> None:
    with _tmpfs("2m") as mnt:
        db = mnt / "chunkq.db"
        filler = mnt / "filler"

        def fill(_q: Queue) -> None:
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()

        message = asyncio.run(_disk_full_run(str(db), db, fill, lambda _q: filler.unlink()))
    print(f"\n[sqlite disk full, tmpfs] {message}")


def test_sqlite_disk_full_by_max_page_count(tmp_path: Path) -> None:
    db = tmp_path / "chunkq.db"
    limit: dict[str, int | None] = {"pages": None}

    def fill(q: Queue) -> None:
        with sqlite3.connect(db) as con:
            limit["pages"] = int(con.execute("PRAGMA page_count").fetchone()[0])
        for e in _engines(q):
            event.listen(e, "checkout", _cap)
        q.engine.sync_engine.pool.dispose()
        q.backend.close_idle_connection()  # type: ignore[attr-defined]  # the next one is checked out, capped

    def _cap(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA max_page_count = {limit['pages'] or 1073741823}")
        cur.close()

    def unfill(q: Queue) -> None:
        limit["pages"] = None  # the next checkout lifts the cap

    message = asyncio.run(_disk_full_run(str(db), db, fill, unfill))
    print(f"\n[sqlite disk full, max_page_count] {message}")


# ---------------------------------------------------------------------- SQLite: read-only


def test_sqlite_folder_remounted_read_only(tmp_path: Path) -> None:
    with _tmpfs("8m") as mnt:
        db = mnt / "chunkq.db"

        def remount(mode: str) -> None:
            subprocess.run(["mount", "-o", f"remount,{mode},bind", str(mnt)], check=True, capture_output=True)

        async def run() -> list[str]:
            clock = Clock()
            messages = []
            async with Queue(str(db), lease_seconds=5, clock=clock) as q:
                ids = [f"e{i}" for i in range(60)]
                job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=10)
                await q.process_next_chunk(_bad)
                before = await _state(q, job.id)
                # Close every connection first: Linux will not remount a filesystem read-only while
                # a file on it is open for writing (EBUSY).
                await q.engine.dispose()
                thread_engine = getattr(q, "_thread_engine", None)
                if thread_engine is not None:
                    q.backend.close_idle_connection()  # type: ignore[attr-defined]  # SQLite's kept connection
                    thread_engine.dispose()
                remount("ro")
                try:
                    for call in (lambda: q.process_next_chunk(_bad),
                                 lambda: q.enqueue_job(["x"], entity_type="company", provider="p"),
                                 lambda: q.pause(job.id)):
                        with pytest.raises(DatabaseUnavailable) as err:
                            await call()
                        messages.append(_one_line(err.value))
                finally:
                    remount("rw")
                assert await _state(q, job.id) == before
                assert [j.id for j in await q.list_jobs()] == [job.id], "a job was half-created"
                await _resume_and_check(q, clock, job.id, set(ids))
            assert _integrity(db) == "ok"
            return messages

        messages = asyncio.run(run())
    print(f"\n[sqlite read-only mount] {messages}")


def test_sqlite_read_only_mid_chunk_by_query_only(tmp_path: Path) -> None:
    db = tmp_path / "chunkq.db"
    readonly = {"on": False}

    def _flag(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA query_only = {1 if readonly['on'] else 0}")
        cur.close()

    async def run() -> str:
        clock = Clock()
        async with Queue(str(db), lease_seconds=5, clock=clock) as q:
            for e in _engines(q):
                event.listen(e, "checkout", _flag)
            ids = [f"e{i}" for i in range(60)]
            job = await q.enqueue_job(ids, entity_type="company", provider="p", chunk_size=10)
            await q.process_next_chunk(_bad)
            before = await _state(q, job.id)

            def turn_read_only(entity_id: str, j: Any) -> None:
                readonly["on"] = True  # the file turns read-only while the chunk is in flight
                q.backend.close_idle_connection()  # type: ignore[attr-defined]  # the next one is checked out, flagged
                _bad(entity_id, j)

            with pytest.raises(DatabaseUnavailable) as err:
                await q.process_next_chunk(turn_read_only)
            message = _one_line(err.value)
            assert "read-only" in message, message
            readonly["on"] = False
            assert await _state(q, job.id) == before
            await _resume_and_check(q, clock, job.id, set(ids))
        assert _integrity(db) == "ok"
        return message

    message = asyncio.run(run())
    print(f"\n[sqlite read-only, query_only] {message}")
