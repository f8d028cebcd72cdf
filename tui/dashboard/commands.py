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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

Scope = Literal["app", "jobs", "detail", "workers"]
APP: Scope = "app"
JOBS: Scope = "jobs"
DETAIL: Scope = "detail"
WORKERS: Scope = "workers"

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
    #: another key for a command listed already (bound, but not repeated in help or the palette)
    alias: bool = False

    @property
    def id(self) -> str:
        """The binding id (``scope.action``), for a keymap to rebind it."""
        alias = "_" + re.sub(r"\W+", "_", self.key) if self.alias else ""
        return f"{self.scope}." + re.sub(r"\W+", "_", self.action).strip("_") + alias

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
            "with fresh attempts (asks first, says how many). In a group's drill-down, or with the grouped "
            "table focused, only that group's entities.", scope=DETAIL),
    Command("r", "retry_failed", "Retry as new job", "Create a new job of this job's failed entities "
            "(asks first). In a group's drill-down, or with the grouped table focused, only that group's.",
            scope=DETAIL),
    Command("m", "merge_group", "Merge group", "With the grouped table focused: mark the highlighted group; m "
            "on another group merges the marked one into it (asks first), for the job's future errors too.",
            scope=DETAIL, footer=False),
    Command("M", "unmerge_group", "Split group", "Split the group last merged by hand into the highlighted one "
            "off again (asks first).", scope=DETAIL, footer=False),
    Command("e", "show_reason", "Reason", "Show the traceback of the error that paused or failed this job "
            "(circuit breaker, error budget, JobFailed) and the entity that raised it.", scope=DETAIL,
            footer=False),
    Command("x", "export_errors", "Export", "Write the whole error log to a JSON Lines or CSV file; in a "
            "group's drill-down, or with the grouped table focused, only that group's errors.", scope=DETAIL),
    Command("z", "toggle_traceback", "Traceback", "The selected error's traceback across the whole width; "
            "again (or esc): back to the lists. Enter on an error opens it too. On a narrow terminal (under "
            "110 columns) it shows only this way.", scope=DETAIL),
    Command("y", "copy_error", "Copy", "Copy the selected error's entity ID, message or traceback to the "
            "clipboard (asks which: i, m or t). Works over SSH and in tmux (OSC 52; tmux needs "
            "set-clipboard on).", scope=DETAIL),
    Command("slash", "search_errors", "Search errors", "Search the error log and its groups by entity ID or "
            "message text; esc clears the search.", scope=DETAIL, footer=False, key_display="/"),
    Command("s", "step", "Step", "Process one chunk of this job.", scope=DETAIL, footer=False,
            needs_processor=True),
    Command("S", "dry_run", "Dry run", "Run this job's next chunk and show the results, writing nothing.",
            scope=DETAIL, footer=False, needs_processor=True),
    Command("p", "pause_resume", "Pause/resume", "Pause this job, or resume it if paused.", scope=DETAIL,
            footer=False),
    Command("c", "cancel_job", "Cancel", "Cancel this job (asks first).", scope=DETAIL, footer=False),
    Command("right_square_bracket", "next_page", "Next page", "Next page of the error log; with the grouped "
            "table focused and more than 100 bugs, the next 100 bugs (a drill-down ends: enter opens one of "
            "them).", scope=DETAIL, footer=False, key_display="]"),
    Command("left_square_bracket", "prev_page", "Previous page", "Previous page of the error log; with the "
            "grouped table focused, the previous 100 bugs.", scope=DETAIL, footer=False, key_display="["),
    Command("1", "show_tab('errors')", "Errors tab", "Failures grouped, the error log, tracebacks.",
            scope=DETAIL, footer=False),
    Command("2", "show_tab('chunks')", "Chunks tab", "The chunk history.", scope=DETAIL, footer=False),
    Command("3", "show_tab('fields')", "Fields tab", "Every field of the job.", scope=DETAIL, footer=False),
)

_WORKERS: tuple[Command, ...] = (
    Command("escape", "back", "Back", "Go back to the jobs list.", scope=WORKERS),
    Command("s", "stop_worker", "Stop after chunk", "Ask the selected worker, on whatever host, to finish "
            "the chunk in flight and exit (asks first).", scope=WORKERS),
    Command("x", "release_worker", "Release now", "Ask the selected worker to give up its chunk now (the "
            "lease is released, another worker redoes it) and exit (asks first).", scope=WORKERS),
    Command("v", "toggle_stopped", "Show stopped", "Show or hide workers that have stopped.", scope=WORKERS),
)

