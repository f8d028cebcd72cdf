"""A TCP proxy that misbehaves on demand, between workers and PostgreSQL (issue 24).

The network faults the kill tests cannot make: a peer that goes silent without
a reset (a host dropping off the network, a firewall forgetting a flow), a reset
of every connection, latency, and new connections refused. One proxy per worker
process is the simple way to aim a fault at exactly one worker: the worker's
``--db`` URL points at the proxy's port (``FaultProxy.url``), the others connect
straight to the server.

The proxy runs an asyncio loop on a thread of the test process; every method is
called from the test's thread and returns once the loop has applied it:

* ``freeze()`` / ``thaw()``: stop forwarding both ways on every connection, new
  ones included; sockets stay open and the kernel keeps ACKing, so neither end
  sees anything but silence. ``thaw`` forwards what was held, in order.
* ``freeze_after(pattern)``: freeze (as ``freeze``) the moment a connection has
  *sent* the Sync that ends an extended-protocol statement whose SQL contains
  ``pattern``, whether the SQL came in that Parse or was prepared earlier on the
  connection (asyncpg caches prepared statements, so the SQL text crosses the wire
  once per connection). The server has the statement and runs it; its answer, and
  everything after, is held. So a test can freeze a worker right after its
  transaction has taken a row lock. Returns an event set when it fired.
* ``reset()``: close every current connection with an RST (``SO_LINGER`` 0) to
  both ends.
* ``delay(seconds)``: add latency to every packet, both ways (order kept).
* ``drop(True)``: new connections are accepted and reset at once (a firewall's
  reject); ``drop(False)`` ends it.

Only plaintext is parsed (the local test server has ``ssl = off``; an
``SSLRequest`` answered ``S`` turns the parsing off for that connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
#: the writer's cue to freeze, queued right behind the matching statement (recv never yields b"")
_FREEZE = b""


@dataclass(eq=False)
class _Pipe:
    """One client connection and its upstream connection."""

    client: socket.socket
    server: socket.socket
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # client→server parsing: the buffer of a message not yet complete, the phase, prepared statements
    buf: bytearray = field(default_factory=bytearray)
    startup: bool = True
    parse: bool = True
    awaiting_ssl_answer: bool = False
    statements: dict[bytes, bytes] = field(default_factory=dict)
    matched: bool = False  # the statement bound since the last Sync matches the pattern


class FaultProxy:
    """``FaultProxy().start()`` listens on ``host`` (an ephemeral port) in front of ``upstream``."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432), *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._pipes: set[_Pipe] = set()
        self._opening: set[asyncio.Task[None]] = set()
        self._thawed: asyncio.Event | None = None
        self._delay = 0.0
        self._drop = False
        self._pattern: bytes | None = None
        self._fired: threading.Event | None = None
        #: (monotonic time, what) of every fault applied, for the test's report
        self.events: list[tuple[float, str]] = []
        self.accepted = 0
        #: the local port of each upstream socket (``pg_stat_activity.client_port`` of its session)
        self.upstream_ports: list[int] = []

    # ------------------------------------------------------------------ control (test thread)

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._thawed = asyncio.Event()
            self._thawed.set()
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lst.bind((self.host, 0))
            lst.listen(128)
            lst.setblocking(False)
            self._listener = lst
            self.port = lst.getsockname()[1]
            accept = loop.create_task(self._accept(lst))
            ready.set()
            try:
                loop.run_forever()
            finally:
                for pipe in list(self._pipes):
                    self._close(pipe, rst=False)
                tasks = asyncio.all_tasks(loop) | {accept}
                for t in tasks:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                lst.close()
                loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, db_url: str) -> str:
        """``db_url`` (a postgresql:// URL) pointed at this proxy."""
        return make_url(db_url).set(host=self.host, port=self.port).render_as_string(hide_password=False)

    def freeze(self) -> None:
        self._call(self._freeze, "freeze")

    def thaw(self) -> None:
        self._call(self._thaw, "thaw")

    def freeze_after(self, pattern: str) -> threading.Event:
        fired = threading.Event()

        def arm() -> None:
            self._pattern, self._fired = pattern.encode(), fired

        self._call(arm, f"armed on {pattern!r}")
        return fired

    def reset(self) -> int:
        """RST every current connection; how many there were."""
        return self._call(lambda: [self._close(p, rst=True) for p in list(self._pipes)].__len__(), "reset")

    def delay(self, seconds: float) -> None:
        self._call(lambda: setattr(self, "_delay", seconds), f"delay {seconds:g}s")

    def drop(self, on: bool = True) -> None:
        self._call(lambda: setattr(self, "_drop", on), "drop" if on else "drop off")

    @property
    def connections(self) -> int:
        return len(self._pipes)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        loop = self._loop
        assert loop is not None, "the proxy is not running"
        done: dict[str, Any] = {}
        ev = threading.Event()

        def run() -> None:
            try:
                done["r"] = fn()
            finally:
                ev.set()

        loop.call_soon_threadsafe(run)
        if not ev.wait(10):
            raise RuntimeError(f"the fault proxy did not apply {what}")
        self.events.append((time.monotonic(), what))
        return done.get("r")

    # ------------------------------------------------------------------ the loop's side

    def _freeze(self) -> None:
        assert self._thawed is not None
        self._thawed.clear()

    def _thaw(self) -> None:
        assert self._thawed is not None
        self._thawed.set()

    async def _accept(self, lst: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            client, _ = await loop.sock_accept(lst)
            self.accepted += 1
            client.setblocking(False)
            if self._drop:
                _rst(client)
                continue
            task = loop.create_task(self._open(client))
            self._opening.add(task)  # a reference, so the loop does not drop it half-way
            task.add_done_callback(self._opening.discard)

    async def _open(self, client: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        assert self._thawed is not None
        await self._thawed.wait()  # a frozen network answers nothing, not even a connect upstream
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setblocking(False)
        try:
            await loop.sock_connect(server, self.upstream)
        except OSError:
            server.close()
            _rst(client)
            return
        self.upstream_ports.append(server.getsockname()[1])
        pipe = _Pipe(client, server)
        self._pipes.add(pipe)
        queues: tuple[asyncio.Queue[tuple[float, bytes] | None], ...] = (asyncio.Queue(), asyncio.Queue())
        pipe.tasks = [
            loop.create_task(self._read(pipe, client, queues[0], upstream=True)),
            loop.create_task(self._write(pipe, server, queues[0])),
            loop.create_task(self._read(pipe, server, queues[1], upstream=False)),
            loop.create_task(self._write(pipe, client, queues[1])),
        ]

    async def _read(self, pipe: _Pipe, src: socket.socket, out: asyncio.Queue[tuple[float, bytes] | None],
                    *, upstream: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await loop.sock_recv(src, 65536)
                if not data:
                    break
                if upstream:
                    for part in self._split_at_match(pipe, data):
                        if part is None:  # the matching statement is out: freeze everything behind it
                            out.put_nowait((0.0, _FREEZE))
                        else:
                            out.put_nowait((time.monotonic() + self._delay, part))
                else:
                    if pipe.awaiting_ssl_answer:
                        pipe.awaiting_ssl_answer = False
                        if data[:1] == b"S":
                            pipe.parse = False
                    out.put_nowait((time.monotonic() + self._delay, data))
        except OSError:
            pass
        out.put_nowait(None)

    async def _write(self, pipe: _Pipe, dst: socket.socket, q: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        loop = asyncio.get_running_loop()
        assert self._thawed is not None
        try:
            while True:
                item = await q.get()
                if item is None:
                    break
                due, data = item
                if data is _FREEZE:
                    self._freeze()
                    self.events.append((time.monotonic(), "froze after the pattern"))
                    if self._fired is not None:
                        self._fired.set()
                    continue
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._thawed.wait()
                await loop.sock_sendall(dst, data)
        except OSError:
            pass
        self._close(pipe, rst=False)

    def _split_at_match(self, pipe: _Pipe, data: bytes) -> list[bytes | None]:
        """``data`` as it should be forwarded, with None after the Sync that ends a matching statement."""
        if not pipe.parse:  # always followed otherwise: a pattern armed later must see message boundaries
            return [data]
        pipe.buf += data
        out: list[bytes | None] = []
        start = 0  # of ``data`` not yet put in ``out``
        consumed = len(pipe.buf) - len(data)  # bytes of ``buf`` that came before ``data``
        pos = 0
        buf = pipe.buf
        while True:
            if pipe.startup:
                if len(buf) - pos < 8:
                    break
                length, code = struct.unpack("!ii", buf[pos:pos + 8])
                if len(buf) - pos < length:
                    break
                pos += length
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    pipe.awaiting_ssl_answer = True
                else:
                    pipe.startup = False
                continue
            if len(buf) - pos < 5:
                break
            kind = buf[pos:pos + 1]
            (length,) = struct.unpack("!i", buf[pos + 1:pos + 5])
            if len(buf) - pos < 1 + length:
                break
            body = bytes(buf[pos + 5:pos + 1 + length])
            pos += 1 + length
            if kind == b"P":  # Parse: name \0 query \0 ...
                name, _, rest = body.partition(b"\0")
                query = rest.partition(b"\0")[0]
                pipe.statements[name] = query
                if not name:
                    pipe.matched = self._pattern is not None and self._pattern in query
            elif kind == b"B":  # Bind: portal \0 statement \0 ...
                stmt = body.partition(b"\0")[2].partition(b"\0")[0]
                pipe.matched = self._pattern is not None and self._pattern in pipe.statements.get(stmt, b"")
            elif kind == b"Q":  # a simple query
                pipe.matched = self._pattern is not None and self._pattern in body
                if pipe.matched:
                    kind = b"S"
            if kind == b"S" and pipe.matched and self._pattern is not None:
                pipe.matched = False
                self._pattern = None  # once
                end = pos - consumed  # the end of this message inside ``data``
                if end > start:
                    out.append(data[start:end])
                    start = end
                out.append(None)
        del buf[:pos]
        if start < len(data):
            out.append(data[start:])
        return out

    def _close(self, pipe: _Pipe, *, rst: bool) -> None:
        if pipe not in self._pipes:
            return
        self._pipes.discard(pipe)
        for sock in (pipe.client, pipe.server):
            if rst:
                _rst(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        for t in pipe.tasks:
            if t is not asyncio.current_task(self._loop):
                t.cancel()


def _rst(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN: what a reset, or a firewall's reject, looks like."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
