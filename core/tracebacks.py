"""Tracebacks as data: what the error log stores and the dashboard draws.

A failure is stored as frames (file, line, function, source line, and locals
only when asked, since they can hold secrets), so a traceback can be rendered
later without the exception object, in another process.
"""

from __future__ import annotations

import traceback as tb_module

from .models import TraceFrame, TraceStack

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
                    try:
                        text = repr(v)
                    except Exception as repr_exc:
                        text = f"<repr failed: {type(repr_exc).__name__}>"
                    loc[k] = text[:_LOCAL_REPR_MAX]
            frames.append(
                TraceFrame(
                    filename=code.co_filename,
                    lineno=lineno or 0,
                    name=code.co_name,
                    line=(summary.line or "").strip(),
                    locals=loc,
                )
            )
        stacks.append(
            TraceStack(exc_type=type_name(e), exc_value=str(e), frames=tuple(frames), is_cause=cause)
        )
    # is_cause on a stack: it was the direct cause of the stack after it (else: "during handling").
    return tuple(stacks)


def type_name(exc: BaseException) -> str:
    t = type(exc)
    if t.__module__ in ("builtins", "__main__") or t.__module__.startswith("chunkq.core."):
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"


def format_exception(exc: BaseException) -> str:
    return "".join(tb_module.format_exception(exc)).rstrip()
