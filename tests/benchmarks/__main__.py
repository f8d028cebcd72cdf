"""Run chunkq's benchmarks (issue 7) and print one table of ratios against same-run baselines.

``.venv/bin/python -m tests.benchmarks`` takes about two minutes, prints the table
and writes the rows, the machine and the date to ``bench-results.json``
(``--out``). Sections: enqueue, chunk, throughput, lock, dashboard, postgres;
``--skip``/``--only`` pick them. PostgreSQL needs a server (``--pg``) where a
throw-away database can be created and dropped.
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

SECTIONS = ("enqueue", "chunk", "throughput", "lock", "dashboard", "postgres", "heavytail", "errorgroups", "processes",
            "auto", "fair", "prune", "history")


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".strip()
    if abs(value) >= 100:
        return f"{value:.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


def _cells(r: Row) -> list[str]:
    """#, measurement, chunkq, baseline, ratio, target, met, note - as plain text."""
    ratio = r.ratio
    target = "—" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _fmt(r.target)
    if r.baseline is None:
        shown_ratio, baseline = "", "—"
        target = target + f" {r.unit}"
    else:
        shown_ratio = "—" if ratio is None else (f"{ratio:.3g}×" if ratio < 100 else f"{ratio:,.0f}×")
        baseline = f"{_fmt(r.baseline, r.unit)} ({r.baseline_name})"
        target += "×" if r.target is not None else ""
    met = {True: "yes", False: "no", None: ""}[r.met]
    return [r.section.split(" ")[0], r.metric, _fmt(r.value, r.unit), baseline, shown_ratio, target, met, r.note]


HEADERS = ["", "measurement", "chunkq", "baseline (same run)", "ratio", "target", "met", "note"]


def render(rows: list[Row], meta: dict[str, Any], console: Console) -> None:
    m = meta["machine"]
    table = Table(title=f"chunkq benchmarks — {meta['date']} — {m['nproc']} × {m['cpu']}, Python {m['python']}, "
                  f"SQLite {m['sqlite']}", title_justify="left")
    for i, head in enumerate(HEADERS):
        table.add_column(head, justify="right" if i in (2, 4) else "left", no_wrap=i in (2, 4, 5, 6))
    for r in rows:
        cells = _cells(r)
        cells[6] = {"yes": "[green]✓[/]", "no": "[red]✗[/]", "": ""}[cells[6]]
        table.add_row(*cells)
    console.print(table)


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    lines = [f"Measured {meta['date']} on {m['nproc']} × {m['cpu']} (`nproc` = {m['nproc']}), "
             f"Python {m['python']}, SQLite {m['sqlite']}.", "",
             "| " + " | ".join(h or "#" for h in HEADERS) + " |",
             "|" + "|".join("---:" if i in (2, 4) else "---" for i in range(len(HEADERS))) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(lines)


def _rows_from_json(data: dict[str, Any]) -> list[Row]:
    fields = Row.__dataclass_fields__
    return [Row(**{k: v for k, v in d.items() if k in fields}) for d in data["rows"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON results file")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS, help="skip a section")
    parser.add_argument("--only", action="append", default=[], choices=SECTIONS, help="run only these")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL server URL; its database is only used to CREATE/DROP a throw-away one")
    parser.add_argument("--label", default="", help="a label stored in the JSON (e.g. 'before')")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    parser.add_argument("--from-json", type=Path, metavar="FILE", help="show an earlier run's results, run nothing")
    parser.add_argument("--prune-jobs", type=int, default=1_000_000, metavar="N",
                        help="old finished jobs the prune section fills the database with")
    parser.add_argument("--prune-backend", action="append", choices=("sqlite", "postgres"), default=[],
                        help="the prune section on this backend only (repeatable; default: both)")
    parser.add_argument("--history-jobs", type=int, default=10_000_000, metavar="N",
                        help="jobs (nearly all finished) in the history section's big database")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the traceback of a failed section")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 160))
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        rows = _rows_from_json(data)
        print(markdown(rows, data["meta"])) if args.markdown else render(rows, data["meta"], console)
        return 0
    wanted = [s for s in SECTIONS if (not args.only or s in args.only) and s not in args.skip]

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
                if args.verbose:
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
        if "heavytail" in wanted:
            from . import heavy_tail_section

            run("heavytail", lambda: heavy_tail_section.heavy_tail(work))
        if "errorgroups" in wanted:
            from . import error_groups_section

            run("errorgroups", lambda: error_groups_section.error_groups(work))
        if "processes" in wanted or "auto" in wanted:
            from . import processes_section

            if "processes" in wanted:
                run("processes", lambda: processes_section.processes(work))
            if "auto" in wanted:
                run("auto", processes_section.auto)
        if "fair" in wanted:
            from . import fair_section

            run("fair", lambda: fair_section.fair(work, args.pg))
        if "prune" in wanted:
            from . import prune_section

            run("prune", lambda: prune_section.prune(work, args.pg, args.prune_jobs,
                                                     tuple(args.prune_backend) or ("sqlite", "postgres")))
        if "history" in wanted:
            from . import history_section

            run("history", lambda: history_section.history(work, args.history_jobs, pg=args.pg))

    order = {str(n): n for n in range(1, 15)}
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
    if args.markdown:
        print(markdown(rows, meta))
    else:
        render(rows, meta, console)
    args.out.write_text(json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2))
    console.print(f"[dim]{len(rows)} rows in {meta['seconds']} s → {args.out}[/]")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
