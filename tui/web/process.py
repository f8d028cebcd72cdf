"""One browser session's dashboard process, as the web server drives it.

textual-serve's ``AppService`` runs a Textual app in a child process and relays
its screen to a websocket. This subclass starts it without a shell and without
the server's secrets, keeps reading its output after the browser has gone, and
stops it within a bound (textual-serve's own ``stop`` has none that holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from textual_serve.app_service import AppService

log = logging.getLogger("chunkq.web")

#: environment variables a session process never sees (it needs none of the server's secrets)
PRIVATE_ENV = ("CHUNKQ_WEB_TOKEN",)
#: the meta packet a session's dashboard writes once it holds nothing (``dashboard.app.RELEASED_META``:
#: no chunk, no registered worker, its queue closed); the server never imports Textual to read the name
RELEASED_META = "chunkq-released"
#: seconds a session process gets to exit once its dashboard has said so (see ``close``)
EXIT_GRACE = 2.0


class SessionProcess(AppService):
    """textual-serve's app service, started without a shell and without the server's secrets."""

    def __init__(self, argv: list[str], *, env: dict[str, str], write_bytes: Callable[[bytes], Any],
                 write_str: Callable[[str], Any], close: Callable[[], Any], **kwargs: Any) -> None:
        super().__init__(" ".join(argv), write_bytes=self._to_browser(write_bytes),
                         write_str=self._to_browser(write_str), close=self._to_browser(close), **kwargs)
        self.argv = argv
        self.extra_env = env
        self.browser_gone = False
        #: set when the dashboard says it holds nothing any more (``RELEASED_META``, written once it has
        #: unmounted); only the interpreter's own end is left
        self.released = asyncio.Event()

    def _to_browser(self, send: Callable[..., Any]) -> Callable[..., Any]:
        """``send`` that drops what it cannot deliver once the browser is gone, instead of raising.

        textual-serve's reader (``run``) stops at the first write that raises, and a closed websocket
        raises on every write: nobody would read the dashboard's output any more, the dashboard would
        block on a full pipe before it could take the quit message, and ``Process.wait()`` (which waits
        for the pipes' end of file) would never return, even after the kill. Read to the end instead.
        """

        async def deliver(*args: Any) -> None:
            if self.browser_gone:
                return
            try:
                await send(*args)
            except (ConnectionError, RuntimeError) as e:
                self.browser_gone = True
                log.debug("session process %s: the browser is gone (%s); its output is dropped", self.pid, e)

        return deliver

    def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
        env = super()._build_environment(width, height)
        for name in PRIVATE_ENV:
            env.pop(name, None)
        env.update(self.extra_env)
        return env

    async def _open_app_process(self, width: int = 80, height: int = 24) -> asyncio.subprocess.Process:
        self._process = process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._build_environment(width, height))
        assert process.stdin is not None
        self._stdin = process.stdin
        return process

    async def on_meta(self, data: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if json.loads(data).get("type") == RELEASED_META:
                self.released.set()
                return  # ours, not textual-serve's (it would warn of an unknown type)
        await super().on_meta(data)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def close(self, grace: float) -> None:
        """Ask the dashboard to quit; if it has not within ``grace`` seconds, kill it. Never waits longer.

        Not textual-serve's ``stop``: it awaits the reader task, which swallows cancellation, so a
        timeout around it expired without effect and the wait after it had no bound. Here the reader
        (``run``) is only watched (``asyncio.wait`` never cancels it): it ends at the pipes' end of
        file, that is once the process is gone, and it keeps draining the output meanwhile.
        """
        process, reader = self._process, self._task
        if process is None or reader is None:
            return
        with contextlib.suppress(Exception):
            await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):  # a dashboard that reads no input cannot block us here
                await self.send_meta({"type": "quit"})
        released = asyncio.ensure_future(self.released.wait())
        await asyncio.wait({reader, released}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
        if released.done() and not reader.done():
            # The dashboard has let go of everything; what can still hold the process is its event
            # loop's end (aiosqlite's close awaiting its thread, already stopped, when SQLAlchemy
            # terminated a connection whose query was cancelled at exit): not worth the grace.
            await asyncio.wait({reader}, timeout=min(grace, EXIT_GRACE))
        released.cancel()
        if process.returncode is None and not reader.done():
            if self.released.is_set():
                log.info("session process %s released everything but did not exit within %g s: killing it",
                         process.pid, min(grace, EXIT_GRACE))
            else:
                log.warning("session process %s did not quit within %g s: killing it", process.pid, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        exited = asyncio.ensure_future(process.wait())  # returns once the reader has read to end of file
        await asyncio.wait({reader, exited}, timeout=max(grace, 5.0), return_when=asyncio.ALL_COMPLETED)
        if not exited.done():
            exited.cancel()
            reader.cancel()
            log.error("session process %s was killed but its pipes never closed (a child of it holds "
                      "them?): its slot is freed anyway", process.pid)
        self._task = None
