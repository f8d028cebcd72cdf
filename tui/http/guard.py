"""The guard in front of every route: the bearer token, then the request body's size and pace.

Safety comes first because the HTTP trigger is the one way in that listens on a
socket: every route but ``/health`` needs a bearer token (compared in constant
time), request bodies are capped both by their declared length and while they
stream in (chunked uploads declare none), and a body must arrive whole within
``body_timeout`` seconds (uvicorn has no such bound: a client that declares a
body and never sends it would hold its connection, and a route, forever).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import Response

from .params import error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: seconds a request body may take to arrive, by default
DEFAULT_BODY_TIMEOUT = 30.0


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyTimeout(Exception):
    """Raised from ``receive`` when the body has not arrived whole within the time allowed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body did not arrive within {seconds:g} s")
        self.seconds = seconds


class GuardMiddleware:
    """Bearer-token check, then the body size limit, before any route runs.

    A pure ASGI middleware (not ``BaseHTTPMiddleware``) so it can wrap ``receive``
    and count a body's bytes as they arrive.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 public_paths: frozenset[str] = frozenset({"/health"})) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token is not None else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.token is not None and scope.get("path") not in self.public_paths:
            refusal = self._check_token(headers.get("authorization"))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error(400, f"Content-Length {declared!r} is not a number")(scope, receive, send)
                return
            if size > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
        received = 0
        limit = self.max_body_bytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # only the body is timed: afterwards a route may wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise BodyTimeout(self.body_timeout) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        await self.app(scope, limited_receive, send)

    def _check_token(self, header: str | None) -> Response | None:
        challenge = 'Bearer realm="chunkq"'
        if not header:
            return error(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                         {"WWW-Authenticate": challenge})
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error(401, "the Authorization header must be 'Bearer <token>'",
                         {"WWW-Authenticate": challenge})
        assert self.token is not None
        # back to the bytes that were sent (latin-1 round-trips), compared with the token's UTF-8
        if not hmac.compare_digest(given.strip().encode("latin-1"), self.token):
            return error(401, "invalid bearer token",
                         {"WWW-Authenticate": f'{challenge}, error="invalid_token"'})
        return None

    def _too_large(self) -> Response:
        return error(413, f"request body is larger than the limit of {self.max_body_bytes:,} bytes")


def _headers(scope: Scope) -> dict[str, str]:
    # Header bytes are latin-1 on the wire (ASGI spec); later duplicates win, as in Starlette.
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
