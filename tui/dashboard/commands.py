"""The one registry of dashboard commands, scoped per screen.

Bindings, footer entries, the command palette and the help screen are all
generated from ``COMMANDS``, so a key can never be documented in one place and
missing from another. Each command has a scope: ``app`` commands work on every
screen (the app binds them), ``jobs`` commands on the jobs list, ``detail``
commands on the job detail screen. A screen names its scope in ``COMMAND_SCOPE``
and takes ``bindings(scope)``; help and the palette show what works where the
operator is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Literal

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

Scope = Literal["app", "jobs", "detail"]
APP: Scope = "app"
JOBS: Scope = "jobs"
DETAIL: Scope = "detail"

#: what processing keys say when the dashboard was started without a processor
PROCESSOR_HINT = "start with --processor module:function to process from the dashboard"


@dataclass(frozen=True)
class Command:
    key: str
    action: str
    title: str
    description: str
    scope: Scope = JOBS
    footer: bool = True
    #: shown in help as the key people type (bindings use Textual's key names)
    key_display: str | None = None
    needs_processor: bool = False
    priority: bool = False

    @property
    def id(self) -> str:
        """The binding id (``scope.action``), for a keymap to rebind it."""
        return f"{self.scope}." + re.sub(r"\W+", "_", self.action).strip("_")

    @property
    def display(self) -> str:
        return self.key_display or self.key


_DETAIL: tuple[Command, ...] = (
    Command("escape", "back", "Back", "Clear the error filter; press again to go back to the jobs list.",
            scope=DETAIL),
    Command("t", "retry_entity", "Retry entity", "Run the callback on the selected error's entity now and "
            "show the result inline; on success its errors are marked resolved.", scope=DETAIL,
            needs_processor=True),
    Command("d", "debug_entity", "Debug", "Post-mortem: the dashboard steps aside and the callback runs on "
            "the selected error's entity under pdb, stopped at the exception.", scope=DETAIL,
            needs_processor=True),
    Command("u", "requeue_failed", "Requeue failed", "Put this job's failed entities back into it, due now "
            "with fresh attempts (asks first).", scope=DETAIL),
    Command("r", "retry_failed", "Retry as new job", "Create a new job of this job's failed entities "
            "(asks first).", scope=DETAIL),
    Command("x", "export_errors", "Export", "Write the whole error log to a JSON Lines or CSV file.",
            scope=DETAIL),
    Command("s", "step", "Step", "Process one chunk of this job.", scope=DETAIL, footer=False,
            needs_processor=True),
    Command("S", "dry_run", "Dry run", "Run this job's next chunk and show the results, writing nothing.",
            scope=DETAIL, footer=False, needs_processor=True),
    Command("p", "pause_resume", "Pause/resume", "Pause this job, or resume it if paused.", scope=DETAIL,
            footer=False),
    Command("c", "cancel_job", "Cancel", "Cancel this job (asks first).", scope=DETAIL, footer=False),
    Command("right_square_bracket", "next_page", "Next errors", "Next page of the error log.", scope=DETAIL,
            footer=False, key_display="]"),
    Command("left_square_bracket", "prev_page", "Previous errors", "Previous page of the error log.",
            scope=DETAIL, footer=False, key_display="["),
    Command("1", "show_tab('errors')", "Errors tab", "Failures grouped, the error log, tracebacks.",
            scope=DETAIL, footer=False),
    Command("2", "show_tab('chunks')", "Chunks tab", "The chunk history.", scope=DETAIL, footer=False),
    Command("3", "show_tab('fields')", "Fields tab", "Every field of the job.", scope=DETAIL, footer=False),
)

#: the jobs list's commands with the app-wide ones among them, in the order its help lists them
_HOME: tuple[Command, ...] = (
    Command("enter", "open_job", "Details", "Open the selected job: fields, chunks, errors, tracebacks."),
    Command("n", "new_job", "New job", "Enqueue a new job: IDs pasted or read from a file."),
    Command("s", "step", "Step", "Process one chunk of the selected job (or the next job in line) "
            "and show each entity's result as it comes in.", needs_processor=True),
    Command("a", "toggle_auto_run", "Auto-run", "Keep processing chunks until nothing is claimable; "
            "press again to stop after the chunk in flight.", scope=APP, needs_processor=True),
    Command("p", "pause_resume", "Pause/resume", "Pause the selected job, or resume it if paused."),
    Command("c", "cancel_job", "Cancel", "Cancel the selected job (asks first)."),
    Command("r", "retry_failed", "Retry failed", "Retry the failed entities of the selected job as a new job."),
    Command("slash", "search", "Search", "Search jobs by name, provider or entity type.", key_display="/"),
    Command("f", "cycle_status", "Status filter", "Cycle the status filter: all, pending, running, "
            "paused, failed, complete, cancelled."),
    Command("ctrl+a", "bulk", "All matching", "Pause, resume, cancel or retry every job the current "
            "filter or search matches (asks first, says how many).", footer=False, key_display="ctrl+a"),
    Command("S", "dry_run", "Dry run", "Run the selected job's next chunk through the callback and show "
            "the results, writing nothing (for callbacks safe to repeat).", footer=False,
            needs_processor=True),
    Command("R", "reload_processor", "Reload processor", "Re-import the processor's module and the project "
            "modules that changed on disk; on an error the previous callback stays in use.", scope=APP,
            footer=False, needs_processor=True),
    Command("right_square_bracket", "next_page", "Next page", "Show the next page of jobs.", footer=False,
            key_display="]"),
    Command("left_square_bracket", "prev_page", "Previous page", "Show the previous page of jobs.",
            footer=False, key_display="["),
    Command("question_mark", "help", "Help", "Show every key and what it does.", scope=APP,
            key_display="?"),
    Command("q", "quit", "Quit", "Quit; if a chunk is in flight, asks whether to finish or release it.",
            scope=APP),
)

#: Every command. Help lists a screen's commands in this order: the detail screen's own
#: keys first, then the app-wide ones; on the jobs list, app-wide keys sit among its own.
COMMANDS: tuple[Command, ...] = (*_DETAIL, *_HOME)

#: the heading of a screen's section in help
SCOPE_TITLES: dict[Scope, str] = {JOBS: "Jobs", DETAIL: "Job detail"}


def commands(scope: Scope) -> tuple[Command, ...]:
    """The commands bound in ``scope`` (app-wide ones are bound once, by the app)."""
    return tuple(c for c in COMMANDS if c.scope == scope)


def available(scope: Scope | None) -> tuple[Command, ...]:
    """What works on a screen of ``scope``: its own commands and the app-wide ones."""
    return tuple(c for c in COMMANDS if c.scope in (APP, scope))


def bindings(scope: Scope) -> list[Binding]:
    """Textual bindings for one scope, with ids so a keymap can rebind them."""
    return [
        Binding(c.key, c.action, c.title, show=c.footer, key_display=c.key_display, id=c.id,
                tooltip=c.description, priority=c.priority)
        for c in commands(scope)
    ]


def help_markdown(scope: Scope = JOBS) -> str:
    """The help screen's text for a screen of ``scope``: what works there, then what works everywhere."""
    lines = [
        "# chunkq dashboard",
        "",
        "chunkq runs long lists of entity IDs through your callback in chunks. Start the dashboard "
        "with `--processor module:function` to process from here; without it the dashboard watches "
        "and controls jobs that workers elsewhere run.",
        "",
        f"## {SCOPE_TITLES.get(scope, 'Jobs')}",
        "",
    ]
    for c in available(scope):
        marker = " *(needs `--processor`)*" if c.needs_processor else ""
        lines.append(f"- `{c.display}` **{c.title}**: {c.description}{marker}")
    lines += [
        "",
        "## Everywhere",
        "",
        "- `ctrl+p` **Command palette**: every command above, searchable.",
        "- `escape` Close a dialog, or leave the search box.",
        "- `tab` / `shift+tab` Move between fields and buttons.",
        "",
        "The mouse works too: click a row to select it, a button to press it.",
    ]
    return "\n".join(lines)


def screen_scope(screen: object) -> Scope | None:
    """The scope a screen declares in ``COMMAND_SCOPE`` (None: dialogs, which have only app commands)."""
    return getattr(screen, "COMMAND_SCOPE", None)


class ChunkqCommands(Provider):
    """The registry in the command palette: app-wide commands, and those of the screen it was opened on."""

    def _hits(self) -> list[tuple[str, Command, str]]:
        return [(c.title, c, escape(f"{c.description} (key: {c.display})"))
                for c in available(screen_scope(self.screen))]

    def _runner(self, command: Command) -> partial[object]:
        target = self.app if command.scope == APP else self.screen
        return partial(target.run_action, command.action)

    async def discover(self) -> Hits:
        for title, command, help_text in self._hits():
            yield DiscoveryHit(title, self._runner(command), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, command, help_text in self._hits():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(command), help=help_text)
