"""How `chunkq` talks: Rich for a person at a terminal, plain lines for cron, JSON for scripts.

Convention (the Unix one): results go to stdout, progress and diagnostics go to
stderr through ``logging``. So ``JOB=$(chunkq enqueue ids.txt ...)`` captures
just the id, ``--json`` output is exactly one document on stdout, and a cron
mail shows timestamped log lines without colour codes or progress bars.

Text a user or a provider wrote (names, IDs, messages) is shown through
``humanize.printable`` in every human output (Rich tables, TSV, CSV, log lines),
so it can neither drive the terminal nor be parsed as markup; CSV keeps line
breaks (it quotes them). JSON output and JSON Lines stay exact: JSON escapes C0
controls itself, and ``humanize.json_text`` escapes what it leaves raw but a terminal
acts on (DEL, C1 codes such as ``\\x9b``, bidi overrides, lone surrogates) as
``\\uXXXX``, which decodes to the very same text.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from chunkq.core import ChunkInfo, ErrorGroup, Job, RunSummary, mask_password
from chunkq.tui import humanize
from chunkq.tui.humanize import ago, duration, number, plural, timestamp
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

_HANDLER_TAG = "_chunkq_cli_handler"
STATUS_STYLE = {
    "pending": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "complete": "green",
    "failed": "red",
    "cancelled": "dim",
    "stale": "bold red",
}


def stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False) -> Console:
    """A console bound to the *current* sys.stdout/stderr (so test runners can capture it)."""
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def where(display_url: str) -> str:
    """A database URL as people write it (the async driver names are an implementation detail)."""
    return display_url.replace("+aiosqlite", "").replace("+asyncpg", "")


class _PrintableFormatter(logging.Formatter):
    """Log lines quote callbacks' exceptions and IDs: controls escaped, passwords masked, lines kept."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_password(humanize.printable(super().format(record), lines=True))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is *now* (test runners and daemons swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: int, quiet: int) -> int:
    """Level from -v/-q: default INFO for chunkq's own loggers, -q WARNING, -qq ERROR, -v DEBUG.

    On a terminal the lines go through Rich; otherwise each is one plain line
    with a UTC timestamp, for cron mails and log files.
    """
    level = logging.INFO + 10 * (quiet - verbose)
    level = max(logging.DEBUG, min(level, logging.CRITICAL))
    handler: logging.Handler
    if stderr_is_tty():
        from rich.logging import RichHandler

        handler = RichHandler(console=console(stderr=True), show_path=False, rich_tracebacks=False,
                              log_time_format="[%H:%M:%S]")
        handler.setFormatter(_PrintableFormatter("%(message)s"))
    else:
        handler = _StderrHandler()
        fmt = _PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    setattr(handler, _HANDLER_TAG, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Other libraries stay at WARNING unless -vv asks for everything.
    root.setLevel(logging.DEBUG if verbose >= 2 else max(level, logging.WARNING))
    logging.getLogger("chunkq").setLevel(level)
    return level


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """While active, whatever the callbacks print goes to stderr: stdout stays one JSON document.

    Both levels are redirected: file descriptor 1 (``dup2``, for C extensions and
    subprocesses that write to it directly) and ``sys.stdout`` (for ``print``).
    When stdout is not a real file (a test runner's capture), only the latter.
    """
    if not active:
        yield
        return
    old = sys.stdout
    old.flush()
    saved: int | None = None
    try:
        fd = old.fileno()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        saved = None
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stdout = old
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)


def emit_json(document: Any) -> None:
    """The one JSON document a ``--json`` command prints."""
    sys.stdout.write(humanize.json_text(document, indent=2) + "\n")
    sys.stdout.flush()


