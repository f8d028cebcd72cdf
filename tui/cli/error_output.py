"""How `chunkq errors` prints errors: a table or TSV, CSV or JSON Lines exports, and one error whole.

Kept apart from ``output.py`` (the conventions every command shares) because an error is the one
thing chunkq prints that is mostly third-party text: a provider's message, a traceback, what the
callback printed. All of it goes through ``humanize.printable`` and is never read as markup.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from chunkq.core import ErrorEntry
from chunkq.tui import humanize
from chunkq.tui.humanize import ago, timestamp
from rich.table import Table
from rich.text import Text

from . import output
from .output import plain, tsv

ERROR_COLUMNS = ("id", "entity_id", "error_type", "message", "attempt", "final", "chunk_index", "created_at")


def error_row(e: ErrorEntry) -> tuple[Any, ...]:
    return (e.id, e.entity_id, e.error_type, e.message, e.attempt, e.final, e.chunk_index,
            e.created_at.isoformat())


def error_writer(fmt: str) -> Callable[[ErrorEntry], None]:
    """A function writing one error per call to stdout as CSV (header first) or JSON Lines.

    CSV cells are escaped as the TSV rows are (``printable``, line breaks kept: CSV
    quotes them), even into a file: ``cat errors.csv`` would replay them as well.
    JSON Lines is the exact export.
    """
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        return lambda e: writer.writerow(["" if v is None else humanize.printable(v, lines=True)
                                          for v in error_row(e)])

    def jsonl(e: ErrorEntry) -> None:
        sys.stdout.write(humanize.json_text(e.to_dict()) + "\n")

    return jsonl


def errors_table(errors: Sequence[ErrorEntry], job_id: int | None = None) -> None:
    if not output.stdout_is_tty():
        tsv([ERROR_COLUMNS, *(error_row(e) for e in errors)])
        return
    out = output.console()
    if not errors:
        out.print("No errors.")
        return
    t = Table(show_edge=False, header_style="bold")
    t.add_column("ID", justify="right")
    t.add_column("Entity")
    t.add_column("Type", style="red")
    t.add_column("Message", overflow="fold")
    t.add_column("Try", justify="right")
    t.add_column("When", justify="right")
    now = datetime.now(UTC)
    for e in errors:
        t.add_row(str(e.id), plain(e.entity_id), plain(e.error_type), plain(e.message),
                  f"{e.attempt}" + ("" if e.final else " (retried)"), ago(e.created_at, now))
    out.print(t)
    if job_id is not None:
        out.print(Text(f"one error in full, with its traceback and output: chunkq errors {job_id} --id ID",
                       style="dim"))


def error_dict(e: ErrorEntry) -> dict[str, Any]:
    """One error for ``--json``, with ``output``: what the callback printed and logged for the entity
    (null when it wrote nothing). Only ``errors --id`` has it: a page of the log does not read it."""
    return {**e.to_dict(), "output": e.output}


OUTPUT_HEADING = "Output (what the callback printed and logged)"
NO_OUTPUT = "(none: the callback wrote nothing for this entity)"


def error_detail(e: ErrorEntry) -> None:
    """One error whole (``chunkq errors JOB --id N``): what, where, when, the traceback, then the
    callback's captured output, as the dashboard's error view shows it. Every text the callback or a
    provider wrote is printed through ``printable`` (one line for a field, line breaks kept for the two
    blocks) and never read as markup."""
    chunk = "manual retry" if e.chunk_index < 0 else str(e.chunk_index)
    rows: list[tuple[str, str]] = [
        ("error", str(e.id)),
        ("job", str(e.job_id)),
        ("entity", e.entity_id),
        ("type", e.error_type),
        ("message", e.message),
        ("attempt", f"{e.attempt}" + (" (final: the entity failed for good)" if e.final else " (retried)")),
        ("chunk", chunk),
        ("when", timestamp(e.created_at)),
    ]
    if e.resolved_at is not None:
        rows.append(("resolved", timestamp(e.resolved_at) + " (a later retry succeeded)"))
    if e.location:
        rows.append(("raised in", e.location))
    if e.fingerprint:
        rows.append(("group", e.fingerprint))
    trace = humanize.printable(e.traceback or "", lines=True).rstrip("\n")
    captured = humanize.printable(e.output, lines=True).rstrip("\n") if e.output else None
    if not output.stdout_is_tty():
        # a pipe or a file: key<TAB>value lines, then each block under its heading, as plain text
        tsv(rows)
        block = captured if captured is not None else NO_OUTPUT
        sys.stdout.write(f"\nTraceback\n{trace}\n\n{OUTPUT_HEADING}\n{block}\n")
        sys.stdout.flush()
        return
    out = output.console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", justify="right")
    grid.add_column(overflow="fold")
    for k, v in rows:
        grid.add_row(k, plain(v))
    out.print(grid)
    out.print()
    out.print(Text("Traceback", style="bold"))
    out.print(Text(trace or "(none)"))
    out.print()
    out.print(Text(OUTPUT_HEADING, style="bold"))
    if captured is None:
        out.print(Text(NO_OUTPUT, style="dim"))
    else:
        out.print(Text(captured))
