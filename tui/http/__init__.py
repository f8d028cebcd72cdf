"""`chunkq serve`: processing and enqueueing over HTTP, for schedulers that can only call a URL.

Hosted cron services (and some CI systems) can fire an HTTP request on a schedule
but cannot run a command, so the design's ``POST /api/enrichment/jobs/process``
trigger lives on here as ``POST /jobs/process``. It answers exactly what
``chunkq process --json`` prints, so a script can switch between the two.

Safety comes first because this is the one way in that listens on a socket:
every route but ``/health`` needs a bearer token (compared in constant time),
the server refuses to start without one unless told ``--insecure-no-auth``, it
binds to loopback unless told otherwise, and request bodies are capped both by
their declared length and while they stream in (chunked uploads declare none).
Concurrent requests are safe because the queue hands chunks out under leases.

This module is imported only by ``chunkq serve`` (Starlette and uvicorn are an
optional extra); it never imports Textual.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import click

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"chunkq serve needs the http extra: pip install 'chunkq[http]' ({_exc})") from _exc

from chunkq import core
from chunkq.tui.cli.options import build_processor, processing_options

log = logging.getLogger("chunkq.http")

TOKEN_ENV = "CHUNKQ_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: one request may process for at most this long: an HTTP call held open for hours helps nobody
MAX_PROCESS_SECONDS = 3600.0
MAX_PAGE = 1000

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The fields POST /jobs accepts: enqueue_job's keyword arguments (core checks every value).
_JOB_FIELDS = (
    "entity_ids", "entity_type", "provider", "chunk_size", "priority", "name", "dedupe",
    "max_workers", "max_attempts", "max_errors", "max_error_ratio", "params",
)


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error the API gives is ``{"error": "..."}``: one shape for scripts to read."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- middleware


class GuardMiddleware:
    """Bearer-token check, then the body size limit, before any route runs.

    A pure ASGI middleware (not ``BaseHTTPMiddleware``) so it can wrap ``receive``
    and count a body's bytes as they arrive.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body_bytes: int,
                 public_paths: frozenset[str] = frozenset({"/health"})) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token is not None else None
        self.max_body_bytes = max_body_bytes
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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
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


# --------------------------------------------------------------------------- request parsing


