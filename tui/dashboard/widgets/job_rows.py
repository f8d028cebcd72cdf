"""One job as a row of the jobs table: its cells, its rank, and which cells changed.

Pure functions of a ``core.Job``, the clock and the theme's colours (no widget, no
app), so the table's rendering is unit-tested without Pilot. A ``ProgressBar``
widget per row would cost a widget each: the bar is drawn as ``Text`` in the cell.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.keyed_table import same_cell
from rich.style import Style
from rich.text import Text

# (key, label, width, right-aligned); fixed widths: DataTable re-measures auto widths on every update
COLUMNS: tuple[tuple[str, str, int, bool], ...] = (
    ("id", "ID", 5, True),
    ("name", "Name", 20, False),
    ("tenant", "Tenant", 12, False),
    ("type", "Type", 8, False),
    ("provider", "Provider", 11, False),
    ("processor", "Processor", 16, False),
    ("status", "Status", 9, False),
    ("progress", "Progress", 19, False),
    ("done", "Done", 15, True),
    ("errors", "Errors", 6, True),
    ("rate", "Rate", 7, True),
    ("eta", "ETA", 6, True),
    ("age", "Age", 4, True),
    ("note", "Worker / retries", 22, False),
)
COLUMN_KEYS = tuple(c[0] for c in COLUMNS)


@dataclass(frozen=True)
class Fit:
    """How a column gives way when the terminal is narrow and takes room when it is wide."""

    #: columns are dropped from the highest number down when they do not fit
    priority: int
    #: never narrower than this (counts also never narrower than their widest cell)
    min: int
    #: never wider than this; the extra room of a wide terminal goes to the columns that can use it
    max: int


#: key -> how the column fits; the widths in ``COLUMNS`` are what each gets before extra room is shared
FITS: dict[str, Fit] = {
    "id": Fit(0, 2, 8),
    "name": Fit(1, 12, 80),
    "status": Fit(2, 9, 9),
    "progress": Fit(3, 11, 27),
    "done": Fit(4, 4, 40),
    "errors": Fit(5, 6, 20),
    "eta": Fit(6, 6, 6),
    "note": Fit(7, 12, 120),
    "rate": Fit(8, 7, 8),
    # who the job is for (fair scheduling); only in a page that holds a tenant's job (``WHEN_PRESENT``)
    "tenant": Fit(9, 8, 30),
    "provider": Fit(10, 8, 24),
    "type": Fit(11, 6, 14),
    "age": Fit(12, 4, 4),
    # where the job is routed (None: any worker); the first to go, shown once a terminal has room for it
    "processor": Fit(13, 10, 40),
}
#: columns shown only when a job on the page has a value for them: a queue that never uses tenants
#: keeps its table (and its room) as it was
WHEN_PRESENT: tuple[str, ...] = ("tenant",)
#: columns from this priority on appear only once the essentials have their usual widths
OPTIONAL = 8
#: columns sized for the numbers they hold (a count is never cut)
COUNT_COLUMNS = ("id", "done", "errors")
#: the columns that share the extra room of a wide terminal, and in what proportion
GROW: dict[str, int] = {"name": 4, "note": 4, "progress": 1, "provider": 1, "type": 1, "tenant": 1}
#: the DataTable's padding around every cell (cell_padding 1 on each side)
CELL_PAD = 2
#: what follows the bar in the Progress cell: " 100.0%"
PERCENT_WIDTH = 7


#: what the sorted column's header gains: " ▼" (never cut: the sort column is marked)
SORT_MARK = 2


def fit_columns(
    available: int, needs: Mapping[str, int] | None = None, *, present: Collection[str] = (),
    sorted_by: str | None = None,
) -> dict[str, int]:
    """The columns shown in a table ``available`` cells wide, and their widths, in display order.

    Columns go in by priority while they fit (ID, Name, Status, Progress, counts,
    ETA, then the rest); the room left first brings every shown column up to its
    usual width (``COLUMNS``), then is shared among names, notes and the bar up to
    their maximums. ``needs`` are the widest cells of count columns: a count column
    is always that wide, so a number is never cut (it is dropped whole instead).
    ``present``: the ``WHEN_PRESENT`` columns some job on the page has a value for
    (the others are left out, as if they did not exist). ``needs["note"]``, when
    given, is the widest note: the note is no wider (nor narrower than its header),
    and the room it leaves goes to the names (an empty "Worker / retries" column
    helps nobody). ``needs["name"]`` is the widest name: Name's usual width grows to
    it (up to its maximum), so the room goes to names before any column of
    lesser priority joins or widens (issue 28). With ``needs``, a count column's
    usual width is what its numbers and header need, not a guess: an ID column
    of two-digit IDs leaves its three spare cells to the names. ``sorted_by``:
    that column's header keeps room for its arrow.
    """
    needs = needs or {}
    keys = [k for k in COLUMN_KEYS if k not in WHEN_PRESENT or k in present]
    base = {key: width for key, _label, width, _right in COLUMNS}
    labels = {key: len(label) for key, label, _width, _right in COLUMNS}
    if sorted_by in labels:
        labels[sorted_by] += SORT_MARK
    least = {k: max(FITS[k].min, labels[k] if k in COUNT_COLUMNS or k == sorted_by else 0,
                    needs.get(k, 0) if k in COUNT_COLUMNS else 0) for k in keys}
    most = {k: FITS[k].max for k in keys}
    usual = {k: max(base[k], least[k]) for k in keys}
    for k in COUNT_COLUMNS:
        if k in needs and k in usual:
            usual[k] = least[k]  # sized for its numbers: what a count column needs is known, not guessed
    if "name" in needs and "name" in usual:
        usual["name"] = max(usual["name"], min(needs["name"], most["name"]))
    if "note" in needs and "note" in most:
        most["note"] = max(min(needs["note"], most["note"]), labels["note"], least["note"])
        usual["note"] = min(usual["note"], most["note"])  # short notes leave their room; long ones grow later
    widths: dict[str, int] = {}
    room = available
    ranked = sorted(keys, key=lambda k: FITS[k].priority)
    for key in [k for k in ranked if FITS[k].priority < OPTIONAL]:  # the essentials, as narrow as they go
        if least[key] + CELL_PAD <= room:
            widths[key] = least[key]
            room -= least[key] + CELL_PAD
    for key in list(widths):  # back to their usual widths, by priority
        more = min(room, usual[key] - widths[key])
        if more > 0:
            widths[key] += more
            room -= more
    for key in [k for k in ranked if FITS[k].priority >= OPTIONAL]:  # the rest, at their usual widths
        width = usual[key]
        if width + CELL_PAD <= room:
            widths[key] = width
            room -= width + CELL_PAD
    growers = [k for k in GROW if k in widths]
    while room > 0 and growers:
        total = sum(GROW[k] for k in growers)
        given = 0
        for key in growers:
            share = max(1, room * GROW[key] // total)
            more = min(share, most[key] - widths[key], room - given)
            widths[key] += max(more, 0)
            given += max(more, 0)
        room -= given
        growers = [k for k in growers if widths[k] < most[k]]
        if given == 0:
            break
    return {key: widths[key] for key in keys if key in widths}


def present_columns(jobs: Iterable[core.Job]) -> frozenset[str]:
    """The ``WHEN_PRESENT`` columns ``jobs`` give a value to (``fit_columns(present=...)``)."""
    return frozenset(("tenant",)) if any(job.tenant for job in jobs) else frozenset()


def count_needs(cells: Iterable[Mapping[str, Text]], jobs: Iterable[core.Job] = ()) -> dict[str, int]:
    """The widest cell of each count column (in terminal cells, not characters), of the notes and the names.

    With ``jobs``, "Done" is sized for each job finished ("500/500", not "97/500"): the
    column is as wide from the first entity to the last, so it never grows, pushing the
    others about, while a job runs.
    """
    needs: dict[str, int] = {}
    for row in cells:
        for key in (*COUNT_COLUMNS, "note", "name"):
            cell = row.get(key)
            if cell is not None:
                needs[key] = max(needs.get(key, 0), cell.cell_len)
    for job in jobs:
        total = fmt.count(job.total_count)
        needs["done"] = max(needs.get("done", 0), 2 * len(total) + 1)
    return needs
#: cells that change with the clock alone (stale leases, ages, retry countdowns)
TIME_COLUMNS = ("status", "age", "note")
#: cells that change when the rates are re-read
RATE_COLUMNS = ("rate", "eta")

Cells = dict[str, Text]


def rank(job: core.Job) -> int:
    """The status's place in the list (``core.Status.rank``: running first, history last)."""
    return core.Status(job.status).rank


