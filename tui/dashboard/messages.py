"""What processing reports to the screens, as typed messages.

The app runs the processing (a step, auto-run, a dry run, a reload) and posts these
as things happen; it hands each one to the jobs screen (which keeps the activity
log) and to the screen on top if that screen listens (see ``protocol.ProcessingListener``).
Widgets and screens import them from here, never from the app.
"""

from __future__ import annotations

from chunkq import core
from textual.message import Message
from textual.notifications import SeverityLevel


class EntityDone(Message):
    """One entity finished (step, auto-run or dry run); sent as it happens."""

    def __init__(self, job_id: int | None, result: core.EntityResult, *, dry_run: bool = False) -> None:
        super().__init__()
        self.job_id = job_id
        self.result = result
        self.dry_run = dry_run


class EntityBatch(Message):
    """Entities that finished during auto-run, gathered into one message (``background.py``):
    one message per entity starved the interface's keys at hundreds a second."""

    def __init__(self, entities: list[EntityDone]) -> None:
        super().__init__()
        self.entities = entities


class ChunkDone(Message):
    """A chunk was committed (or its results discarded after a lost lease)."""

    def __init__(self, result: core.ChunkResult, *, source: str) -> None:
        super().__init__()
        self.result = result
        self.source = source  # "step" or "auto-run"


class ActivityNote(Message):
    """A line for the activity log that is not an entity result (a summary, a warning)."""

    def __init__(self, text: str, *, severity: SeverityLevel = "information") -> None:
        super().__init__()
        self.text = text
        self.severity: SeverityLevel = severity


class ProcessingChanged(Message):
    """Stepping or auto-run started or stopped: headers and footers redraw."""


class BreakpointHit(Message):
    """Auto-run stopped at the breakpoint: ``job_id`` logged a new kind of error (``fingerprint``).

    The app opens that job's detail on the group; it is not forwarded to listeners.
    """

    def __init__(self, job_id: int, fingerprint: str) -> None:
        super().__init__()
        self.job_id = job_id
        self.fingerprint = fingerprint


#: Every message processing sends; a listener receives any of them.
ProcessingMessage = EntityDone | EntityBatch | ChunkDone | ActivityNote | ProcessingChanged
