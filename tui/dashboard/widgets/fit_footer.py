"""A footer that fits the terminal: every key stays visible at 80 columns.

Textual's footer is one line; at 80 columns a screen's keys run off its end
("/ Sear"). ``FitFooter`` turns compact when its keys do not fit on one line,
leaves the palette key to help then (ctrl+p is listed there), and lays the keys out on as
many rows as they need (a grid, row by row) — at most ``MAX_ROWS``, after which
the last ones are reached through help, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # not exported; Textual is pinned (pyproject)

#: the palette key docked at the right ("^p palette" and its border)
PALETTE_WIDTH = 13
MAX_ROWS = 3
#: what a key takes besides its key and description text (padding, margin), compact or not
KEY_CHROME = {True: 2, False: 4}


def fit_rows(widths: Sequence[int], available: int, max_rows: int = MAX_ROWS) -> tuple[int, list[int]]:
    """(rows, column widths) for items of ``widths`` laid out row by row in a grid ``available`` cells wide.

    The fewest rows whose columns (each as wide as its widest item) fit; ``max_rows``
    when none do.
    """
    n = len(widths)
    if n == 0:
        return 1, [1]
    for rows in range(1, max_rows + 1):
        columns = -(-n // rows)
        sizes = [max(widths[i] for i in range(c, n, columns)) for c in range(columns)]
        if sum(sizes) <= available or rows == max_rows:
            return rows, sizes
    raise AssertionError("unreachable")


class FitFooter(Footer):
    """The screen's keys on one row when they fit, on two or three when they do not."""

    DEFAULT_CSS = """
    FitFooter {
        layout: grid;
        grid-gutter: 0;
        grid-columns: auto;
    }
    """

    #: what the keys were last built from (``_shown``): a bindings signal that changes none of it
    #: rebuilds nothing
    _built: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        self._built = self._shown()
        for widget in super().compose():
            if self.compact and isinstance(widget, FooterKey):
                # Born compact: the key's ``compact`` watcher then finds its class already set. Set by the
                # watcher after mounting, the class restyled each key again on every rebuild of the footer.
                widget.set_class(True, "-compact", update=False)
            yield widget
        self._fit(self.size.width or self.app.size.width)

    def _shown(self) -> tuple[object, ...]:
        """Everything ``Footer.compose`` draws from: the keys, their state, and the footer's own style."""
        keys = tuple((binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
                     for _node, binding, enabled, tooltip in self.screen.active_bindings.values() if binding.show)
        return keys, self.compact, self.show_command_palette

    def bindings_changed(self, screen: Screen) -> None:
        """Rebuild the keys only when they changed. Textual's footer removes and mounts every key widget
        on each signal, and a focus move or a dialog opening and closing sends one: most of a live
        screen's restyling was that, with nothing different on it."""
        if (self._bindings_ready and screen.app.app_focus and self.is_attached and screen is self.screen
                and self._shown() == self._built):
            return
        super().bindings_changed(screen)

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size.width)

    def key_widths(self, compact: bool | None = None) -> list[int]:
        """How wide each shown key is, as the footer draws it."""
        if not self._bindings_ready:
            return []
        seen: dict[str, int] = {}
        for _node, binding, _enabled, _tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in seen:
                seen[binding.action] = (cell_len(self.app.get_key_display(binding)) + cell_len(binding.description)
                                        + KEY_CHROME[self.compact if compact is None else compact])
        return list(seen.values())

    def _fit(self, width: int) -> None:
        if width <= 0:
            return
        # Roomy (padding, the palette key) when that fits on one line; compact otherwise.
        narrow = sum(self.key_widths(compact=False)) + PALETTE_WIDTH > width
        if narrow != self.compact:
            self.compact = narrow
            self.show_command_palette = not narrow
            self.call_after_refresh(self.recompose)
            return
        rows, sizes = fit_rows(self.key_widths(), width - (PALETTE_WIDTH if self.show_command_palette else 0))
        self.styles.grid_size_columns = len(sizes)
        self.styles.grid_columns = " ".join(map(str, sizes))
        self.styles.height = rows
