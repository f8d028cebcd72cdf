"""Run the benchmark suite: ``.venv/bin/python -m tests.benchmarks [--out bench-results.json]``.

Prints one table and writes the same rows, with the machine and the date, as
JSON. Takes a few minutes; every section can be skipped (``--skip postgres``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .common import Row, machine, scratch

SECTIONS = ("enqueue", "chunk", "throughput", "lock", "dashboard", "postgres")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "/s" or abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def render(rows: list[Row], meta: dict[str, Any], console: Console) -> None:
    table = Table(title=f"chunkq benchmarks — {meta['date']} — {meta['machine']['nproc']} × {meta['machine']['cpu']}",
                  title_justify="left", show_lines=False)
    for col, just in (("", "left"), ("measurement", "left"), ("chunkq", "right"), ("baseline", "right"),
                      ("ratio", "right"), ("target", "right"), ("", "center"), ("note", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        ratio = r.ratio
        target = "—" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _fmt(r.target)
        met = {True: "[green]✓[/]", False: "[red]✗[/]", None: ""}[r.met]
        shown_ratio = "—" if ratio is None else (f"{ratio:.3g}×" if r.baseline is not None else _fmt(ratio, r.unit))
        baseline = _fmt(r.baseline, r.unit) if r.baseline is not None else "—"
        table.add_row(r.section.split(" ")[0], r.metric, _fmt(r.value, r.unit), baseline, shown_ratio, target, met,
                      r.note)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results file")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="skip a section")
    parser.add_argument("--only", action="append", default=[], choices=SECTIONS, help="run only these")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL server URL; its database is only used to CREATE/DROP a throw-away one")
    parser.add_argument("--label", default="", help="a label stored in the JSON (e.g. 'before')")
    args = parser.parse_args(argv)
    wanted = [s for s in SECTIONS if (not args.only or s in args.only) and s not in args.skip]

    console = Console()
    rows: list[Row] = []
    failures: dict[str, str] = {}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with scratch() as work:
        big_db: Path | None = None

        def run(name: str, fn: Callable[[], list[Row]]) -> None:
            console.print(f"[dim]… {name}[/]")
            t0 = time.perf_counter()
            try:
                rows.extend(fn())
            except Exception as exc:  # one broken section must not hide the others
                failures[name] = f"{type(exc).__name__}: {exc}"
                console.print(f"[red]{name} failed:[/] {failures[name]}")
                traceback.print_exc()
            timings[name] = round(time.perf_counter() - t0, 1)

        if "enqueue" in wanted:
            from . import enqueue_section

            def enqueue() -> list[Row]:
                nonlocal big_db
                out, big_db = enqueue_section.enqueue(work)
                return out

            run("enqueue", enqueue)
        from . import sqlite_sections

        if "chunk" in wanted:
            run("chunk", lambda: sqlite_sections.chunk_cost(work, big_db))
        if "throughput" in wanted:
            run("throughput", lambda: sqlite_sections.throughput(work))
        if "lock" in wanted:
            run("lock", lambda: sqlite_sections.write_lock(work))
        if "dashboard" in wanted:
            from . import dashboard_section

            run("dashboard", lambda: dashboard_section.dashboard(work))
        if "postgres" in wanted:
            from . import postgres_section

            run("postgres", lambda: postgres_section.postgres(args.pg))

    order = {name: i for i, name in enumerate(("1", "2", "3", "4", "5", "6"))}
    rows.sort(key=lambda r: order.get(r.section.split(" ")[0], 9))
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "label": args.label,
        "seconds": round(time.perf_counter() - started, 1),
        "section_seconds": timings,
        "failed_sections": failures,
        "command": "python -m tests.benchmarks " + " ".join(sys.argv[1:]),
    }
    render(rows, meta, console)
    args.out.write_text(json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2))
    console.print(f"[dim]{len(rows)} rows in {meta['seconds']} s → {args.out}[/]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
