"""`chunkq process` and `chunkq worker`: running the callback over the queue, under signal handling.

Everything about *running* lives here, in one place: the two-stage stop
(``StopOnSignals``), "until empty" including the wait for retries that are not
yet due (``run_processing``, ``_next_retry_in``), and the progress bar. The
dashboard has its own copy of the run-until-empty loop for now; both are meant
to move into core, and this module is where the CLI will switch over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

import click
from chunkq.core import (
    ACTIVE_STATUSES,
    ChunkResult,
    EntityResult,
    Processor,
    Queue,
    RunSummary,
    Worker,
)
from chunkq.tui import humanize

from . import output as out
from .context import CliError, json_option, run, settings, wants_json
from .options import build_processor, lease_seconds_option, processing_options

log = logging.getLogger("chunkq.cli")


class StopOnSignals:
    """First SIGTERM/SIGINT: finish and commit the chunk in flight. Second: give it up now."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.count = 0
        self.aborted_by: int | None = None
        self.event = asyncio.Event()
        self._installed: list[signal.Signals] = []

    def __enter__(self) -> StopOnSignals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._handle, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / not POSIX
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)

    def _handle(self, sig: signal.Signals) -> None:
        self.count += 1
        self.event.set()
        if self.count == 1:
            log.warning("%s: finishing the chunk in flight, then stopping (send it again to give it up now)",
                        sig.name)
            if self.worker is not None:
                self.worker.stop()
        else:
            log.warning("%s again: giving up the chunk in flight; its lease is released for another worker",
                        sig.name)
            self.aborted_by = int(sig)
            if self.worker is not None:
                self.worker.abort()


def _load(processor_path: str | None, concurrency: int | None, timeout: float | None,
          rates: Sequence[tuple[str, float]], capture_locals: bool | None) -> Processor:
    if not processor_path:
        raise CliError("no processor: give --processor module:function (or set CHUNKQ_PROCESSOR)")
    return build_processor(processor_path, concurrency, timeout, dict(rates), capture_locals)


def _log_chunk(
    level: int, also: Callable[[ChunkResult], None] | None = None
) -> Callable[[ChunkResult], None]:
    def on_chunk(r: ChunkResult) -> None:
        if also is not None:
            also(r)
        if not r.committed:
            log.warning("job %s chunk %s: lease lost to another worker, results discarded",
                        r.job_id, r.chunk_index)
            return
        extra = f" ({humanize.number(r.retried)} to retry)" if r.retried else ""
        log.log(level, "job %s chunk %s: %s done, %s%s in %s -> %s", r.job_id, r.chunk_index,
                humanize.number(r.processed), humanize.plural(r.errors, "error"), extra,
                humanize.duration(r.duration), r.status)

    return on_chunk


def _report(summary: RunSummary, as_json: bool, what: str) -> None:
    if as_json:
        out.emit_json(summary.to_dict())
    elif out.stdout_is_tty():
        out.console().print(f"[bold]{what}:[/] {out.summary_sentence(summary)}", markup=True)
    else:
        out.plain_line(f"chunkq {what}: {out.summary_sentence(summary)}")


def _merge(total: RunSummary, part: RunSummary) -> None:
    total.chunks += part.chunks
    total.entities += part.entities
    total.errors += part.errors
    total.retried += part.retried
    total.discarded += part.discarded
    total.jobs_completed += [j for j in part.jobs_completed if j not in total.jobs_completed]
    total.stopped_by = part.stopped_by


async def _next_retry_in(q: Queue, job_id: int | None) -> float | None:
    """Seconds until the earliest scheduled entity retry of an active job; None when none waits."""
    jobs = [await q.get_job(job_id)] if job_id is not None else await q.list_jobs(
        list(ACTIVE_STATUSES), limit=100_000)
    due = [j.next_retry_at.timestamp() for j in jobs
           if j.status in ACTIVE_STATUSES and j.waiting_count > 0 and j.next_retry_at is not None]
    return max(min(due) - q.now(), 0.25) if due else None