#: the jobs list's commands with the app-wide ones among them, in the order its help lists them
_HOME: tuple[Command, ...] = (
    Command("enter", "open_job", "Details", "Open the selected job: fields, chunks, errors, tracebacks."),
    Command("n", "new_job", "New job", "Enqueue a new job: IDs pasted or read from a file."),
    Command("s", "step", "Step", "Process one chunk of the selected job and show each entity's result as "
            "it comes in (a paused or finished job says so; nothing else runs).", needs_processor=True),
    Command("a", "toggle_auto_run", "Auto-run", "Keep processing chunks until nothing is claimable; "
            "press again to stop after the chunk in flight.", scope=APP, needs_processor=True),
    Command("D", "show_dry_run", "Dry-run results", "Open the last dry run's results; each failure's "
            "traceback is shown like a stored error's.", scope=APP, footer=False),
    Command("b", "toggle_breakpoint", "Breakpoint", "Stop auto-run at the first new kind of error (a "
            "fingerprint its job had never logged) and open that group; press again to turn it off. The "
            "header says \"breakpoint: new for job\" while it is.", scope=APP, needs_processor=True),
    Command("B", "breakpoint_scope", "Breakpoint scope", "Switch what the breakpoint counts as new, and turn it "
            "on: new to the job, or new to the job's processor (no job routed to that processor logged it: a "
            "fresh job goes past the bugs yesterday's job found). The header says which.", scope=APP,
            footer=False, needs_processor=True),
    Command("p", "pause_resume", "Pause/resume", "Pause the selected job, or resume it if paused."),
    Command("c", "cancel_job", "Cancel", "Cancel the selected job (asks first)."),
    Command("r", "retry_failed", "Retry failed", "Retry the failed entities of the selected job as a new job "
            "(asks first; when a retry job of it still waits, says so instead of making a second)."),
    Command("slash", "search", "Search", "Search jobs by name, provider or entity type.", key_display="/"),
    Command("f", "cycle_status", "Status filter", "Cycle the status filter: all, pending, running, "
            "paused, failed, complete, cancelled."),
    Command("ctrl+a", "bulk", "All matching", "Pause, resume, cancel or retry every job the current "
            "filter or search matches (asks first, says how many).", footer=False, key_display="ctrl+a"),
    Command("P", "prune", "Prune old jobs", "Delete finished jobs past their retention (or older than an age "
            "you type), with their entities and errors: shows how many per status first, asks before deleting, "
            "and prunes in small transactions while the dashboard keeps working.", footer=False),
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
    Command("h", "toggle_history", "History", "Show or hide the queue's throughput and failures over "
            "the last hour (hidden on its own when the terminal is short).", footer=False),
    Command("w", "show_workers", "Workers", "Every process that processes work: host:pid, what it holds, "
            "its last heartbeat; stop one from here.", scope=APP),
    Command("o", "cycle_sort", "Sort", "Order the jobs on this page by the next column: status, ID, name, "
            "progress, done, errors, age (a click on a column's header sorts by it too).", footer=False),
    Command("O", "flip_sort", "Sort direction", "Flip the order: ascending or descending.", footer=False),
    Command("l", "toggle_activity", "Activity log", "Grow the activity log, hide it, or give it back its "
            "usual size (it also grows by itself when the table is short).", footer=False),
    Command("home", "table_first", "First row", "Move to the first row of the table.", scope=APP, footer=False,
            key_display="Home/g", priority=True),
    Command("end", "table_last", "Last row", "Move to the last row of the table.", scope=APP, footer=False,
            key_display="End/G", priority=True),
    Command("g", "table_first", "First row", "Move to the first row of the table.", scope=APP, footer=False,
            alias=True),
    Command("G", "table_last", "Last row", "Move to the last row of the table.", scope=APP, footer=False,
            alias=True),
    Command("j", "table_down", "Down", "Move down a row (k: up; PgDn/PgUp a page).", scope=APP, footer=False,
            key_display="j/k"),
    Command("k", "table_up", "Up", "Move up a row.", scope=APP, footer=False, alias=True),
    Command("question_mark", "help", "Help", "Show every key and what it does.", scope=APP,
            key_display="?"),
    Command("q", "quit", "Quit", "Quit; if a chunk is in flight, asks whether to finish or release it.",
            scope=APP),
)

