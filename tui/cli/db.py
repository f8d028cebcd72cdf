"""`chunkq db current|upgrade|space|vacuum`: which schema a database holds, bringing it up to date, its size.

Every other command refuses a database whose schema is older than this chunkq
(one line: run `chunkq db upgrade`), so an upgrade happens when an operator
decides, not when the first cron job of a new version happens to start.
"""

from __future__ import annotations

import click
from chunkq.core import (
    Queue,
    SchemaState,
    SpaceReport,
    VacuumResult,
    schema_status,
    space,
    upgrade_schema,
    vacuum_database,
)
from chunkq.tui import humanize
from chunkq.tui.humanize import printable

from . import output as out
from .context import CliError, json_option, run, settings, wants_json


@click.group("db")
def db_group() -> None:
    """The database: its schema revision, upgrading it to this chunkq's, its size, and vacuuming it.

    \b
      chunkq db current    which revision the database is at (writes nothing)
      chunkq db upgrade    create the database, or migrate it to this chunkq's schema
      chunkq db space      how big it is, and what a vacuum would give back (writes nothing)
      chunkq db vacuum     give the space pruned jobs left back (SQLite: once per old file)

    Other commands create a missing database only when they write (enqueue, demo),
    and never upgrade an existing one: run `chunkq db upgrade` once after
    upgrading chunkq. Workers of the older version keep running after it.
    """


def _describe(state: SchemaState) -> str:
    where = printable(state.where)
    todo = "; run `chunkq db upgrade`"
    if state.kind == "missing":
        return f"{where}: no database; `chunkq enqueue` or `chunkq db upgrade` creates one"
    if state.kind == "empty":
        return f"{where}: no chunkq tables; `chunkq enqueue` or `chunkq db upgrade` creates them"
    if state.kind == "current":
        return f"{where}: {state.label}, current"
    pending = ", ".join(state.pending)
    return f"{where}: {state.label}; this chunkq needs {pending} applied{todo}"


@db_group.command("current")
@json_option
@click.pass_context
def current(ctx: click.Context, as_json: bool) -> None:
    """Which schema revision the database is at, and which this chunkq uses.

    Writes nothing and creates no file. Exits 2 when this chunkq cannot use the
    database even after `chunkq db upgrade` (its schema is newer, or it is not
    chunkq's); 0 otherwise, with what an upgrade would apply.
    """
    state = run(schema_status(settings(ctx).db))
    refusal = state.refusal()
    if wants_json(ctx, as_json):
        out.emit_json(state.to_dict())
    elif refusal is None:
        click.echo(_describe(state))
    if refusal is not None:
        raise CliError(refusal)


@db_group.command("upgrade")
@json_option
@click.pass_context
def upgrade(ctx: click.Context, as_json: bool) -> None:
    """Create the database, or migrate its schema to this chunkq's (one process at a time).

    Safe to run while workers of this or the older version run, and from several
    hosts at once: one migrates under a lock, in one transaction; the others
    wait and find it done. A schema newer than this chunkq is refused (exit 2).
    """
    result = run(upgrade_schema(settings(ctx).db))
    if wants_json(ctx, as_json):
        out.emit_json(result.to_dict())
        return
    before, after = result.before, result.after
    where = printable(after.where)
    if not result.upgraded:
        click.echo(f"{where}: already at {after.label}; nothing to do.")
    elif before.kind in ("missing", "empty"):
        click.echo(f"{where}: created at {after.label}.")
    else:
        click.echo(f"{where}: upgraded from {before.label} to {after.label}.")


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:,.1f} MB"


def _space_lines(report: SpaceReport) -> list[str]:
    where = printable(report.where)
    if report.backend == "sqlite":
        free = (report.free_pages or 0) * (report.page_size or 0)
        lines = [f"{where}: {_mb(report.file_bytes)} on disk (with its write-ahead log), "
                 f"{_mb(free)} of it free pages; auto_vacuum {report.auto_vacuum}."]
        if report.auto_vacuum != "incremental":
            lines.append("Pruning cannot give space back to this file until `chunkq db vacuum` has run once.")
        return lines
    dead = sum(report.dead_rows.values())
    live = sum(report.live_rows.values())
    per_table = ", ".join(f"{name} {humanize.number(n)}" for name, n in sorted(report.dead_rows.items()))
    return [f"{where}: chunkq's tables take {_mb(report.table_bytes)}; {humanize.number(live)} live rows, "
            f"{humanize.number(dead)} dead ({per_table or 'no statistics yet'})."]


@db_group.command("space")
@json_option
@click.pass_context
def space_command(ctx: click.Context, as_json: bool) -> None:
    """How much room the database takes, and how much a vacuum would give back (writes nothing).

    SQLite: the file's size, its free pages, and whether pruning gives them back by
    itself (auto_vacuum incremental). PostgreSQL: each chunkq table's dead rows
    (pg_stat_user_tables.n_dead_tup), which autovacuum clears.
    """

    async def go() -> SpaceReport:
        async with Queue(settings(ctx).db, readonly=True) as q:
            return await space(q)

    report = run(go())
    if wants_json(ctx, as_json):
        out.emit_json(report.to_dict())
    else:
        for line in _space_lines(report):
            click.echo(line)


@db_group.command("vacuum")
@click.option("--force", is_flag=True,
              help="SQLite: vacuum even while workers are alive (their claims and commits wait until it ends).")
@json_option
@click.pass_context
def vacuum_command(ctx: click.Context, force: bool, as_json: bool) -> None:
    """Give the space of pruned jobs back: SQLite rewrites its file, PostgreSQL runs VACUUM (ANALYZE).

    \b
    SQLite: the file is rewritten without its free pages and switched to incremental
    auto-vacuum, after which every prune gives space back by itself; run it once on a
    database made before chunkq did that. It needs the write lock for the whole
    rewrite, so it refuses while a worker is alive (exit 2; --force waits them out).
    PostgreSQL: a plain VACUUM, safe while workers run; autovacuum does the same
    on its own schedule (README: recommended settings).
    """

    async def go() -> VacuumResult:
        async with Queue(settings(ctx).db, create=False) as q:
            return await vacuum_database(q, force=force)

    result = run(go())
    if wants_json(ctx, as_json):
        out.emit_json(result.to_dict())
        return
    before, after = result.before, result.after
    if after.backend == "sqlite":
        click.echo(f"{printable(after.where)}: {_mb(before.file_bytes)} -> {_mb(after.file_bytes)}; "
                   f"auto_vacuum {after.auto_vacuum}.")
    else:
        click.echo(f"{printable(after.where)}: dead rows {humanize.number(sum(before.dead_rows.values()))} -> "
                   f"{humanize.number(sum(after.dead_rows.values()))}; tables {_mb(after.table_bytes)}.")
