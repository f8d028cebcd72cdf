"""`chunkq workers`: every process that processes work, and `chunkq workers stop ID [--now]`.

The rows come from the registry (``core/registry.py``): each worker, cron
`process`, dashboard auto-run and `serve` request writes its own and
heartbeats it. "lost" is decided here, on read: a heartbeat more than two
intervals old. Stopping goes through the database, so it works for a worker on
any host; the worker acts on it with its next heartbeat.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click
from chunkq.core import Queue, WorkerInfo
from chunkq.tui import humanize
from rich.table import Table
from rich.text import Text

from . import output as out
from .context import json_option, run, settings, wants_json

COLUMNS = ("id", "host_pid", "kind", "processor", "state", "job", "chunks", "done", "failed", "heartbeat_age",
           "version")
STATE_STYLE = {"busy": "green", "idle": "dim", "stopping": "yellow", "stopped": "dim", "lost": "bold red"}


def _age(w: WorkerInfo, now: datetime) -> str:
    return humanize.duration(w.heartbeat_age(now)) + " ago"


def workers_table(workers: Sequence[WorkerInfo], now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    if not out.stdout_is_tty():
        out.tsv([COLUMNS, *(
            (w.id, w.host_pid, w.kind, w.processor or "", w.state, w.job_id or "", w.chunks, w.done, w.failed,
             round(w.heartbeat_age(now), 1), w.version)
            for w in workers
        )])
        return
    console = out.console()
    if not workers:
        console.print("No workers registered.")
        return
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in (("ID", "left"), ("Host:pid", "left"), ("Kind", "left"), ("Processor", "left"),
                          ("State", "left"), ("Job", "right"), ("Chunks", "right"), ("Done", "right"),
                          ("Failed", "right"), ("Heartbeat", "right"), ("Version", "left")):
        table.add_column(name, justify=justify, overflow="fold", no_wrap=name in ("State", "Heartbeat"))  # type: ignore[arg-type]  # left/right: rich's JustifyMethod
    for w in workers:
        state = humanize.printable(w.state + (f" ({w.stop_request} requested)" if w.stop_request and w.alive else ""))
        table.add_row(
            out.plain(w.id), out.plain(w.host_pid), out.plain(w.kind), out.plain(w.processor or "any"),
            Text(state, style=STATE_STYLE.get(w.state, "")), str(w.job_id) if w.job_id else "",
            humanize.number(w.chunks) if w.chunks else "", humanize.number(w.done),
            Text(humanize.number(w.failed), style="red" if w.failed else "dim"), _age(w, now), out.plain(w.version),
        )
    console.print(table)


@click.group("workers", invoke_without_command=True)
@click.option("--all", "include_stopped", is_flag=True, help="Also workers that stopped (kept for an hour).")
@json_option
@click.pass_context
def workers_command(ctx: click.Context, include_stopped: bool, as_json: bool) -> None:
    """Every process that processes work: host:pid, what it holds, its last heartbeat ("lost" after two missed)."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = settings(ctx)

    async def go() -> list[WorkerInfo]:
        async with Queue(cfg.db, readonly=True) as q:
            return await q.list_workers(include_stopped=include_stopped)

    found = run(go())
    if wants_json(ctx, as_json):
        out.emit_json({"workers": [w.to_dict() for w in found]})
    else:
        workers_table(found)


@workers_command.command("stop")
@click.argument("worker_id", metavar="ID")
@click.option("--now", "at_once", is_flag=True,
              help="Stop at once: the chunk in flight is released for another worker (default: finish it first).")
@json_option
@click.pass_context
def stop_command(ctx: click.Context, worker_id: str, at_once: bool, as_json: bool) -> None:
    """Ask worker ID (on any host) to stop after its chunk, or --now; it acts on its next heartbeat."""
    cfg = settings(ctx)

    async def go() -> WorkerInfo:
        async with Queue(cfg.db, create=False) as q:
            return await q.request_worker_stop(worker_id, now=at_once)

    w = run(go())
    if wants_json(ctx, as_json):
        out.emit_json(w.to_dict())
        return
    how = "to stop now (its chunk is released)" if at_once else "to stop after its chunk"
    out.plain_line(f"asked worker {humanize.printable(w.id)} ({humanize.printable(w.host_pid)}) {how}; "
                   f"it acts within {humanize.duration(w.heartbeat_interval)}")
