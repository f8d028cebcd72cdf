"""Acting on jobs from the dashboard: the questions asked first, and the bulk action over a filter.

Both screens act on jobs (the list on the selected one or on every match, the
detail screen on its own); the dialogs' wording lives here once, next to the
``ConfirmScreen`` they use. An action over every matching job is core's
``Queue.bulk`` (one query, not a walk over pages); this module only words its
``BulkResult``.
"""

from __future__ import annotations

from typing import Literal, get_args

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen

Verb = Literal["pause", "resume", "cancel", "retry"]
VERBS: tuple[str, ...] = get_args(Verb)
PAST = {"pause": "paused", "resume": "resumed", "cancel": "cancelled", "retry": "retried", "requeue": "requeued"}


async def change(queue: core.Queue, verb: Verb, job_id: int) -> core.Job:
    """Pause, resume or cancel ``job_id`` (retry makes a new job: ``queue.retry_failed``)."""
    if verb == "pause":
        return await queue.pause(job_id)
    if verb == "resume":
        return await queue.resume(job_id)
    if verb == "cancel":
        return await queue.cancel(job_id)
    raise ValueError(f"{verb!r} does not change a job in place")


async def apply_to_matching(queue: core.Queue, verb: Verb, status: str | None, search: str | None) -> str:
    """Apply ``verb`` to every job the filter matches (``Queue.bulk``); says what it did."""
    return bulk_summary(await queue.bulk(verb, status=status, search=search))


def bulk_summary(result: core.BulkResult) -> str:
    """``paused 3 of 5 jobs (skipped: 2 complete)``: what changed, and why the rest did not."""
    msg = f"{PAST.get(result.action, result.action)} {humanize.number(result.changed)} of " \
          f"{humanize.plural(result.matched, 'job')}"
    if result.skipped:
        why = ", ".join(f"{humanize.number(n)} {reason}" for reason, n in result.skipped.items())
        msg += f" (skipped: {why})"
    return msg


def bulk_dialog(n: int, filter_label: str) -> ConfirmScreen:
    """Which action to apply to all ``n`` matching jobs (dismisses with a ``Verb`` or None)."""
    jobs = humanize.plural(n, "job")
    # The count lives in the title, not on the buttons: labels stay short and fit at 80 columns
    # whatever the count; "Back" comes first (and has the focus) so it is never pushed out of sight.
    return ConfirmScreen(
        f"Apply to all {humanize.number(n)} matching {'job' if n == 1 else 'jobs'}?",
        f"Every job matching {filter_label} — {jobs}, not just the ones on this page. "
        "Jobs the action does not apply to are skipped.",
        choices=[("back", "Back", "default"), ("pause", "Pause all", "warning"),
                 ("resume", "Resume all", "primary"), ("retry", "Retry failed", "default"),
                 ("cancel", "Cancel all", "error")],
    )


def cancel_from_list(job: core.Job) -> ConfirmScreen:
    """Cancel the job selected in the list? (dismisses with "cancel" or None)."""
    left = job.remaining_count
    return ConfirmScreen(
        f"Cancel job {job.id}?",
        f"{job.name or job.entity_type + ' for ' + job.provider}: {left:,} of "
        f"{humanize.plural(job.total_count, 'entity', 'entities')} are not processed yet and never will be. "
        "A chunk in flight still commits.",
        choices=[("cancel", "Cancel the job", "error"), ("back", "Keep it", "default")],
    )


def cancel_from_detail(job_id: int) -> ConfirmScreen:
    """Cancel the job on the detail screen? (dismisses with "yes" or None)."""
    return ConfirmScreen(
        f"Cancel job {job_id}?",
        "No further chunks will be handed out; a chunk in flight still "
        "commits. This cannot be undone (retry creates a new job).",
        choices=[("yes", "Cancel the job", "error"), ("no", "Keep it", "default")],
    )


def failed_dialog(job: core.Job, how: Literal["requeue", "retry"]) -> ConfirmScreen:
    """Requeue the failed entities into ``job``, or retry them as a new job? (dismisses with "yes" or None)."""
    n = job.failed_count
    if how == "requeue":
        return ConfirmScreen(
            f"Requeue the failed entities of job {job.id}?",
            f"{humanize.plural(n, 'entity', 'entities')} that failed for good go back into job {job.id}, "
            "due now, with fresh attempts. Their errors stay in the log.",
            choices=[("yes", "Requeue", "primary"), ("no", "Back", "default")],
        )
    unfinished = job.status in (core.FAILED, core.CANCELLED)
    return ConfirmScreen(
        f"Retry the failed entities of job {job.id} as a new job?",
        f"A new job (retry of #{job.id}) is created with the {humanize.plural(n, 'entity', 'entities')} "
        "that failed for good"
        + (" and the ones never finished" if unfinished else "")
        + f"; job {job.id} stays as it is.",
        choices=[("yes", "Create job", "primary"), ("no", "Back", "default")],
    )
