"""Render a stored error's traceback the way it was when the error happened.

core keeps each failure's traceback as plain data (``ErrorEntry.stacks``), not
as an exception object: the error may have been recorded hours ago by a worker
on another machine, and the code may have been fixed since. So this module draws
the frames itself, in Rich's traceback look, from what was *recorded*:

- the source lines stored with each frame (``TraceFrame.context``), never the
  file as it is today: after a fix, the arrow would point at the fixed line under
  the old exception. A frame recorded before context was kept shows its one
  stored line;
- "file changed since" beside a frame whose file's digest today differs from the
  one recorded (``TraceFrame.source_digest``), "file not on this machine" when it
  is gone (or the error came from another host);
- a collapsed recursion (a marker frame with ``repeated`` > 0, see
  ``core/tracebacks.py``) as one line, ``… 40 more calls of walk …``, so the
  calling frames and the innermost ones both stay on screen;
- an ``ExceptionGroup``'s members (``TraceStack.members``), indented under it;
- ``ValueError (no message)`` for an exception raised with an empty message.

Locals appear only when the operator opted in (``--capture-locals``), since they
can hold secrets. Every string of a stored traceback is the callback's (an
exception message, a local's repr, a file name): each goes through
``humanize.printable`` before Rich sees it, so no control character or bidi
override reaches the terminal, and nothing is parsed as markup.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

from chunkq.core import NO_MESSAGE, ErrorEntry, TraceFrame, TraceStack, source_digest
from chunkq.tui.humanize import printable
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.constrain import Constrain
from rich.padding import Padding
from rich.panel import Panel
from rich.pretty import Node
from rich.scope import render_scope
from rich.syntax import Syntax
from rich.text import Text

#: Frames of the chunkq machinery around the user's callback say nothing about the bug.
_MACHINERY = (
    os.sep + os.path.join("core", "runner.py"),
    os.sep + os.path.join("core", "callbacks.py"),
    os.sep + os.path.join("asyncio", ""),
    os.sep + os.path.join("concurrent", "futures", ""),
)
#: Pygments theme of the code, as Rich's own tracebacks use
CODE_THEME = "ansi_dark"
#: ExceptionGroup members drawn per group (the rest are counted), and how deep groups nest on screen
MAX_MEMBERS = 10
MAX_DEPTH = 4

SourceState = Literal["same", "changed", "gone", "unknown"]


def display_path(filename: str) -> str:
    """Paths under the current folder shown relative to it: shorter, and the same on every machine."""
    if filename.startswith("<") or not os.path.isabs(filename):
        return filename
    cwd = os.getcwd()
    if filename.startswith(cwd + os.sep):
        return os.path.relpath(filename, cwd)
    return filename


def source_state(frame: TraceFrame) -> SourceState:
    """Whether the frame's file is still what it was when the error was recorded."""
    if frame.source_digest is None or not frame.filename or frame.filename.startswith("<"):
        return "unknown"
    now = source_digest(frame.filename)  # core reads a file once per (mtime, size)
    if now is None:
        return "gone"
    return "same" if now == frame.source_digest else "changed"


def _user_frames(frames: Sequence[TraceFrame]) -> Sequence[TraceFrame]:
    """Drop the leading frames of chunkq's runner and asyncio, when user frames follow."""
    for i, frame in enumerate(frames):
        if not any(part in frame.filename for part in _MACHINERY):
            return frames[i:]
    return frames


_MARKER = re.compile(r"<\d+ repeated frames of (.*)>", re.DOTALL)


def recursion_marker(frame: TraceFrame) -> Text:
    """The line standing for ``frame.repeated`` collapsed calls (core names the marker frame
    ``<N repeated frames of walk>``; a bounded traceback's gap reads ``of frames``)."""
    m = _MARKER.fullmatch(frame.name)
    of = printable(m.group(1) if m else frame.name)
    n = frame.repeated
    what = ("frame" if n == 1 else "frames") if of in ("frames", "") else f"{'call' if n == 1 else 'calls'} of {of}"
    return Text(f"… {n:,} more {what} …", style="traceback.error", justify="center")


def _code(frame: TraceFrame, extra_lines: int) -> Syntax | None:
    """The recorded lines around ``frame.lineno`` (at most ``extra_lines`` either side), numbered."""
    if frame.context:
        lines = list(frame.context)
        start = frame.context_start or frame.lineno
        lo = max(frame.lineno - extra_lines - start, 0)
        hi = max(frame.lineno + extra_lines - start + 1, lo + 1)
        lines, start = lines[lo:hi], start + lo
    elif frame.line:
        lines, start = [frame.line], frame.lineno
    else:
        return None
    code = printable("\n".join(lines), lines=True)
    return Syntax(code, "python", theme=CODE_THEME, line_numbers=True, start_line=start,
                  highlight_lines={frame.lineno}, word_wrap=False, indent_guides=True, dedent=False)