async def run_processing(
    q: Queue, processor: Processor, *, job_id: int | None = None, max_chunks: int | None = None,
    max_seconds: float | None = None, until_empty: bool = False, forever: bool = False,
    poll_interval: float = 1.0, bar_total: int | None = None,
) -> tuple[RunSummary, int | None]:
    """Run workers under signal handling; returns the summary and the signal that aborted, if any.

    ``until_empty`` also waits for entity retries that are scheduled but not yet
    due, so "empty" means every active job is finished, not just that nothing is
    claimable this very second.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max_seconds if max_seconds is not None else None
    summary = RunSummary()
    on_entity: Callable[[EntityResult], None] | None = None
    on_bar_chunk: Callable[[ChunkResult], None] | None = None
    chunk_level = logging.INFO
    progress_cm: Any = contextlib.nullcontext()
    if bar_total is not None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}", justify="right"),
            TextColumn("[red]{task.fields[errors]:,} failed"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=out.console(),
        )
        task = progress.add_task("entities", total=bar_total, errors=0)
        chunk_level = logging.DEBUG
        # Committed counts are exact; entities finished in the chunk in flight move the bar meanwhile
        # (a transient failure counts there until its chunk commits and says it will be retried).
        tally = {"committed": 0, "inflight": 0, "failed": 0}

        def on_entity(r: EntityResult) -> None:
            tally["inflight"] += 1
            progress.update(task, completed=min(tally["committed"] + tally["inflight"], bar_total))

        def on_bar_chunk(r: ChunkResult) -> None:
            tally["inflight"] = 0
            if r.committed:
                tally["committed"] += r.processed
                tally["failed"] += r.errors - r.retried
            progress.update(task, completed=min(tally["committed"], bar_total), errors=tally["failed"])

        progress_cm = progress

    with StopOnSignals() as stopper, progress_cm:
        while True:
            left_chunks = None if max_chunks is None else max_chunks - summary.chunks
            left_seconds = None if deadline is None else max(deadline - loop.time(), 0.0)
            worker = Worker(q, processor, job_id=job_id, max_chunks=left_chunks, max_seconds=left_seconds,
                            forever=forever, poll_interval=poll_interval,
                            on_chunk=_log_chunk(chunk_level, on_bar_chunk), on_entity=on_entity)
            stopper.worker = worker
            if stopper.count:
                worker.stop()
            _merge(summary, await worker.run())
            if summary.stopped_by != "empty" or not until_empty or stopper.count:
                break
            wait = await _next_retry_in(q, job_id)
            if wait is None:
                break
            if deadline is not None:
                wait = min(wait, max(deadline - loop.time(), 0.0))
            log.log(chunk_level, "waiting %s for entity retries that are not yet due", humanize.duration(wait))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopper.event.wait(), wait)
            if stopper.count:
                summary.stopped_by = "signal"
                break
    summary.elapsed = loop.time() - started
    if stopper.aborted_by is not None:
        summary.stopped_by = "aborted"
    return summary, stopper.aborted_by


@click.command()
@click.option("--until-empty", is_flag=True,
              help="Keep going until every job is done, waiting for scheduled retries (default: one chunk).")
@click.option("--max-chunks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N chunks.")
@click.option("--max-seconds", type=click.FloatRange(0, min_open=True), default=None, metavar="S",
              help="Start no chunk after S seconds (a chunk in flight still finishes).")
@click.option("--job", "job_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="Only this job.")
@lease_seconds_option
@processing_options()
@json_option
@click.pass_context
def process(
    ctx: click.Context, until_empty: bool, max_chunks: int | None, max_seconds: float | None,
    job_id: int | None, lease_seconds: float, processor_path: str | None, concurrency: int | None,
    timeout: float | None, rates: tuple[tuple[str, float], ...], capture_locals: bool | None, as_json: bool,
) -> None:
    """Process pending chunks, then exit: the cron entry point.

    By default one chunk; --until-empty, --max-chunks and --max-seconds run
    more. Exits 0 when nothing is pending. Overlapping runs are safe: each
    chunk is leased to one process.
    """
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    processor = _load(processor_path, concurrency, timeout, rates, capture_locals)
    if not (until_empty or max_seconds is not None or max_chunks is not None):
        max_chunks = 1
    show_bar = until_empty and not as_json and out.stdout_is_tty()

    async def go() -> tuple[RunSummary, int | None]:
        async with Queue(cfg.db, lease_seconds=lease_seconds) as q:
            total = None
            if job_id is not None:
                job = await q.get_job(job_id)  # an unknown id is a usage error, found before any claim
                total = job.remaining_count
                if job.status not in ACTIVE_STATUSES:
                    log.warning("job %s is %s: nothing to process", job_id, job.status)
            elif show_bar:
                active = await q.list_jobs(list(ACTIVE_STATUSES), limit=100_000)
                total = sum(j.remaining_count for j in active)
            return await run_processing(q, processor, job_id=job_id, max_chunks=max_chunks,
                                        max_seconds=max_seconds, until_empty=until_empty,
                                        bar_total=total if show_bar else None)

    summary, aborted_by = run(go())
    _report(summary, as_json, "process")
    if aborted_by is not None:
        ctx.exit(128 + aborted_by)


@click.command()
@click.option("--poll-interval", type=click.FloatRange(0.01), default=1.0, show_default=True, metavar="S",
              help="Seconds between looks for work when idle (jittered).")
@lease_seconds_option
@processing_options()
@json_option
@click.pass_context
def worker(
    ctx: click.Context, poll_interval: float, lease_seconds: float, processor_path: str | None,
    concurrency: int | None, timeout: float | None, rates: tuple[tuple[str, float], ...],
    capture_locals: bool | None, as_json: bool,
) -> None:
    """Process chunks until stopped (systemd, supervisor, a container).

    The first SIGTERM/SIGINT finishes and commits the chunk in flight, then
    exits 0; a second gives that chunk up at once (its lease is released, so
    another worker redoes it) and exits 128+signal.
    """
    cfg = settings(ctx)
    as_json = wants_json(ctx, as_json)
    processor = _load(processor_path, concurrency, timeout, rates, capture_locals)

    async def go() -> tuple[RunSummary, int | None]:
        async with Queue(cfg.db, lease_seconds=lease_seconds) as q:
            log.info("worker %s on %s with %s; stop with Ctrl-C or SIGTERM", q.owner,
                     out.where(q.display_url), processor_path)
            return await run_processing(q, processor, forever=True, poll_interval=poll_interval)

    summary, aborted_by = run(go())
    _report(summary, as_json, "worker")
    if aborted_by is not None:
        ctx.exit(128 + aborted_by)
