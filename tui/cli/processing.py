"""`chunkq process` and `chunkq worker`: running the callback over the queue, under signal handling.

The running itself is core's ``Worker``, the same loop the dashboard's auto-run
and the HTTP trigger use: "until empty" including the wait for retries that are
not yet due (``wait_for_retries``), and the two-stage stop on SIGINT/SIGTERM
(``Worker.stop_on_signals``). This module only says what happens, in the CLI's
voice: a log line per chunk, the progress bar, the summary and the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from chunkq.core import (
    ACTIVE_STATUSES,
    EXIT_WORK_LEFT,
    NEW_ERROR_SCOPES,
    ORDERS,
    OVERRUN_WARN_SECONDS,
    RETRY_POLL_SECONDS,
    WORKER_HEARTBEAT_SECONDS,
    ChunkResult,
    DatabaseStalled,
    DatabaseUnavailable,
    EntityResult,
    Processor,
    ProcessorOptions,
    Queue,
    RetentionPolicy,
    RunSummary,
    Worker,
    deadline,
    is_auto,
    limit_for,
    limits,
    output_to_stderr,
    pruning_in_background,
    set_output_echo,
    stop_message,
    supervised,
    team,
    time_left,
    watch_supervisor,
)
from chunkq.tui import humanize

from . import output as out
from .context import CliError, json_option, run, settings, wants_json
from .options import (
    JOB_ID,
    NO_PROCESSOR,
    build_processor,
    float_range,
    int_range,
    lease_seconds_option,
    processing_options,
)
from .retention import retention_options

log = logging.getLogger("chunkq.cli")
T = TypeVar("T")

#: exit status of a worker that stopped itself because too many callback threads hung past --timeout
#: (``RunSummary.stopped_by == "wedged"``): not a failure of the command, a request to be restarted
EXIT_WEDGED = 3
#: after a second SIGINT/SIGTERM the process ends within this many seconds, whatever user code holds
HARD_EXIT_SECONDS = 3.0


#: ``--grace S``: how long the chunks in flight may run once the run stops claiming (``Worker(grace=...)``)
grace_option = click.option(
    "--grace", type=float_range(limits.GRACE), default=None, metavar="S",
    help="Once the run stops claiming (--max-seconds, a first signal), give up the chunks still running S "
         "seconds later: their leases are released for another worker to redo them, exit 4. Bounds a "
         "callback that hangs without --timeout (default: wait for them; a warning after "
         f"{OVERRUN_WARN_SECONDS:g} s).")


def _keep_heartbeat(ctx: click.Context, param: click.Parameter, value: float) -> float:
    ctx.meta["chunkq.heartbeat"] = value
    return value


#: ``--heartbeat S``: how often the process writes its row in the workers registry (lost after two missed)
heartbeat_option = click.option(
    "--heartbeat", type=float_range(limits.HEARTBEAT), default=WORKER_HEARTBEAT_SECONDS, show_default=True,
    metavar="S", expose_value=False, callback=_keep_heartbeat,
    help="Seconds between heartbeats in the workers registry (`chunkq workers`); lost after two missed.")


def _heartbeat() -> float:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return WORKER_HEARTBEAT_SECONDS
    return float(ctx.meta.get("chunkq.heartbeat", WORKER_HEARTBEAT_SECONDS))


def _load(processor_path: str | None, options: ProcessorOptions) -> Processor:
    if not processor_path:
        raise CliError(NO_PROCESSOR)
    return build_processor(processor_path, options)


async def _open_within(q: Queue, max_seconds: float | None) -> None:
    """Opening the database counts toward ``--max-seconds``: a server that accepts connections
    and never answers must not hold a cron run past its budget."""
    if max_seconds is None:
        await q.open()
        return
    try:
        await asyncio.wait_for(q.open(), max_seconds)
    except TimeoutError:
        raise DatabaseUnavailable(
            f"the database {out.where(q.display_url)} did not answer within --max-seconds {max_seconds:g}; "
            "nothing was processed") from None


class StalledAtDeadline(click.ClickException):
    """The database stopped answering and ``--max-seconds`` ran out: work is left (exit 4, as a run
    whose time ran out waiting for a dead worker's chunks; a supervisor does not restart it)."""

    exit_code = EXIT_WORK_LEFT


async def _within_max_seconds(work: Coroutine[Any, Any, T], started: float, max_seconds: float | None) -> T:
    """``--max-seconds`` bounds the database's silence too (``core.deadline``): a transaction still
    waiting past it - a claim, a commit, the worker's last heartbeat - is given up, and the run
    ends with one line naming what waited, instead of lasting as long as the database stays silent."""
    with deadline(None if max_seconds is None else started + max_seconds):
        try:
            return await work
        except DatabaseStalled as exc:
            # a supervised child's budget is what was left of the whole run's (``supervisor.time_left``)
            limit = "the run's --max-seconds" if supervised() else f"--max-seconds {max_seconds:g}"
            raise StalledAtDeadline(f"stopped at {limit}: {exc}") from None


def _say_stop(sig: signal.Signals, count: int) -> None:
    log.warning("%s", stop_message(sig, count))


def _log_chunk(
    level: int, also: Callable[[ChunkResult], None] | None = None, limit: Callable[[], int] | None = None
) -> Callable[[ChunkResult], None]:
    """The log line per chunk; ``limit`` (under ``--concurrency auto``) adds the limit found so far."""

    def on_chunk(r: ChunkResult) -> None:
        if also is not None:
            also(r)
        if not r.committed:
            log.warning("job %s chunk %s: lease lost to another worker, results discarded",
                        r.job_id, r.chunk_index)
            return
        extra = f" ({humanize.number(r.retried)} to retry)" if r.retried else ""
        if limit is not None:
            extra += f", concurrency {limit()}"
        log.log(level, "job %s chunk %s: %s done, %s%s in %s -> %s", r.job_id, r.chunk_index,
                humanize.number(r.processed), humanize.plural(r.errors, "error"), extra,
                humanize.duration(r.duration), r.status)

    return on_chunk


#: ``--processes N`` of `process` and `worker`
processes_option = click.option(
    "--processes", type=int_range(limits.PROCESSES), default=1, show_default=True, metavar="N",
    help="Run N worker processes under a supervisor that forwards stops and restarts crashed ones "
    "(for CPU-bound callbacks: every core; --concurrency is for waiting on I/O).",
)


#: ``--order`` of `process` and `worker`: which job a claim serves next (``core/claims.py``)
order_option = click.option(
    "--order", type=click.Choice(ORDERS), default="fair", show_default=True,
    help="Which job the next chunk comes from: fair (round-robin among jobs of one priority: a small job "
    "never waits behind a big one) or fifo (the oldest job first). Priority is strict in both.",
)


def _supervise(ctx: click.Context, processes: int, *, finite: bool, max_seconds: float | None = None) -> None:
    """Run this very command ``processes`` times under ``core.supervisor`` and exit with its status.

    The children get the command line minus ``--processes``; the processor was already
    loaded here, so a typo is one line and exit 2, not N crashing children. Each child is
    forked from this process, which has imported chunkq and the processor and opened no
    database (``Supervisor.start``), so it starts without importing them again; where that
    is not safe, it executes the command afresh.
    """
    from chunkq.core import Supervisor, strip_option

    from .root import cli

    argv = sys.argv[1:]
    if not any(a == "--processes" or a.startswith("--processes=") for a in argv):
        raise CliError("--processes works from the chunkq command line only")
    args = strip_option(argv, "--processes")
    command = [sys.executable, "-m", "chunkq.tui.cli", *args]

    def start() -> int:
        return int(cli.main(args=args, prog_name="chunkq", standalone_mode=False))

    # --max-seconds is the whole run's: a restarted child gets what is left of it (supervisor.time_left)
    status = Supervisor(command, processes, max_crashes=5 if finite else None, say=log.log,
                        deadline=max_seconds, start=start).run()
    ctx.exit(status)


def _check_processes(processes: int, as_json: bool) -> bool:
    """Should this command supervise ``processes`` children (rather than run a worker itself)?"""
    if processes <= 1 or supervised():
        return False
    if as_json:
        raise CliError("--processes cannot be combined with --json: each process would print its own summary")
    return True


def _finish(ctx: click.Context, summary: RunSummary, aborted_by: int | None, as_json: bool, what: str) -> None:
    """Report the run, then exit as documented: 128+signal after an abort, 3 when wedged, 4 when
    --max-seconds ran out with chunks of a worker that is gone still leased, or chunks still running past
    --grace were given up (work left, said in one line)."""
    _report(summary, as_json, what)
    if aborted_by is not None:
        ctx.exit(128 + aborted_by)
    if summary.stopped_by == "wedged":
        ctx.exit(EXIT_WEDGED)
    if summary.stopped_by == "overran":  # core said which chunks, and why
        ctx.exit(EXIT_WORK_LEFT)
    if summary.stopped_by == "orphaned":
        log.error("work left: %s, expiring in %s, past --max-seconds: run it again then",
                  summary.orphaned, humanize.duration(summary.orphaned_expire_in or 0.0))
        ctx.exit(EXIT_WORK_LEFT)


def _report(summary: RunSummary, as_json: bool, what: str) -> None:
    if as_json:
        out.emit_json(summary.to_dict())
    elif out.stdout_is_tty():
        out.console().print(f"[bold]{what}:[/] {out.summary_sentence(summary)}", markup=True)
    else:
        out.plain_line(f"chunkq {what}: {out.summary_sentence(summary)}")


async def run_processing(
    q: Queue, processor: Processor, *, job_id: int | None = None, max_chunks: int | None = None,
    max_seconds: float | None = None, until_empty: bool = False, forever: bool = False,
    poll_interval: float = 1.0, bar_total: int | None = None, kind: str = "process",
    stop_on_new_error: str | None = None, grace: float | None = None,
) -> tuple[RunSummary, int | None]:
    """Run a ``Worker`` under signal handling; returns the summary and the signal that aborted, if any.

    ``stop_on_new_error``: the breakpoint's scope ("job", "processor"; ``Worker``), None for none.

    ``until_empty`` also waits for entity retries that are scheduled but not yet
    due, so "empty" means every active job is finished, not just that nothing is
    claimable this very second.
    """
    on_entity: Callable[[EntityResult], None] | None = None
    on_bar_chunk: Callable[[ChunkResult], None] | None = None
    chunk_level = logging.INFO
    progress_cm: Any = contextlib.nullcontext()
    auto = is_auto(processor.concurrency)
    limiter = limit_for(processor) if auto else None  # the one "auto" limiter the worker's runner uses
    if bar_total is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}", justify="right"),
            TextColumn("[red]{task.fields[errors]:,} failed"), TimeElapsedColumn(), TimeRemainingColumn(),
            *([TextColumn("concurrency {task.fields[limit]}")] if auto else []),
            console=out.console(),
        )
        task = progress.add_task("entities", total=bar_total, errors=0, limit=limiter.limit if limiter else 0)
        chunk_level = logging.DEBUG
        # Committed counts are exact; entities finished in the chunk in flight move the bar meanwhile
        # (a transient failure counts there until its chunk commits and says it will be retried).
        tally = {"committed": 0, "inflight": 0, "failed": 0}

        def on_entity(r: EntityResult) -> None:
            tally["inflight"] += 1
            progress.update(task, completed=min(tally["committed"] + tally["inflight"], bar_total),
                            limit=limiter.limit if limiter else 0)

        def on_bar_chunk(r: ChunkResult) -> None:
            tally["inflight"] = 0
            if r.committed:
                tally["committed"] += r.processed
                tally["failed"] += r.errors - r.retried
            progress.update(task, completed=min(tally["committed"], bar_total), errors=tally["failed"])

        progress_cm = progress

    def on_wait(due: float | None) -> None:
        if due is not None:
            log.log(chunk_level, "waiting %s for entity retries that are not yet due",
                    humanize.duration(max(due - q.now(), RETRY_POLL_SECONDS)))

    worker: Worker  # made below, before anything calls this

    def show_limit_of_worker() -> int:
        return worker.concurrency_limit

    show_limit = show_limit_of_worker if auto else None
    worker = Worker(q, processor, job_id=job_id, max_chunks=max_chunks, max_seconds=max_seconds,
                    forever=forever, poll_interval=poll_interval, wait_for_retries=until_empty,
                    on_wait=on_wait, on_chunk=_log_chunk(chunk_level, on_bar_chunk, show_limit), on_entity=on_entity,
                    stop_on_new_error=stop_on_new_error is not None, new_error_scope=stop_on_new_error or "job",
                    grace=grace)
    # After a second signal the process ends within HARD_EXIT_SECONDS even if user code holds a
    # thread that never returns (e.g. a callback's own asyncio.to_thread): see core/signals.py.
    # A supervised child whose supervisor died stops itself in the same two stages (core/supervisor.py).
    with worker.stop_on_signals(on_signal=_say_stop, hard_exit_after=HARD_EXIT_SECONDS) as stopper, \
            watch_supervisor(stopper, hard_exit_after=HARD_EXIT_SECONDS, say=log.log), progress_cm:
        # registered in chunkq_workers while it runs: `chunkq workers` lists it, an operator can stop it
        async with worker.registered(kind=kind, interval=_heartbeat()):
            # Everything loaded so far (SQLAlchemy, the user's module) lives as long as the process:
            # out of the cyclic collector's sight, its full passes stop walking it every few seconds
            # (measured, issue 14: 2-5% of a no-op worker's time). Process-wide, so the command line
            # does it, not the library; and only for a run that lasts.
            if forever or until_empty:
                gc.freeze()
            # The callback's own output (print, stderr, logging), line by line on stderr with its entity
            # ID in front: never into stdout, where --json writes (core/capture.py keeps it for errors too).
            echo = set_output_echo(output_to_stderr(humanize.printable))
            try:
                summary = await worker.run()
            finally:
                set_output_echo(echo)
    return summary, stopper.aborted_by


