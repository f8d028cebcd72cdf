"""The one registry of dashboard commands.

Footer bindings, the command palette and the help screen are all generated from
``COMMANDS``, so a key can never be documented in one place and missing from
another. A command belongs to a scope: ``app`` commands work on every screen,
``jobs`` commands on the jobs table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.markup import escape

if TYPE_CHECKING:
    from textual.screen import Screen


@dataclass(frozen=True)
class Command:
    key: str
    action: str
    title: str
    description: str
    scope: str = "jobs"  # "app" or "jobs"
    footer: bool = True
    #: shown in help as the key people type (bindings use Textual's key names)
    key_display: str | None = None
    needs_processor: bool = False
    priority: bool = False

    @property
    def id(self) -> str:
        return f"{self.scope}.{self.action}"

    @property
    def display(self) -> str:
        return self.key_display or self.key


COMMANDS: tuple[Command, ...] = (
    Command("enter", "open_job", "Details", "Open the selected job: fields, chunks, errors, tracebacks."),
    Command("n", "new_job", "New job", "Enqueue a new job: IDs pasted or read from a file."),
    Command("s", "step", "Step", "Process one chunk of the selected job (or the next job in line) "
            "and show each entity's result as it comes in.", needs_processor=True),
    Command("a", "toggle_auto_run", "Auto-run", "Keep processing chunks until nothing is claimable; "
            "press again to stop after the chunk in flight.", scope="app", needs_processor=True),
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
            "modules that changed on disk; on an error the previous callback stays in use.", scope="app",
            footer=False, needs_processor=True),
    Command("right_square_bracket", "next_page", "Next page", "Show the next page of jobs.", footer=False,
            key_display="]"),
    Command("left_square_bracket", "prev_page", "Previous page", "Show the previous page of jobs.",
            footer=False, key_display="["),
    Command("question_mark", "help", "Help", "Show every key and what it does.", scope="app",
            key_display="?"),
    Command("q", "quit", "Quit", "Quit; if a chunk is in flight, asks whether to finish or release it.",
            scope="app"),
)


def commands(scope: str) -> tuple[Command, ...]:
    return tuple(c for c in COMMANDS if c.scope == scope)


def bindings(scope: str) -> list[Binding]:
    """Textual bindings for one scope, with ids so a keymap can rebind them."""
    return [
        Binding(c.key, c.action, c.title, show=c.footer, key_display=c.key_display, id=c.id,
                tooltip=c.description, priority=c.priority)
        for c in commands(scope)
    ]


def help_markdown(extra: Iterable[tuple[str, str, str]] = ()) -> str:
    """The help screen's text. ``extra`` adds (section, key, description) rows for other screens."""
    lines = [
        "# chunkq dashboard",
        "",
        "chunkq runs long lists of entity IDs through your callback in chunks. Start the dashboard "
        "with `--processor module:function` to process from here; without it the dashboard watches "
        "and controls jobs that workers elsewhere run.",
        "",
        "## Jobs",
        "",
    ]
    for c in COMMANDS:
        marker = " *(needs `--processor`)*" if c.needs_processor else ""
        lines.append(f"- `{c.display}` **{c.title}**: {c.description}{marker}")
    sections: dict[str, list[tuple[str, str]]] = {}
    for section, key, description in extra:
        sections.setdefault(section, []).append((key, description))
    for section, rows in sections.items():
        lines += ["", f"## {section}", ""]
        lines += [f"- `{k}` {d}" for k, d in rows]
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


class ChunkqCommands(Provider):
    """Every registry command in the command palette, run on the screen it was opened from."""

    def _hits(self) -> list[tuple[str, str, str]]:
        screen: Screen = self.screen
        out = []
        for c in COMMANDS:
            if c.scope == "jobs" and not hasattr(screen, f"action_{c.action}"):
                continue
            out.append((c.title, c.action, escape(f"{c.description} (key: {c.display})")))
        return out

    def _runner(self, action: str) -> partial[object]:
        target = self.app if any(c.action == action and c.scope == "app" for c in COMMANDS) else self.screen
        return partial(target.run_action, action)

    async def discover(self) -> Hits:
        for title, action, help_text in self._hits():
            yield DiscoveryHit(title, self._runner(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in self._hits():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(action), help=help_text)
