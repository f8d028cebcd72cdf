"""Render a stored error's traceback the way Rich renders a live one.

core keeps each failure's traceback as plain data (``ErrorEntry.stacks``), not
as an exception object: the error may have been recorded hours ago by a worker
on another machine. Rich's ``Traceback`` only needs its ``Trace``/``Stack``/
``Frame`` dataclasses, so the stored data is mapped onto those and Rich does the
drawing (source context from the file when it is readable here, highlighting,
chained exceptions, locals).

Two things Rich cannot know are added around it: when a frame's file is not
readable on this machine Rich shows only ``in name:line``, so the line recorded
at failure time is listed underneath; and locals appear only when the operator
opted in (``--capture-locals``), since they can hold secrets.

Every string of a stored traceback is the callback's (an exception message, a
local's repr, a file name): each goes through ``humanize.printable`` before Rich
sees it, so no control character or bidi override reaches the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from chunkq.core import ErrorEntry, TraceFrame, TraceStack
from chunkq.tui.humanize import printable
from rich.console import Group, RenderableType
from rich.pretty import Node
from rich.table import Table
from rich.text import Text
from rich.traceback import Frame, Stack, Trace, Traceback

#: Frames of the chunkq machinery around the user's callback say nothing about the bug.
_MACHINERY = (
    os.sep + os.path.join("core", "runner.py"),
    os.sep + os.path.join("asyncio", ""),
    os.sep + os.path.join("concurrent", "futures", ""),
)


def display_path(filename: str) -> str:
    """Paths under the current folder shown relative to it: shorter, and the same on every machine."""
    if filename.startswith("<") or not os.path.isabs(filename):
        return filename
    cwd = os.getcwd()
    if filename.startswith(cwd + os.sep):
        return os.path.relpath(filename, cwd)
    return filename


def _readable(filename: str) -> bool:
    return not filename.startswith("<") and os.path.isfile(filename) and os.access(filename, os.R_OK)


def _frame(frame: TraceFrame, show_locals: bool) -> Frame:
    local_nodes = None
    if show_locals and frame.locals:
        # core stored repr() strings; a Node with value_repr shows them verbatim, unquoted.
        local_nodes = {printable(name): Node(value_repr=printable(text)) for name, text in frame.locals.items()}
    return Frame(
        filename=printable(display_path(frame.filename)),
        lineno=frame.lineno,
        name=printable(frame.name),
        line=printable(frame.line, lines=True),
        locals=local_nodes,
    )


def _user_frames(frames: Sequence[TraceFrame]) -> Sequence[TraceFrame]:
    """Drop the leading frames of chunkq's runner and asyncio, when user frames follow."""
    for i, frame in enumerate(frames):
        if not any(part in frame.filename for part in _MACHINERY):
            return frames[i:]
    return frames


def to_trace(stacks: Sequence[TraceStack], *, show_locals: bool = False) -> Trace:
    """core orders stacks as Python prints them (cause first); Rich's Trace wants the raised one first."""
    return Trace(
        stacks=[
            Stack(
                exc_type=printable(stack.exc_type),
                exc_value=printable(stack.exc_value, lines=True),
                is_cause=stack.is_cause,
                frames=[_frame(f, show_locals) for f in _user_frames(stack.frames)],
            )
            for stack in reversed(stacks)
        ]
    )


def _recorded_lines(stacks: Sequence[TraceStack]) -> Table | None:
    rows = [
        f
        for stack in stacks
        for f in _user_frames(stack.frames)
        if f.line and not _readable(f.filename) and not f.filename.startswith("<")
    ]
    if not rows:
        return None
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for f in rows:
        table.add_row(Text(printable(f"{display_path(f.filename)}:{f.lineno} in {f.name}")),
                      Text(printable(f.line), style="bold"))
    return table


def render_stacks(
    stacks: Sequence[TraceStack],
    *,
    show_locals: bool = False,
    width: int | None = None,
    extra_lines: int = 3,
) -> RenderableType:
    """A Rich renderable for a structured (possibly chained) traceback."""
    if not stacks:
        return Text("no traceback was recorded for this error", style="dim italic")
    parts: list[RenderableType] = [
        Traceback(
            to_trace(stacks, show_locals=show_locals),
            width=width,
            code_width=None,
            extra_lines=extra_lines,
            show_locals=show_locals,
            max_frames=40,
        )
    ]
    recorded = _recorded_lines(stacks)
    if recorded is not None:
        parts.append(
            Text("\nsource not readable on this machine; the lines as recorded:", style="dim italic")
        )
        parts.append(recorded)
    if not any(stack.frames for stack in stacks):
        parts.append(
            Text(
                "\nno stack frames were recorded: the callback was cut off (a timeout) or a batch callback "
                "reported the failure; press d to run it under the debugger",
                style="dim italic",
            )
        )
    if not show_locals and any(f.locals for s in stacks for f in s.frames):
        parts.append(
            Text(
                "\nlocals were captured; start the dashboard with --capture-locals to show them",
                style="dim italic",
            )
        )
    return Group(*parts)


def render_error(error: ErrorEntry, *, show_locals: bool = False, width: int | None = None) -> RenderableType:
    """The traceback of one stored error; falls back to the recorded text when no structure was kept."""
    if error.stacks:
        return render_stacks(error.stacks, show_locals=show_locals, width=width)
    if error.traceback:
        return Text(printable(error.traceback, lines=True))
    return Text(printable(f"{error.error_type}: {error.message}", lines=True), style="bold red")
