"""`chunkq enqueue`: a job from a file (or stdin) of IDs, streamed, all or nothing."""

from __future__ import annotations

import sys
from typing import Any

import click
from chunkq.core import Job, Queue, check_job_settings, limits
from chunkq.tui import humanize
from rich.text import Text

from . import output as out
from .context import CliError, json_option, run, settings, wants_json
from .options import float_range, int_range
from .sources import FORMATS, IdSource, spool_stdin


def _open_source(source: str | None) -> tuple[Any, str]:
    """The input as a binary stream; stdin is spooled to a temporary file first.

    Enqueueing holds the database's write transaction while it reads (all or
    nothing), so a slow producer on a pipe must not keep SQLite's write lock, and
    every worker waiting on it, for as long as it takes. The spool is on disk, so
    memory stays flat either way.
    """
    if source is None:
        if sys.stdin.isatty():
            raise CliError("no input: give a FILE of IDs, or '-' and pipe them on stdin")
        source = "-"
    if source == "-":
        return spool_stdin(sys.stdin.buffer), "stdin"  # bounded: see sources.spool_stdin
    try:
        return open(source, "rb"), source  # closed by the caller
    except OSError as exc:
        raise CliError(f"cannot read {source!r}: {exc.strerror or exc}") from None


@click.command()
@click.argument("source", required=False, metavar="[FILE|-]")
@click.option("--entity-type", "-t", required=True, help="What the IDs are: company, person, url…")
@click.option("--provider", "-p", required=True, help="Who is called for them (also the rate-limit key).")
@click.option("--chunk-size", type=int_range(limits.CHUNK_SIZE), default=limits.CHUNK_SIZE.default, show_default=True,
              help="IDs per chunk (one lease, one commit).")
@click.option("--priority", type=int_range(limits.PRIORITY), default=limits.PRIORITY.default, show_default=True,
              help="Higher runs first.")
@click.option("--name", help="A label shown in lists and the dashboard.")
@click.option("--dedupe", is_flag=True, help="Drop repeated IDs (keeps the first).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="lines", show_default=True,
              help="lines: one ID per line; csv: a column (header row required); "
              "jsonl: one JSON value per line.")
@click.option("--column", metavar="NAME", help="CSV column or JSON key holding the ID.")
@click.option("--max-workers", type=int_range(limits.MAX_WORKERS), default=limits.MAX_WORKERS.default,
              show_default=True,
              help="Workers that may run this job at once (a worker started with --processes N is one).")
@click.option("--max-attempts", type=int_range(limits.MAX_ATTEMPTS), default=limits.MAX_ATTEMPTS.default,
              show_default=True, help="Tries per entity for transient failures (chunkq.core.Retry).")
@click.option("--max-errors", type=int_range(limits.MAX_ERRORS), default=limits.MAX_ERRORS.default, metavar="N",
              help="Pause the job once more than N of its entities have failed.")
@click.option("--max-error-ratio", type=float_range(limits.MAX_ERROR_RATIO), default=limits.MAX_ERROR_RATIO.default,
              metavar="F",
              help="Pause the job once more than this fraction of its processed entities failed "
              "(0 < F <= 1; checked after the first chunk's worth).")
@click.option("--processor", "processor_name", metavar="MODULE:FUNCTION",
              help="Route the job: only workers started with this --processor run it (default: any worker). "
              "Not imported here, so it may name code this host does not have.")
@click.option("--tenant", metavar="NAME",
              help="Who the job is for (a customer, a team): tenants take turns before their jobs do, so one "
              "with 50 jobs does not get 50 turns to another's one.")
@json_option
@click.pass_context
def enqueue(
    ctx: click.Context, source: str | None, entity_type: str, provider: str, chunk_size: int, priority: int,
    name: str | None, dedupe: bool, fmt: str, column: str | None, max_workers: int, max_attempts: int,
    max_errors: int | None, max_error_ratio: float | None, processor_name: str | None, tenant: str | None,
    as_json: bool,
) -> None:
    """Create a job from IDs in FILE (or stdin with '-'); prints the new job's id.

    The file is streamed: a million lines never sit in memory at once. Any bad
    line (not UTF-8, too long, …) rejects the whole file and creates nothing.
    """
    cfg = settings(ctx)
    # the job's settings are checked before the database is opened: a bad name or option refuses the
    # command without creating a database file on the way (the IDs are checked as they stream in)
    check_job_settings(dict(
        entity_type=entity_type, provider=provider, chunk_size=chunk_size, priority=priority, name=name,
        max_workers=max_workers, max_attempts=max_attempts, max_errors=max_errors,
        max_error_ratio=max_error_ratio, processor=processor_name, params=None, tenant=tenant))
    stream, label = _open_source(source)
    try:
        ids = IdSource(stream, label, fmt, column).open()

        async def go() -> Job:
            async with Queue(cfg.db) as q:
                return await q.enqueue_job(
                    ids, entity_type=entity_type, provider=provider, chunk_size=chunk_size, priority=priority,
                    name=name, dedupe=dedupe, max_workers=max_workers, max_attempts=max_attempts,
                    max_errors=max_errors, max_error_ratio=max_error_ratio, processor=processor_name,
                    tenant=tenant,
                )

        job = run(go())
    finally:
        stream.close()
    if wants_json(ctx, as_json):
        out.emit_json(job.to_dict())
    elif out.stdout_is_tty():
        chunks = -(-job.total_count // job.chunk_size)
        # entity type and provider are the user's text: plain, never markup
        out.console().print(Text.assemble(
            "Created ", (f"job {job.id}", "bold"),
            f": {humanize.number(job.total_count)} {humanize.printable(job.entity_type)} IDs for "
            f"{humanize.printable(job.provider)}, "
            f"{humanize.plural(chunks, 'chunk')} of {humanize.number(job.chunk_size)}.",
        ))
    else:
        click.echo(job.id)
