"""Reading and managing jobs: `chunkq jobs`, `show`, `errors`, and `pause`/`resume`/`cancel`/`retry`."""

from __future__ import annotations

import sys
from typing import Any

import click
from chunkq.core import STATUSES, Job, Queue, limits
from chunkq.tui import humanize

from . import output as out
from .context import json_option, run, settings, wants_json
from .options import JOB_ID


@click.command("jobs")
@click.option("--status", "statuses", type=click.Choice([str(s) for s in STATUSES]), multiple=True,
              help="Only jobs in this status (repeatable).")
@click.option("--search", metavar="TEXT", help="Only jobs whose name, provider or entity type contains TEXT.")
@click.option("--limit", type=click.IntRange(1, limits.JOBS_PAGE.hi), default=50, show_default=True, metavar="N")
@json_option
@click.pass_context
def jobs_command(ctx: click.Context, statuses: tuple[str, ...], search: str | None, limit: int,
                 as_json: bool) -> None:
    """List jobs, active first, then newest."""
    cfg = settings(ctx)

    async def go() -> list[Job]:
        async with Queue(cfg.db, readonly=True) as q:
            return await q.list_jobs(list(statuses) or None, limit=limit, search=search)

    jobs = run(go())
    if wants_json(ctx, as_json):
        out.emit_json({"jobs": [j.to_dict() for j in jobs]})
    else:
        out.jobs_table(jobs)


@click.command()
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option
@click.pass_context
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """One job in detail: counts, settings, chunk history, errors grouped by message."""
    cfg = settings(ctx)

    async def go() -> tuple[Job, Any, Any]:
        async with Queue(cfg.db, readonly=True) as q:
            job = await q.get_job(job_id)
            return job, await q.list_chunks(job_id, limit=10_000), await q.group_errors(job_id, limit=20)

    job, chunks, groups = run(go())
    summary = out.chunk_summary(chunks)
    if wants_json(ctx, as_json):
        out.emit_json({
            "job": job.to_dict(),
            "chunks": summary,
            "error_groups": [
                {"error_type": g.error_type, "message": g.message, "count": g.count, "entities": g.entities,
                 "first_at": g.first_at.isoformat(), "last_at": g.last_at.isoformat()}
                for g in groups
            ],
        })
    else:
        out.show_job(job, summary, groups)


@click.command()
@click.argument("job_id", type=JOB_ID, metavar="ID")
@click.option("--limit", type=click.IntRange(1, limits.ERRORS_PAGE.hi), default=None, metavar="N",
              help=f"At most N errors (default: {limits.ERRORS_PAGE.default} for the table and --json, "
              "all for csv/jsonl).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table",
              show_default=True, help="csv and jsonl stream every attempt of every entity, for export.")
@json_option
@click.pass_context
def errors(ctx: click.Context, job_id: int, limit: int | None, fmt: str, as_json: bool) -> None:
    """A job's error log, oldest first (every attempt; 'final' marks entities that failed for good)."""
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    export = fmt in ("csv", "jsonl") and not as_json

    async def go() -> list[Any]:
        async with Queue(cfg.db, readonly=True) as q:
            if not export:
                return await q.list_errors(job_id, limit=limit or limits.ERRORS_PAGE.default)
            emit = out.error_writer(fmt)
            if limit is not None:
                for e in await q.list_errors(job_id, limit=limit):
                    emit(e)
            else:
                async for e in q.iter_errors(job_id):
                    emit(e)
            sys.stdout.flush()
            return []

    found = run(go())
    if as_json:
        out.emit_json({"job_id": job_id, "errors": [e.to_dict() for e in found]})
    elif not export:
        out.errors_table(found)


def _job_action(name: str, verb: str, doc: str) -> click.Command:
    """A command that calls ``Queue.<verb>(job_id)`` and says what became of the job."""

    @click.command(name, help=doc)
    @click.argument("job_id", type=JOB_ID, metavar="ID")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, job_id: int, as_json: bool) -> None:
        cfg = settings(ctx)

        async def go() -> Job:
            async with Queue(cfg.db, create=False) as q:
                return await getattr(q, verb)(job_id)

        job = run(go())
        if wants_json(ctx, as_json):
            out.emit_json(job.to_dict())
        elif name == "retry":
            if out.stdout_is_tty():
                out.console().print(f"Created [bold]job {job.id}[/] with the "
                                    f"{humanize.plural(job.total_count, 'failed entity', 'failed entities')} "
                                    f"of job {job_id}.")
            else:
                click.echo(job.id)
        elif out.stdout_is_tty():
            out.console().print(f"Job {job.id} is now ", out.status_text(job.status), ".", sep="")
        else:
            click.echo(f"{job.id}\t{job.status}")

    return command


pause = _job_action("pause", "pause", "Stop handing out a job's chunks (the chunk in flight still commits).")
resume = _job_action("resume", "resume", "Let a paused job run again.")
cancel = _job_action("cancel", "cancel", "Stop a job for good.")
retry = _job_action("retry", "retry_failed", "Create a new job of a job's failed entities; prints its id.")
