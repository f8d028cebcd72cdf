"""The click group class behind `chunkq`: subcommands imported on demand, every error one line.

Exit status is a contract with cron and scripts: 0 when the command did what
was asked (including "nothing to do"), 2 when the request itself is wrong (bad
usage, bad input, a processor that does not load, a database URL that cannot
be opened; the one-line message says which), 1 for anything unexpected.
Per-entity callback errors are data in the queue, never a failed command.

Every message is printed through ``humanize.printable`` (a message may quote a
job name, a path or a driver's error: no control character reaches the
terminal) and ``core.mask_password`` (no database password reaches a log).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click
from chunkq.core import ChunkqError, mask_password
from chunkq.tui.humanize import printable

from .context import CliError, set_verbosity, verbosity


def _one_line(text: object) -> str:
    return mask_password(" ".join(printable(text).split())) or "(no message)"


class ChunkqGroup(click.Group):
    """A click group with lazily imported subcommands and one-line errors.

    ``lazy_subcommands`` maps a name to ``("module:attribute", "short help")``;
    the module is imported only when that command runs or its own ``--help`` is
    shown (the click docs' LazyGroup pattern). The group's ``--help`` lists it from
    the short help without importing anything.
    """

    def __init__(self, *args: Any, lazy_subcommands: dict[str, tuple[str, str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands and cmd_name not in self.commands:
            return self._lazy_load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        target, short_help = self.lazy_subcommands[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
            command = getattr(module, attr)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                why = f"this installation has no {module_name} module yet"
            elif exc.name and exc.name.split(".")[0] in ("starlette", "uvicorn"):
                why = f"it needs the http extra ({exc.name} is missing): pip install 'chunkq[http]'"
            else:
                why = f"importing {module_name} failed: {exc}"
            return _unavailable(cmd_name, short_help, why)
        except AttributeError:
            return _unavailable(cmd_name, short_help, f"{module_name} defines no {attr}")
        if not isinstance(command, click.Command):
            return _unavailable(cmd_name, short_help, f"{target} is not a click command")
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = self._hoist_global_options(ctx, args)
        return super().parse_args(ctx, args)

    def _hoist_global_options(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Move the group's own options written after the subcommand (``chunkq tui --db X``) before it.

        People type the database where they type everything else, after the command.
        An option the subcommand (or its sub-subcommand) defines itself stays its own
        (``chunkq demo --db PATH``), and nothing after ``--`` is touched.
        """
        takes_value = {name: not p.is_flag and not p.count for p in self.params
                       if isinstance(p, click.Option) and not p.is_eager for name in p.opts}
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            head = args[i].split("=", 1)[0]
            i += 2 if takes_value.get(head) and "=" not in args[i] else 1
        if i >= len(args) or args[i] == "--":
            return args
        own: set[str] = set()
        command: click.Command | None = self.get_command(ctx, args[i])
        for word in args[i + 1:]:
            if command is None:
                break
            own |= {name for p in command.params if isinstance(p, click.Option) for name in p.opts + p.secondary_opts}
            if not isinstance(command, click.Group) or word.startswith("-"):
                break
            command = command.get_command(ctx, word)
        front, rest, j = list(args[: i + 1]), list(args[: 0]), i + 1
        while j < len(args):
            word = args[j]
            head = word.split("=", 1)[0]
            if word == "--":
                rest += args[j:]
                break
            if head in takes_value and head not in own:
                if takes_value[head] and "=" not in word and j + 1 >= len(args):
                    raise click.UsageError(f"Option '{head}' requires an argument.", ctx)
                if takes_value[head] and "=" not in word:
                    front[i:i] = [word, args[j + 1]]
                    i += 2
                    j += 2
                    continue
                front[i:i] = [word]
                i += 1
            else:
                rest.append(word)
            j += 1
        return front + rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            if name in self.lazy_subcommands and name not in self.commands:
                rows.append((name, self.lazy_subcommands[name][1]))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """The command; a closed stdout leaves it as ``_ReaderGone``, which click's ``main`` lets through
        (it turns ``BrokenPipeError`` into ``sys.exit(1)`` itself, even outside standalone mode)."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _ReaderGone from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run, turning every error into one line on stderr and the documented exit status."""
        set_verbosity(0)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
            sys.stdout.flush()  # the last rows: a reader that went away is seen here, not at exit
        except (BrokenPipeError, _ReaderGone):
            code = _reader_gone()
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "chunkq")
            click.echo(f"Error: {_one_line(exc.format_message())} (see '{where} --help')", err=True)
            code = 2
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except ChunkqError as exc:
            click.echo(f"Error: {_one_line(exc)}", err=True)
            code = 2
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            code = 130
        except (Exception, asyncio.CancelledError) as exc:
            if verbosity() > 0:
                traceback.print_exc(file=sys.stderr)
            hint = "" if verbosity() > 0 else " (run with -v for the traceback)"
            click.echo(f"Error: unexpected {type(exc).__name__}: {_one_line(exc)}{hint}", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


class _ReaderGone(Exception):
    """stdout's reader closed the pipe while the command wrote to it."""


#: the status of a command whose reader went away (``chunkq jobs | head -1``): 128 + SIGPIPE, as the shell
#: reports a C tool the pipe's signal ended
READER_GONE = 128 + 13


def _reader_gone() -> int:
    """stdout's reader closed the pipe: nothing more to say, to anyone. Before, the exit status was 0 or 1
    depending on whether the rows fit the pipe's buffer before ``head`` exited, with nothing on stderr.

    stdout is pointed at /dev/null so the interpreter's own flush at exit does not fail again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (a test runner's buffer): nothing will flush into a pipe
    return READER_GONE


def _unavailable(name: str, short_help: str, why: str) -> click.Command:
    """A stand-in for a lazy command that cannot be loaded: it fails with the reason."""

    def callback(**_: Any) -> None:
        raise CliError(f"'chunkq {name}' is not available: {why}")

    return click.Command(
        name, callback=callback, help=f"{short_help}\n\nNot available: {why}", short_help=short_help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=True,
    )
