"""Which jobs the table holds: the page maths and the diff of one poll, as pure functions.

The table shows one page of jobs (active first). A full poll re-reads the page; an
incremental one brings only the jobs changed since the last poll, from every
status (a job that left the filter must be seen to leave). ``diff_page`` turns
either into the rows to add, update and remove, so the table touches only those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chunkq import core
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.job_rows import rank, sort_key

#: most jobs the table holds at once; DataTable pays for every row it holds
PAGE_SIZE = 200
#: more changes than this in one poll: reload the page instead of patching it
MAX_CHANGES = 500


@dataclass(frozen=True)
class PageDiff:
    """What one poll changes on the page, in the order to apply it."""

    removes: tuple[int, ...] = ()
    #: jobs to add (new rows) or update (rows already there)
    puts: tuple[core.Job, ...] = ()
    #: how many jobs match the filter, as far as this poll can tell
    total: int = 0
    #: a row arrived, left or changed rank: the table must be sorted again
    order_changed: bool = False
    #: more changes than could be patched: read the whole page next
    overflow: bool = False
    #: a job not on the page now ranks within it: re-read the page (soon, not every poll)
    outranked: bool = False


def belongs_on_page(page: Mapping[int, core.Job], job: core.Job, offset: int) -> bool:
    """Would ``job`` rank within the rows ``page`` holds (the first page: anywhere up to its end)?"""
    if not page:
        return True
    key = sort_key(job)
    keys = [sort_key(j) for j in page.values()]
    lo, hi = min(keys), max(keys)
    return key <= hi if offset == 0 else lo <= key <= hi


def diff_page(
    page: Mapping[int, core.Job],
    jobs: Sequence[core.Job],
    *,
    full: bool,
    total: int,
    status: str | None,
    offset: int,
    page_size: int = PAGE_SIZE,
    max_changes: int = MAX_CHANGES,
) -> PageDiff:
    """The changes that make ``page`` show ``jobs``.

    ``full``: ``jobs`` is the whole page and ``total`` the count of matching jobs.
    Otherwise ``jobs`` changed since the last poll (any status) and ``total`` is the
    count so far, adjusted here as jobs join or leave the filter.
    """
    after = dict(page)
    removes: list[int] = []
    puts: list[core.Job] = []
    order_changed = False

    def put(job: core.Job) -> None:
        nonlocal order_changed
        old = after.get(job.id)
        after[job.id] = job
        puts.append(job)
        if old is None or rank(old) != rank(job):
            order_changed = True

    def remove(job_id: int) -> None:
        nonlocal order_changed
        del after[job_id]
        removes.append(job_id)
        order_changed = True

    if full:
        wanted = {j.id for j in jobs}
        for job_id in [i for i in page if i not in wanted]:
            remove(job_id)
        for job in jobs:
            put(job)
        return PageDiff(tuple(removes), tuple(puts), total, order_changed)
    outranked = False
    for job in jobs[:max_changes]:
        matches = status is None or job.status == status
        if job.id in after:
            if matches:
                put(job)
            else:
                remove(job.id)
                total = max(total - 1, 0)
        elif matches:
            if offset == 0 and len(after) < page_size:
                put(job)
                total += 1
            elif belongs_on_page(after, job, offset):
                outranked = True
    return PageDiff(tuple(removes), tuple(puts), total, order_changed,
                    overflow=len(jobs) > max_changes, outranked=outranked)


def matching_total(
    total: int, stats: core.QueueStats | None, status: str | None, search: str, tenant: str | None = None
) -> int:
    """How many jobs match the filter: the queue's totals know exactly, unless a search or a tenant narrows it."""
    if stats is None or search or tenant is not None:
        return total
    if status is None:
        return sum(stats.jobs_by_status.values())
    return stats.jobs_by_status.get(status, total)


def next_offset(offset: int, total: int, page_size: int = PAGE_SIZE) -> int | None:
    """Where the next page starts; None on the last page."""
    return None if offset + page_size >= total else offset + page_size


def prev_offset(offset: int, page_size: int = PAGE_SIZE) -> int | None:
    """Where the previous page starts; None on the first page."""
    return None if offset == 0 else max(offset - page_size, 0)


#: how to page, after the position (dropped first when the filter bar is short)
PAGING_HINT = "  ([ ] page)"


def page_info(offset: int, shown: int, total: int, *, filtered: bool, page_size: int = PAGE_SIZE) -> str:
    """The line above the table: which rows of how many, and how to page."""
    if shown == 0:
        return "no jobs match" if filtered else "no jobs yet: press n"
    info = f"{offset + 1}–{offset + shown} of {fmt.count(max(total, offset + shown))}"
    if total > page_size or offset:
        info += PAGING_HINT
    return info
