"""Keep a keyed ``DataTable`` in step with fresh rows without rebuilding it.

A live view that clears and re-adds its rows every refresh flickers, pays for
every row each time, and loses the cursor and the scroll position. Here rows
are keyed (error id, chunk index, group), only changed cells are updated, rows
that left are removed and new rows appended; only when the order itself changed
is the table rebuilt, and then the cursor goes back to the row it was on.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


def _same(a: object, b: object) -> bool:
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.spans == b.spans and a.style == b.style
    return a == b


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except Exception:
        return None
    return key.value


def sync_rows(table: DataTable, rows: Sequence[Row]) -> bool:
    """Make ``table`` show ``rows`` (key, cells) in order; True when anything changed."""
    wanted = [key for key, _ in rows]
    current = [k.value for k in table.rows]
    columns = list(table.columns)
    wanted_set = set(wanted)
    kept = [k for k in current if k in wanted_set]
    if kept != wanted[: len(kept)]:
        return _rebuild(table, rows)
    changed = False
    for key in current:
        if key not in wanted_set:
            table.remove_row(key)
            changed = True
    have = set(kept)
    for key, cells in rows:
        if key in have:
            old = table.get_row(key)
            for column, old_cell, new_cell in zip(columns, old, cells, strict=False):
                if not _same(old_cell, new_cell):
                    table.update_cell(key, column, new_cell)
                    changed = True
        else:
            table.add_row(*cells, key=key)
            changed = True
    return changed


def _rebuild(table: DataTable, rows: Sequence[Row]) -> bool:
    keep = selected_key(table)
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if keep is not None and keep in {k for k, _ in rows}:
        table.move_cursor(row=table.get_row_index(RowKey(keep)), animate=False)
    return True
