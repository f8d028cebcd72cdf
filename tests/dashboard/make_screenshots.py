"""Regenerate ``screenshots/*.svg``: one picture of each dashboard screen.

Run from the repository root::

    .venv/bin/python -m tests.dashboard.make_screenshots [--out screenshots]

It seeds a throw-away SQLite file with the same deterministic jobs the snapshot
tests use, drives the real app with Textual's Pilot (as Harlequin's
``export_screenshots`` does), steps one chunk so the activity log has something
to show, and saves an SVG per screen. The clock starts at the tests' fixed time
and then runs at real speed, so ages read "1h" and rates are real.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from chunkq.tui.dashboard.app import ChunkqApp
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from tests.dashboard.conftest import FIXED_NOW, seed

SIZE = (160, 42)
PROCESSOR = "enrich:process"
#: the processor a user would write, imported by path like theirs (its traceback shows in the detail)
ENRICH = '''"""Enrich companies from a provider that does not know every ID."""


class ProviderError(Exception):
    pass


def process(entity_id, job):
    if entity_id.endswith("7"):
        raise ProviderError(f"{job.provider}: 404 no company matches this ID")
'''
ROOT = Path(__file__).resolve().parents[2]


def running_clock() -> Callable[[], datetime]:
    start = time.monotonic()
    return lambda: FIXED_NOW + timedelta(seconds=time.monotonic() - start)


async def settle(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def shoot(out: Path) -> list[Path]:
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'chunkq.db'}"
        await seed(url)
        (Path(tmp) / "enrich.py").write_text(ENRICH)
        sys.path.insert(0, tmp)
        app = ChunkqApp(url, processor=PROCESSOR, clock=running_clock(), refresh_interval=3600)
        async with app.run_test(size=SIZE) as pilot:

            async def save(name: str, prepare: Callable[[], Awaitable[None]] | None = None) -> None:
                if prepare is not None:
                    await prepare()
                await settle(pilot)
                path = out / f"{name}.svg"
                app.save_screenshot(str(path))
                saved.append(path)

            await settle(pilot)
            await pilot.press("down")  # Fortune 500 companies: partly done, with errors
            await pilot.press("s")
            await settle(pilot)
            app.jobs_screen.poll()  # type: ignore[union-attr]
            await save("jobs")

            async def open_form() -> None:
                await pilot.press("n")
                await pilot.pause()
                form = app.screen
                for widget in form.query("Input, TextArea"):
                    widget.cursor_blink = False  # type: ignore[attr-defined]
                form.query_one("#entity-type", Input).value = "company"
                form.query_one("#provider", Input).value = "clearbit"
                form.query_one("#name", Input).value = "Q3 prospects"
                form.query_one("#ids", TextArea).text = "\n".join(f"acme-{i:03d}" for i in range(1, 251))
                form.update_count()  # type: ignore[attr-defined]

            await save("enqueue", open_form)

            async def bad_form() -> None:
                form = app.screen
                form.query_one("#entity-type", Input).value = ""
                form.query_one("#chunk-size", Input).value = "0"
                await pilot.press("ctrl+s")

            await save("enqueue-errors", bad_form)
            await pilot.press("escape")

            async def open_help() -> None:
                await pilot.press("question_mark")

            await save("help", open_help)
            await pilot.press("escape")

            async def open_confirm() -> None:
                await pilot.press("c")

            await save("cancel", open_confirm)
            await pilot.press("escape")

            async def open_detail() -> None:
                await pilot.press("enter")
                await pilot.pause(0.5)

            await save("detail", open_detail)
            await pilot.press("escape", "escape")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="folder for the SVGs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(args.out)):
        print(path)


if __name__ == "__main__":
    main()