def plain_line(text: str) -> None:
    """A result line for a pipe: UTC timestamp first, as in a log."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stdout.write(f"{stamp} {text}\n")
    sys.stdout.flush()


def tsv(rows: Iterable[Sequence[Any]]) -> None:
    """Tab-separated rows for `| cut`, `| sort` and friends when stdout is not a terminal."""
    out = sys.stdout
    for row in rows:
        cells = ("" if v is None else humanize.printable(v) for v in row)  # no tab, break or control
        out.write("\t".join(cells) + "\n")
    out.flush()


# ------------------------------------------------------------------ formatting
# Numbers, durations and times come from chunkq.tui.humanize, the rules the dashboard uses too.


def plain(text: object) -> Text:
    """User or provider text for a table cell: one line, no control characters, never markup."""
    return Text(humanize.printable(text))


def status_text(status: str, *, stale: bool = False) -> Text:
    word = humanize.status(status, stale=stale)
    return Text(word, style=STATUS_STYLE.get(word, ""))


def progress_text(job: Job) -> str:
    return f"{number(job.processed_count)}/{number(job.total_count)} ({humanize.percent(job.progress)})"


JOB_COLUMNS = ("id", "name", "type", "provider", "status", "done", "total", "failed", "waiting", "priority",
               "updated", "processor", "reason", "tenant")


def jobs_table(jobs: Sequence[Job]) -> None:
    if not stdout_is_tty():
        tsv([JOB_COLUMNS, *(
            (j.id, j.name or "", j.entity_type, j.provider, j.status, j.processed_count, j.total_count,
             j.failed_count, j.waiting_count, j.priority, j.updated_at.isoformat(), j.processor or "",
             j.reason or "", j.tenant or "")
            for j in jobs
        )])
        return
    out = console()
    if not jobs:
        out.print("No jobs.")
        return
    now = datetime.now(UTC)
    columns: list[tuple[str, dict[str, Any], Callable[[Job], Any]]] = [
        ("ID", {"justify": "right", "no_wrap": True}, lambda j: str(j.id)),
        ("Name", {"overflow": "fold", "max_width": 32, "min_width": 8}, lambda j: plain(j.name or "")),
        ("Type", {"overflow": "ellipsis", "no_wrap": True, "max_width": 20}, lambda j: plain(j.entity_type)),
        ("Provider", {"overflow": "ellipsis", "no_wrap": True, "max_width": 20}, lambda j: plain(j.provider)),
        ("Status", {"no_wrap": True}, lambda j: status_text(j.status, stale=j.lease_is_stale(now))),
        ("Progress", {"justify": "right", "no_wrap": True}, progress_text),
        ("Failed", {"justify": "right", "no_wrap": True},
         lambda j: Text(number(j.failed_count), style="red" if j.failed_count else "dim")),
        ("Waiting", {"justify": "right", "no_wrap": True},
         lambda j: number(j.waiting_count) if j.waiting_count else ""),
        ("Prio", {"justify": "right", "no_wrap": True}, lambda j: str(j.priority)),
        ("Updated", {"justify": "right", "no_wrap": True}, lambda j: ago(j.updated_at, now)),
    ]
    if any(j.tenant for j in jobs):
        columns.append(("Tenant", {"overflow": "fold", "max_width": 24}, lambda j: plain(j.tenant or "")))
    if any(j.processor for j in jobs):
        columns.append(("Processor", {"overflow": "fold", "max_width": 40}, lambda j: plain(j.processor or "any")))
    if any(j.reason for j in jobs):
        columns.append(("Why", {"overflow": "fold", "max_width": 48}, lambda j: plain(j.reason or "")))
    cells = {name: [render(j) for j in jobs] for name, _style, render in columns}
    shown = fit_columns([(name, style, cells[name]) for name, style, _render in columns], out.width)
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name, style, _render in columns:
        if name in shown:
            table.add_column(name, **style)
    for row in range(len(jobs)):
        table.add_row(*(cells[name][row] for name, _style, _render in columns if name in shown))
    hidden = [name for name, _style, _render in columns if name not in shown]
    if hidden:
        table.caption = f"{', '.join(hidden)} left out at {out.width} columns (--json has every field)"
    out.print(table)


#: which of the jobs table's columns stay when the terminal is too narrow for all of them, first to last
JOB_COLUMN_PRIORITY = ("ID", "Name", "Status", "Progress", "Failed", "Provider", "Type", "Updated", "Waiting",
                       "Why", "Tenant", "Processor", "Prio")
#: a column's separator and padding in a table without edges (" │ ")
_COLUMN_GAP = 3
#: the width the name is counted at when columns are chosen: wider names fold onto more lines
_NAME_FIT = 12


def fit_columns(columns: Sequence[tuple[str, dict[str, Any], Sequence[Any]]], width: int) -> set[str]:
    """The columns that fit ``width`` cells, by ``JOB_COLUMN_PRIORITY``: ID, name, status and progress first.

    Rich shrinks every column to fit instead, and at 80 columns with a tenant a name was three letters a
    line ("job / num / ber"); at 40 the ID and name were gone and no row could be told from another. A
    column counts as wide as its widest cell (or its ``max_width``), the name at most ``_NAME_FIT``.
    """
    def need(name: str, style: dict[str, Any], values: Sequence[Any]) -> int:
        widest = max([cell_len(name), *(cell_len(v.plain if isinstance(v, Text) else str(v)) for v in values)])
        if "max_width" in style:
            widest = min(widest, style["max_width"])
        return widest

    wanted = {name: need(name, style, values) for name, style, values in columns}
    shown: set[str] = set()
    used = 0
    for name in sorted(wanted, key=JOB_COLUMN_PRIORITY.index):
        # The name may be narrower than its widest (it folds onto more lines); the rest keep their widths.
        cost = wanted[name] if name != "Name" else min(wanted[name], _NAME_FIT)
        if shown and used + _COLUMN_GAP + cost > width:
            continue
        shown.add(name)
        used += cost + (_COLUMN_GAP if len(shown) > 1 else 0)
    return shown


def chunk_summary(chunks: Sequence[ChunkInfo]) -> dict[str, Any]:
    """What an operator asks of a job's chunk history: how many, how fast, who holds one now."""
    done = [c for c in chunks if c.state == "done"]
    durations = [c.duration for c in done if c.duration is not None]
    leased = [c for c in chunks if c.state == "leased"]
    now = datetime.now(UTC)
    stale = [c for c in leased if c.lease_expires_at is not None and c.lease_expires_at < now]
    return {
        "chunks_seen": len(chunks),
        "done": len(done),
        "leased": len(leased),
        "stale_leases": len(stale),
        "retry_chunks": sum(1 for c in chunks if c.kind == "retry"),
        "ok": sum(c.ok for c in done),
        "errors": sum(c.errors for c in done),
        "avg_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "max_seconds": round(max(durations), 3) if durations else None,
        "workers": sorted({c.worker for c in chunks if c.worker}),
        "last_finished_at": _iso(max((c.finished_at for c in done if c.finished_at), default=None)),
        "leased_by": sorted({c.worker for c in leased if c.worker}),
    }