class BadRequest(Exception):
    """A request a person got wrong: answered with ``status`` and the message, nothing written."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _only_params(request: Request, allowed: tuple[str, ...]) -> None:
    # A typo such as ?max_second=60 would otherwise be ignored silently and do something else.
    unknown = sorted(set(request.query_params.keys()) - set(allowed))
    if unknown:
        expected = ", ".join(allowed) if allowed else "none"
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; expected: {expected}")


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {raw!r:.60}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo:,} and {hi:,}, got {value:,}")
    return value


def _job_id(request: Request) -> int:
    raw = request.path_params["job_id"]
    # ASCII digits only (int() would also take " 7", "٧" or "1_000"), and no 5,000-digit numbers
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and 1 <= int(raw) <= 2**62:
        return int(raw)
    raise BadRequest(f"job id must be a positive whole number, got {raw!r:.60}")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


async def _json_body(request: Request) -> dict[str, Any]:
    body = b"".join([chunk async for chunk in request.stream()])
    if not body.strip():
        raise BadRequest("the request body is empty; send a JSON object", 400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 text (byte {exc.start})", 400) from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}", 400) from None
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}", 400) from None
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {_json_type(data)}", 400)
    return data


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- routes


def _queue(request: Request) -> core.Queue:
    return request.app.state.queue  # type: ignore[no-any-return]


async def process_jobs(request: Request) -> Response:
    """Process one chunk, or chunks until ``max_seconds`` runs out (or nothing is left)."""
    _only_params(request, ("max_seconds",))
    processor: core.Processor | None = request.app.state.processor
    if processor is None:
        raise BadRequest("no processor is configured: start the server with --processor module:function")
    raw = request.query_params.get("max_seconds")
    max_seconds: float | None = None
    if raw is not None:
        try:
            max_seconds = float(raw.strip())
        except ValueError:
            raise BadRequest(f"max_seconds must be a number of seconds, got {raw!r:.60}") from None
        if not math.isfinite(max_seconds) or not 0 < max_seconds <= MAX_PROCESS_SECONDS:
            raise BadRequest(
                f"max_seconds must be more than 0 and at most {MAX_PROCESS_SECONDS:g}, got {raw!r:.60}"
            )
    worker = core.Worker(_queue(request), processor, max_chunks=None if max_seconds else 1,
                         max_seconds=max_seconds)
    workers: set[core.Worker] = request.app.state.workers
    workers.add(worker)
    try:
        summary = await worker.run()
    finally:
        workers.discard(worker)
    return JSONResponse(summary.to_dict())


async def create_job(request: Request) -> Response:
    data = await _json_body(request)
    unknown = sorted(set(data) - set(_JOB_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; expected some of: {', '.join(_JOB_FIELDS)}")
    for required in ("entity_ids", "entity_type", "provider"):
        if required not in data:
            raise BadRequest(f"{required} is required")
    ids = data.pop("entity_ids")
    if not isinstance(ids, list):
        raise BadRequest(f"entity_ids must be a JSON array of strings, got {_json_type(ids)}")
    if "dedupe" in data and not isinstance(data["dedupe"], bool):
        raise BadRequest(f"dedupe must be true or false, got {data['dedupe']!r:.60}")
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise BadRequest(f"name must be a string, got {_json_type(data['name'])}")
    # None means "the default" for optional numbers, as if the field were left out.
    kwargs = {k: v for k, v in data.items() if v is not None or k in ("max_errors", "max_error_ratio")}
    job = await _queue(request).enqueue_job(ids, **kwargs)
    return JSONResponse(job.to_dict(), status_code=201, headers={"Location": f"/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    _only_params(request, ("status", "limit", "offset"))
    # ?status=a&status=b and ?status=a,b both work
    statuses = [s.strip() for raw in request.query_params.getlist("status") for s in raw.split(",")]
    statuses = [s for s in statuses if s]
    limit = _int_param(request, "limit", 100, 0, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 2**62)
    queue = _queue(request)
    jobs = await queue.list_jobs(statuses or None, limit=limit, offset=offset)
    total = await queue.count_jobs(statuses or None)
    return JSONResponse({"jobs": [j.to_dict() for j in jobs], "total": total, "limit": limit,
                         "offset": offset})


async def jobs(request: Request) -> Response:
    # One route per path, so a wrong method gets 405 with the full Allow header.
    return await (create_job(request) if request.method == "POST" else list_jobs(request))


async def show_job(request: Request) -> Response:
    _only_params(request, ())
    job = await _queue(request).get_job(_job_id(request))
    return JSONResponse(job.to_dict())


async def job_errors(request: Request) -> Response:
    _only_params(request, ("limit", "offset"))
    job_id = _job_id(request)
    limit = _int_param(request, "limit", 100, 0, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 2**62)
    errors = await _queue(request).list_errors(job_id, limit=limit, offset=offset)
    return JSONResponse({"job_id": job_id, "errors": [e.to_dict() for e in errors], "limit": limit,
                         "offset": offset})


async def health(request: Request) -> Response:
    """Unauthenticated, so it says only whether the database answers, never where it is."""
    try:
        await _queue(request).list_jobs(limit=0)
    except Exception as exc:  # whatever the database says, the answer is "not healthy"
        log.warning("health check: database unreachable: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"status": "unavailable", "database": "unreachable",
                             "error": "the database is unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "reachable",
                         "processor": request.app.state.processor is not None})


# --------------------------------------------------------------------------- errors


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error(exc.status, str(exc))


async def _chunkq_error(request: Request, exc: Exception) -> Response:
    # core's messages are written for people: shown as they are.
    status = 500
    if isinstance(exc, core.InvalidInput | core.ProcessorError):
        status = 422
    elif isinstance(exc, core.JobNotFound):
        status = 404
    elif isinstance(exc, core.InvalidTransition):
        status = 409
    elif isinstance(exc, core.DatabaseUnavailable):
        status = 503
    return error(status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _too_large(request: Request, exc: Exception) -> Response:
    limit = request.app.state.max_body_bytes
    return error(413, f"request body is larger than the limit of {limit:,} bytes")


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server's log (Starlette re-raises after this response), not to the caller.
    return error(500, "internal server error; see the server's log")


# --------------------------------------------------------------------------- the app


def create_app(
    db_url: str,
    processor: core.Processor | None,
    *,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    lease_seconds: float = 30.0,
) -> Starlette:
    """The ASGI app; ``token=None`` turns authentication off (``--insecure-no-auth``).

    The queue is opened in the lifespan, on the server's own event loop, because an
    async engine belongs to the loop it was opened on. A bad URL fails here, at once.
    """
    if token is not None and not token.strip():
        raise ValueError("the token must not be blank; pass None to turn authentication off")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    queue = core.Queue(db_url, lease_seconds=lease_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await queue.open()
        try:
            yield
        finally:
            for worker in list(app.state.workers):
                worker.stop()
            await queue.close()

    app = Starlette(
        routes=[
            Route("/jobs/process", process_jobs, methods=["POST"]),
            Route("/jobs", jobs, methods=["GET", "POST"]),
            Route("/jobs/{job_id}", show_job, methods=["GET"]),
            Route("/jobs/{job_id}/errors", job_errors, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        middleware=[Middleware(GuardMiddleware, token=token, max_body_bytes=max_body_bytes)],
        exception_handlers={
            BadRequest: _bad_request,
            core.ChunkqError: _chunkq_error,
            HTTPException: _http_error,
            BodyTooLarge: _too_large,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.queue = queue
    app.state.processor = processor
    app.state.max_body_bytes = max_body_bytes
    app.state.workers = set()
    return app


# --------------------------------------------------------------------------- `chunkq serve`


class ConfigError(click.ClickException):
    """Bad usage or configuration: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"chunkq serve: {self.format_message()}", err=True)