#: column -> (what the operator reads, descending first); "status" is core's own order
SORTS: dict[str, tuple[str, bool]] = {
    "status": ("status (what needs attention first)", False),
    "id": ("ID", True),
    "name": ("name", False),
    "progress": ("progress", True),
    "done": ("entities done", True),
    "errors": ("errors", True),
    "age": ("age", False),
}


def sort_key(job: core.Job, column: str = "status", descending: bool = False) -> tuple[object, ...]:
    """Where a job sits in the list: by status rank, newest first within a status (as core lists them),
    or by ``column`` (ties: core's order)."""
    value: object
    if column == "id":
        value = job.id
    elif column == "name":
        value = (job.name or "").casefold()
    elif column == "progress":
        value = job.progress
    elif column == "done":
        value = job.processed_count
    elif column == "errors":
        value = job.error_count
    elif column == "age":
        value = -job.created_at.timestamp()
    else:
        value = rank(job)
        if descending:
            value = -value
        return (value, -job.id)
    if descending:
        return (_Reversed(value), rank(job), -job.id)
    return (value, rank(job), -job.id)


class _Reversed:
    """Orders its value backwards (names sort descending too, which ``-`` cannot do)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return other.value < self.value  # type: ignore[operator]  # one column's values compare

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and other.value == self.value

    __hash__ = None  # type: ignore[assignment]  # unhashable: == compares values


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


#: longest user text kept in a cell (the column's width cuts it with "…" when drawn)
CELL_TEXT_MAX = 200


def cell_text(text: str, style: Style | str = "") -> Text:
    """User text for a cell: printable, one line, cut with "…" by the column's width when drawn."""
    return Text(clip(fmt.printable(text), CELL_TEXT_MAX), style=style, end="", no_wrap=True, overflow="ellipsis")


