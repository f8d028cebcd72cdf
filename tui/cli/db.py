"""`chunkq db current` and `chunkq db upgrade`: which schema a database holds, and bringing it up to date.

Every other command refuses a database whose schema is older than this chunkq
(one line: run `chunkq db upgrade`), so an upgrade happens when an operator
decides, not when the first cron job of a new version happens to start.
"""

from __future__ import annotations

import click
from chunkq.core import SchemaState, schema_status, upgrade_schema
from chunkq.tui.humanize import printable

from . import output as out
from .context import CliError, json_option, run, settings, wants_json


@click.group("db")
def db_group() -> None:
    """The database's schema: its revision, and upgrading it to this chunkq's.

    \b
      chunkq db current    which revision the database is at (writes nothing)
      chunkq db upgrade    create the database, or migrate it to this chunkq's schema

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
