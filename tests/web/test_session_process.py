"""A session process whose browser is gone is still drained and reaped.

Once the websocket is closed, every write to it raises. textual-serve's reader
stopped at the first such error, so nobody read the dashboard's output: the
dashboard blocked on a full pipe and could not take the quit message, and after
the kill Python 3.11's ``Process.wait()`` never returned either (it waits for the
pipes to reach end of file, and a full reader stops reading). The server's slot,
and with auto-run the dashboard's worker and lease, stayed taken for good.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap

import pytest
from chunkq.tui.web.process import SessionProcess
from textual_serve.download_manager import DownloadManager

pytestmark = pytest.mark.timeout(60)

#: an app that never reads its stdin (so never sees "quit") and writes screen updates without end
FLOOD = textwrap.dedent("""
    import os, sys
    out = sys.stdout.buffer
    out.write(b"__GANGLION__\\n"); out.flush()
    frame = b"x" * 4096
    packet = b"D" + len(frame).to_bytes(4, "big") + frame
    while True:
        out.write(packet); out.flush()
""")


@pytest.mark.slow
async def test_a_session_whose_browser_is_gone_is_drained_and_reaped() -> None:
    sent = 0

    async def browser_gone(_data: object) -> None:
        nonlocal sent
        sent += 1
        raise ConnectionResetError("Cannot write to closing transport")  # aiohttp, on a closed websocket

    async def close() -> None:
        return None

    process = SessionProcess([sys.executable, "-c", FLOOD], env={}, write_bytes=browser_gone,
                             write_str=browser_gone, close=close, download_manager=DownloadManager())
    await process.start(80, 24)
    await asyncio.sleep(1.0)  # long enough to fill the pipe many times over
    assert sent >= 1
    assert process._process is not None
    async with asyncio.timeout(30):
        await process.close(grace=1.0)
    assert process._process.returncode is not None  # killed and reaped: no zombie, no held slot


async def test_the_idle_clock_restarts_at_the_first_screen_and_only_then() -> None:
    """A dashboard that takes longer than ``--idle-timeout`` to draw (a loaded host, a slow database)
    was ended as idle before its user saw it; its idleness now counts from its first screen. Later
    output is not input: it never keeps an abandoned session open."""
    import time

    from chunkq.tui.web.server import LiveSession, WebServer

    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    opened = time.monotonic() - 50  # the session opened 50 s ago and has not drawn yet
    live = LiveSession(None, "client", started=opened, last_input=opened)  # type: ignore[arg-type]
    deliver = WebServer._first_screen(live, send)
    await deliver(b"first screen")
    assert live.last_input >= opened + 50
    live.last_input = opened  # no keystroke since: the next output must not count as one
    await deliver(b"an update")
    assert live.last_input == opened and sent == [b"first screen", b"an update"]


def test_the_released_packet_is_named_the_same_on_both_sides() -> None:
    """The dashboard writes it and the server reads it; the server never imports Textual's app, so the
    name is written twice, and this keeps the two from drifting apart (a drift would bring back the
    15 s wait at every session's end, silently)."""
    from chunkq.tui.dashboard.app import RELEASED_META as written
    from chunkq.tui.web.process import RELEASED_META as read

    assert written == read
