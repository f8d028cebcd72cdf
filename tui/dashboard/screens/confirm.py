"""A yes/no (or several-way) question that blocks until answered.

Its title and message often quote a job's name: both are shown as plain text.
"""

from __future__ import annotations

from typing import ClassVar

from chunkq.tui.dashboard import format as fmt
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

Choice = tuple[str, str, str]  # (value, label, button variant)


class ConfirmScreen(ModalScreen[str | None]):
    """Dismisses with the chosen value; escape dismisses with None (nothing happens)."""

    AUTO_FOCUS = "#dialog-buttons Button"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Back", id="confirm.back"),
        Binding("y", "choose_first", "Yes", show=False, id="confirm.yes"),
        Binding("n", "dismiss_none", "No", show=False, id="confirm.no"),
        Binding("left,shift+tab", "app.focus_previous", show=False),
        Binding("right,tab", "app.focus_next", show=False),
    ]

    def __init__(self, title: str, message: str, *, choices: list[Choice] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.choices = choices or [("yes", "Yes", "error"), ("no", "No", "default")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(fmt.plain(self.title_text), id="dialog-title")
            yield Static(fmt.plain(self.message, lines=True), id="dialog-message")
            with Horizontal(id="dialog-buttons"):
                for value, label, variant in self.choices:
                    yield Button(label, id=f"choice-{value}", variant=variant)  # type: ignore[arg-type]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        value = (event.button.id or "").removeprefix("choice-")
        self.dismiss(None if value in ("no", "stay", "back") else value)

    def action_choose_first(self) -> None:
        self.dismiss(self.choices[0][0])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
