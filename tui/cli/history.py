"""`chunkq history [JOB]`: throughput and failures over the last hour, finer for the last minutes.

The numbers are ``Queue.history`` (per-chunk records summed in SQL, flat in job
size); a terminal gets two sparklines (processed, failed) and the totals, a pipe
one tab-separated row per bucket, ``--json`` the buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

import click
from chunkq.core import HistoryBucket, Queue
from chunkq.tui import humanize
from rich.text import Text

from . import output as out
from .context import json_option, run, settings, wants_json
from .options import JOB_ID

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float]) -> str:
    """One character per value, scaled to the largest; zero is a blank, any activity at least ▁."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(BARS[0] if v <= 0 else BARS[max(1, round(v / top * (len(BARS) - 1)))] for v in values)


@click.command("history")
@click.argument("job_id", type=JOB_ID, metavar="[JOB]", required=False)
@click.option("--minutes", type=click.IntRange(1, 24 * 60), default=60, show_default=True,
              help="How far back.")
@json_option
@click.pass_context
def history_command(ctx: click.Context, job_id: int | None, minutes: int, as_json: bool) -> None:
    """Entities processed and failed over time, for one job or the whole queue (per minute, per 10 s lately)."""
    cfg = settings(ctx)

    async def go() -> list[HistoryBucket]:
        async with Queue(cfg.db, readonly=True) as q:
            if job_id is not None:
                await q.get_job(job_id)  # an unknown job is an error, not an empty history
            return await q.history(job_id, minutes=minutes, recent_minutes=min(5, minutes))

    buckets = run(go())
    if wants_json(ctx, as_json):
        out.emit_json({"job_id": job_id, "buckets": [b.to_dict() for b in buckets]})
        return
    if not out.stdout_is_tty():
        out.tsv([("start", "seconds", "processed", "failed", "chunks"),
                 *((b.start.isoformat(), b.seconds, b.processed, b.failed, b.chunks) for b in buckets)])
        return
    coarse = [b for b in buckets if b.seconds >= 60]
    fine = [b for b in buckets if b.seconds < 60]
    console = out.console()
    for label, part in ((f"last {minutes} min, per minute", coarse), ("last minutes, per 10 s", fine)):
        if not part:
            continue
        line = Text(f"{label:<28} ")
        line.append(sparkline([b.processed for b in part]), style="green")
        line.append("  processed " + humanize.number(sum(b.processed for b in part)))
        console.print(line)
        fails = Text(f"{'':<28} ")
        fails.append(sparkline([b.failed for b in part]), style="red")
        fails.append("  failed " + humanize.number(sum(b.failed for b in part)))
        console.print(fails)
