"""Pruning old finished jobs from the dashboard: what would go, an age to change it, then a confirmation.

What may go, the defaults and the small transactions are core's
(``core.retention``); this dialog only shows the pruner's dry-run count per status
for the age typed in (empty: the retention policy) and dismisses with the policy
the operator confirmed. The jobs screen runs the prune itself in a worker on the
app's loop, a transaction at a time, so the interface never waits for it.

An Enter in the age field recounts; only the Prune button deletes, and it stays
disabled while the age is invalid or nothing would go.
"""

from __future__ import annotations

from typing import ClassVar

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.protocol import dashboard
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Static

#: seconds of no typing before the count is read again
RECOUNT_AFTER = 0.4


def policy_for(age_text: str) -> core.RetentionPolicy:
    """The policy an age typed in the dialog means: empty, the defaults; else that age for every finished status.

    Raises ``core.InvalidInput`` (naming the field) for anything ``parse_age`` refuses."""
    raw = age_text.strip()
    if not raw:
        return core.DEFAULT_POLICY
    return core.RetentionPolicy.only(core.parse_age(raw, field="older than"))


def describe_counts(counts: dict[core.Status, core.PruneResult]) -> Text:
    """One line per finished status, then the total: jobs, and the entities and errors they take along."""
    lines = []
    total = core.PruneResult()
    for status, c in counts.items():
        kept = c.policy.get(str(status), "")
        age = "kept forever" if kept == "forever" else f"older than {kept}"
        lines.append(f"{status:>9}  {humanize.plural(c.jobs, 'job'):>12}  ({age})")
        total.jobs += c.jobs
        total.entities += c.entities
        total.errors += c.errors
    lines.append(f"{'total':>9}  {humanize.plural(total.jobs, 'job'):>12}  with "
                 f"{humanize.plural(total.entities, 'entity', 'entities')} and "
                 f"{humanize.plural(total.errors, 'error')}")
    return fmt.plain("\n".join(lines), lines=True)


def summary(result: core.PruneResult) -> str:
    """What a prune did, for a notification and the activity log."""
    if result.busy:
        return ("another pruner (a worker, `chunkq serve` or `chunkq prune`) holds the lease: "
                f"{humanize.plural(result.jobs, 'job')} pruned here; try again later")
    return (f"pruned {humanize.plural(result.jobs, 'finished job')} "
            f"({humanize.plural(result.entities, 'entity', 'entities')}, "
            f"{humanize.plural(result.errors, 'error')})")


class PruneScreen(ModalScreen[core.RetentionPolicy | None]):
    """Shows what the policy (or the age typed in) would delete; dismisses with the confirmed policy or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Back", id="prune.back")]

    def __init__(self) -> None:
        super().__init__()
        self.policy: core.RetentionPolicy | None = core.DEFAULT_POLICY
        #: jobs the policy shown would delete (None: not counted yet)
        self.would_delete: int | None = None
        self._recount: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="prune-dialog"):
            yield Label("Prune old finished jobs", id="prune-title")
            yield Static(fmt.plain(
                "Deletes complete, cancelled and failed jobs whose last change is older than their retention, "
                "with their entities, chunks and errors. Active jobs and jobs a live retry names are never "
                f"pruned. Empty: the retention policy ({core.DEFAULT_POLICY.describe()})."), id="prune-help")
            yield Input(placeholder="older than, e.g. 30d, 12h, 90m (empty: the policy)", id="prune-age",
                        select_on_focus=False)
            yield Static("", id="prune-problem")
            yield Static(fmt.plain("counting…"), id="prune-counts")
            with Horizontal(id="prune-buttons"):
                yield Button("Back", id="prune-cancel")
                yield Button("Prune", id="prune-ok", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self.count()

    # ------------------------------------------------------------------ counting

    @work(group="prune-count", exclusive=True, exit_on_error=False)
    async def count(self) -> None:
        """The pruner's dry run for the policy in the field (a read: cancelling it halfway loses nothing)."""
        problem = self.query_one("#prune-problem", Static)
        ok = self.query_one("#prune-ok", Button)
        ok.disabled = True
        try:
            policy = policy_for(self.query_one("#prune-age", Input).value)
        except core.InvalidInput as exc:
            self.policy, self.would_delete = None, None
            problem.update(fmt.plain(exc))
            return
        problem.update("")
        try:
            counts = await core.Pruner(dashboard(self).queue).count_by_status(policy)
        except core.ChunkqError as exc:
            problem.update(fmt.plain(exc))
            return
        self.policy = policy
        self.would_delete = sum(c.jobs for c in counts.values())
        self.query_one("#prune-counts", Static).update(describe_counts(counts))
        ok.disabled = self.would_delete == 0

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_one("#prune-ok", Button).disabled = True  # until the new age is counted
        if self._recount is not None:
            self._recount.stop()
        self._recount = self.set_timer(RECOUNT_AFTER, self.count)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()  # Enter recounts; it never deletes
        self.count()

    # ------------------------------------------------------------------ answering

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "prune-ok" and self.policy is not None and self.would_delete:
            self.dismiss(self.policy)
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
