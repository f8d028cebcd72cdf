"""`chunkq web` in a real browser: Debian's Chromium, driven by Playwright, against a real server process.

The terminal is drawn on a canvas, so what the dashboard shows is read from
the websocket frames the page received (``helpers.screen_text``); keys are
typed into the page as a person would.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chunkq.tui.cli import cli
from click.testing import CliRunner

from .helpers import DEMO_JOB, ROOT_SCREENSHOTS, TOKEN, WebProcess, job_statuses, screen_text

pytestmark = pytest.mark.slow


class Page:
    """A browser tab on the dashboard, with the frames its websocket received."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 800})
        self.page = self.context.new_page()
        self.url = url
        self.chunks: list[str] = []
        self.page.on("websocket", lambda ws: ws.on(
            "framereceived", lambda f: self.chunks.append(f if isinstance(f, str) else f.decode("utf-8", "replace"))))

    def login(self, **fields: str) -> None:
        self.page.goto(f"{self.url}/")
        assert self.page.url == f"{self.url}/login"
        for name, value in fields.items():
            self.page.fill(f"input[name={name}]", value)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()

    def wait_for(self, needle: str, since: int = 0, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in screen_text(self.chunks[since:]):
                return
            self.page.wait_for_timeout(250)
        raise AssertionError(f"{needle!r} not on the screen within {timeout}s:\n{screen_text(self.chunks)[-3000:]}")

    def press(self, *keys: str) -> int:
        mark = len(self.chunks)
        self.page.locator("#terminal").click()
        for key in keys:
            self.page.keyboard.press(key)
            self.page.wait_for_timeout(600)
        return mark

    def close(self) -> None:
        self.context.close()


def test_without_login_the_browser_gets_the_login_form_and_nothing_else(
        chromium: Any, start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db)
    tab = Page(chromium, server.url)
    try:
        tab.page.goto(f"{server.url}/")
        assert tab.page.url == f"{server.url}/login"
        assert DEMO_JOB not in tab.page.content()
        for path in ("/static/js/textual.js", "/static/css/xterm.css", "/ws", "/download/x", "/nope"):
            response = tab.page.goto(f"{server.url}{path}")
            assert response is not None and response.status == 401, path
        assert tab.chunks == []  # no websocket ever opened
        assert server.children() == []  # and no dashboard process started
    finally:
        tab.close()


def test_a_bad_token_stays_on_the_login_form(chromium: Any, start_web: Callable[..., WebProcess],
                                             demo_db: str) -> None:
    server = start_web(demo_db)
    tab = Page(chromium, server.url)
    try:
        tab.login(token=TOKEN + "x")
        assert tab.page.url == f"{server.url}/login"
        assert "wrong token" in tab.page.content()
        assert not [c for c in tab.context.cookies() if c["name"] == "chunkq_session"]
    finally:
        tab.close()


def test_with_the_token_the_jobs_list_renders_and_enter_opens_a_job(
        chromium: Any, start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db)
    tab = Page(chromium, server.url)
    try:
        tab.login(token=TOKEN)
        assert tab.page.url == f"{server.url}/"
        (cookie,) = [c for c in tab.context.cookies() if c["name"] == "chunkq_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > time.time()
        tab.wait_for(DEMO_JOB)
        tab.wait_for("web operator")  # the role, in the header
        shoot = os.environ.get("CHUNKQ_WEB_SCREENSHOTS") == "1"  # the README's, on demand only
        if shoot:
            tab.page.wait_for_timeout(1500)
            tab.page.screenshot(path=str(ROOT_SCREENSHOTS / "web-jobs.png"))
        mark = tab.press("Enter")
        tab.wait_for("Job #", since=mark)
        tab.wait_for("Chunks", since=mark)
        if shoot:
            tab.page.wait_for_timeout(1500)
            tab.page.screenshot(path=str(ROOT_SCREENSHOTS / "web-detail.png"))
    finally:
        tab.close()


def test_a_viewer_cannot_cancel_and_the_refusal_comes_from_the_session_process(
        chromium: Any, start_web: Callable[..., WebProcess], demo_db: str, web_env: dict[str, str],
        tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    added = CliRunner().invoke(cli, ["web", "adduser", "vera", "--role", "viewer", "--users-file", str(users),
                                     "--password-stdin"], input="correct horse battery\n", env=web_env)
    assert added.exit_code == 0, added.output  # in-process: tests/web/test_command.py runs it as a process
    server = start_web(demo_db, "--users-file", str(users))
    before = job_statuses(demo_db)
    tab = Page(chromium, server.url)
    try:
        tab.login(user="vera", password="correct horse battery")
        tab.wait_for(DEMO_JOB)
        tab.wait_for("web viewer")
        mark = tab.press("c", "y", "p")  # cancel (and its "yes"), pause: every one refused
        if os.environ.get("CHUNKQ_WEB_SCREENSHOTS") == "1":
            tab.page.wait_for_timeout(500)
            tab.page.screenshot(path=str(ROOT_SCREENSHOTS / "web-viewer.png"))
        tab.wait_for("read-only", since=mark)
        assert "Cancel job" not in screen_text(tab.chunks[mark:])  # the question never opened
        time.sleep(1)
        assert job_statuses(demo_db) == before
    finally:
        tab.close()
