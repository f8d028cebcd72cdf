"""The role check inside the dashboard process (Pilot): what `chunkq web` relies on, without a browser."""

from __future__ import annotations

import pytest
from chunkq.core import Queue
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from textual.widgets import DataTable
from textual.widgets._footer import FooterKey


async def _one_job(url: str) -> int:
    async with Queue(url) as q:
        job = await q.enqueue_job([f"e-{i}" for i in range(10)], entity_type="company", provider="p",
                                  chunk_size=5, name="acme")
        return job.id


async def _settle(pilot: object) -> None:
    await pilot.pause(0.3)  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.parametrize("role", [None, "operator", "viewer"])
async def test_cancel_asks_first_except_for_a_viewer_who_is_told_why(role: str | None, sqlite_url: str) -> None:
    job_id = await _one_job(sqlite_url)
    app = ChunkqApp(sqlite_url, processor="chunkq.core.demo:processor")
    app.role = role  # type: ignore[assignment]
    notes: list[str] = []
    async with app.run_test(size=(140, 40)) as pilot:
        app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign]
        await _settle(pilot)
        for _ in range(50):  # until the job is listed (and selected)
            if any(t.row_count for t in app.screen.query(DataTable)):
                break
            await _settle(pilot)
        disabled = {k.key for k in app.screen.query(FooterKey) if k.has_class("-disabled")}
        await pilot.press("c")
        await _settle(pilot)
        asked = isinstance(app.screen, ConfirmScreen)
        if asked:
            await pilot.press("escape")
        await pilot.press("s", "a")  # step, auto-run: processing that a viewer may not start
        await _settle(pilot)
        processing = app.processing
        app._abandon()
        await app._wait_for_processing(grace=10)
        header = app.sub_title
    async with Queue(sqlite_url) as q:
        job = await q.get_job(job_id)
    if role == "viewer":
        assert not asked and not processing
        assert {"c", "n", "p", "s", "a"} <= disabled
        assert any("read-only" in n for n in notes)
        assert job.processed_count == 0
        assert header.startswith("web viewer")
    else:
        assert asked and not disabled & {"c", "n", "p"}
        assert header.startswith("web operator") if role else not header.startswith("web")


async def test_an_operator_is_refused_only_the_debugger() -> None:
    from chunkq.tui.dashboard import commands

    assert commands.refusal("operator", "debug_entity") is not None
    assert commands.refusal(None, "debug_entity") is None