@click.command()
@click.option("--until-empty", is_flag=True,
              help="Keep going until every job is done, waiting for scheduled retries and for the leases of "
                   "workers that died (default: one chunk).")
@click.option("--max-chunks", type=int_range(limits.MAX_CHUNKS), default=None, metavar="N",
              help="Stop after N chunks.")
@click.option("--max-seconds", type=float_range(limits.MAX_SECONDS), default=None, metavar="S",
              help="Start no chunk after S seconds (a chunk in flight still finishes, within --grace if "
                   "given); a database that stops answering is given up past it (exit 4).")
@click.option("--job", "job_id", type=JOB_ID, default=None, metavar="ID",
              help="Only this job.")
@click.option("--stop-on-new-error", type=click.Choice(NEW_ERROR_SCOPES), is_flag=False, flag_value="job",
              default=None, metavar="[job|processor]",
              help="A breakpoint: stop after the first chunk that logs a kind of error (a fingerprint) its job "
                   "had never logged, and say which (exit 0). 'processor': only one that no job of the job's "
                   "processor (its --processor route; the unrouted jobs count as one) ever logged either.")
@grace_option
@heartbeat_option
@lease_seconds_option
@processes_option
@order_option
@processing_options()
@json_option
@click.pass_context
def process(
    ctx: click.Context, until_empty: bool, max_chunks: int | None, max_seconds: float | None,
    job_id: int | None, stop_on_new_error: str | None, grace: float | None, lease_seconds: float,
    processes: int, order: str, processor_path: str | None, options: ProcessorOptions, as_json: bool,
) -> None:
    """Process pending chunks, then exit: the cron entry point.

    By default one chunk; --until-empty, --max-chunks and --max-seconds run
    more. Exits 0 when nothing is pending. Overlapping runs are safe: each
    chunk is leased to one process. Exits 3 when too many callbacks hung past
    --timeout (their threads cannot be stopped): run it again. With
    --until-empty, --processes N runs N processes until the queue is empty.
    --until-empty also waits for chunks leased by a worker that died until
    their leases expire, and redoes them (a chunk of a live worker is its
    own); it exits 4, saying what is left, when --max-seconds ends first.
    Exits 4 when --max-seconds ran out while the database did not answer
    (a wait of 5 s or more past it is given up, and logged while it lasts),
    and when chunks still running --grace seconds after the run stopped
    claiming were given up (for another run to redo).
    """
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    if _check_processes(processes, as_json):
        if not until_empty or max_chunks is not None:
            raise CliError("--processes needs --until-empty (and no --max-chunks): each process drains the queue")
        _load(processor_path, options)
        _supervise(ctx, processes, finite=True, max_seconds=max_seconds)
    started = time.monotonic()
    max_seconds = time_left(max_seconds)  # a supervised child: what is left of the whole run's budget
    if not (until_empty or max_seconds is not None or max_chunks is not None):
        max_chunks = 1
    show_bar = until_empty and not as_json and out.stdout_is_tty() and not supervised()

    async def go() -> tuple[RunSummary, int | None]:
        # a supervised child counts as its supervisor against max_workers (core/supervisor.py)
        q = Queue(cfg.db, lease_seconds=lease_seconds, create=False, order=order, team=team())
        await _open_within(q, max_seconds)
        async with q:
            total = None
            if job_id is not None:
                job = await q.get_job(job_id)  # an unknown id is a usage error, found before any claim
                total = job.remaining_count
                if job.status not in ACTIVE_STATUSES:
                    log.warning("job %s is %s: nothing to process", job_id, job.status)
            elif show_bar:
                active = await q.list_jobs(list(ACTIVE_STATUSES), limit=limits.JOBS_PAGE.hi)
                total = sum(j.remaining_count for j in active)
            left = None if max_seconds is None else max(max_seconds - (time.monotonic() - started), 0.001)
            return await run_processing(q, processor, job_id=job_id, max_chunks=max_chunks,
                                        max_seconds=left, until_empty=until_empty,
                                        bar_total=total if show_bar else None,
                                        stop_on_new_error=stop_on_new_error, grace=grace)

    with out.stdout_to_stderr(as_json):  # a callback's print() must not break the JSON document
        processor = _load(processor_path, options)
        summary, aborted_by = run(_within_max_seconds(go(), started, max_seconds))
    _finish(ctx, summary, aborted_by, as_json, "process")


