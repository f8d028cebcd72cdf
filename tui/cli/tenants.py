"""`chunkq tenants`: who takes turns (fair scheduling, issue 25), and `chunkq tenants weight NAME W`.

A tenant's weight is its share of the turns against a tenant of weight 1
(``Queue.set_tenant_weight``); the list puts it beside what each tenant has
waiting and has had done, so an operator sees whether a weight does what was
meant. The jobs enqueued without a tenant take turns as one tenant too: their
row is "(none)" here, ``null`` in JSON, and ``''`` names it on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass

import click
from chunkq.core import Queue, limits
from chunkq.tui import humanize
from rich.table import Table
from rich.text import Text

from . import output as out
from .context import json_option, run, settings, wants_json
from .options import float_range

COLUMNS = ("tenant", "weight", "live_jobs", "processed")
#: how the jobs without a tenant are named in the table (JSON says ``null``)
NO_TENANT = "(none)"


@dataclass(frozen=True)
class TenantRow:
    """One tenant as listed: its weight, its jobs still to run and the entities processed for it."""

    name: str | None  # None: the jobs without a tenant
    weight: float
    live_jobs: int
    processed: int

    def to_dict(self) -> dict[str, object]:
        return {"tenant": self.name, "weight": self.weight, "live_jobs": self.live_jobs,
                "processed": self.processed}


async def tenant_rows(q: Queue) -> list[TenantRow]:
    """Every tenant with a weight or a job, by name (the jobs without a tenant first).

    The weights (``list_tenants``) and the counts (``tenant_totals``) are two
    reads; a tenant with jobs but no row of its own (written by hand) has the
    default weight 1, as the claim treats it.
    """
    weights = {name or "": weight for name, weight in await q.list_tenants()}
    totals = await q.tenant_totals()
    rows = []
    for name in sorted(weights.keys() | totals.keys()):
        processed, live = totals.get(name, (0, 0))
        rows.append(TenantRow(name or None, weights.get(name, 1.0), live, processed))
    return rows


def tenants_table(rows: list[TenantRow]) -> None:
    if not out.stdout_is_tty():
        out.tsv([COLUMNS, *((r.name or "", f"{r.weight:g}", r.live_jobs, r.processed) for r in rows)])
        return
    console = out.console()
    if not rows:
        console.print("No tenants yet: jobs enqueued with --tenant NAME appear here.")
        return
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in (("Tenant", "left"), ("Weight", "right"), ("Live jobs", "right"),
                          ("Processed", "right")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]  # left/right: rich's JustifyMethod
    for r in rows:
        table.add_row(
            out.plain(r.name) if r.name else Text(NO_TENANT, style="dim"),  # a tenant name is user text
            f"{r.weight:g}", humanize.number(r.live_jobs), humanize.number(r.processed),
        )
    console.print(table)


@click.group("tenants", invoke_without_command=True)
@json_option
@click.pass_context
def tenants_command(ctx: click.Context, as_json: bool) -> None:
    """Tenants (enqueue --tenant): each one's weight, live jobs and entities processed."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = settings(ctx)

    async def go() -> list[TenantRow]:
        async with Queue(cfg.db, readonly=True) as q:
            return await tenant_rows(q)

    rows = run(go())
    if wants_json(ctx, as_json):
        out.emit_json({"tenants": [r.to_dict() for r in rows]})
    else:
        tenants_table(rows)


# ``ignore_unknown_options``: "-1" is a weight to refuse with core's message, not an option click does not know
@tenants_command.command("weight", context_settings={"ignore_unknown_options": True})
@click.argument("name", metavar="NAME")
@click.argument("weight", type=float_range(limits.TENANT_WEIGHT), metavar="W")
@json_option
@click.pass_context
def weight_command(ctx: click.Context, name: str, weight: float, as_json: bool) -> None:
    """Give tenant NAME ('' for jobs without one) W times the turns of a tenant of weight 1 (0 < W <= 1,000).

    It takes effect at the next claim, on every host; a tenant not seen yet is created with it.
    """
    cfg = settings(ctx)
    tenant = limits.TENANT.check(name) or None  # refused here, before the database is opened

    async def go() -> TenantRow:
        async with Queue(cfg.db, create=False) as q:
            await q.set_tenant_weight(tenant, weight)
            return next(r for r in await tenant_rows(q) if r.name == tenant)

    row = run(go())
    if wants_json(ctx, as_json):
        out.emit_json(row.to_dict())
        return
    who = f"tenant {humanize.printable(row.name)}" if row.name else "jobs without a tenant"
    out.plain_line(f"{who}: weight {row.weight:g}, from its next turn")