def _processor(path: str | None, concurrency: int | None, timeout: float | None,
               rates: tuple[tuple[str, float], ...], capture_locals: bool | None) -> core.Processor | None:
    """The CLI's own loader, so `serve` and `process` agree on what every option means."""
    if path is None or not path.strip():
        given = [name for name, v in (("--concurrency", concurrency), ("--timeout", timeout),
                                      ("--rate", rates or None), ("--capture-locals", capture_locals))
                 if v is not None]
        if given:
            raise ConfigError(f"{given[0]} needs --processor module:function (or CHUNKQ_PROCESSOR)")
        return None
    try:
        return build_processor(path, concurrency, timeout, dict(rates), capture_locals)
    except core.ChunkqError as exc:
        raise ConfigError(str(exc)) from None


def _db_from_context(ctx: click.Context) -> str | None:
    """The group's ``--db`` if the CLI gave one, else ``CHUNKQ_DB`` (else core's default file)."""
    root = ctx.find_root()
    obj = root.obj  # tui.cli's Settings
    db = obj.get("db") if isinstance(obj, dict) else getattr(obj, "db", None)
    if db:
        return str(db)
    root_db = root.params.get("db")
    if root_db:
        return str(root_db)
    return os.environ.get("CHUNKQ_DB") or None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_address(host: str, port: int) -> None:
    """Bind once and let go: a busy port or an unknown host is one line and exit 2, before uvicorn."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _check_database(db_url: str | None) -> None:
    # Found before uvicorn starts, so a wrong URL is one clear line, not a lifespan traceback.
    async with core.Queue(db_url):
        pass


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; anything but loopback exposes the API to the network.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one).")
@click.option("--insecure-no-auth", is_flag=True,
              help=f"Serve without a bearer token (otherwise {TOKEN_ENV} must be set).")
@processing_options(processor_required=False)
@click.option("--lease-seconds", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="How long a chunk stays leased without a heartbeat before another worker takes it.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BODY_BYTES,
              show_default=True, help="Larger request bodies are refused with 413.")
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, insecure_no_auth: bool, lease_seconds: float,
                  max_body_bytes: int,
                  processor_path: str | None, concurrency: int | None, timeout: float | None,
                  rates: tuple[tuple[str, float], ...], capture_locals: bool | None) -> None:
    """Serve the HTTP API: POST /jobs/process for hosted cron, POST /jobs, GET /jobs, /health.

    Every route but /health needs 'Authorization: Bearer <token>' with the token
    from the CHUNKQ_TOKEN environment variable.
    """
    token = os.environ.get(TOKEN_ENV)
    if token is not None and not token.strip():
        token = None
    if token is None and not insecure_no_auth:
        raise ConfigError(f"refusing to start without a token: set {TOKEN_ENV} to a secret "
                          "(e.g. `openssl rand -hex 32`), or pass --insecure-no-auth")
    if insecure_no_auth:
        token = None
        if not _is_loopback(host):
            click.echo(f"chunkq serve: WARNING: no authentication and listening on {host}: "
                       "anyone who can reach this port can enqueue and process jobs", err=True)
    processor = _processor(processor_path, concurrency, timeout, rates, capture_locals)
    _check_address(host, port)
    db_url = _db_from_context(ctx)
    try:
        asyncio.run(_check_database(db_url))
        app = create_app(db_url or "", processor, token=token, lease_seconds=lease_seconds,
                         max_body_bytes=max_body_bytes)
    except core.ChunkqError as exc:
        raise ConfigError(str(exc)) from None

    # the group's -v/-q (chunkq -q serve) also quiet uvicorn's own log lines
    obj = ctx.find_root().obj
    verbosity = int(getattr(obj, "verbose", 0) or 0) - int(getattr(obj, "quiet", 0) or 0)
    log_level = "debug" if verbosity > 0 else "warning" if verbosity < 0 else "info"
    config = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level=log_level,
                            server_header=False, proxy_headers=False)
    _Server(config, app).run()


class _Server(uvicorn.Server):
    """uvicorn's server, plus: a stop signal lets requests in flight finish their chunk.

    The first SIGTERM/SIGINT stops every running ``POST /jobs/process`` after its
    current chunk (committed, answered with ``stopped_by: signal``); a second one
    gives the chunks up at once (their leases are released for another worker).
    """

    def __init__(self, config: Any, app: Starlette) -> None:
        super().__init__(config)
        self._app = app
        self._signals = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        workers = list(self._app.state.workers)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for worker in workers:
            action = worker.stop if self._signals == 1 else worker.abort
            if loop is not None:
                loop.call_soon_threadsafe(action)
            else:
                action()
        if self._signals > 1 and sig != signal.SIGINT:
            self.force_exit = True
        super().handle_exit(sig, frame)