SHOW_GROUPS = 10


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


def show_job(
    job: Job, chunks: dict[str, Any], groups: Sequence[ErrorGroup], *, groups_total: int | None = None,
) -> None:
    tty = stdout_is_tty()
    out = console()
    rows: list[tuple[str, Any]] = [
        ("job", plain(f"{job.id}" + (f"  {job.name}" if job.name else ""))),
        ("status", status_text(job.status, stale=job.lease_is_stale(datetime.now(UTC))) if tty else job.status),
        ("entities", plain(f"{job.entity_type} via {job.provider}")),
        ("progress", progress_text(job)),
        ("succeeded", number(job.succeeded_count)),
        ("failed", number(job.failed_count)),
        ("waiting", number(job.waiting_count)
         + (f" (next retry {ago(job.next_retry_at)})" if job.waiting_count and job.next_retry_at else "")),
        ("chunk size", f"{number(job.chunk_size)}  (max {plural(job.max_workers, 'worker')} at once)"),
        ("priority", str(job.priority)),
        ("attempts", f"up to {number(job.max_attempts)} per entity"),
    ]
    if job.max_errors is not None or job.max_error_ratio is not None:
        parts = []
        if job.max_errors is not None:
            parts.append(plural(job.max_errors, "failure"))
        if job.max_error_ratio is not None:
            parts.append(f"{job.max_error_ratio:.0%} failed")
        rows.append(("error budget", "pause at " + " or ".join(parts)))
    rows.append(("processor", plain(job.processor) if job.processor else "any (not routed)"))
    if job.tenant:
        rows.append(("tenant", plain(job.tenant)))
    if job.reason:
        why = job.reason + (f" (error {job.reason_error_id})" if job.reason_error_id else "")
        rows.append(("paused because" if job.status == "paused" else "failed because", plain(why)))
    if job.is_released and job.released_by:
        rows.append(("released", plain(f"released by {job.released_by} at {timestamp(job.released_at)}")))
    rows.append(("errors logged", number(job.error_count) + " attempts (failed for good: "
                 + number(job.failed_count) + ")"))
    if job.parent_id:
        rows.append(("retry of", f"job {job.parent_id}"))
    rows += [
        ("created", timestamp(job.created_at)),
        ("started", timestamp(job.started_at)),
        ("finished", timestamp(job.finished_at)),
    ]
    c = chunks
    hist = f"{number(c['done'])} done"
    if c["leased"]:
        hist += f", {number(c['leased'])} in flight ({', '.join(c['leased_by'])})"
    if c["stale_leases"]:
        hist += f" of which {number(c['stale_leases'])} with an expired lease (the next worker redoes it)"
    if c["retry_chunks"]:
        hist += f", {number(c['retry_chunks'])} of them retries"
    if c["avg_seconds"] is not None:
        hist += f"; {duration(c['avg_seconds'])} avg, {duration(c['max_seconds'])} max"
    if c["workers"]:
        hist += f"; {plural(len(c['workers']), 'worker')}"
    rows.append(("chunks", plain(hist)))
    more = max((len(groups) if groups_total is None else groups_total) - SHOW_GROUPS, 0)
    groups = groups[:SHOW_GROUPS]
    if not tty:
        tsv(rows)
        if groups:
            tsv([("errors", "entities", "type", "message")])
            tsv((g.count, g.entities, g.error_type, g.message) for g in groups)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column()
    for k, v in rows:
        grid.add_row(k, v)
    out.print(grid)
    if groups:
        out.print()
        t = Table(title="Errors by bug (type, where raised, message with its variable parts as <…>)",
                  title_justify="left", show_edge=False, header_style="bold")
        t.add_column("Entities", justify="right")
        t.add_column("Attempts", justify="right")
        t.add_column("Type", style="red")
        t.add_column("Message", overflow="fold")
        for g in groups:
            t.add_row(number(g.entities), number(g.count), plain(g.error_type), plain(g.message))
        out.print(t)
        if more:
            out.print(f"[dim]… and {number(more)} more; every group: chunkq errors {job.id} --groups[/]")
        out.print(f"[dim]one group's errors: chunkq errors {job.id} --group KEY (keys: --groups)[/]")


