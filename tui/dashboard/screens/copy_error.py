"""Copy one error's entity ID, message or traceback to the clipboard.

The dashboard often runs over SSH or inside tmux, where no clipboard library
reaches the operator's machine; Textual's ``copy_to_clipboard`` writes an OSC 52
sequence, which the terminal (and tmux with ``set-clipboard on``) hands to the
local clipboard. The text travels base64-encoded, so what is copied is the
error's exact text (the ID to paste into a reproduction), while the dialog and
the toast show it made printable.

``y`` ("yank") asks what to copy; ``i``, ``m`` or ``t`` answers (or the
buttons); esc copies nothing.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from chunkq.core import ErrorEntry
from chunkq.tui import humanize
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.widgets.detail_text import one_line
from textual.binding import Binding, BindingType

What = Literal["entity", "message", "traceback"]
#: how the toast names each
WHAT_WORDS: dict[str, str] = {"entity": "entity ID", "message": "message", "traceback": "traceback"}


def copied_text(error: ErrorEntry, what: What) -> str:
    """The exact text copied (never shortened or escaped: the clipboard is not a terminal)."""
    if what == "entity":
        return error.entity_id
    if what == "message":
        return f"{error.error_type}: {error.message}" if error.message else error.error_type
    return error.traceback or f"{error.error_type}: {error.message}"


def copied_note(error: ErrorEntry, what: What, text: str) -> str:
    """What the toast says was copied: which error, and enough of the text to recognise it."""
    if what == "traceback":
        lines = text.count("\n") + 1
        return (f"copied the traceback of error #{error.id} ({humanize.plural(lines, 'line')}, "
                f"entity {one_line(error.entity_id, 40)}) to the clipboard")
    return f"copied the {WHAT_WORDS[what]} {one_line(text, 60)!r} to the clipboard"


class CopyScreen(ConfirmScreen):
    """Dismisses with ``"entity"``, ``"message"`` or ``"traceback"``; escape (or Back) with None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "pick('entity')", "Entity ID", show=False, id="copy.entity"),
        Binding("m", "pick('message')", "Message", show=False, id="copy.message"),
        Binding("t", "pick('traceback')", "Traceback", show=False, id="copy.traceback"),
    ]

    def __init__(self, error: ErrorEntry) -> None:
        super().__init__(
            "Copy to the clipboard",
            f"Error #{error.id} of entity {one_line(error.entity_id, 40)}: "
            f"{one_line(error.error_type, 30)}\ni: entity ID · m: message · t: traceback · esc: nothing",
            choices=[("entity", "Entity ID", "primary"), ("message", "Message", "default"),
                     ("traceback", "Traceback", "default"), ("back", "Back", "default")],
        )

    def on_mount(self) -> None:
        # copying changes nothing: the first choice, not Back, takes the focus (Enter copies the ID)
        self.query_one("#choice-entity").focus()

    def action_pick(self, what: str) -> None:
        self.dismiss(what)
