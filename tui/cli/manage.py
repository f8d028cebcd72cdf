"""Reading and managing jobs: `chunkq jobs`, `show`, `errors`, and `pause`/`resume`/`cancel`/`retry`."""

from __future__ import annotations

import sys
from typing import Any

import click
from chunkq.core import STATUSES, ErrorEntry, Job, Queue, limits
from chunkq.tui import humanize

from . import error_output
from . import output as out
from .context import CliError, json_option, run, settings, wants_json
from .error_groups import group_dict, groups_table
from .options import JOB_ID


@click.command("jobs")
@click.option("--status", "statuses", type=click.Choice([str(s) for s in STATUSES]), multiple=True,
              help="Only jobs in this status (repeatable).")
@click.option("--search", metavar="TEXT", help="Only jobs whose name, provider or entity type contains TEXT.")
@click.option("--tenant", metavar="NAME", help="Only this tenant's jobs ('' for those without one).")
@click.option("--limit", type=click.IntRange(1, limits.JOBS_PAGE.hi), default=50, show_default=True, metavar="N")
@json_option
@click.pass_context
def jobs_command(ctx: click.Context, statuses: tuple[str, ...], search: str | None, tenant: str | None, limit: int,
                 as_json: bool) -> None:
    """List jobs, active first, then newest."""
    cfg = settings(ctx)

    async def go() -> list[Job]:
        async with Queue(cfg.db, readonly=True) as q:
            return await q.list_jobs(list(statuses) or None, limit=limit, search=search, tenant=tenant)

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
    """One job in detail: counts, settings, chunk history, errors grouped by kind (fingerprint)."""
    cfg = settings(ctx)

    async def go() -> tuple[Job, Any, Any]:
        async with Queue(cfg.db, readonly=True) as q:
            job = await q.get_job(job_id)
            return job, await q.list_chunks(job_id, limit=10_000), await q.error_group_page(job_id, limit=20)

    job, chunks, page = run(go())
    groups = list(page.groups)
    summary = out.chunk_summary(chunks)
    if wants_json(ctx, as_json):
        out.emit_json({
            "job": job.to_dict(),
            "chunks": summary,
            "error_groups": [group_dict(g) for g in groups],
            "error_groups_total": page.total,
        })
    else:
        out.show_job(job, summary, groups, groups_total=page.total)


@click.command()
@click.argument("job_id", type=JOB_ID, metavar="ID")
@click.option("--limit", type=click.IntRange(1, limits.ERRORS_PAGE.hi), default=None, metavar="N",
              help=f"At most N errors (default: {limits.ERRORS_PAGE.default} for the table and --json, "
              "all for csv/jsonl).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl"]), default="table",
              show_default=True, help="csv and jsonl stream every attempt of every entity, for export.")
@click.option("--groups", "grouped", is_flag=True,
              help="One row per kind of error (a fingerprint: same type, same place, same message but for IDs, "
                   "numbers, URLs), biggest first, with its key.")
@click.option("--group", "group_key", metavar="KEY", default=None,
              help="Only the errors of this group (a key from --groups).")
@click.option("--search", metavar="TEXT", default=None,
              help="Only errors whose entity ID or message contains TEXT (any letter case).")
@click.option("--offset", type=click.IntRange(0, limits.OFFSET.hi), default=0, metavar="N",
              help="Skip the first N errors (or groups, with --groups): the next page.")
@click.option("--merge", "merge_keys", metavar="KEY", multiple=True,
              help="Say group KEY is the same bug as the group --into names (repeatable); kept for the job's "
                   "future errors of that kind too, until --unmerge.")
@click.option("--into", "into_key", metavar="KEY", default=None, help="The group --merge merges into.")
@click.option("--unmerge", "unmerge_key", metavar="KEY", default=None,
              help="Split group KEY off the group it was merged into.")
@click.option("--id", "error_id", type=JOB_ID, default=None, metavar="N",
              help="One error in full (N: the table's ID column): its traceback and what the callback "
                   "printed and logged for that entity.")
@json_option
@click.pass_context
def errors(ctx: click.Context, job_id: int, limit: int | None, fmt: str, grouped: bool, group_key: str | None,
           search: str | None, offset: int, merge_keys: tuple[str, ...], into_key: str | None,
           unmerge_key: str | None, error_id: int | None, as_json: bool) -> None:
    """A job's error log, oldest first (every attempt; 'final' marks entities that failed for good).

    With --groups, one row per bug, biggest first, and how many bugs there are in all; --merge KEY --into KEY
    and --unmerge KEY change what counts as one bug. --id N shows one error whole: its traceback and the
    callback's captured output (print, stderr, log lines) for that entity.
    """
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    if error_id is not None:
        given = [flag for flag, on in (
            ("--groups", grouped), ("--group", group_key is not None), ("--search", search is not None),
            ("--offset", offset != 0), ("--limit", limit is not None), ("--format", fmt != "table"),
            ("--merge", bool(merge_keys)), ("--into", into_key is not None), ("--unmerge", unmerge_key is not None),
        ) if on]
        if given:
            raise CliError(f"--id shows one error: it cannot be combined with {given[0]}")
        _show_error(ctx, job_id, error_id, as_json)
        return
    if merge_keys or into_key is not None or unmerge_key is not None:
        _change_groups(ctx, job_id, merge_keys, into_key, unmerge_key, as_json)
        return
    export = fmt in ("csv", "jsonl") and not as_json
    search = limits.check_search(search)  # before an export writes its header: a refused search writes nothing
    if grouped and (group_key is not None or export):
        raise CliError("--groups lists the groups: it cannot be combined with --group or --format csv/jsonl")
    if offset and export:
        raise CliError("--offset pages the table and --json; csv and jsonl stream every error")

    async def go() -> Any:
        async with Queue(cfg.db, readonly=True) as q:
            if grouped:
                return await q.error_group_page(job_id, limit=limit or limits.ERRORS_PAGE.default, offset=offset,  # type: ignore[arg-type]  # it has a default
                                                search=search)
            if not export:
                return await q.list_errors(job_id, limit=limit or limits.ERRORS_PAGE.default, offset=offset,  # type: ignore[arg-type]  # it has a default
                                           fingerprint=group_key, search=search)
            emit = None  # the header waits for the first page: a refused --group (or job) writes nothing
            n = 0
            async for e in q.iter_errors(job_id, fingerprint=group_key, search=search, page=min(limit or 1000, 1000)):
                emit = emit or error_output.error_writer(fmt)
                emit(e)
                n += 1
                if n == limit:
                    break
            if emit is None:
                error_output.error_writer(fmt)  # no errors: the header alone
            sys.stdout.flush()
            return []

    found = run(go())
    if grouped:
        if as_json:
            out.emit_json({"job_id": job_id, "total": found.total, "limit": found.limit, "offset": found.offset,
                           "groups": [group_dict(g) for g in found.groups]})
        else:
            groups_table(found.groups, job_id, total=found.total, offset=found.offset)
    elif as_json:
        out.emit_json({"job_id": job_id, "errors": [e.to_dict() for e in found]})
    elif not export:
        error_output.errors_table(found, job_id)


