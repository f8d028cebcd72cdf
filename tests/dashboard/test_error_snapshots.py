"""SVG snapshots of the errors grouped by bug and of tracebacks that stay true (pytest-textual-snapshot).

Deterministic as the detail snapshots are: data seeded through core with a fixed
clock and worker name, the dashboard's clock frozen, the refresh timer never
firing, and the callback (``enrich_example.py``) copied into tmp_path as
``enrich.py`` and run from there, so paths read the same on every machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from chunkq.core import Job, Queue, load_processor
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from textual.pilot import Pilot

from tests.dashboard.conftest import NEVER, SEED_AT, fixed_clock
from tests.dashboard.test_detail_snapshots import open_detail
from tests.dashboard.test_error_groups import ENRICH, install_enrich, seed_mixed


@pytest.fixture
def enrich(make_processor: Callable[..., str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return install_enrich(make_processor, tmp_path, monkeypatch)


def app_for(url: str, processor: str) -> ChunkqApp:
    return ChunkqApp(url, processor=processor, clock=fixed_clock, refresh_interval=NEVER)


async def seed_one(url: str, path: str, entity_id: str) -> Job:
    """A job of one failing entity and two that succeed."""
    async with Queue(url, clock=lambda: SEED_AT, owner="worker-a:4242:0badcafe") as q:
        job = await q.enqueue_job(["ok-1.com", entity_id, "ok-2.com"], entity_type="company", provider="clearbit",
                                  name="Fortune 500 companies")
        await q.process_chunk(job.id, load_processor(path))
        return await q.get_job(job.id)


async def focus_groups(pilot: Pilot[None], screen: JobDetailScreen) -> None:
    screen.query_one("#detail-groups").focus()


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
def test_snapshot_grouped_view(sqlite_url: str, enrich: str, snap_compare, size: tuple[int, int]) -> None:
    job = asyncio.run(seed_mixed(sqlite_url, enrich))
    assert snap_compare(app_for(sqlite_url, enrich), terminal_size=size, run_before=open_detail(job.id, focus_groups))


@pytest.mark.slow
def test_snapshot_recursion_traceback(sqlite_url: str, enrich: str, snap_compare) -> None:
    job = asyncio.run(seed_one(sqlite_url, enrich, "org-7"))
    assert snap_compare(app_for(sqlite_url, enrich), terminal_size=(160, 45), run_before=open_detail(job.id))


@pytest.mark.slow
def test_snapshot_exception_group_traceback(sqlite_url: str, enrich: str, snap_compare) -> None:
    job = asyncio.run(seed_one(sqlite_url, enrich, "multi-7.com"))
    assert snap_compare(app_for(sqlite_url, enrich), terminal_size=(160, 45), run_before=open_detail(job.id))


@pytest.mark.slow
def test_snapshot_traceback_after_the_source_changed(sqlite_url: str, enrich: str, snap_compare,
                                                     tmp_path: Path) -> None:
    job = asyncio.run(seed_one(sqlite_url, enrich, "noemail-7.com"))
    # The fix, with lines added above the old failure: today's file would put the arrow on the wrong line.
    fixed = ENRICH.replace('    record = fetch(domain)\n    contact = record["email"]\n',
                           '    record = fetch(domain)\n    # some records have no e-mail: fall back to the domain\n'
                           '    contact = record.get("email") or f"info@{domain}"\n')
    assert fixed != ENRICH
    (tmp_path / "enrich.py").write_text(fixed)
    assert snap_compare(app_for(sqlite_url, enrich), terminal_size=(160, 45), run_before=open_detail(job.id))