def summary_sentence(s: RunSummary) -> str:
    """One line for a person or a cron mail: what was done and why it stopped."""
    errors = plural(s.errors, "error") + (f" ({number(s.retried)} to retry)" if s.retried else "")
    parts = [plural(s.chunks, "chunk"), plural(s.entities, "entity", "entities") + " done", errors]
    if s.discarded:
        parts.append(f"{plural(s.discarded, 'chunk')} discarded (lease lost)")
    done = ", ".join(f"#{i}" for i in s.jobs_completed)
    parts.append(plural(len(s.jobs_completed), "job") + " completed" + (f" ({done})" if done else ""))
    why = {
        "empty": "nothing left to do",
        "max_chunks": "reached --max-chunks",
        "max_seconds": "reached --max-seconds",
        "signal": "stopped by a signal",
        "requested": "stopped after its chunk, as an operator asked (chunkq workers stop, or the dashboard)",
        "aborted": "aborted, chunk in flight given up",
        "wedged": "stopped: too many callbacks hung past --timeout (exit 3; start it again)",
        "orphaned": "stopped with work left: chunks leased by a worker that stopped expire past --max-seconds "
                    "(exit 4; run it again)",
        "overran": "stopped: chunks still running past --grace were given up, their leases released "
                   "(exit 4; run it again)",
        "idle": "idle",
    }.get(s.stopped_by, s.stopped_by)
    if s.stopped_by == "empty" and s.held_back:  # work is left, but other workers fill its jobs' slots
        why = f"nothing this process may take: {s.held_back} (a job's --max-workers lets more workers share it)"
    if s.stopped_by == "new_error" and s.new_error:
        why = (f"stopped at a new kind of error in job {s.new_error_job}: group {s.new_error} "
               f"(see: chunkq errors {s.new_error_job} --group {s.new_error})")
    return f"{', '.join(parts)} in {duration(s.elapsed)}; {why}"