def job_cells(
    job: core.Job,
    now: datetime,
    rate: float,
    palette: fmt.Palette | None = None,
    only: tuple[str, ...] | None = None,
    *,
    bar: int = 12,
) -> Cells:
    """Every cell of ``job``'s row (``only=TIME_COLUMNS``: just those); user text stays plain ``Text``."""
    shown_status = humanize.status(job.status, stale=job.lease_is_stale(now))  # the CLI's word too
    stale = shown_status == "stale"
    muted = Style(color=fmt.theme_color("foreground-darken-3", palette))
    note, note_style = job_note(job, now, stale, palette)
    timed = {
        "status": fmt.status_text(shown_status, palette),
        "age": Text(fmt.table_age(job.created_at, now), justify="right", end="", style=muted),
        "note": cell_text(note, note_style or muted),
    }
    if only is not None:
        return {k: timed[k] for k in only}
    if job.status not in core.ACTIVE_STATUSES:
        rate = 0.0
    progress = fmt.progress_bar(job.progress, bar, palette, job.status) if bar > 0 else Text(end="")
    progress.append(f" {fmt.percent(job.progress):>6}")
    # entities that failed for good, as `chunkq jobs` and HTTP count them (attempts logged: the detail)
    errors = Text(fmt.count(job.failed_count), justify="right", end="")
    if job.failed_count:
        errors.stylize(Style(color=fmt.theme_color("error", palette)))
    return {
        "id": Text(str(job.id), justify="right", end=""),
        "name": cell_text(job.name or "—"),
        "tenant": cell_text(job.tenant or "—", "" if job.tenant else "dim"),  # user text: plain, escaped
        "type": cell_text(job.entity_type),
        "provider": cell_text(job.provider),
        "processor": cell_text(job.processor or "any", "" if job.processor else "dim"),
        "status": timed["status"],
        "progress": progress,
        "done": Text(f"{fmt.count(job.processed_count)}/{fmt.count(job.total_count)}", justify="right",
                     end=""),
        "errors": errors,
        "rate": rate_cell(job, rate, muted),
        "eta": Text(fmt.eta(job, rate, now), justify="right", end=""),
        "age": timed["age"],
        "note": timed["note"],
    }


def rate_cell(job: core.Job, rate: float, muted: Style | None = None) -> Text:
    """Entities per second over the recent window; "idle" for a started job nothing finished in lately
    (an old rate would promise an ETA that is not coming), a dash for one not started or finished."""
    if job.status in core.ACTIVE_STATUSES and job.started_at is not None and rate <= 0:
        return Text("idle", justify="right", end="", style=muted or "")
    return Text(fmt.rate(rate), justify="right", end="")


def job_note(job: core.Job, now: datetime, stale: bool, palette: fmt.Palette | None = None
             ) -> tuple[str, Style | None]:
    """The "Worker / retries" cell: who holds it, what waits, why it is paused or failed, who released it."""
    if job.is_released and job.released_at is not None:
        return (f"released by {job.released_by or 'a worker'} at {fmt.timestamp(job.released_at)[11:19]}",
                fmt.status_style("paused", palette))
    if stale:
        quiet = job.heartbeat_at or job.lease_expires_at
        return (f"quiet {fmt.age(quiet, now)}: {fmt.short_worker(job.lease_owner)}",
                fmt.status_style("stale", palette))
    parts = []
    if job.leased_chunks > 0 and job.lease_owner:
        more = f" +{job.leased_chunks - 1}" if job.leased_chunks > 1 else ""
        parts.append(f"{fmt.short_worker(job.lease_owner)}{more}")
    if job.waiting_count:
        parts.append(f"{fmt.count(job.waiting_count)} wait, {fmt.until(job.next_retry_at, now)}")
    if parts:
        return " · ".join(parts), Style(color=fmt.theme_color("foreground", palette))
    if job.reason:  # paused or failed: the circuit breaker, the error budget, JobFailed, an operator
        return job.reason, fmt.status_style(str(job.status), palette)
    if job.parent_id:
        return f"retry of #{job.parent_id}", None
    return fmt.DASH, None


def changed_cells(old: Mapping[str, Text], new: Mapping[str, Text]) -> Cells:
    """The cells of ``new`` that differ from ``old``: the only ones worth an ``update_cell``."""
    return {k: v for k, v in new.items() if k not in old or not same_cell(old[k], v)}
