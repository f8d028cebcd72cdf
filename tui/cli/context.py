"""What every `chunkq` command shares: the group's settings, the common options, the exit-2 error.

Kept apart from the group itself so each command module can import it without
importing the group (which imports every command module to register it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from . import output as out

T = TypeVar("T")
DEFAULT_DB = "chunkq.db"


class CliError(click.ClickException):
    """A usage/input/configuration problem found by the CLI itself: exit 2, one line."""

    exit_code = 2


@dataclass
class Settings:
    """The group's options (``chunkq --db URL --json -v …``), found by every subcommand."""

    db: str = DEFAULT_DB
    json: bool = False
    verbose: int = 0
    quiet: int = 0


class _Verbosity:
    """The last -v count seen: the group's error handler runs outside any click context and reads it."""

    level = 0


def set_verbosity(verbose: int) -> None:
    _Verbosity.level = verbose


def verbosity() -> int:
    return _Verbosity.level


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def settings(ctx: click.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else Settings(db=os.environ.get("CHUNKQ_DB") or DEFAULT_DB)


def _more_logging(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """-v/-q after the command name (`chunkq process -q`, as cron lines say it) add to the global ones."""
    if value:
        cfg = settings(ctx)
        if param.name == "verbose":
            cfg.verbose += value
        else:
            cfg.quiet += value
        set_verbosity(cfg.verbose)
        out.setup_logging(cfg.verbose, cfg.quiet)
    return value


def log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-q", "--quiet", count=True, expose_value=False, callback=_more_logging,
                     help="Less log output (repeatable).")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_more_logging,
                        help="More log output (repeatable).")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json, -v and -q: what every command accepts after its name."""
    f = log_options(f)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout and nothing else.")(f)


def wants_json(ctx: click.Context, as_json: bool) -> bool:
    return as_json or settings(ctx).json
