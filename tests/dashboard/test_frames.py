"""``tests/frames.py``: a Pilot test builds no frame until its body is done, then draws the screen once,
so a widget that cannot be drawn still fails the test that shows it."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Static


class Fragile(Static):
    """Draws until told to break; counts how often a frame draws it (layout measures it apart)."""

    broken = False
    drawn = 0

    def render_lines(self, crop: Region) -> list[Strip]:
        type(self).drawn += 1
        if self.broken:
            raise RuntimeError("this widget cannot be drawn")
        return super().render_lines(crop)


class Shows(App[None]):
    def compose(self) -> ComposeResult:
        yield Fragile()


async def test_a_widget_that_cannot_be_drawn_fails_the_test_at_its_end() -> None:
    Fragile.drawn = 0
    with pytest.raises(RuntimeError, match="cannot be drawn"):
        async with Shows().run_test() as pilot:
            widget = pilot.app.query_one(Fragile)
            for n in range(3):
                widget.update(f"change {n}")
                await pilot.pause()
            assert Fragile.drawn == 0  # no frame built while the test ran
            widget.broken = True


async def test_the_last_frame_is_drawn_whole() -> None:
    Fragile.drawn = 0
    async with Shows().run_test() as pilot:
        await pilot.pause()
    assert Fragile.drawn == 1
