"""The dashboard's bulk prune (issue 26): counts first, an age to change them, deletes only when confirmed."""

from __future__ import annotations

import time

import pytest
from chunkq.core import Processor, Queue
from chunkq.core.retention import DAY
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.prune import PruneScreen
from textual.widgets import Button, Input, Static

from tests.dashboard.conftest import NEVER, settle

SIZE = (120, 40)


async def seed_old(url: str) -> dict[str, int]:
    """Two complete jobs 40 days old, a cancelled one 20 days old, a complete one of today, a pending one."""
    now = time.time()
    ids: dict[str, int] = {}
    for name, days, status in (("old-1", 40, "complete"), ("old-2", 40, "complete"), ("old-cancelled", 20,
                               "cancelled"), ("today", 0, "complete"), ("live", 40, "pending")):
        async with Queue(url, clock=lambda days=days: now - days * DAY) as q:
            job = await q.enqueue_job([f"{name}-{i}" for i in range(5)], entity_type="company", provider="p",
                                      name=name)
            if status == "complete":
                await q.process_chunk(job.id, Processor(lambda e, j: None))
            elif status == "cancelled":
                await q.cancel(job.id)
            ids[name] = job.id
    return ids


async def names(url: str) -> set[str]:
    async with Queue(url) as q:
        return {j.name or "" for j in await q.list_jobs(limit=100)}


def dialog_text(app: ChunkqApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def open_dialog(pilot, app: ChunkqApp) -> PruneScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("P")
    await settle(pilot)
    assert isinstance(app.screen, PruneScreen)
    return app.screen


@pytest.mark.slow
async def test_the_dialog_counts_per_status_and_back_deletes_nothing(sqlite_url: str) -> None:
    await seed_old(sqlite_url)
    app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dialog(pilot, app)
        counts = " ".join(dialog_text(app, "#prune-counts").split())
        # the default policy: complete after 14 days (2 jobs), cancelled after 14 (1), failed after 30 (0)
        assert "complete 2 jobs (older than 14d)" in counts, counts
        assert "cancelled 1 job (older than 14d)" in counts, counts
        assert "total 3 jobs with 15 entities and 0 errors" in counts, counts
        assert screen.would_delete == 3 and not screen.query_one("#prune-ok", Button).disabled
        await pilot.click("#prune-cancel")
        await settle(pilot)
        assert not isinstance(app.screen, PruneScreen)
        await pilot.press("P")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
    assert await names(sqlite_url) == {"old-1", "old-2", "old-cancelled", "today", "live"}


@pytest.mark.slow
async def test_a_confirmed_prune_deletes_old_finished_jobs_off_the_ui_loop(sqlite_url: str) -> None:
    await seed_old(sqlite_url)
    app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dialog(pilot, app)
        await pilot.press(*"30d")
        await pilot.pause(0.6)  # the recount after typing
        await settle(pilot)
        assert screen.would_delete == 2, dialog_text(app, "#prune-counts")  # the cancelled job is 20 days old
        await pilot.press("enter")  # Enter recounts, never deletes
        await settle(pilot)
        assert isinstance(app.screen, PruneScreen)
        await pilot.click("#prune-ok")
        await settle(pilot)
        assert not isinstance(app.screen, PruneScreen)
        assert any("pruned 2 finished jobs (10 entities, 0 errors)" in n.message for n in app._notifications)
    assert await names(sqlite_url) == {"old-cancelled", "today", "live"}


@pytest.mark.slow
async def test_a_bad_age_is_explained_and_cannot_be_confirmed(sqlite_url: str) -> None:
    await seed_old(sqlite_url)
    app = ChunkqApp(sqlite_url, refresh_interval=NEVER)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_dialog(pilot, app)
        screen.query_one("#prune-age", Input).value = "-3d"
        await pilot.pause(0.6)
        await settle(pilot)
        assert "cannot be negative" in dialog_text(app, "#prune-problem")
        assert screen.query_one("#prune-ok", Button).disabled
        await pilot.click("#prune-ok")
        await settle(pilot)
        assert isinstance(app.screen, PruneScreen)
    assert len(await names(sqlite_url)) == 5
