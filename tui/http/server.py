"""`chunkq serve`: check everything that can be checked, then run the app under uvicorn.

It refuses to start without a token unless told ``--insecure-no-auth``, binds to
loopback unless told otherwise, and finds a busy port or a bad database URL
before uvicorn starts, each as one line and exit status 2. A stop signal lets
the chunks in flight finish, as `chunkq worker` does.
"""

from __future__ import annotations

import asyncio
import os
import signal
from types import FrameType
from typing import Any

import click
import uvicorn
from chunkq import core
from chunkq.core import mask_password
from chunkq.tui.cli.options import OPTION_FLAGS, build_processor, float_range, lease_seconds_option, processing_options
from chunkq.tui.cli.retention import retention_options
from chunkq.tui.humanize import printable
from chunkq.tui.listen import is_loopback, listen_problem
from starlette.applications import Starlette

from .app import DB_TIMEOUT, DEFAULT_MAX_BODY_BYTES, HEALTH_DB_SECONDS, PROCESS_GRACE_SECONDS, create_app
from .guard import DEFAULT_BODY_TIMEOUT

TOKEN_ENV = "CHUNKQ_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
BODY_TIMEOUT = core.limits.FloatLimit("body_timeout", 0.0, 3600.0, "a positive number of seconds, at most 3,600",
                                      DEFAULT_BODY_TIMEOUT)


class ConfigError(click.ClickException):
    """Bad usage or configuration: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        # the message may quote a database URL or a path: no password, no control character
        click.echo(f"chunkq serve: {printable(mask_password(self.format_message()))}", err=True)


def _processor(path: str | None, options: core.ProcessorOptions) -> core.Processor | None:
    """The CLI's own loader, so `serve` and `process` agree on what every option means."""
    if path is None or not path.strip():
        given = options.given()
        if given:
            flag = OPTION_FLAGS[next(iter(given))]
            raise ConfigError(f"{flag} needs --processor module:function (or CHUNKQ_PROCESSOR)")
        return None
    try:
        return build_processor(path, options)
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


def _check_address(host: str, port: int) -> None:
    if (problem := listen_problem(host, port)) is not None:
        raise ConfigError(problem)


async def _check_database(db_url: str | None) -> None:
    # Found before uvicorn starts, so a wrong URL is one clear line, not a lifespan traceback.
    async with core.Queue(db_url, create=False):
        pass


@click.command("serve")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; anything but loopback exposes the API to the network.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one).")
@click.option("--insecure-no-auth", is_flag=True,
              help=f"Serve without a bearer token (otherwise {TOKEN_ENV} must be set).")
@processing_options(processor_required=False)
@lease_seconds_option
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BODY_BYTES,
              show_default=True, help="Larger request bodies are refused with 413.")
@click.option("--body-timeout", type=float_range(BODY_TIMEOUT), default=DEFAULT_BODY_TIMEOUT,
              show_default=True, metavar="S",
              help="Seconds a request body may take to arrive whole; slower ones get 408.")
@click.option("--db-timeout", type=float_range(DB_TIMEOUT), default=DB_TIMEOUT.default, show_default=True,
              metavar="S",
              help="Seconds a request may wait for the database, all its queries together, before it is "
                   "answered 503 (POST /jobs/process: past its max_seconds; GET /health waits at most "
                   f"{HEALTH_DB_SECONDS:g}).")
@click.option("--grace", type=float_range(core.bounds.GRACE), default=PROCESS_GRACE_SECONDS, show_default=True,
              metavar="S",
              help="POST /jobs/process gives up a chunk still running S seconds after it stops claiming (past "
                   "its max_seconds; one chunk: after the claim) and answers stopped_by 'overran': its lease "
                   "is released for another worker. Bounds a callback that hangs without --timeout.")
@retention_options
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, insecure_no_auth: bool, lease_seconds: float,
                  max_body_bytes: int, body_timeout: float, db_timeout: float, grace: float,
                  processor_path: str | None, options: core.ProcessorOptions, retention: core.RetentionPolicy | None,
                  prune_every: float) -> None:
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
        if not is_loopback(host):
            click.echo(f"chunkq serve: WARNING: no authentication and listening on {host}: "
                       "anyone who can reach this port can enqueue and process jobs", err=True)
    processor = _processor(processor_path, options)
    _check_address(host, port)
    db_url = _db_from_context(ctx)
    try:
        asyncio.run(_check_database(db_url))
        app = create_app(db_url or "", processor, token=token, lease_seconds=lease_seconds,
                         max_body_bytes=max_body_bytes, body_timeout=body_timeout, retention=retention,
                         prune_every=prune_every, db_timeout=db_timeout, grace=grace)
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
    current chunk (committed, answered with ``stopped_by: signal``), or after the
    app's ``grace`` (given up, ``stopped_by: overran``); a second one gives the
    chunks up at once (their leases are released for another worker).
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
