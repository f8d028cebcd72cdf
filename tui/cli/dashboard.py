"""`chunkq tui` and `chunkq demo` (and bare `chunkq`): the commands that open the Textual dashboard.

The dashboard is imported inside ``open_dashboard``, only when it is about to
run, so every other command stays free of Textual (tests/cli checks the loaded
modules, import-linter the static imports).
"""

from __future__ import annotations

import logging
import sys

import click
from chunkq.core import Job, ProcessorOptions, Queue, mask_password
from chunkq.tui import humanize
from click.core import ParameterSource

from . import output as out
from .context import CliError, json_option, log_options, run, settings, wants_json
from .options import build_processor, processing_options

log = logging.getLogger("chunkq.cli")

DEFAULT_DEMO_DB = "chunkq-demo.db"
DEMO_PROCESSOR = "chunkq.core.demo:processor"


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def open_dashboard(db: str, processor_path: str | None, options: ProcessorOptions | None = None) -> None:
    """Check everything that can be checked cheaply, then import and run the Textual dashboard.

    The dashboard gets the same ``ProcessorOptions`` that `chunkq process` would
    apply, and applies them by the same rule (``core.apply_overrides``).
    """
    options = options or ProcessorOptions()
    Queue(db)  # a malformed URL is a usage error now, not inside the UI
    if processor_path:
        build_processor(processor_path, options)
    if not _interactive():
        raise CliError("the dashboard needs an interactive terminal; in a browser use 'chunkq web', "
                       "for scripts 'chunkq jobs', 'chunkq process' or --json")
    run(_check_database(db))  # missing, older, newer: one line here, not a crash inside the UI
    try:
        from chunkq.tui.dashboard.app import DashboardCrashed, run_dashboard
    except ModuleNotFoundError as exc:
        name = exc.name or ""
        if name.startswith(("chunkq.tui.dashboard", "textual")):
            raise CliError(f"the dashboard is not available: {exc}") from None
        raise
    try:
        run_dashboard(db, processor_path, options=options)
    except DashboardCrashed as exc:  # Textual printed the traceback; exit 1, as for anything unexpected
        raise click.ClickException(str(exc)) from None


async def _check_database(db: str) -> None:
    async with Queue(db, create=False):
        pass


@click.command("tui")
@processing_options(processor_required=False)
@log_options
@click.pass_context
def tui_command(ctx: click.Context, processor_path: str | None, options: ProcessorOptions) -> None:
    """Open the dashboard (also what plain `chunkq` does)."""
    open_dashboard(settings(ctx).db, processor_path, options)


@click.command()
@click.option("--db", "demo_db", default=None, metavar="PATH",
              help=f"Demo database (default: {DEFAULT_DEMO_DB} in the current folder).")
@click.option("--no-ui", is_flag=True, help="Only create and seed the database, and say what is in it.")
@json_option
@click.pass_context
def demo(ctx: click.Context, demo_db: str | None, no_ui: bool, as_json: bool) -> None:
    """Make a demo database with demo jobs and open the dashboard on it, with a demo processor.

    The demo provider is slow (10-50 ms a call), does not know a few IDs,
    answers some with 429 (retried) and hangs on one (cut off by a 2 s timeout).
    Run it again to reopen the same database; it is seeded only once. With
    --json (or --no-ui) it only seeds and reports.
    """
    from chunkq.core import seed_demo as seed

    root = ctx.find_root()
    if demo_db is None:
        # `chunkq --db x demo` means x; CHUNKQ_DB from the environment is the user's real queue: not that.
        given = root.get_parameter_source("db") == ParameterSource.COMMANDLINE
        demo_db = settings(ctx).db if given else DEFAULT_DEMO_DB
    as_json = wants_json(ctx, as_json)
    shown_db = humanize.printable(mask_password(demo_db))  # it may be a postgresql:// URL with a password

    async def go() -> tuple[bool, list[Job], str]:
        async with Queue(demo_db) as q:
            if await q.count_jobs() == 0:
                if not as_json:
                    log.info("seeding %s with demo jobs (a few seconds: one demo ID hangs until its timeout)",
                             shown_db)
                return True, await seed(q), out.where(q.display_url)
            return False, await q.list_jobs(limit=100), out.where(q.display_url)

    seeded, jobs, where = run(go())
    if as_json:
        out.emit_json({"db": mask_password(demo_db), "url": where, "seeded": seeded, "processor": DEMO_PROCESSOR,
                       "jobs": [j.to_dict() for j in jobs]})
    elif no_ui:
        what = f"Seeded {shown_db} with {humanize.plural(len(jobs), 'demo job')}" if seeded else \
            f"{shown_db} already has jobs; nothing seeded"
        if out.stdout_is_tty():
            out.console().print(what + ":", markup=False)
            out.jobs_table(jobs)
        else:
            click.echo(what)
            out.jobs_table(jobs)
        hint = f"chunkq --db {shown_db} process --until-empty --processor {DEMO_PROCESSOR}"
        again = "chunkq demo" if demo_db == DEFAULT_DEMO_DB else f"chunkq --db {shown_db} demo"  # this file again
        click.echo(f"Open the dashboard with '{again}', or process headless with '{hint}'.", err=True)
    if not no_ui and not as_json:
        open_dashboard(demo_db, DEMO_PROCESSOR)
