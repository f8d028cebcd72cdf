"""Fixtures for `chunkq web`: demo data, real servers, real Chromium (the Debian package) via Playwright.

Missing Chromium or Playwright makes the browser tests fail in CI (`.ci/run` installs both and sets
``CHUNKQ_REQUIRE_BROWSER=1``: a browser test that quietly skipped there would prove nothing) and skip,
with the reason in the summary, elsewhere: the README's test command passes on a fresh clone with
nothing but Python, as the PostgreSQL cases do without a server (``CHUNKQ_REQUIRE_PG``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import forkserver
from tests.frames import _last_frame_only  # noqa: F401  (autouse: a Pilot test draws its last frame only)

from .helpers import CHROMIUM, TOKEN, WebProcess


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo database, seeded once (`chunkq demo --no-ui`); each test gets its own copy."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    done = forkserver.run([sys.executable, "-m", "chunkq.tui.cli", "demo", "--no-ui", "--db", str(path)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def demo_db(demo_template: Path, tmp_path: Path) -> str:
    target = tmp_path / "demo.db"
    shutil.copy(demo_template, target)
    return str(target)


@pytest.fixture
def web_env(python_env: dict[str, str]) -> dict[str, str]:
    env = dict(python_env)
    env["CHUNKQ_WEB_TOKEN"] = TOKEN
    env.pop("CHUNKQ_WEB_USERS", None)
    return env


@pytest.fixture
def start_web(web_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WebProcess]]:
    """``start_web(db, *args, env=None)`` -> a started `chunkq web`; stopped (SIGTERM) afterwards."""
    started: list[WebProcess] = []

    def start(db: str, *args: str, env: dict[str, str] | None = None) -> WebProcess:
        server = WebProcess(db, list(args), env or web_env, tmp_path)
        started.append(server)
        server.wait_started()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never Playwright's downloaded browsers)."""

    def missing(why: str) -> NoReturn:
        if os.environ.get("CHUNKQ_REQUIRE_BROWSER") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("tests/web need Playwright: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        missing(f"tests/web need Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()
