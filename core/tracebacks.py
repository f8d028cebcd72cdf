"""Tracebacks as data: what the error log stores and the dashboard draws.

A failure is stored as frames (file, line, function, source line, and locals
only when asked, since they can hold secrets), so a traceback can be rendered
later without the exception object, in another process.
"""

from __future__ import annotations

import traceback as tb_module

from .models import TraceFrame, TraceStack
from .text import safe_repr, safe_str, storable

_LOCALS_MAX = 20
_LOCAL_REPR_MAX = 200


def capture_stacks(exc: BaseException, *, capture_locals: bool = False) -> tuple[TraceStack, ...]:
    """A structured traceback, outermost exception first (like Rich and Python print it).

    Stored so the dashboard can render file/line/function/source without the
    exception object, and without keeping locals unless asked (they can hold secrets).
    """
    chain: list[tuple[BaseException, bool]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    is_cause = False
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, is_cause))
        if current.__cause__ is not None:
            current, is_cause = current.__cause__, True
        elif current.__context__ is not None and not current.__suppress_context__:
            current, is_cause = current.__context__, False
        else:
            current = None
    stacks = []
    for e, cause in reversed(chain):
        frames = []
        for frame, lineno in tb_module.walk_tb(e.__traceback__):
            code = frame.f_code
            summary = tb_module.FrameSummary(code.co_filename, lineno, code.co_name)
            loc = None
            if capture_locals:
                loc = {}
                for k, v in list(frame.f_locals.items())[:_LOCALS_MAX]:
                    loc[storable(k)] = storable(safe_repr(v)[:_LOCAL_REPR_MAX])
            frames.append(
                TraceFrame(
                    filename=storable(code.co_filename),
                    lineno=lineno or 0,
                    name=storable(code.co_name),
                    line=storable(_source_line(summary)),
                    locals=loc,
                )
            )
        stacks.append(
            TraceStack(exc_type=type_name(e), exc_value=message(e, empty=""), frames=tuple(frames), is_cause=cause)
        )
    # is_cause on a stack: it was the direct cause of the stack after it (else: "during handling").
    return tuple(stacks)


def _source_line(summary: tb_module.FrameSummary) -> str:
    try:
        return (summary.line or "").strip()
    except Exception:  # linecache reading a file that changed or cannot be decoded
        return ""


def type_name(exc: BaseException) -> str:
    t = type(exc)
    module, qualname = getattr(t, "__module__", None), getattr(t, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = "BaseException"
    if not isinstance(module, str) or module in ("builtins", "__main__") or module.startswith("chunkq.core."):
        return storable(qualname)
    return storable(f"{module}.{qualname}")


def message(exc: BaseException, *, empty: str | None = None) -> str:
    """What an exception says, storable; ``<unprintable T>`` when its ``__str__`` raises.

    An empty message is ``empty`` (the type's name when None), so a list of errors never shows a blank.
    """
    text = safe_str(exc)
    if not text:
        return type_name(exc) if empty is None else empty
    return storable(text)


def format_exception(exc: BaseException) -> str:
    """The traceback as Python prints it, storable; never raises, whatever the exception does."""
    try:
        text = "".join(tb_module.format_exception(exc)).rstrip()
    except BaseException:  # a broken __str__ inside the chain, a traceback that cannot be walked
        text = f"{type_name(exc)}: {message(exc)}"
    return storable(text)
