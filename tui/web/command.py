"""`chunkq web` (serve the dashboard to browsers) and `chunkq web adduser` (the users file).

Everything that can be refused is refused before the port opens, as one line
and exit status 2: no way to log in, a bad processor or database, a busy port,
a malformed users file, a trusted proxy header without a proxy address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
from chunkq import core
from chunkq.core import mask_password
from chunkq.tui.cli.options import build_processor, processing_options
from chunkq.tui.humanize import printable
from chunkq.tui.listen import is_loopback, listen_problem

from . import auth
from .server import WebConfig, WebServer, run

TOKEN_ENV = "CHUNKQ_WEB_TOKEN"
USERS_ENV = "CHUNKQ_WEB_USERS"
DEFAULT_USERS_FILE = "chunkq-web-users.txt"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8040

log = logging.getLogger("chunkq.web")


class ConfigError(click.ClickException):
    """Bad usage or configuration: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"chunkq web: {printable(mask_password(self.format_message()))}", err=True)


def _check_address(host: str, port: int) -> None:
    if (problem := listen_problem(host, port)) is not None:
        raise ConfigError(problem)


async def _check_database(db: str) -> None:
    async with core.Queue(db, create=False):
        pass


def _db(ctx: click.Context, given: str | None) -> str:
    if given:
        return given
    obj = ctx.find_root().obj
    db = getattr(obj, "db", None) or ctx.find_root().params.get("db") or os.environ.get("CHUNKQ_DB")
    return str(db or "chunkq.db")


users_file_option = click.option(
    "--users-file", type=click.Path(dir_okay=False, path_type=Path), envvar=USERS_ENV, show_envvar=True,
    default=DEFAULT_USERS_FILE, show_default=True, help="Users and their scrypt password hashes.")


@click.group("web", invoke_without_command=True)
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to bind; keep loopback and put a TLS reverse proxy in front (see the README).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", "db_url", default=None, metavar="URL", help="The queue (default: chunkq's --db).")
@click.option("--public-url", default=None, metavar="URL",
              help="The address browsers use (https://… behind a proxy); websockets must come from its origin.")
@click.option("--max-sessions", type=click.IntRange(1, 100), default=4, show_default=True,
              help="Browser sessions at once (each is a dashboard process).")
@click.option("--idle-timeout", type=click.FloatRange(1, 86400), default=900, show_default=True, metavar="S",
              help="End a session after this many seconds without a keystroke.")
@click.option("--session-hours", type=click.FloatRange(0.001, 720), default=12, show_default=True,
              help="A login lasts this long.")
@click.option("--token-role", type=click.Choice(auth.ROLES), default="operator", show_default=True,
              help=f"The role of whoever logs in with {TOKEN_ENV}.")
@users_file_option
@click.option("--proxy-user-header", default=None, metavar="NAME",
              help="Trust this header (e.g. X-Forwarded-User) as the logged-in user, only from --trusted-proxy.")
@click.option("--trusted-proxy", multiple=True, metavar="ADDRESS",
              help="A reverse proxy's address allowed to send --proxy-user-header (repeatable).")
@processing_options(processor_required=False)
@click.pass_context
def web_command(ctx: click.Context, host: str, port: int, db_url: str | None, public_url: str | None,
                max_sessions: int, idle_timeout: float, session_hours: float, token_role: auth.Role,
                users_file: Path, proxy_user_header: str | None, trusted_proxy: tuple[str, ...],
                processor_path: str | None, options: core.ProcessorOptions) -> None:
    """The dashboard in a browser, behind a login (token, users file or trusted proxy).

    Each browser session runs its own dashboard process, as `chunkq tui` would,
    with the same --processor rules (without one it watches). Roles: a viewer
    sees everything and changes nothing; an operator can do everything but the
    post-mortem debugger. Add users with `chunkq web adduser NAME --role ROLE`.
    """
    if ctx.invoked_subcommand is not None:
        return
    token = (os.environ.get(TOKEN_ENV) or "").strip() or None
    if token is not None and len(token) < 16:
        raise ConfigError(f"{TOKEN_ENV} is too short: use at least 16 characters (e.g. `openssl rand -hex 32`)")
    try:
        has_users = bool(auth.read_users(users_file))
    except auth.AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    if proxy_user_header and not trusted_proxy:
        raise ConfigError("--proxy-user-header needs --trusted-proxy ADDRESS (the proxy that sets it)")
    for address in trusted_proxy:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"--trusted-proxy {address!r} is not an IP address") from None
    if token is None and not has_users and not proxy_user_header:
        raise ConfigError(f"refusing to start without a way to log in: set {TOKEN_ENV}, add a user with "
                          "`chunkq web adduser NAME --role viewer|operator`, or pass --proxy-user-header")
    if processor_path:
        try:
            build_processor(processor_path, options)
        except core.ChunkqError as exc:
            raise ConfigError(str(exc)) from None
    elif options.given():
        raise ConfigError("processor options need --processor module:function (or CHUNKQ_PROCESSOR)")
    db = _db(ctx, db_url)
    try:
        asyncio.run(_check_database(db))
    except core.ChunkqError as exc:
        raise ConfigError(str(exc)) from None
    _check_address(host, port)
    if public_url is not None:
        public_url = public_url.rstrip("/")
        if not public_url.startswith(("http://", "https://")) or not urlsplit(public_url).netloc:
            raise ConfigError("--public-url must be an http:// or https:// address")
    config = WebConfig(
        db=db, public_url=public_url, processor=processor_path, options=options.given(), token=token,
        token_role=token_role, users_file=users_file, proxy_header=proxy_user_header,
        trusted_proxies=frozenset(trusted_proxy), max_sessions=max_sessions, idle_timeout=idle_timeout,
        session_lifetime=session_hours * 3600)
    ways = [w for w, on in ((f"the token in {TOKEN_ENV}", token), (f"users in {users_file}", has_users),
                            (f"{proxy_user_header} from {', '.join(trusted_proxy)}", proxy_user_header)) if on]

    def announce(url: str) -> None:
        click.echo(f"chunkq web: the dashboard on {url} for up to {max_sessions} sessions; log in with "
                   f"{' or '.join(ways)}.", err=True)
        if is_loopback(host):
            click.echo("chunkq web: listening on loopback only. To let others in, keep it so and put a "
                       "TLS-terminating reverse proxy in front, with --public-url https://… (README: chunkq web).",
                       err=True)
        elif not url.startswith("https:"):
            click.echo(f"chunkq web: WARNING: listening on {host} without TLS: logins and cookies cross the "
                       "network in clear. Use a TLS-terminating reverse proxy instead (README: chunkq web).",
                       err=True)
        sys.stderr.flush()

    run(WebServer(config), host, port, announce)


@web_command.command("adduser")
@click.argument("name")
@click.option("--role", type=click.Choice(auth.ROLES), required=True, help="viewer: look only; operator: act.")
@users_file_option
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def adduser(name: str, role: auth.Role, users_file: Path, password_stdin: bool) -> None:
    """Add a user to the web dashboard's users file (or change their role and password)."""
    try:
        auth.check_user_name(name)
        auth.read_users(users_file)
    except auth.AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise ConfigError("a password needs at least 8 characters")
    try:
        replaced = auth.write_user(users_file, name, role, password)
    except OSError as exc:
        raise ConfigError(f"cannot write {users_file}: {exc.strerror or exc}") from None
    click.echo(f"{'updated' if replaced else 'added'} {name} ({role}) in {users_file}", err=True)
