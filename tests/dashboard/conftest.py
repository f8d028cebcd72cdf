"""Dashboard fixtures: a real SQLite file per test, seeded deterministically, and a frozen clock.

Snapshots need the same pixels on every run, so seeded data never uses randomness
(no ``Retry`` backoff jitter, no demo data), the seeding queue's clock sits an hour
before the dashboard's frozen clock (ages read "1h", recent rates are empty), and
the refresh timer is set so far out that it never fires during a test.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from chunkq.core import JobFailed, Processor, Queue
from chunkq.tui.dashboard.app import ChunkqApp
from textual.pilot import Pilot

FIXED_NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
SEED_AT = (FIXED_NOW - timedelta(hours=1)).timestamp()
#: refresh interval that never fires inside a test: tests refresh explicitly
NEVER = 3600.0

_module_ids = itertools.count()


def fixed_clock() -> datetime:
    return FIXED_NOW


def fails_on_seven(entity_id: str, job: object) -> None:
    """Deterministic callback for seeding: IDs ending in 7 fail for good."""
    if entity_id.endswith("7"):
        raise ValueError("no company matches this domain")


def revoked_key(entity_id: str, job: object) -> None:
    raise JobFailed("401 Unauthorized: API key revoked")


SEED_JOBS = [
    # name, entity_type, provider, n, chunk_size, priority, chunks to run, then
    ("Fortune 500 companies", "company", "clearbit", 500, 50, 0, 3, None),
    ("Conference attendees", "person", "prospeo", 1200, 100, 0, 0, None),
    ("Product URLs", "url", "scraper", 40, 10, 5, 4, None),
    ("SKU catalogue", "sku", "pricing-api", 2000, 200, 0, 1, "pause"),
    ("Press list", "person", "hunter", 120, 40, 0, 0, "fail"),
    ("Old import", "company", "clearbit", 30, 10, 0, 1, "cancel"),
]


async def seed(url: str, *, process: Callable[[str, object], object] = fails_on_seven,
               fail: Callable[[str, object], object] = revoked_key) -> list[int]:
    """Six jobs in every state, all stamped at SEED_AT; no randomness anywhere.

    ``process`` runs the chunks and ``fail`` fails the job meant to fail (``make_screenshots`` passes
    a user-style module's, so its tracebacks point there)."""
    proc = Processor(on_process=process)
    ids = []
    async with Queue(url, clock=lambda: SEED_AT) as q:
        for name, etype, provider, n, chunk, prio, steps, then in SEED_JOBS:
            job = await q.enqueue_job([f"{etype}-{i:05d}" for i in range(n)], entity_type=etype,
                                      provider=provider, chunk_size=chunk, priority=prio, name=name)
            for _ in range(steps):
                await q.process_chunk(job.id, proc)
            if then == "pause":
                await q.pause(job.id)
            elif then == "cancel":
                await q.cancel(job.id)
            elif then == "fail":
                await q.process_chunk(job.id, Processor(on_process=fail))
            ids.append(job.id)
    return ids


_seeded_template: dict[str, Path] = {}


def seeded_copy(path: Path) -> Path:
    """A SQLite file holding what ``seed`` writes: a copy of one seeded once per process.

    ``seed`` is deterministic (no randomness, the seeding clock fixed at SEED_AT), so every copy holds
    the same rows a fresh ``seed`` would; each test still gets its own file to change. (Imports stay
    in here: the seeded tracebacks in the snapshots carry this file's line numbers.)"""
    import shutil

    template = _seeded_template.get("path")
    if template is None:
        import sqlite3
        import tempfile

        template = Path(tempfile.mkdtemp(prefix="chunkq-seeded-")) / "seeded.db"
        asyncio.run(seed(f"sqlite:///{template}"))
        con = sqlite3.connect(template)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file itself: one copy is whole
        con.close()
        _seeded_template["path"] = template
    shutil.copyfile(template, path)
    return path


@pytest.fixture
def seeded_url(sqlite_url: str) -> str:
    """``sqlite_url`` holding the six seeded jobs (``seed``)."""
    seeded_copy(Path(sqlite_url.removeprefix("sqlite:///")))
    return sqlite_url


@pytest.fixture
def seeded_file(tmp_path: Path) -> str:
    """``seed``ed, for snapshot tests: ``snap_compare`` runs its own event loop, so this fixture is sync."""
    return f"sqlite:///{seeded_copy(tmp_path / 'chunkq.db')}"


def snapshot_app(url: str) -> ChunkqApp:
    """The dashboard as every snapshot sees it: the demo processor, a frozen clock, no refresh timer."""
    return ChunkqApp(url, processor="chunkq.core.demo:processor", clock=fixed_clock, refresh_interval=NEVER)


def no_blink(pilot: Pilot[None]) -> None:
    """A blinking cursor would make two runs of one snapshot differ."""
    for widget in pilot.app.screen.query("Input, TextArea"):
        widget.cursor_blink = False  # type: ignore[attr-defined]


@pytest.fixture
def make_processor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a processor module into tmp_path; returns its ``module:function`` path.

    Each call gets a fresh module name, so tests never share an imported module.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(body: str, name: str | None = None) -> str:
        module = name or f"chunkq_test_proc_{next(_module_ids)}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
        created.append(module)
        return f"{module}:process"

    yield make  # type: ignore[misc]
    for module in created:
        sys.modules.pop(module, None)


async def settle(pilot: Pilot[object]) -> None:
    """Let every worker finish and every message land."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def wait_auto_run_over(pilot: Pilot[None], app: ChunkqApp) -> None:
    """Until auto-run has ended (nothing left, a breakpoint, a stop), every message landed; bounded."""
    for _ in range(500):
        await settle(pilot)
        if app.auto_worker is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("auto-run never stopped")


async def refresh(pilot: Pilot[object], *, full: bool = False) -> None:
    """Poll now (instead of waiting for the timer) and render the result."""
    await settle(pilot)
    pilot.app.jobs_screen.poll(full=full)  # type: ignore[attr-defined]
    await settle(pilot)


#: a processor (for ``make_processor``) whose entities each wait for ``gate.release()``; ``started`` is set
#: by the first one: auto-run held mid-chunk for as long as a test needs
STEPWISE = """
import threading
gate = threading.Semaphore(0)
started = threading.Event()

def process(entity_id, job):
    started.set()
    if not gate.acquire(timeout=20):
        raise TimeoutError("the test never let this entity through")
"""


# Last, so that no line above moves: the seeded tracebacks in the snapshots carry this file's line numbers.
from tests.frames import _last_frame_only  # noqa: E402, F401  (autouse: a Pilot test draws its last frame only)
