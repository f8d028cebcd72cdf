"""``chunkq errors JOB --groups``: a job's failures one bug at a time (issues 16, 27).

A group is one bug (``chunkq.core.error_groups``): the message's template
(``upstream 500 for <*>``) with a real sample, how many attempts were logged
and how many entities they hit, and the key that ``--group``, ``--merge``,
``--unmerge`` and ``chunkq retry --group`` take. The table says how many bugs
there are in all, not only how many it shows. Every text shown is the provider's or the
callback's, so it goes through ``plain``/``printable``, never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chunkq.core import ErrorGroup
from chunkq.tui import humanize
from chunkq.tui.humanize import printable

from . import output as out

GROUP_COLUMNS = ("group", "error_type", "message", "count", "entities", "location", "sample", "last_at")


def group_dict(g: ErrorGroup) -> dict[str, Any]:
    """A group as ``--json`` prints it (the core's own JSON form)."""
    return g.to_dict()


def groups_table(groups: Sequence[ErrorGroup], job_id: int, *, total: int | None = None, offset: int = 0) -> None:
    """The groups, biggest first: a table on a terminal, tab-separated rows in a pipe (``--json`` has the total).

    On a terminal it says how many bugs there are in all, and how to see the next page: never a silent cap.
    """
    if not out.stdout_is_tty():
        out.tsv([GROUP_COLUMNS, *((g.fingerprint, g.error_type, g.message, g.count, g.entities, g.location or "",
                                    g.samples[0] if g.samples else "", g.last_at.isoformat()) for g in groups)])
        return
    from rich.table import Table
    from rich.text import Text

    console = out.console()
    if not groups:
        console.print("No errors.")
        return
    t = Table(show_edge=False, header_style="bold")
    t.add_column("Group", no_wrap=True, style="dim")
    t.add_column("Type", style="red")
    t.add_column("Message (normalised) / a real one", overflow="fold")
    t.add_column("Attempts", justify="right")
    t.add_column("Entities", justify="right")
    t.add_column("Last", justify="right")
    now = datetime.now(UTC)
    for g in groups:
        text = out.plain(g.message)
        sample = g.samples[0] if g.samples else None
        if sample is not None and sample != g.message:
            text.append("\n")
            text.append_text(Text(printable(sample), style="dim"))
        if g.location:
            text.append("\n")
            text.append_text(Text("at " + printable(g.location), style="cyan"))
        t.add_row(out.plain(g.fingerprint), out.plain(g.error_type), text, out.number(g.count),
                  out.number(g.entities), out.ago(g.last_at, now))
    console.print(t)
    total = len(groups) + offset if total is None else total
    shown = f"{offset + 1}-{offset + len(groups)} of " if len(groups) < total else ""
    more = f"; next: --offset {offset + len(groups)}" if offset + len(groups) < total else ""
    console.print(Text(f"{shown}{humanize.plural(total, 'bug')}{more}"))
    console.print(Text(f"See one group: chunkq errors {job_id} --group KEY; "
                       f"retry it: chunkq retry {job_id} --group KEY [--in-place]", style="dim"))