def _locals(frame: TraceFrame) -> RenderableType | None:
    if not frame.locals:
        return None
    # core stored repr() strings; a Node with value_repr shows them verbatim, unquoted.
    nodes = {printable(name): Node(value_repr=printable(text)) for name, text in frame.locals.items()}
    return render_scope(nodes, title="locals", indent_guides=True)


def _frame_header(frame: TraceFrame, state: SourceState) -> Text:
    text = Text.assemble(
        (printable(display_path(frame.filename)), "cyan"),
        ":",
        (str(frame.lineno), "bold"),
        " in ",
        (printable(frame.name), "bold"),
    )
    if state == "changed":
        text.append("  ⚠ file changed since; the lines as they were", style="bold yellow")
    elif state == "gone":
        text.append("  ⚠ file not on this machine; the lines as recorded", style="bold yellow")
    return text


def _frames(frames: Sequence[TraceFrame], *, show_locals: bool, extra_lines: int,
            state: Callable[[TraceFrame], SourceState]) -> Iterator[RenderableType]:
    for i, frame in enumerate(frames):
        if frame.repeated > 0:
            yield Text("")
            yield recursion_marker(frame)
            continue
        if i:
            yield Text("")
        yield _frame_header(frame, state(frame))
        code = _code(frame, extra_lines)
        scope = _locals(frame) if show_locals else None
        if code is not None and scope is not None:
            yield Columns([code, scope], padding=1)
        elif code is not None or scope is not None:
            yield code or scope  # type: ignore[misc]  # one of them is set


def exception_line(stack: TraceStack) -> Text:
    """``Type: message``, or ``Type (no message)`` for an exception raised with an empty one."""
    line = Text(printable(stack.exc_type), style="traceback.exc_type")
    if stack.exc_value and stack.exc_value != NO_MESSAGE:
        line.append(": ", style="traceback.exc_type")
        line.append(printable(stack.exc_value, lines=True))
    else:
        line.append(f" {NO_MESSAGE}", style="dim italic")
    return line


def _stack(stack: TraceStack, *, show_locals: bool, extra_lines: int, width: int | None, depth: int,
           state: Callable[[TraceFrame], SourceState]) -> Iterator[RenderableType]:
    frames = _user_frames(stack.frames)
    if frames:
        body = Group(*_frames(frames, show_locals=show_locals, extra_lines=extra_lines, state=state))
        panel = Panel(body, title="[traceback.title]Traceback [dim](most recent call last)",
                      border_style="traceback.border", expand=True, padding=(0, 1))
        yield Constrain(panel, width)
    yield exception_line(stack)
    if not stack.members:
        return
    if depth >= MAX_DEPTH:
        yield Padding(Text(f"{len(stack.members):,} nested exceptions not shown", style="dim italic"), (0, 0, 0, 4))
        return
    n = len(stack.members)
    for i, member in enumerate(stack.members[:MAX_MEMBERS], 1):
        inner = Group(*_stack(member, show_locals=show_locals, extra_lines=extra_lines, width=width,
                              depth=depth + 1, state=state))
        yield Padding(Panel(inner, title=f"member {i} of {n}", title_align="left", border_style="dim",
                            expand=True, padding=(0, 1)), (0, 0, 0, 4))
    if n > MAX_MEMBERS:
        yield Padding(Text(f"… and {n - MAX_MEMBERS:,} more members", style="dim italic"), (0, 0, 0, 4))


def render_stacks(
    stacks: Sequence[TraceStack],
    *,
    show_locals: bool = False,
    width: int | None = None,
    extra_lines: int = 3,
) -> RenderableType:
    """A Rich renderable for a structured (possibly chained, possibly grouped) traceback.

    Stacks are in the order core stores them and Python prints them: the cause
    first, the exception that was raised last.
    """
    if not stacks:
        return Text("no traceback was recorded for this error", style="dim italic")
    states: dict[tuple[str, str | None], SourceState] = {}

    def state(frame: TraceFrame) -> SourceState:
        key = (frame.filename, frame.source_digest)
        if key not in states:
            states[key] = source_state(frame)
        return states[key]

    parts: list[RenderableType] = []
    for i, stack in enumerate(stacks):
        parts.extend(_stack(stack, show_locals=show_locals, extra_lines=extra_lines, width=width, depth=0,
                            state=state))
        if i < len(stacks) - 1:
            parts.append(Text("\nThe above exception was the direct cause of the following exception:\n"
                              if stack.is_cause else
                              "\nDuring handling of the above exception, another exception occurred:\n",
                              style="italic"))
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
    return exception_line(TraceStack(error.error_type, error.message, ()))
