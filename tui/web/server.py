"""The web front: an aiohttp app whose one middleware stands in front of every route.

textual-serve's own ``Server`` has no authentication and builds its routes in a
private method, so it is not wrapped: this module serves the same pieces (its
``textual.js`` and ``AppService``, which runs one dashboard process per
websocket) from its own aiohttp app, where the ``guard`` middleware runs before
*every* handler — the page, the websocket upgrade, the static files and any
404 — and lets nothing but the login form through without a session. There is
no download route (the dashboard's exports are written on the server).

Each websocket is one process (``session.py``) started with the session's role
as an argument; the process refuses what the role may not do. Sessions are
capped, closed when idle and when their cookie is logged out or expires, and
stopped gracefully (the dashboard releases what it holds), killed if they do
not stop within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

import textual_serve
from aiohttp import WSMsgType, web
from textual_serve.download_manager import DownloadManager

from . import auth
from .process import SessionProcess

log = logging.getLogger("chunkq.web")

COOKIE = "chunkq_session"
STATIC_PATH = Path(textual_serve.__file__).parent / "static"
INDEX = Template((Path(__file__).parent / "templates" / "index.html").read_text(encoding="utf-8"))
#: a browser's messages are keystrokes, resizes and pastes (IDs into the enqueue form): 1 MiB at most
MAX_WS_MESSAGE = 1024 * 1024
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",  # no clickjacking: keys typed into a framed dashboard act
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass
class WebConfig:
    """Everything `chunkq web` was told; the server reads nothing else."""

    db: str
    #: the address browsers use; None: http://host:port, known once the port is bound
    public_url: str | None = None
    processor: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    token: str | None = None
    token_role: auth.Role = "operator"
    users_file: Path | None = None
    proxy_header: str | None = None
    trusted_proxies: frozenset[str] = frozenset()
    max_sessions: int = 4
    idle_timeout: float = 900.0
    session_lifetime: float = 12 * 3600.0
    #: seconds a session process gets to quit (release its chunk, unregister) before it is killed
    stop_grace: float = 15.0
    login_limit: int = 5
    login_window: float = 60.0

    @property
    def origin(self) -> str:
        parts = urlsplit(self.public_url or "")
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def websocket_url(self) -> str:
        parts = urlsplit(self.public_url or "")
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws"


@dataclass(eq=False)  # each is one session, kept in a set by identity
class LiveSession:
    session: auth.Session
    client: str
    started: float
    last_input: float  # or the first screen, if later: idleness is not a slow start (``_first_screen``)
    websocket: web.WebSocketResponse | None = None
    process: SessionProcess | None = None
    closing: str | None = None
    ending: asyncio.Task[None] | None = None


class WebServer:
    """The routes and the checks in front of them; one per `chunkq web`."""

    def __init__(self, config: WebConfig, *, signer: auth.SessionSigner | None = None) -> None:
        self.config = config
        self.signer = signer or auth.SessionSigner(lifetime=config.session_lifetime)
        self.limiter = auth.LoginLimiter(config.login_limit, config.login_window)
        self.live: set[LiveSession] = set()
        self.downloads = DownloadManager()
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ who is asking

    def users(self) -> dict[str, auth.User]:
        # read on each login, so `chunkq web adduser` takes effect without a restart
        return auth.read_users(self.config.users_file) if self.config.users_file is not None else {}

    def client_address(self, request: web.Request) -> str:
        remote = request.remote or "?"
        if remote in self.config.trusted_proxies:
            forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
            if forwarded:
                return forwarded
        return remote

    def current_session(self, request: web.Request) -> auth.Session | None:
        session = self.signer.check(request.cookies.get(COOKIE))
        if session is not None:
            return session
        header = self.config.proxy_header
        if header and request.remote in self.config.trusted_proxies:
            name = request.headers.get(header, "").strip()
            if name and auth.USER_NAME.match(name):
                user = self.users().get(name)
                role: auth.Role = user.role if user is not None else "viewer"
                return auth.Session(name, role, time.time() + 60, f"proxy:{name}")
        return None

    def origin_ok(self, request: web.Request) -> bool:
        """A websocket upgrade or a form post must come from this dashboard's own page (no cross-site use)."""
        return request.headers.get("Origin") == self.config.origin

    # ------------------------------------------------------------------ the guard

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/login":
            try:
                return self._headers(await handler(request))
            except web.HTTPException as exc:
                raise self._headers(exc) from None
        session = self.current_session(request)
        if session is None:
            if request.method == "GET" and request.path == "/" and not _is_upgrade(request):
                raise self._headers(web.HTTPSeeOther("/login"))
            raise self._headers(web.HTTPUnauthorized(text="log in first: /login\n"))
        request["session"] = session
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            raise self._headers(exc) from None
        if isinstance(response, web.WebSocketResponse):
            return response
        return self._headers(response)

    @staticmethod
    def _headers(response: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    # ------------------------------------------------------------------ login and logout

    def login_page(self, message: str = "", status: int = 200) -> web.Response:
        token = ('<label>Token <input type="password" name="token" autocomplete="off" autofocus></label>'
                 if self.config.token else "")
        # shown even while the file is empty: `chunkq web adduser` takes effect without a restart
        users = ('<label>User <input name="user" autocomplete="username"></label>'
                 '<label>Password <input type="password" name="password" autocomplete="current-password"></label>'
                 if self.config.users_file is not None else "")
        note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
        page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>chunkq: log in</title>
<style>body{{background:#0c181f;color:#eee;font-family:menlo,monospace;display:flex;justify-content:center;
margin-top:15vh}}form{{display:flex;flex-direction:column;gap:12px;width:320px}}input{{width:100%;padding:6px}}
button{{padding:8px;background:#5e0ba7;color:#eee;border:none}}.error{{color:#f77}}</style></head>
<body><form method="post" action="/login"><h1>chunkq</h1>{note}{token}{users}
<button type="submit">Log in</button></form></body></html>"""
        return web.Response(text=page, content_type="text/html", status=status)

    async def handle_login_page(self, request: web.Request) -> web.Response:
        return self.login_page()

    async def handle_login(self, request: web.Request) -> web.Response:
        client = self.client_address(request)
        wait = self.limiter.retry_after(client)
        if wait > 0:
            response = self.login_page(f"too many failed logins: try again in {int(wait) + 1} s", status=429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if request.headers.get("Origin") not in (None, self.config.origin):
            return self.login_page("this form must be sent from the dashboard's own page", status=403)
        form = await request.post()
        token, user, password = (str(form.get(k, ""))[:1024] for k in ("token", "user", "password"))
        who: tuple[str, auth.Role] | None = None
        if token and auth.token_matches(token, self.config.token):
            who = ("token", self.config.token_role)
        elif user and password:
            found = await asyncio.to_thread(auth.authenticate_user, self.users(), user, password)
            if found is not None:
                who = (found.name, found.role)
        if who is None:
            self.limiter.failed(client)
            log.warning("failed login from %s", client)
            return self.login_page("wrong token, user or password", status=401)
        cookie, session = self.signer.issue(*who)
        log.info("%s logged in from %s as %s", session.user, client, session.role)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, cookie, max_age=int(self.config.session_lifetime), httponly=True,
                            samesite="Strict", secure=(self.config.public_url or "").startswith("https:"), path="/")
        raise response

    async def handle_logout(self, request: web.Request) -> web.Response:
        if not self.origin_ok(request):
            raise web.HTTPForbidden(text="log out from the dashboard's own page\n")
        session: auth.Session = request["session"]
        self.signer.revoke(session)
        for live in list(self.live):
            if live.session.sid == session.sid:
                await self._end(live, "logged out")
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # ------------------------------------------------------------------ the dashboard

    async def handle_index(self, request: web.Request) -> web.Response:
        font_size = _clamp(request.query.get("fontsize"), 16, 8, 40)
        page = INDEX.substitute(websocket_url=html.escape(self.config.websocket_url), font_size=font_size)
        return web.Response(text=page, content_type="text/html")

    def session_argv(self, role: auth.Role) -> list[str]:
        # the database URL goes by environment (CHUNKQ_DB), not argv: `ps` would show its password
        argv = [sys.executable, "-m", "chunkq.tui.web.session", "--role", role]
        if self.config.processor:
            argv += ["--processor", self.config.processor, "--options", json.dumps(self.config.options)]
        return argv

    async def handle_websocket(self, request: web.Request) -> web.StreamResponse:
        session: auth.Session = request["session"]
        if not self.origin_ok(request):
            log.warning("refused a websocket from origin %r", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="cross-origin websocket refused\n")
        if len(self.live) >= self.config.max_sessions:
            raise web.HTTPServiceUnavailable(
                text=f"all {self.config.max_sessions} dashboard sessions are in use; try again later\n",
                headers={"Retry-After": "30"})
        now = time.monotonic()
        live = LiveSession(session, self.client_address(request), now, now)
        self.live.add(live)  # the slot is taken before any await: the cap holds under a burst
        try:
            websocket = web.WebSocketResponse(heartbeat=15, max_msg_size=MAX_WS_MESSAGE)
            live.websocket = websocket
            await websocket.prepare(request)
            width = _clamp(request.query.get("width"), 80, 10, 500)
            height = _clamp(request.query.get("height"), 24, 5, 200)
            live.process = SessionProcess(
                self.session_argv(session.role), env={"CHUNKQ_DB": self.config.db},
                write_bytes=self._first_screen(live, websocket.send_bytes), write_str=websocket.send_str,
                close=websocket.close, download_manager=self.downloads)
            await live.process.start(width, height)
            log.info("session for %s (%s) started: pid %s", session.user, session.role, live.process.pid)
            await self._relay(live, websocket)
        finally:
            await self._end(live, live.closing or "closed")
        return websocket

    @staticmethod
    def _first_screen(live: LiveSession, send: Callable[[bytes], Awaitable[Any]]) -> Callable[[bytes], Awaitable[None]]:
        """``send``, restarting the idle clock at the session's first screen: a dashboard that took long
        to start (a loaded host, a slow database) has not been left idle by its user meanwhile."""
        drawn = False

        async def deliver(data: bytes) -> None:
            nonlocal drawn
            if not drawn:
                drawn = True
                live.last_input = max(live.last_input, time.monotonic())
            await send(data)

        return deliver

    async def _relay(self, live: LiveSession, websocket: web.WebSocketResponse) -> None:
        """The browser's keystrokes and resizes to the session process; nothing else gets through."""
        process = live.process
        assert process is not None
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                kind, data = json.loads(message.data)
            except (ValueError, TypeError):
                continue
            if kind == "stdin" and isinstance(data, str):
                live.last_input = time.monotonic()
                await process.send_bytes(data.encode("utf-8"))
            elif kind == "resize" and isinstance(data, dict):
                await process.set_terminal_size(_clamp(data.get("width"), 80, 10, 500),
                                                _clamp(data.get("height"), 24, 5, 200))
            elif kind == "ping":
                await websocket.send_json(["pong", data])
            elif kind == "blur":
                await process.blur()
            elif kind == "focus":
                await process.focus()

    async def _end(self, live: LiveSession, why: str) -> None:
        """Close a session's websocket and stop its process: once, whoever asks first, all waiting for it.

        Shielded: a handler cancelled by its client's disconnect must not leave the
        dashboard process running (and its worker registered) half-way through.
        """
        live.closing = live.closing or why
        if live.ending is None:
            live.ending = asyncio.get_running_loop().create_task(self._stop_session(live))
        await asyncio.shield(live.ending)

    async def _stop_session(self, live: LiveSession) -> None:
        if live.websocket is not None and not live.websocket.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await live.websocket.close(code=4000, message=(live.closing or "").encode()[:120])
        if live.process is not None:
            log.debug("session for %s: stopping pid %s", live.session.user, live.process.pid)
            await live.process.close(self.config.stop_grace)
        self.live.discard(live)
        log.info("session for %s ended: %s", live.session.user, live.closing)

    async def reap(self) -> None:
        """Once a second: end sessions idle too long, or whose login was logged out or expired."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for live in list(self.live):
                if live.ending is not None or live.process is None:
                    continue
                if now - live.last_input > self.config.idle_timeout:
                    live.closing = f"idle for {self.config.idle_timeout:g} s"
                elif not live.session.sid.startswith("proxy:") and (
                        live.session.expires <= time.time() or self.signer.revoked(live.session)):
                    live.closing = "logged out or the login expired"
                else:
                    continue
                live.ending = asyncio.get_running_loop().create_task(self._stop_session(live))

    # ------------------------------------------------------------------ the app

    async def _startup(self, app: web.Application) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self.reap())

    async def _shutdown(self, app: web.Application) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self._end(live, "the server stopped") for live in list(self.live)),
                             return_exceptions=True)

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/login", self.handle_login_page),
            web.post("/login", self.handle_login),
            web.post("/logout", self.handle_logout),
            web.get("/", self.handle_index),
            web.get("/ws", self.handle_websocket),
            web.static("/static", STATIC_PATH),
        ])
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app


def run(server: WebServer, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve until SIGTERM/SIGINT, then end every session (each dashboard quits and lets go of its work).

    The port is bound before ``announce`` is called with the public URL, so
    ``--port 0`` works and the URL printed is the one that answers.
    """

    async def main() -> None:
        runner = web.AppRunner(server.make_app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            if server.config.public_url is None:
                bound = runner.addresses[0][1]
                shown = f"[{host}]" if ":" in host else host
                server.config.public_url = f"http://{shown}:{bound}"
            announce(server.config.public_url)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _clamp(value: object, default: int, low: int, high: int) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]  # any value: what int() refuses is the default
    except (TypeError, ValueError):
        return default
    return max(low, min(high, number))


def rss_bytes(pid: int) -> int | None:
    """A process's resident memory (Linux), for the README's per-session figure and the tests."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


__all__ = ["COOKIE", "WebConfig", "WebServer", "rss_bytes", "run"]