#: Every command. Help lists a screen's commands in this order: the detail screen's own
#: keys first, then the app-wide ones; on the jobs list, app-wide keys sit among its own.
COMMANDS: tuple[Command, ...] = (*_DETAIL, *_WORKERS, *_HOME)

#: the heading of a screen's section in help
SCOPE_TITLES: dict[Scope, str] = {JOBS: "Jobs", DETAIL: "Job detail", WORKERS: "Workers"}


def commands(scope: Scope) -> tuple[Command, ...]:
    """The commands bound in ``scope`` (app-wide ones are bound once, by the app)."""
    return tuple(c for c in COMMANDS if c.scope == scope)


def available(scope: Scope | None) -> tuple[Command, ...]:
    """What works on a screen of ``scope``: its own commands and the app-wide ones."""
    return tuple(c for c in COMMANDS if c.scope in (APP, scope))


def bindings(scope: Scope) -> list[BindingType]:
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
    for c in (c for c in available(scope) if not c.alias):
        marker = " *(needs `--processor`)*" if c.needs_processor else ""
        lines.append(f"- `{c.display}` **{c.title}**: {c.description}{marker}")
    lines += [
        "",
        "## Everywhere",
        "",
        "- `ctrl+p` **Command palette**: every command above, searchable.",
        "- `escape` Close a dialog; in a search box, clear the search and leave the box.",
        "- `tab` / `shift+tab` Move between fields and buttons.",
        "",
        "The mouse works too: click a row to select it, a column's header to sort by it, a button to press it.",
    ]
    return "\n".join(lines)


#: Roles a browser session (`chunkq web`) runs under; a terminal dashboard has none and may do everything.
Role = Literal["viewer", "operator"]

#: Actions that change the queue, run the callback or write a file: a ``viewer`` may do none of them.
#: Every command's action is in this set or in ``READ_ONLY_ACTIONS`` (tests/web checks); one in
#: neither is refused to viewers too, so a new command is read-only only once someone says so.
STATE_CHANGING_ACTIONS = frozenset({
    "new_job", "step", "toggle_auto_run", "toggle_breakpoint", "breakpoint_scope", "dry_run", "reload_processor",
    "pause_resume", "cancel_job", "retry_failed", "requeue_failed", "retry_entity", "debug_entity", "bulk",
    "export_errors", "stop_worker", "release_worker", "prune", "merge_group", "unmerge_group",
})
READ_ONLY_ACTIONS = frozenset({
    "back", "open_job", "search", "search_errors", "cycle_status", "cycle_sort", "flip_sort", "next_page",
    "prev_page", "toggle_history", "toggle_activity", "toggle_stopped", "toggle_traceback", "show_tab",
    "show_reason", "show_dry_run", "show_workers", "table_first", "table_last", "table_down", "table_up",
    "help", "quit", "copy_error",
})
#: The post-mortem debugger needs a terminal: refused in any browser session, whatever the role.
TERMINAL_ONLY_ACTIONS = frozenset({"debug_entity"})


def refusal(role: Role | None, action: str) -> str | None:
    """Why ``role`` may not run ``action`` (its bare name), or None when it may.

    The dashboard app runs every action through this one check (``ChunkqApp.run_action``),
    so keys, the command palette and clicks are all refused in the process itself.
    """
    if role is None:
        return None
    if action in TERMINAL_ONLY_ACTIONS:
        return "the debugger needs a terminal: run `chunkq tui` on the server"
    if role != "operator" and (action in STATE_CHANGING_ACTIONS
                               or (action in _COMMAND_ACTIONS and action not in READ_ONLY_ACTIONS)):
        return f"read-only: the {role} role can look but not change anything"
    return None


#: the registry's own actions (Textual's, such as an input's cursor keys, are not the registry's to refuse)
_COMMAND_ACTIONS = frozenset(c.action.split("(")[0] for c in COMMANDS)


def screen_scope(screen: object) -> Scope | None:
    """The scope a screen declares in ``COMMAND_SCOPE`` (None: dialogs, which have only app commands)."""
    return getattr(screen, "COMMAND_SCOPE", None)


class ChunkqCommands(Provider):
    """The registry in the command palette: app-wide commands, and those of the screen it was opened on."""

    def _hits(self) -> list[tuple[str, Command, str]]:
        return [(c.title, c, escape(f"{c.description} (key: {c.display})"))
                for c in available(screen_scope(self.screen)) if not c.alias]

    def _runner(self, command: Command) -> Callable[[], Awaitable[object]]:
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
