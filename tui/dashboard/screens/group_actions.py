"""Acting on one group of errors (one bug): the questions asked first and the words said after.

A group is one bug (``core/error_groups.py``). Retrying it touches only
the entities whose failure is that bug — in place (``Queue.requeue_failed(…,
fingerprint=)``) or as a new job (``Queue.retry_failed(…, fingerprint=)``) —
so fixing one bug and retrying it never re-bills the entities another bug
still breaks. The wording lives here once, next to the job-wide dialogs of
``job_actions.py``.
"""

from __future__ import annotations

from typing import Literal

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.widgets.detail_text import one_line, short_type
from chunkq.tui.dashboard.widgets.error_tables import message_text

How = Literal["requeue", "retry"]


def group_label(group: core.ErrorGroup, limit: int = 60) -> str:
    """``LookupFailed: upstream 500 for <id>``: the bug, on one line."""
    return f"{one_line(short_type(group.error_type))}: {message_text(group.message, limit)}"


def group_dialog(job: core.Job, group: core.ErrorGroup, how: How) -> ConfirmScreen:
    """Requeue one group's failed entities into ``job``, or retry them as a new job? ("yes" or None)."""
    n = humanize.plural(group.entities, "entity", "entities")
    bug = group_label(group)
    if how == "requeue":
        return ConfirmScreen(
            f"Requeue the {n} of this group into job {job.id}?",
            f"{bug}\n\nThe entities of job {job.id} whose failure is this bug ({n} hit it) and that failed "
            "for good go back into the job, due now, with fresh attempts. Entities failing for other "
            "reasons are left alone. Their errors stay in the log.",
            choices=[("yes", "Requeue group", "primary"), ("no", "Back", "default")],
        )
    return ConfirmScreen(
        f"Retry the {n} of this group as a new job?",
        f"{bug}\n\nA new job (retry of #{job.id}) is created with the entities whose failure is this bug "
        f"and that failed for good ({n} hit it); entities failing for other reasons are left out, and "
        f"job {job.id} stays as it is.",
        choices=[("yes", "Create job", "primary"), ("no", "Back", "default")],
    )


async def act_on_group(queue: core.Queue, job_id: int, group: core.ErrorGroup, how: How) -> str:
    """Do it; what was done, in a sentence (raises ``ChunkqError`` when it cannot be done)."""
    if how == "requeue":
        job = await queue.requeue_failed(job_id, fingerprint=group.fingerprint)
        return (f"requeued the failed entities of {group_label(group, 40)} into job {job.id}: "
                f"{humanize.number(job.waiting_count)} now waiting, due now")
    new = await queue.retry_failed(job_id, fingerprint=group.fingerprint)
    return (f"created job {new.id} with {humanize.plural(new.total_count, 'entity', 'entities')} "
            f"of {group_label(group, 40)} (retry of #{job_id})")


def merge_dialog(job: core.Job, group: core.ErrorGroup, into: core.ErrorGroup) -> ConfirmScreen:
    """Merge ``group`` into ``into``: the operator says they are one bug (issue 27)? ("yes" or None)."""
    return ConfirmScreen(
        "Merge these two groups into one bug?",
        f"{group_label(group)}\n  into\n{group_label(into)}\n\nThey count as one group of job {job.id} from "
        "now on, for its future errors of either kind too. M on the merged group splits it off again.",
        choices=[("yes", "Merge", "primary"), ("no", "Back", "default")],
    )


def unmerge_dialog(group: core.ErrorGroup, part: str) -> ConfirmScreen:
    """Split group ``part`` off ``group`` again? ("yes" or None)."""
    return ConfirmScreen(
        "Split a merged group off again?",
        f"{group_label(group)}\n\nGroup {part}, merged into it by hand, becomes a group of its own again, "
        "with its errors.",
        choices=[("yes", "Split off", "primary"), ("no", "Back", "default")],
    )


async def merge_groups(queue: core.Queue, job_id: int, group: core.ErrorGroup, into: core.ErrorGroup) -> str:
    """Do it; what was done, in a sentence (raises ``ChunkqError`` when it cannot be done)."""
    await queue.merge_error_groups(job_id, [group.fingerprint], into.fingerprint)
    return f"merged {group_label(group, 30)} into {group_label(into, 30)}"


async def unmerge_group(queue: core.Queue, job_id: int, group: core.ErrorGroup, part: str) -> str:
    await queue.unmerge_error_group(job_id, part)
    return f"split group {part} off {group_label(group, 40)}"
