"""Exporting a job's error log: the path dialog and the streaming writer.

The log can hold millions of rows, so it is streamed from ``Queue.iter_errors``
page by page into a temporary file next to the target, which replaces the
target only once complete: a failed export leaves no half-written file behind.
CSV cells are escaped like every human output (``humanize.printable``, line
breaks kept); JSON Lines is exact (``humanize.json_text``).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import ClassVar

from chunkq.core import ErrorEntry, Queue
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

CSV_FIELDS = (
    "id",
    "job_id",
    "entity_id",
    "error_type",
    "message",
    "attempt",
    "final",
    "chunk_index",
    "created_at",
    "resolved_at",
    "traceback",
)


def export_format(path: Path) -> str:
    """CSV for ``.csv``, JSON Lines for anything else (one object per error)."""
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def check_export_path(text: str, cwd: Path | None = None) -> Path:
    """The absolute path to write, or ValueError with a one-line reason; touches nothing."""
    raw = text.strip()
    if not raw:
        raise ValueError("enter a file path, e.g. errors.jsonl or errors.csv")
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"folder {path.parent} is not writable")
    return path


async def export_errors(queue: Queue, job_id: int, path: Path, *, fingerprint: str | None = None) -> int:
    """Write every error of ``job_id`` (of one group, given its ``fingerprint``) to ``path``; returns how many.

    Raises OSError or ChunkqError."""
    fmt = export_format(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = (
                csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore") if fmt == "csv" else None
            )
            if writer is not None:
                writer.writeheader()
            async for error in queue.iter_errors(job_id, fingerprint=fingerprint):
                if writer is not None:
                    writer.writerow(_row(error))
                else:
                    fh.write(humanize.json_text(error.to_dict()) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return n


def _row(error: ErrorEntry) -> dict[str, object]:
    # escaped as `chunkq errors --format csv` escapes (line breaks kept): `cat` of the file must not
    # replay a provider's escape sequences; JSON Lines is the exact export
    return {k: humanize.printable(v, lines=True) if isinstance(v, str) else v for k, v in error.to_dict().items()}


class ExportScreen(ModalScreen[Path | None]):
    """Asks where to write the error log; a bad path is explained here and nothing is written."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Back", id="export.back")]

    def __init__(self, job_id: int, count: int, default: str, *, what: str | None = None) -> None:
        super().__init__()
        self.job_id = job_id
        self.count = count
        self.default = default
        #: what is exported, when not the whole log (one group's errors)
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog"):
            what = self.what or f"the error log of job {self.job_id}"
            yield Label(fmt.plain(f"Export {what} ({fmt.plural(self.count, 'error')})"), id="export-title")
            yield Static("File path (.csv for CSV, anything else for JSON Lines, one error a line):")
            yield Input(self.default, id="export-path", select_on_focus=False)
            yield Static("", id="export-problem")
            with Horizontal(id="export-buttons"):
                yield Button("Export", id="export-ok", variant="primary")
                yield Button("Back", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def _submit(self) -> None:
        try:
            path = check_export_path(self.query_one("#export-path", Input).value)
        except ValueError as exc:
            self.query_one("#export-problem", Static).update(fmt.plain(exc))  # paths are not markup
            return
        if not path.exists():
            self.dismiss(path)
            return

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self.dismiss(path)

        # An export replaces its target: never silently over a file someone may still need.
        self.app.push_screen(ConfirmScreen(
            "Replace the existing file?",
            f"{path} already exists. Exporting replaces it with the error log of job {self.job_id}.",
            choices=[("yes", "Replace it", "error"), ("no", "Back", "default")],
        ), chosen)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
