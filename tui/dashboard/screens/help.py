"""Every key and what it does, generated from the command registry."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Markdown


class HelpScreen(ModalScreen[None]):
    AUTO_FOCUS = "#help-body"
    # A modal screen leaves the app's bindings out: the keys help lists for moving (j/k, g/G; Home/End
    # and PgUp/PgDn are the scroll view's own) are bound here too, to scroll the text (``table_keys``).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
        Binding("j", "app.table_down", show=False),
        Binding("k", "app.table_up", show=False),
        Binding("g", "app.table_first", show=False),
        Binding("G", "app.table_last", show=False),
    ]

    def __init__(self, markdown: str) -> None:
        super().__init__()
        self.markdown = markdown

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(self.markdown, id="help-text")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
