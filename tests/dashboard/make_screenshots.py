"""Regenerate ``screenshots/*.svg``: one picture of each dashboard screen.

Run from the repository root::

    .venv/bin/python -m tests.dashboard.make_screenshots [--out screenshots]

It seeds a throw-away SQLite file with the same jobs the snapshot tests use, but
processed by a processor a user would write (``enrich.py``, imported by path like
theirs), so the detail screen's tracebacks point into that file and not into the
tests. It drives the real app with Textual's Pilot (as Harlequin's
``export_screenshots`` does), steps one chunk so the activity log has something
to show, and saves an SVG per screen at one common size (``SIZE``), plus the jobs
screen at 80x24 (``SMALL``), the size a terminal opens at. The clock starts at the
tests' fixed time and then runs at real speed, so ages read "1h" and rates are real.
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

#: every screen at this size
SIZE = (160, 42)
#: and the jobs screen as a terminal opens (``jobs-80x24.svg``)
SMALL = (80, 24)
PROCESSOR = "enrich:process"
#: the processor a user would write, imported by path like theirs (its traceback shows in the detail)
ENRICH = '''"""Enrich companies from a provider that is sometimes down and does not know every ID."""

API = "https://api.clearbit.example/v2"


class ProviderError(Exception):
    pass


def fetch(entity_id, provider):
    """The provider's record: its messages carry the entity, the URL and a request ID, as real ones do."""
    n = int(entity_id.rsplit("-", 1)[1])
    if n % 10 == 7:
        raise ProviderError(f"{provider}: upstream 500 for {entity_id}: GET {API}/companies/find?domain="
                            f"{entity_id}.com (request req_{n * 7919:08x})")
    if n % 10 == 3:
        raise ProviderError(f"{provider}: 404 Not Found: {API}/companies/{entity_id}")
    return {"domain": f"{entity_id}.com", **({"email": f"info@{entity_id}.com"} if n % 10 != 1 else {})}


def process(entity_id, job):
    record = fetch(entity_id, job.provider)
    contact = record["email"]
    return contact


def revoked(entity_id, job):
    from chunkq.core import JobFailed

    raise JobFailed(f"{job.provider}: 401 Unauthorized: API key revoked")
'''
ROOT = Path(__file__).resolve().parents[2]


def running_clock() -> Callable[[], datetime]:
    start = time.monotonic()
    return lambda: FIXED_NOW + timedelta(seconds=time.monotonic() - start)


async def settle(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def seed_realistic(url: str) -> None:
    """The snapshot tests' jobs (``SEED_JOBS``), run through ``enrich.py`` instead of the tests' callbacks."""
    import enrich  # type: ignore[import-not-found]  # written into the temporary folder by shoot()

    await seed(url, process=enrich.process, fail=enrich.revoked)


async def shoot_small(out: Path, url: str) -> Path:
    """The jobs screen at 80x24: the columns that fit, the totals and the keys on two lines."""
    app = ChunkqApp(url, processor=PROCESSOR, clock=running_clock(), refresh_interval=3600)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)
        path = out / "jobs-80x24.svg"
        app.save_screenshot(str(path))
    return path


async def shoot_workers(out: Path) -> Path:
    """The workers view: five processes in every state, seeded through core's own registration."""
    from tests.dashboard.conftest import FIXED_NOW
    from tests.dashboard.workers_seed import seed_workers

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'chunkq.db'}"
        await seed_workers(url)
        app = ChunkqApp(url, processor=PROCESSOR, clock=lambda: FIXED_NOW, refresh_interval=3600)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("w")
            await settle(pilot)
            await pilot.pause(0.3)
            path = out / "workers.svg"
            app.save_screenshot(str(path))
    return path


async def shoot(out: Path) -> list[Path]:
    saved: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'chunkq.db'}"
        (Path(tmp) / "enrich.py").write_text(ENRICH)
        sys.path.insert(0, tmp)
        await seed_realistic(url)
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
            await pilot.press("escape", "y")  # a filled form asks before discarding it

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
        saved.append(await shoot_small(out, url))
    saved.append(await shoot_workers(out))
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
