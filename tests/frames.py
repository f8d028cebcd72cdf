"""Pilot tests draw the screen once, at the end, instead of every frame.

In a Pilot test Textual lays out and builds every frame as a terminal would get it, and the headless
driver throws each one away: nobody sees them. Building them was a third of the dashboard tests' CPU
(323 s against 221 s over the dashboard, web and untrusted-display files on this 2-core machine), the
largest single cost of the suite. Here the frames a test makes are not built; layout still runs (clicks
and ``get_widget_at`` find what a terminal would show), every widget's state is what it would be, and
when the test's body is done the screen it left is drawn whole once, so an error in a widget's drawing
still fails the test. What a screen looks like is the snapshot tests' (``snap_compare`` draws its own
screenshot) and ``tests/reliability/test_untrusted_display.py``'s, which draw every frame.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from textual.app import App, ScreenStackError
from textual.pilot import Pilot
from textual.screen import Screen

_DRAW = Screen._compositor_refresh
_RUN_TEST = App.run_test


def _layout_only(screen: Screen[Any]) -> None:
    """``Screen._compositor_refresh`` for a headless app's top screen: what it does but build the frame."""
    app = screen.app
    if not app.is_headless or app.is_inline or screen is not app.screen:
        _DRAW(screen)
        return
    screen._dirty_widgets.clear()
    screen._compositor._dirty_regions.clear()
    app._update_mouse_over(screen)


def draw_whole_screen(app: App[Any]) -> None:
    """Build one whole frame of the top screen, as a terminal's first frame: a widget that cannot be
    drawn raises here."""
    try:
        screen = app.screen
    except ScreenStackError:  # the test ended the app: nothing is on screen
        return
    screen._compositor.render_update(full=True, screen_stack=app._background_screens)


@asynccontextmanager
async def _run_test(app: App[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Pilot[Any]]:
    async with _RUN_TEST(app, *args, **kwargs) as pilot:
        yield pilot
        if app.is_running:
            await pilot.pause()
            draw_whole_screen(app)


@pytest.fixture(autouse=True)
def _last_frame_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Screen, "_compositor_refresh", _layout_only)
    monkeypatch.setattr(App, "run_test", _run_test)
