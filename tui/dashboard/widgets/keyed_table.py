"""Keep a keyed ``DataTable`` in step with fresh rows without rebuilding it.

A live view that clears and re-adds its rows every refresh flickers, pays for
every row each time, and loses the cursor and the scroll position. Here rows
are keyed (error id, chunk index, group); ``diff_rows`` (pure) works out which
rows left, which arrived and which cells changed, and ``sync_rows`` applies just
that. Only when the order of the rows that stay changed is the table rebuilt,
and then the cursor goes back to the row it was on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chunkq.tui.dashboard.format import printable
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]


def same_cell(a: object, b: object) -> bool:
    """Equal as drawn: ``Text`` equality ignores the base style, which is what colours a status."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.spans == b.spans and a.style == b.style
    return a == b


@dataclass(frozen=True)
class RowDiff:
    """What turns the old rows into the new ones, applied in this order."""

    #: the rows that stay changed order: clear the table and add ``adds`` (every row)
    rebuild: bool = False
    removes: tuple[str, ...] = ()
    #: (row key, column index, new cell)
    updates: tuple[tuple[str, int, Cell], ...] = ()
    #: rows appended at the end, in order
    adds: tuple[Row, ...] = ()

    @property
    def changed(self) -> bool:
        return self.rebuild or bool(self.removes or self.updates or self.adds)


def diff_rows(old: Sequence[Row], new: Sequence[Row]) -> RowDiff:
    """The smallest set of row operations from ``old`` to ``new`` (both keyed, in display order).

    New rows may only be appended: a row arriving in the middle, or rows that stay
    but swap places, make it a rebuild.
    """
    wanted = [key for key, _ in new]
    wanted_set = set(wanted)
    kept = [key for key, _ in old if key in wanted_set]
    if kept != wanted[: len(kept)]:
        return RowDiff(rebuild=True, adds=tuple(new))
    before = dict(old)
    removes = tuple(key for key, _ in old if key not in wanted_set)
    updates: list[tuple[str, int, Cell]] = []
    adds: list[Row] = []
    for key, cells in new:
        if key in before:
            for index, (old_cell, new_cell) in enumerate(zip(before[key], cells, strict=False)):
                if not same_cell(old_cell, new_cell):
                    updates.append((key, index, new_cell))
        else:
            adds.append((key, cells))
    return RowDiff(False, removes, tuple(updates), tuple(adds))


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except Exception:
        return None
    return key.value


def current_rows(table: DataTable) -> list[Row]:
    """The table's rows as (key, cells), in the order they were added."""
    return [(str(key.value), table.get_row(key)) for key in table.rows]


def plain(cell: Cell) -> Text:
    """A ``str`` cell as literal, printable text: DataTable would parse a ``str`` as markup (``[b]`` in
    an ID), and a control character in it would reach the terminal."""
    return Text(printable(cell), end="", no_wrap=True) if isinstance(cell, str) else cell


def sync_rows(table: DataTable, rows: Sequence[Row]) -> bool:
    """Make ``table`` show ``rows`` (key, cells) in order; True when anything changed.

    ``str`` cells are shown as they are, never as markup: most are user text.
    """
    rows = [(key, tuple(plain(c) for c in cells)) for key, cells in rows]
    diff = diff_rows(current_rows(table), rows)
    if diff.rebuild:
        keep = selected_key(table)
        table.clear()
        for key, cells in diff.adds:
            table.add_row(*cells, key=key)
        if keep is not None and keep in {k for k, _ in rows}:
            table.move_cursor(row=table.get_row_index(RowKey(keep)), animate=False)
        return True
    for key in diff.removes:
        table.remove_row(key)
    columns = list(table.columns)
    for key, index, cell in diff.updates:
        table.update_cell(key, columns[index], cell)
    for key, cells in diff.adds:
        table.add_row(*cells, key=key)
    return diff.changed
