"""Section 5: the dashboard's jobs screen (written once the dashboard is in place)."""

from __future__ import annotations

from pathlib import Path

from .common import Row


def dashboard(work: Path) -> list[Row]:
    raise NotImplementedError("the dashboard section is not written yet")
