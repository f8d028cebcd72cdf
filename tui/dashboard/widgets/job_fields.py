"""The Fields tab of the job detail screen: every field of the job, one row each."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from chunkq.core import Job
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.widgets.keyed_table import Row, sync_rows
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable


def field_value(value: Any, now: datetime) -> str:
    """A field as a person reads it: times with how long ago (or how soon), counts with separators."""
    if isinstance(value, datetime):
        return f"{fmt.timestamp(value)} ({humanize.ago(value, now)})"
    if value is None:
        return fmt.DASH
    if isinstance(value, dict):
        return ", ".join(f"{k}={v!r}" for k, v in value.items()) or "{}"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return fmt.number(value)
    return str(value)


def field_rows(job: Job, now: datetime) -> list[Row]:
    """(field, value) rows in the dataclass's order, the progress just before the counts."""
    rows: list[Row] = [(f.name, (f.name, field_value(getattr(job, f.name), now))) for f in dataclasses.fields(job)]
    at = next(i for i, (key, _) in enumerate(rows) if key == "total_count")
    rows.insert(at, ("progress", ("progress", fmt.percent(job.progress))))
    return rows


class JobFields(DataTable[str | Text]):
    """Every field of one job; values are user text, shown as plain text."""

    shown: reactive[tuple[Job, datetime] | None] = reactive(None, init=False)
    """The job and the time its ages are measured from."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.add_column("Field", key="field", width=18)
        self.add_column("Value", key="value")

    def watch_shown(self, shown: tuple[Job, datetime] | None) -> None:
        if shown is not None:
            sync_rows(self, field_rows(*shown))
