"""Helpers for `chunkq web`'s tests: the server as a real process, a real websocket, the demo data."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from ..served import ServedProcess

TOKEN = "web-test-token-0123456789abcdef"
#: Debian's Chromium (never Playwright's own downloads); CHUNKQ_CHROMIUM names another binary
CHROMIUM = os.environ.get("CHUNKQ_CHROMIUM", "/usr/bin/chromium")
STARTUP_TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[\]P_^].*?(?:\x07|\x1b\\)|\x1b[@-_]")
#: what the demo's jobs list shows (tests/web/conftest seeds it with `chunkq demo --no-ui`)
DEMO_JOB = "SKU catalogue"


async def until(check: Callable[[], object], within: float, step: float = 0.3) -> bool:
    """Poll ``check`` until it is true or ``within`` seconds pass (bounded, as every wait here)."""
    deadline = time.monotonic() + within
    for _ in itertools.count():
        if check():
            return True
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(step)
    return False


def screen_text(chunks: list[str]) -> str:
    """What the dashboard drew, escape sequences removed (the terminal's canvas holds no DOM text)."""
    return ANSI.sub("", "".join(chunks))


class WebProcess(ServedProcess):
    """`chunkq --db DB web --port 0 ARGS` in a subprocess (``tests/served.py``)."""

    STARTED = re.compile(r"the dashboard on (http://\S+) for")
    WHAT = "chunkq web"
    STOP_GRACE = 60.0

    def __init__(self, db: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        super().__init__([sys.executable, "-m", "chunkq.tui.cli", "--db", db, "web", "--port", "0", *args], env, cwd)

    def wait_started(self, timeout: float = STARTUP_TIMEOUT) -> str:
        return super().wait_started(timeout)

    def children(self) -> list[int]:
        """The session processes the server runs now (its child processes)."""
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def login_cookie(url: str, token: str = TOKEN, **form: str) -> str:
    """Log in with a form post, as a browser would, and return the session cookie's value."""
    import httpx

    data = form or {"token": token}
    r = httpx.post(f"{url}/login", data=data, headers={"Origin": url}, follow_redirects=False, timeout=60)
    assert r.status_code == 303, (r.status_code, r.text)
    return r.cookies["chunkq_session"]


class RawSession:
    """A websocket to the dashboard without a browser: what a modified client could send."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.chunks: list[str] = []
        self.closed_code: int | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.chunks.append(msg.data.decode("utf-8", "replace"))
            elif msg.type == aiohttp.WSMsgType.TEXT:
                self.chunks.append(msg.data)
        self.closed_code = self.ws.close_code

    @property
    def text(self) -> str:
        return screen_text(self.chunks)

    async def wait_for(self, needle: str, within: float = 60.0, since: int = 0) -> None:
        if not await until(lambda: needle in screen_text(self.chunks[since:]) or self._reader.done(), within) \
                or needle not in screen_text(self.chunks[since:]):
            raise AssertionError(f"{needle!r} not on the screen within {within}s; got:\n{self.text[-3000:]}")

    async def wait_closed(self, within: float) -> None:
        await asyncio.wait_for(asyncio.shield(self._reader), within)

    async def keys(self, *keys: str, pause: float = 1.0) -> None:
        for key in keys:
            await self.ws.send_str(json.dumps(["stdin", key]))
            await asyncio.sleep(pause)


async def open_raw(http: aiohttp.ClientSession, url: str, cookie: str | None, origin: str | None = "same",
                   width: int = 140, height: int = 40) -> RawSession:
    headers: dict[str, Any] = {}
    if origin is not None:
        headers["Origin"] = url if origin == "same" else origin
    if cookie is not None:
        headers["Cookie"] = f"chunkq_session={cookie}"
    ws_url = url.replace("http://", "ws://") + f"/ws?width={width}&height={height}"
    ws = await http.ws_connect(ws_url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=10))
    return RawSession(ws)


T = TypeVar("T")

ROOT_SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"


def read_queue(db: str, read: Callable[[Any], Awaitable[T]]) -> T:
    """``await read(queue)`` on the database, opened read-only as `chunkq jobs`/`show`/`workers` open it.

    A second opinion, not the server's: its own connection on its own event loop, in a thread of its own,
    so any test can call it, from inside its event loop too (no `chunkq` process started for each look).
    """
    from chunkq.core import Queue

    async def go() -> T:
        async with Queue(db, readonly=True) as q:
            return await read(q)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(timeout=60)


def job_statuses(db: str) -> dict[int, str]:
    """Every job's status, as `chunkq jobs --json` says it (``read_queue``: any event loop)."""

    async def read(q: Any) -> dict[int, str]:
        return {j.id: j.to_dict()["status"] for j in await q.list_jobs(None, limit=50)}

    return read_queue(db, read)