def _show_error(ctx: click.Context, job_id: int, error_id: int, as_json: bool) -> None:
    """``chunkq errors JOB --id N``: the one read that carries the captured output (a page of the log
    leaves it out: up to 64 KB a row), so this is where a person or a script finds it."""
    cfg = settings(ctx)

    async def go() -> ErrorEntry:
        async with Queue(cfg.db, readonly=True) as q:
            await q.get_job(job_id)  # an unknown job is said as for every other form of `errors`
            return await q.get_error(error_id)

    entry = run(go())
    if entry.job_id != job_id:
        raise CliError(f"error {error_id} is not one of job {job_id}'s (it is job {entry.job_id}'s: "
                       f"chunkq errors {entry.job_id} --id {error_id})")
    if as_json:
        out.emit_json({"job_id": job_id, "error": error_output.error_dict(entry)})
    else:
        error_output.error_detail(entry)


def _change_groups(ctx: click.Context, job_id: int, merge_keys: tuple[str, ...], into_key: str | None,
                   unmerge_key: str | None, as_json: bool) -> None:
    """``--merge A --into B`` or ``--unmerge A``: nothing else is read or written."""
    if unmerge_key is not None and (merge_keys or into_key is not None):
        raise CliError("--unmerge cannot be combined with --merge/--into: one change at a time")
    if unmerge_key is None and (not merge_keys or into_key is None):
        raise CliError("--merge KEY needs --into KEY (the group it is the same bug as), and the reverse")
    cfg = settings(ctx)

    async def go() -> tuple[list[str], str]:
        async with Queue(cfg.db, create=False) as q:
            if unmerge_key is not None:
                return [unmerge_key], await q.unmerge_error_group(job_id, unmerge_key)
            assert into_key is not None
            return await q.merge_error_groups(job_id, list(merge_keys), into_key), into_key

    keys, other = run(go())
    if as_json:
        out.emit_json({"job_id": job_id, "merged" if unmerge_key is None else "unmerged": keys,
                       "into" if unmerge_key is None else "from": other})
    elif out.stdout_is_tty():
        verb = "merged into" if unmerge_key is None else "split off"
        out.console().print(out.plain(f"Group {', '.join(keys)} {verb} group {other}; "
                                      f"see: chunkq errors {job_id} --groups"))
    else:
        click.echo("\t".join([*keys, other]))


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


@click.command("retry")
@click.argument("job_id", type=JOB_ID, metavar="ID")
@click.option("--group", "group_key", metavar="KEY", default=None,
              help="Only the entities that failed for good with an error of this group (a key from "
                   "chunkq errors ID --groups).")
@click.option("--in-place", is_flag=True,
              help="Put the failed entities back into this job, due now, with fresh attempts, instead of "
                   "creating a new job.")
@json_option
@click.pass_context
def retry(ctx: click.Context, job_id: int, group_key: str | None, in_place: bool, as_json: bool) -> None:
    """Create a new job of a job's failed entities; prints its id (--in-place: requeue them in this job)."""
    cfg = settings(ctx)

    async def go() -> tuple[Job, int]:
        async with Queue(cfg.db, create=False) as q:
            if in_place:
                before = await q.get_job(job_id)
                job = await q.requeue_failed(job_id, fingerprint=group_key)
                return job, job.waiting_count - before.waiting_count
            job = await q.retry_failed(job_id, fingerprint=group_key)
            return job, job.total_count

    job, moved = run(go())
    what = humanize.plural(moved, "failed entity", "failed entities") + (
        f" of group {group_key}" if group_key else "")
    if wants_json(ctx, as_json):
        out.emit_json({**job.to_dict(), "requeued": moved} if in_place else job.to_dict())
    elif in_place:
        if out.stdout_is_tty():
            out.console().print(out.plain(f"Requeued {what} in job {job.id}; it is now {job.status}."))
        else:
            click.echo(f"{job.id}\t{job.status}\t{moved}")
    elif out.stdout_is_tty():
        out.console().print(out.plain(f"Created job {job.id} with the {what} of job {job_id}."))
    else:
        click.echo(job.id)
