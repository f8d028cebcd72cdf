"""`chunkq prune`, `chunkq export` and `chunkq import`: deleting old finished jobs, and keeping them in a file.

What may be pruned, the defaults and the small transactions are core's
(``chunkq.core.retention``), and so is the file format (``chunkq.core.archive``);
this module is click glue. Every bad input is checked before anything is
deleted or written: an unknown status is click's usage error, a bad age or an
archive folder that cannot be written is core's ``InvalidInput`` (exit 2, one line).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from chunkq.core import (
    DEFAULT_POLICY,
    FINISHED_STATUSES,
    PRUNE_EVERY,
    InvalidInput,
    InvalidTransition,
    Pruner,
    PruneResult,
    Queue,
    RetentionPolicy,
    archive_folder,
    import_jobs,
    limits,
    open_export,
    parse_age,
)
from chunkq.tui import humanize

from . import output as out
from .context import CliError, json_option, run, settings, wants_json
from .options import JOB_ID, float_range

#: ``--prune-every``: a finite number of seconds (click's FloatRange let ``nan`` through)
PRUNE_EVERY_LIMIT = limits.FloatLimit("prune_every", 1.0, 7 * 86400.0, "between 1 and 604,800 seconds (a week)",
                                      lo_open=False)

_FINISHED = [str(s) for s in FINISHED_STATUSES]
#: how long `chunkq prune` waits for a background pruner's round to end before it gives up
BUSY_WAIT_SECONDS = 60.0
log = logging.getLogger("chunkq.cli")


def _retention(ctx: click.Context, param: click.Parameter, value: str) -> RetentionPolicy | None:
    try:
        return RetentionPolicy.parse(value, field="--retention")
    except InvalidInput as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def retention_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--retention POLICY`` and ``--prune-every S``: a long-running process prunes in the background."""
    f = click.option("--prune-every", "prune_every", type=float_range(PRUNE_EVERY_LIMIT), default=PRUNE_EVERY,
                     show_default=True, metavar="S",
                     help="Seconds between background prunes (one process at a time prunes a database).")(f)
    return click.option(
        "--retention", "retention", default="default", envvar="CHUNKQ_RETENTION", show_envvar=True,
        metavar="POLICY", callback=_retention,
        help=f"Prune finished jobs past their retention in the background: 'default' ({DEFAULT_POLICY.describe()}), "
             "'off', one age for all (30d), or per status (complete=7d,failed=forever).")(f)


def policy_for(older_than: str | None, statuses: tuple[str, ...]) -> RetentionPolicy:
    """``--older-than``/``--status`` as a policy: the age for those statuses; without an age, the defaults."""
    if older_than is None:
        return DEFAULT_POLICY.restricted(statuses or None)
    return RetentionPolicy.only(parse_age(older_than, field="--older-than"), statuses or None)


def _sentence(result: PruneResult) -> str:
    verb = "Would prune" if result.dry_run else "Pruned"
    what = humanize.plural(result.jobs, "finished job", "finished jobs")
    rows = (f"{humanize.plural(result.entities, 'entity', 'entities')}, "
            f"{humanize.plural(result.errors, 'error', 'errors')}")
    kept = ", ".join(f"{k} {v}" for k, v in result.policy.items())
    tail = f"; archived to {result.archive}" if result.archive and result.jobs else ""
    if result.reclaimed_pages:
        tail += f"; gave {humanize.plural(result.reclaimed_pages, 'free page')} back to the file system"
    return f"{verb} {what} ({rows}; kept: {kept}){tail}."


@click.command("prune")
@click.option("--older-than", "older_than", metavar="AGE",
              help="Prune finished jobs whose last change is older than AGE (30d, 12h, 90m). Default: the "
                   f"retention policy ({DEFAULT_POLICY.describe()}).")
@click.option("--status", "statuses", type=click.Choice(_FINISHED), multiple=True,
              help="Only jobs in this status (repeatable; default: every finished status).")
@click.option("--dry-run", is_flag=True, help="Count what would be pruned; delete nothing.")
@click.option("--archive", "archive", metavar="DIR", type=click.Path(file_okay=True, path_type=Path),
              help="Write the jobs to DIR/chunkq-archive-<time>.jsonl.gz (readable by `chunkq import`) "
                   "before deleting them.")
