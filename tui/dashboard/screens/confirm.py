"""A yes/no (or several-way) question that blocks until answered.

Its title and message often quote a job's name: both are shown as plain text.

Enter presses the focused button, so the button that changes nothing ("Back",
"No", "Keep it", "Keep running") has the focus when the dialog opens: a
reflexive Enter never destroys. ``y`` picks the one action of a yes/no
question, or the action the dialog names as its yes (``yes=``: the quit
dialog's "Finish, then quit", which loses nothing); where several actions are
on offer and none is named it does nothing (the operator chooses with the
mouse, tab or the arrows, then Enter). Labels stay short (a
count belongs in the title), so every button fits at 80 columns.
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
#: choices that close the dialog and change nothing
SAFE_CHOICES = frozenset({"no", "stay", "back"})


def safe_choice(choices: list[Choice]) -> str | None:
    """The value of the button that changes nothing (it takes the focus), or None when there is none."""
    return next((value for value, _label, _variant in choices if value in SAFE_CHOICES), None)


class ConfirmScreen(ModalScreen[str | None]):
    """Dismisses with the chosen value; escape dismisses with None (nothing happens)."""

    AUTO_FOCUS = None  # on_mount focuses the safe button
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Back", id="confirm.back"),
        Binding("y", "choose_first", "Yes", show=False, id="confirm.yes"),
        Binding("n", "dismiss_none", "No", show=False, id="confirm.no"),
        Binding("left,shift+tab", "app.focus_previous", show=False),
        Binding("right,tab", "app.focus_next", show=False),
    ]

    def __init__(self, title: str, message: str, *, choices: list[Choice] | None = None,
                 yes: str | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.choices = choices or [("yes", "Yes", "error"), ("no", "No", "default")]
        #: the value ``y`` picks when several actions are on offer (None: ``y`` picks only a lone action)
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(fmt.plain(self.title_text), id="dialog-title")
            yield Static(fmt.plain(self.message, lines=True), id="dialog-message")
            with Horizontal(id="dialog-buttons"):
                for value, label, variant in self.choices:
                    yield Button(label, id=f"choice-{value}", variant=variant)  # type: ignore[arg-type]  # choices name Textual's button variants

    def on_mount(self) -> None:
        safe = safe_choice(self.choices)
        buttons = self.query(Button)
        target = self.query_one(f"#choice-{safe}", Button) if safe is not None else buttons.first()
        target.focus()

    def update_message(self, message: str) -> None:
        """Say something new while open (the quit dialog follows the work going on behind it)."""
        self.message = message
        if self.is_mounted:
            self.query_one("#dialog-message", Static).update(fmt.plain(message, lines=True))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        value = (event.button.id or "").removeprefix("choice-")
        self.dismiss(None if value in ("no", "stay", "back") else value)

    def action_choose_first(self) -> None:
        if self.yes is not None:
            self.dismiss(self.yes)
            return
        actions = [value for value, _label, _variant in self.choices if value not in SAFE_CHOICES]
        if len(actions) == 1:  # a yes/no question; with several actions, `y` would be a guess
            self.dismiss(actions[0])

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
