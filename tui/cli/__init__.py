"""The `chunkq` command: every operation of the queue, headless, for people, cron and scripts.

Exit status is a contract with cron and scripts: 0 when the command did what
was asked (including "nothing to do"), 2 when the request itself is wrong (bad
usage, bad input, a processor that does not load, a database URL that cannot
be opened; the one-line message says which), 1 for anything unexpected.
Per-entity callback errors are data in the queue, never a failed command.

Heavy subcommands load lazily: `tui`/`demo` import the Textual dashboard only
when they run, and `serve` (in ``chunkq.tui.http``) is imported only when invoked, so
`chunkq process` in a cron job never pays for, or breaks on, a UI library.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from chunkq.core import (
    ACTIVE_STATUSES,
    MAX_CHUNK_SIZE,
    STATUSES,
    ChunkqError,
    ChunkResult,
    EntityResult,
    Job,
    Processor,
    Queue,
    RunSummary,
    Worker,
)
from click.core import ParameterSource

from . import output as out
from .options import build_processor, processing_options
from .sources import FORMATS, IdSource

log = logging.getLogger("chunkq.cli")

T = TypeVar("T")
DEFAULT_DB = "chunkq.db"
DEFAULT_DEMO_DB = "chunkq-demo.db"
DEMO_PROCESSOR = "chunkq.core.demo:processor"


class CliError(click.ClickException):
    """A usage/input/configuration problem found by the CLI itself: exit 2, one line."""

    exit_code = 2


@dataclass
class Settings:
    db: str = DEFAULT_DB
    json: bool = False
    verbose: int = 0
    quiet: int = 0


_last_verbosity = 0  # read by the error handler, which runs outside any click context


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "(no message)"


# ---------------------------------------------------------------------- the group


class ChunkqGroup(click.Group):
    """A click group with lazily imported subcommands and one-line errors.

    ``lazy_subcommands`` maps a name to ``("module:attribute", "short help")``;
    the module is imported only when that command runs or its own ``--help`` is
    shown (the click docs' LazyGroup pattern). The group's ``--help`` lists it from
    the short help without importing anything.
    """

    def __init__(self, *args: Any, lazy_subcommands: dict[str, tuple[str, str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands and cmd_name not in self.commands:
            return self._lazy_load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        target, short_help = self.lazy_subcommands[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
            command = getattr(module, attr)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                why = f"this installation has no {module_name} module yet"
            elif exc.name and exc.name.split(".")[0] in ("starlette", "uvicorn"):
                why = f"it needs the http extra ({exc.name} is missing): pip install 'chunkq[http]'"
            else:
                why = f"importing {module_name} failed: {exc}"
            return _unavailable(cmd_name, short_help, why)
        except AttributeError:
            return _unavailable(cmd_name, short_help, f"{module_name} defines no {attr}")
        if not isinstance(command, click.Command):
            return _unavailable(cmd_name, short_help, f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            if name in self.lazy_subcommands and name not in self.commands:
                rows.append((name, self.lazy_subcommands[name][1]))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run, turning every error into one line on stderr and the documented exit status."""
        global _last_verbosity
        _last_verbosity = 0
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "chunkq")
            click.echo(f"Error: {_one_line(exc.format_message())} (see '{where} --help')", err=True)
            code = 2
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except ChunkqError as exc:
            click.echo(f"Error: {_one_line(exc)}", err=True)
            code = 2
        except (KeyboardInterrupt, click.Abort):
            click.echo("Interrupted.", err=True)
            code = 130
        except (Exception, asyncio.CancelledError) as exc:
            if _last_verbosity > 0:
                traceback.print_exc(file=sys.stderr)
            hint = "" if _last_verbosity > 0 else " (run with -v for the traceback)"
            click.echo(f"Error: unexpected {type(exc).__name__}: {_one_line(exc)}{hint}", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def _unavailable(name: str, short_help: str, why: str) -> click.Command:
    """A stand-in for a lazy command that cannot be loaded: it fails with the reason."""

    def callback(**_: Any) -> None:
        raise CliError(f"'chunkq {name}' is not available: {why}")

    return click.Command(
        name, callback=callback, help=f"{short_help}\n\nNot available: {why}", short_help=short_help,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=True,
    )


def settings(ctx: click.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else Settings(db=os.environ.get("CHUNKQ_DB") or DEFAULT_DB)


def _more_logging(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """-v/-q after the command name (`chunkq process -q`, as cron lines say it) add to the global ones."""
    global _last_verbosity
    if value:
        cfg = settings(ctx)
        if param.name == "verbose":
            cfg.verbose += value
        else:
            cfg.quiet += value
        _last_verbosity = cfg.verbose
        out.setup_logging(cfg.verbose, cfg.quiet)
    return value


def log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-q", "--quiet", count=True, expose_value=False, callback=_more_logging,
                     help="Less log output (repeatable).")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_more_logging,
                        help="More log output (repeatable).")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json, -v and -q: what every command accepts after its name."""
    f = log_options(f)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON document on stdout and nothing else.")(f)


def wants_json(ctx: click.Context, as_json: bool) -> bool:
    return as_json or settings(ctx).json


@click.group(
    cls=ChunkqGroup,
    invoke_without_command=True,
    lazy_subcommands={
        "serve": ("chunkq.tui.http:serve_command",
                  "HTTP trigger for hosted schedulers: POST /jobs/process (needs chunkq[http])."),
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--db", envvar="CHUNKQ_DB", default=DEFAULT_DB, show_default=True, show_envvar=True,
              metavar="URL", help="SQLite file path, sqlite:///path, or postgresql://user@host/db.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (any command).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: every library's debug log).")
@click.option("-q", "--quiet", count=True, help="Less log output (-q: warnings only, -qq: errors only).")
@click.version_option(package_name="chunkq", prog_name="chunkq")
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
    global _last_verbosity
    _last_verbosity = verbose
    out.setup_logging(verbose, quiet)
    ctx.obj = Settings(db=db, json=as_json, verbose=verbose, quiet=quiet)
    if ctx.invoked_subcommand is None:
        open_dashboard(db, os.environ.get("CHUNKQ_PROCESSOR") or None)


# ---------------------------------------------------------------------- enqueue


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
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open; closed by the caller
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.seek(0)
        return spool, "stdin"
    try:
        return open(source, "rb"), source  # closed by the caller
    except OSError as exc:
        raise CliError(f"cannot read {source!r}: {exc.strerror or exc}") from None


@cli.command()
@click.argument("source", required=False, metavar="[FILE|-]")
@click.option("--entity-type", "-t", required=True, help="What the IDs are: company, person, url…")
@click.option("--provider", "-p", required=True, help="Who is called for them (also the rate-limit key).")
@click.option("--chunk-size", type=click.IntRange(1, MAX_CHUNK_SIZE), default=50, show_default=True,
              help="IDs per chunk (one lease, one commit).")
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--name", help="A label shown in lists and the dashboard.")
@click.option("--dedupe", is_flag=True, help="Drop repeated IDs (keeps the first).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="lines", show_default=True,
              help="lines: one ID per line; csv: a column (header row required); "
              "jsonl: one JSON value per line.")
@click.option("--column", metavar="NAME", help="CSV column or JSON key holding the ID.")
@click.option("--max-workers", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Chunks of this job that may run at once.")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Tries per entity for transient failures (core.Retry).")
@click.option("--max-errors", type=click.IntRange(min=0), default=None, metavar="N",
              help="Pause the job once more than N of its entities have failed.")
@click.option("--max-error-ratio", type=click.FloatRange(0, 1, min_open=True), default=None, metavar="F",
              help="Pause the job once more than this fraction of its processed entities failed "
              "(0 < F <= 1; checked after the first chunk's worth).")
@json_option
@click.pass_context
def enqueue(
    ctx: click.Context, source: str | None, entity_type: str, provider: str, chunk_size: int, priority: int,
    name: str | None, dedupe: bool, fmt: str, column: str | None, max_workers: int, max_attempts: int,
    max_errors: int | None, max_error_ratio: float | None, as_json: bool,
) -> None:
    """Create a job from IDs in FILE (or stdin with '-'); prints the new job's id.

    The file is streamed: a million lines never sit in memory at once. Any bad
    line (not UTF-8, too long, …) rejects the whole file and creates nothing.
    """
    cfg = settings(ctx)
    stream, label = _open_source(source)
    try:
        ids = IdSource(stream, label, fmt, column).open()

        async def go() -> Job:
            async with Queue(cfg.db) as q:
                return await q.enqueue_job(
                    ids, entity_type=entity_type, provider=provider, chunk_size=chunk_size, priority=priority,
                    name=name, dedupe=dedupe, max_workers=max_workers, max_attempts=max_attempts,
                    max_errors=max_errors, max_error_ratio=max_error_ratio,
                )

        job = run(go())
    finally:
        stream.close()
    if wants_json(ctx, as_json):
        out.emit_json(job.to_dict())
    elif out.stdout_is_tty():
        chunks = -(-job.total_count // job.chunk_size)
        out.console().print(
            f"Created [bold]job {job.id}[/]: {job.total_count:,} {job.entity_type} IDs for {job.provider}, "
            f"{chunks:,} chunk{'s' if chunks != 1 else ''} of {job.chunk_size}.",
        )
    else:
        click.echo(job.id)


# ---------------------------------------------------------------------- processing


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
        extra = f" ({r.retried} to retry)" if r.retried else ""
        log.log(level, "job %s chunk %s: %d done, %d error(s)%s in %s -> %s", r.job_id, r.chunk_index,
                r.processed, r.errors, extra, out.duration(r.duration), r.status)

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
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[errors]} failed"), TimeElapsedColumn(), TimeRemainingColumn(),
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
            log.log(chunk_level, "waiting %s for entity retries that are not yet due", out.duration(wait))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopper.event.wait(), wait)
            if stopper.count:
                summary.stopped_by = "signal"
                break
    summary.elapsed = loop.time() - started
    if stopper.aborted_by is not None:
        summary.stopped_by = "aborted"
    return summary, stopper.aborted_by


@cli.command()
@click.option("--until-empty", is_flag=True,
              help="Keep going until every job is done, waiting for scheduled retries (default: one chunk).")
@click.option("--max-chunks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop after N chunks.")
@click.option("--max-seconds", type=click.FloatRange(0, min_open=True), default=None, metavar="S",
              help="Start no chunk after S seconds (a chunk in flight still finishes).")
@click.option("--job", "job_id", type=click.IntRange(min=1), default=None, metavar="ID",
              help="Only this job.")
@click.option("--lease-seconds", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              metavar="S", help="How long a silent worker keeps its chunk before others may take it.")
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


@cli.command()
@click.option("--poll-interval", type=click.FloatRange(0.01), default=1.0, show_default=True, metavar="S",
              help="Seconds between looks for work when idle (jittered).")
@click.option("--lease-seconds", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True,
              metavar="S", help="How long a silent worker keeps its chunk before others may take it.")
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


# ---------------------------------------------------------------------- reading and managing jobs


@cli.command("jobs")
@click.option("--status", "statuses", type=click.Choice(STATUSES), multiple=True,
              help="Only jobs in this status (repeatable).")
@click.option("--search", metavar="TEXT", help="Only jobs whose name, provider or entity type contains TEXT.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True, metavar="N")
@json_option
@click.pass_context
def jobs_command(ctx: click.Context, statuses: tuple[str, ...], search: str | None, limit: int,
                 as_json: bool) -> None:
    """List jobs, active first, then newest."""
    cfg = settings(ctx)

    async def go() -> list[Job]:
        async with Queue(cfg.db) as q:
            return await q.list_jobs(list(statuses) or None, limit=limit, search=search)

    jobs = run(go())
    if wants_json(ctx, as_json):
        out.emit_json({"jobs": [j.to_dict() for j in jobs]})
    else:
        out.jobs_table(jobs)


JOB_ID = click.IntRange(min=1)


@cli.command()
@click.argument("job_id", type=JOB_ID, metavar="ID")
@json_option
@click.pass_context
def show(ctx: click.Context, job_id: int, as_json: bool) -> None:
    """One job in detail: counts, settings, chunk history, errors grouped by message."""
    cfg = settings(ctx)

    async def go() -> tuple[Job, Any, Any]:
        async with Queue(cfg.db) as q:
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


@cli.command()
@click.argument("job_id", type=JOB_ID, metavar="ID")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N errors (default: 100 for the table and --json, all for csv/jsonl).")
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
        async with Queue(cfg.db) as q:
            if not export:
                return await q.list_errors(job_id, limit=limit or 100)
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


def _job_action(name: str, verb: str, doc: str) -> None:
    @cli.command(name, help=doc)
    @click.argument("job_id", type=JOB_ID, metavar="ID")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, job_id: int, as_json: bool) -> None:
        cfg = settings(ctx)

        async def go() -> Job:
            async with Queue(cfg.db) as q:
                return await getattr(q, verb)(job_id)

        job = run(go())
        if wants_json(ctx, as_json):
            out.emit_json(job.to_dict())
        elif name == "retry":
            if out.stdout_is_tty():
                out.console().print(f"Created [bold]job {job.id}[/] with the {job.total_count:,} failed "
                                    f"entities of job {job_id}.")
            else:
                click.echo(job.id)
        elif out.stdout_is_tty():
            out.console().print(f"Job {job.id} is now ", out.status_text(job.status), ".", sep="")
        else:
            click.echo(f"{job.id}\t{job.status}")


_job_action("pause", "pause", "Stop handing out a job's chunks (the chunk in flight still commits).")
_job_action("resume", "resume", "Let a paused job run again.")
_job_action("cancel", "cancel", "Stop a job for good.")
_job_action("retry", "retry_failed", "Create a new job of a job's failed entities; prints its id.")


# ---------------------------------------------------------------------- dashboard and demo


def _interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def open_dashboard(
    db: str, processor_path: str | None, *, concurrency: int | None = None, timeout: float | None = None,
    rates: Sequence[tuple[str, float]] = (), capture_locals: bool | None = None,
) -> None:
    """Check everything that can be checked cheaply, then import and run the Textual dashboard."""
    Queue(db)  # a malformed URL is a usage error now, not inside the UI
    if processor_path:
        build_processor(processor_path, concurrency, timeout, dict(rates), capture_locals)
    if not _interactive():
        raise CliError("the dashboard needs an interactive terminal; for scripts use 'chunkq jobs', "
                       "'chunkq process' or --json")
    try:
        from chunkq.tui.dashboard.app import run_dashboard
    except ModuleNotFoundError as exc:
        name = exc.name or ""
        if name.startswith(("chunkq.tui.dashboard", "textual")):
            raise CliError(f"the dashboard is not available: {exc}") from None
        raise
    run_dashboard(db, processor_path, capture_locals=bool(capture_locals), rate_limits=dict(rates) or None,
                  concurrency=concurrency, timeout=timeout)


@cli.command("tui")
@processing_options(processor_required=False)
@log_options
@click.pass_context
def tui_command(
    ctx: click.Context, processor_path: str | None, concurrency: int | None, timeout: float | None,
    rates: tuple[tuple[str, float], ...], capture_locals: bool | None,
) -> None:
    """Open the dashboard (also what plain `chunkq` does)."""
    open_dashboard(settings(ctx).db, processor_path, concurrency=concurrency, timeout=timeout, rates=rates,
                   capture_locals=capture_locals)


@cli.command()
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
    from chunkq.core.demo import seed

    root = ctx.find_root()
    if demo_db is None:
        # `chunkq --db x demo` means x; CHUNKQ_DB from the environment is the user's real queue: not that.
        given = root.get_parameter_source("db") == ParameterSource.COMMANDLINE
        demo_db = settings(ctx).db if given else DEFAULT_DEMO_DB
    as_json = wants_json(ctx, as_json)

    async def go() -> tuple[bool, list[Job], str]:
        async with Queue(demo_db) as q:
            if await q.count_jobs() == 0:
                if not as_json:
                    log.info("seeding %s with demo jobs (a few seconds: one demo ID hangs until its timeout)",
                             demo_db)
                return True, await seed(q), out.where(q.display_url)
            return False, await q.list_jobs(limit=100), out.where(q.display_url)

    seeded, jobs, where = run(go())
    if as_json:
        out.emit_json({"db": demo_db, "url": where, "seeded": seeded, "processor": DEMO_PROCESSOR,
                       "jobs": [j.to_dict() for j in jobs]})
    elif no_ui:
        what = f"Seeded {demo_db} with {len(jobs)} demo jobs" if seeded else \
            f"{demo_db} already has jobs; nothing seeded"
        if out.stdout_is_tty():
            out.console().print(what + ":", markup=False)
            out.jobs_table(jobs)
        else:
            click.echo(what)
            out.jobs_table(jobs)
        hint = f"chunkq --db {demo_db} process --until-empty --processor {DEMO_PROCESSOR}"
        click.echo(f"Open the dashboard with 'chunkq demo', or process headless with '{hint}'.", err=True)
    if not no_ui and not as_json:
        open_dashboard(demo_db, DEMO_PROCESSOR)


def main() -> None:
    """Console-script entry point (``chunkq = "chunkq.tui.cli:main"``)."""
    cli.main(prog_name="chunkq")

