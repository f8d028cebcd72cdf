"""Terminal keys in every table: Home/g first row, End/G last row, j/k down/up (PgUp/PgDn are DataTable's).

Textual's DataTable binds Home and End to horizontal scrolling and knows no vi
keys. Rather than subclass every table (jobs, errors, groups, chunks, fields,
workers), the app binds these keys once, with priority, and each action moves
the focused table's cursor; when the focus is anywhere else (a search box, a
button, the help text) the action skips, and the key goes where it would have
gone (Home in an input still goes to the start of the line).
"""

from __future__ import annotations

from textual.actions import SkipAction
from textual.app import App
from textual.widgets import DataTable

#: action name -> the DataTable action it runs
TABLE_ACTIONS: dict[str, str] = {
    "table_first": "scroll_top",
    "table_last": "scroll_bottom",
    "table_down": "cursor_down",
    "table_up": "cursor_up",
}


def focused_table(app: App[object]) -> DataTable[object]:
    """The focused table, or SkipAction: the key is not ours."""
    focused = app.focused
    if not isinstance(focused, DataTable):
        raise SkipAction()
    return focused


def run(app: App[object], action: str) -> None:
    """Run one of ``TABLE_ACTIONS`` on the focused table."""
    table = focused_table(app)
    getattr(table, f"action_{TABLE_ACTIONS[action]}")()