@click.command()
@click.option("--poll-interval", type=float_range(limits.POLL_INTERVAL), default=limits.POLL_INTERVAL.default,
              show_default=True, metavar="S",
              help="Seconds between looks for work when idle (jittered).")
@click.option("--max-seconds", type=float_range(limits.MAX_SECONDS), default=None, metavar="S",
              help="Exit 0 after S seconds, to be started afresh by a process manager: no chunk is claimed past "
                   "it, the chunks in flight finish and commit, the worker leaves the registry (with "
                   "--processes N: the whole run's, each process exits then).")
@grace_option
@heartbeat_option
@lease_seconds_option
@processes_option
@order_option
@processing_options()
@retention_options
@json_option
@click.pass_context
def worker(
    ctx: click.Context, poll_interval: float, max_seconds: float | None, grace: float | None,
    lease_seconds: float, processes: int, order: str, processor_path: str | None, options: ProcessorOptions,
    retention: RetentionPolicy | None, prune_every: float, as_json: bool,
) -> None:
    """Process chunks until stopped (systemd, supervisor, a container).

    The first SIGTERM/SIGINT finishes and commits the chunk in flight, then
    exits 0; a second gives that chunk up at once (its lease is released, so
    another worker redoes it) and exits 128+signal. Exits 3 when too many
    callbacks hung past --timeout (Python cannot stop their threads): let the
    supervisor start a fresh worker. Without --timeout a hung sync callback
    cannot be abandoned; the second signal still ends the process, and
    --grace S gives up a chunk still running S seconds after the first
    (exit 4), as a process manager's stop timeout expects.
    --processes N runs N worker processes (restarted when they crash).
    --max-seconds S ends it cleanly after S seconds (exit 0), to recycle
    workers; as in `chunkq process`, a database that stops answering is
    given up past it (exit 4).
    """
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    if _check_processes(processes, as_json):
        _load(processor_path, options)
        _supervise(ctx, processes, finite=False, max_seconds=max_seconds)
    started = time.monotonic()
    max_seconds = time_left(max_seconds)  # a supervised child: what is left of the whole run's budget

    async def go() -> tuple[RunSummary, int | None]:
        q = Queue(cfg.db, lease_seconds=lease_seconds, create=False, order=order, team=team())
        await _open_within(q, max_seconds)
        async with q:
            until = "" if max_seconds is None else f", until {humanize.duration(max_seconds)} from now"
            log.info("worker %s on %s with %s%s; stop with Ctrl-C or SIGTERM", q.owner,
                     out.where(q.display_url), processor_path, until)
            async with pruning_in_background(q, retention, every=prune_every):  # a task beside the claim loop
                left = None if max_seconds is None else max(max_seconds - (time.monotonic() - started), 0.001)
                return await run_processing(q, processor, forever=True, poll_interval=poll_interval,
                                            max_seconds=left, kind="worker", grace=grace)

    with out.stdout_to_stderr(as_json):  # a callback's print() must not break the JSON document
        processor = _load(processor_path, options)
        summary, aborted_by = run(_within_max_seconds(go(), started, max_seconds))
    _finish(ctx, summary, aborted_by, as_json, "worker")