@json_option
@click.pass_context
def prune_command(ctx: click.Context, older_than: str | None, statuses: tuple[str, ...], dry_run: bool,
                  archive: Path | None, as_json: bool) -> None:
    """Delete finished jobs (with their entities, chunks and errors) past their retention, in small batches.

    \b
    Never pruned: pending, running and paused jobs, and a job whose retry job is not finished.
    Workers and `chunkq serve` apply the default policy by themselves every few minutes.
    """
    cfg = settings(ctx)
    policy = policy_for(older_than, statuses)
    folder = archive_folder(archive, field="--archive") if archive is not None else None

    async def once(pruner: Pruner) -> PruneResult:
        if folder is None:
            return await pruner.prune(policy)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        path = folder / f"chunkq-archive-{stamp}.jsonl.gz"
        with open_export(path) as writer:
            result = await pruner.prune(policy, archive=writer)
        if not writer.jobs:
            path.unlink(missing_ok=True)  # nothing went: no empty archive left behind
        return result

    async def go() -> PruneResult:
        async with Queue(cfg.db, create=False) as q:
            pruner = Pruner(q)
            if dry_run:
                return await pruner.count(policy)
            give_up = time.monotonic() + BUSY_WAIT_SECONDS
            waited = False
            while (result := await once(pruner)).busy and time.monotonic() < give_up:
                if not waited:
                    log.info("another pruner holds this database's lease (a worker or `chunkq serve` pruning in "
                             "the background); waiting for it")
                    waited = True
                await asyncio.sleep(1.0)
            return result

    result = run(go())
    if result.busy:
        raise click.ClickException(f"another pruner (a worker, `chunkq serve` or another `chunkq prune`) held this "
                                   f"database's lease for {BUSY_WAIT_SECONDS:g} s; nothing was pruned, try again "
                                   "later")
    if wants_json(ctx, as_json):
        out.emit_json(result.to_dict())
    elif out.stdout_is_tty():
        out.console().print(out.plain(_sentence(result)))
    else:
        out.plain_line(_sentence(result))


@click.command("export")
@click.argument("job_ids", type=JOB_ID, nargs=-1, metavar="[JOB]...")
@click.option("--older-than", "older_than", metavar="AGE",
              help="Every finished job whose last change is older than AGE (what `prune --older-than` deletes).")
@click.option("--status", "statuses", type=click.Choice(_FINISHED), multiple=True,
              help="With --older-than: only jobs in this status (repeatable).")
@click.option("-o", "--output", "output", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE (a new file; .gz compresses) instead of standard output.")
@click.option("--gzip", "compress", is_flag=True, help="Compress with gzip whatever the file name.")
@click.pass_context
def export_command(ctx: click.Context, job_ids: tuple[int, ...], older_than: str | None,
                   statuses: tuple[str, ...], output: Path | None, compress: bool) -> None:
    """Write finished jobs, their entities and outcomes, chunks and errors as JSON Lines (`chunkq import` reads it)."""
    cfg = settings(ctx)
    if bool(job_ids) == (older_than is not None):
        raise CliError("give job ids or --older-than AGE (not both)")
    if statuses and older_than is None:
        raise CliError("--status goes with --older-than")
    policy = RetentionPolicy.only(parse_age(older_than, field="--older-than"), statuses or None) \
        if older_than is not None else None
    if output is None and compress and sys.stdout.isatty():
        raise CliError("gzip output to a terminal: give -o FILE or pipe it")

    async def go() -> int:
        async with Queue(cfg.db, readonly=True) as q:
            for job_id in job_ids:  # every job checked before a line is written
                job = await q.get_job(job_id)
                if not job.is_finished:
                    raise InvalidTransition(f"job {job_id} is {job.status}: only finished jobs (complete, failed, "
                                            "cancelled) can be exported")
            with open_export(output, gzip=compress) as writer:
                if policy is None:
                    for job_id in dict.fromkeys(job_ids):
                        await writer.add_job(q, job_id)
                else:
                    async for job_id in Pruner(q).iter_candidates(policy):
                        await writer.add_job(q, job_id)
                return writer.jobs

    written = run(go())
    if output is not None:
        click.echo(f"Exported {humanize.plural(written, 'job', 'jobs')} to {humanize.printable(str(output))}.",
                   err=True)


@click.command("import")
@click.argument("path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@click.pass_context
def import_command(ctx: click.Context, path: Path, as_json: bool) -> None:
    """Load jobs from a `chunkq export` file (or a prune archive) as new jobs; prints old and new ids.

    The whole file is checked first: a malformed line is refused with its number and nothing is created.
    """
    cfg = settings(ctx)
    if not path.is_file():
        raise InvalidInput(f"no export file at {str(path)!r}", field="FILE")

    async def go():
        async with Queue(cfg.db) as q:
            return await import_jobs(q, path)

    result = run(go())
    if wants_json(ctx, as_json):
        out.emit_json(result.to_dict())
    elif out.stdout_is_tty():
        for old, new in result.jobs:
            out.console().print(f"Imported job {old} as job [bold]{new}[/].")
        if not result.jobs:
            out.console().print("The file holds no jobs.")
    else:
        out.tsv([(old, new) for old, new in result.jobs])
