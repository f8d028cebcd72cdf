"""The `chunkq` command itself: the group's options, where each subcommand lives, and ``main``.

Heavy subcommands load lazily: `tui`/`demo` import the Textual dashboard only
when they run, and `serve` (in ``chunkq.tui.http``) is imported only when
invoked, so `chunkq process` in a cron job never pays for, or breaks on, a UI
library.
"""

from __future__ import annotations

import os

import click
from chunkq.core import SCHEMA_VERSION, __version__, schema_revision

from . import output as out
from .context import DEFAULT_DB, Settings, set_verbosity
from .dashboard import demo, open_dashboard, tui_command
from .db import db_group
from .enqueue import enqueue
from .group import ChunkqGroup
from .history import history_command
from .manage import cancel, errors, jobs_command, pause, resume, retry, show
from .processing import process, worker
from .retention import export_command, import_command, prune_command
from .tenants import tenants_command
from .workers import workers_command


def _not_blank(ctx: click.Context, value: str) -> str:
    """``--db ''`` typed (a variable that was meant to hold a URL, empty): a usage error, where it used to
    open ./chunkq.db without a word. An empty CHUNKQ_DB is "not set", as for any variable."""
    if not value.strip() and ctx.get_parameter_source("db") is click.core.ParameterSource.COMMANDLINE:
        raise click.BadParameter("is empty: give a SQLite file path or a postgresql:// URL")
    return value


@click.group(
    cls=ChunkqGroup,
    invoke_without_command=True,
    lazy_subcommands={
        "serve": ("chunkq.tui.http:serve_command",
                  "HTTP trigger for hosted schedulers: POST /jobs/process (needs chunkq[http])."),
        "web": ("chunkq.tui.web:web_command",
                "The dashboard in a browser, behind a login (needs chunkq[web])."),
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--db", envvar="CHUNKQ_DB", default=DEFAULT_DB, show_default=True, show_envvar=True,
              metavar="URL", help="SQLite file path, sqlite:///path, or postgresql://user@host/db.",
              callback=lambda ctx, param, value: _not_blank(ctx, value))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (any command).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: every library's debug log).")
@click.option("-q", "--quiet", count=True, help="Less log output (-q: warnings only, -qq: errors only).")
# the schema too: it is what `chunkq db upgrade` moves a database to, and what tells which chunkq reads it
@click.version_option(__version__, prog_name="chunkq", message="%(prog)s, version %(version)s "
                      f"(database schema revision {schema_revision(SCHEMA_VERSION)})")
@click.pass_context
def cli(ctx: click.Context, db: str, as_json: bool, verbose: int, quiet: int) -> None:
    """Push long lists of entity IDs through a slow, flaky callback, in chunks, from a database queue.

    \b
    Typical use:
      chunkq enqueue ids.txt --entity-type company --provider clearbit
      chunkq process --until-empty --processor myjobs:enrich     # from cron
      chunkq worker --processor myjobs:enrich                     # long-running
      chunkq                                                      # the dashboard
      chunkq demo                                                 # try it all on demo data
    """
    set_verbosity(verbose)
    out.setup_logging(verbose, quiet)
    ctx.obj = Settings(db=db, json=as_json, verbose=verbose, quiet=quiet)
    if ctx.invoked_subcommand is None:
        open_dashboard(db, os.environ.get("CHUNKQ_PROCESSOR") or None)


for _command in (enqueue, process, worker, jobs_command, show, errors, pause, resume, cancel, retry,
                 tui_command, demo, db_group):
    cli.add_command(_command)
cli.add_command(workers_command)
cli.add_command(history_command)
cli.add_command(tenants_command)
for _command in (prune_command, export_command, import_command):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point (``chunkq = "chunkq.tui.cli:main"``)."""
    cli.main(prog_name="chunkq")
