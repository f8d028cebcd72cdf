"""Terminal keys in every table: Home/g first row, End/G last row, j/k down/up (PgUp/PgDn are DataTable's).

And in every scrolling pane (help, a traceback, the activity log): the same keys scroll it, top,
bottom, a line down or up, so help's list of keys holds wherever the focus is.

Textual's DataTable binds Home and End to horizontal scrolling and knows no vi
keys. Rather than subclass every table (jobs, errors, groups, chunks, fields,
workers), the app binds these keys once, with priority, and each action moves
the focused table's cursor, or scrolls the focused pane; when the focus is
anywhere else (a search box, a text area, a button) the action skips, and the
key goes where it would have gone (Home in an input still goes to the start of
the line, j in the IDs box is a j).
"""

from __future__ import annotations

from typing import Any

from textual.actions import SkipAction
from textual.app import App
from textual.containers import VerticalScroll
from textual.widgets import DataTable, RichLog

#: action name -> the DataTable action it runs
TABLE_ACTIONS: dict[str, str] = {
    "table_first": "scroll_top",
    "table_last": "scroll_bottom",
    "table_down": "cursor_down",
    "table_up": "cursor_up",
}


#: action name -> the method that does it in a scrolling pane (a container or a log; never a text area,
#: where the keys type)
SCROLL_ACTIONS: dict[str, str] = {
    "table_first": "scroll_home",
    "table_last": "scroll_end",
    "table_down": "scroll_down",
    "table_up": "scroll_up",
}


def focused_table(app: App[object]) -> DataTable[object]:
    """The focused table, or SkipAction: the key is not ours."""
    focused = app.focused
    if not isinstance(focused, DataTable):
        raise SkipAction()
    return focused


def run(app: App[Any], action: str) -> None:
    """Run one of ``TABLE_ACTIONS`` on the focused table, or its ``SCROLL_ACTIONS`` twin on a focused pane."""
    focused = app.focused
    # named panes only: a DataTable, a TextArea and an Input are scroll views too, with keys of their own
    if isinstance(focused, VerticalScroll | RichLog):
        getattr(focused, SCROLL_ACTIONS[action])(animate=False)  # a key press moves at once, as in a table
        return
    table = focused_table(app)
    getattr(table, f"action_{TABLE_ACTIONS[action]}")()
