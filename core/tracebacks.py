"""Tracebacks as data: what the error log stores and the dashboard draws.

A failure is stored as frames (file, line, function, source line, and locals
only when asked, since they can hold secrets), so a traceback can be rendered
later without the exception object, in another process.

What is kept, and why:

* **The source as it was.** Each frame of the user's code (not a library's:
  ``fingerprint.is_library_file``) keeps the lines around the failing one
  (``TraceFrame.context``, ``CONTEXT_BEFORE`` above and ``CONTEXT_AFTER`` below)
  and a digest of the file (``source_digest``): after a fix, a renderer still
  shows the line that failed, and can say the file has changed since by
  comparing today's ``source_digest(filename)``. The digest is of the file's
  bytes, so two hosts running one release agree; it is computed once per file
  version (cached by mtime and size).
* **Only the user's side of the call.** Leading frames of chunkq's machinery and
  the standard library that called the callback (``runner.py``,
  ``callbacks.py``, asyncio, thread pools) are dropped, when a frame of the
  user's code follows: they are the same on every error and push the frames
  that matter off screen.
* **Recursion, collapsed.** A block of 1 to ``PERIOD_MAX`` frames repeated
  ``REPEAT_MIN`` or more times in a row (a recursive function, or two calling
  each other) is kept once, then replaced by one marker frame: ``name`` is
  ``"<N repeated frames of walk>"``, ``repeated`` is N, ``filename`` is empty
  (no renderer or fingerprint takes it for code). The innermost ``INNER_KEEP``
  frames are never collapsed: they are where it failed. A traceback still
  longer than ``FRAMES_MAX`` keeps the outermost frames down to the first user
  frame, a marker for the ones left out, and the innermost ones
  (``bound_frames``), so the calling frame is never lost.
* **ExceptionGroup members**, each as its own stack under ``TraceStack.members``
  (``MEMBERS_MAX`` per group, ``MEMBERS_DEPTH`` groups deep), so a
  ``TaskGroup``'s failures are all visible.
* **An empty message** is ``(no message)``: ``ValueError("")`` reads
  ``ValueError (no message)`` (``describe``), never ``ValueError: ValueError``.
  The stored stack keeps the real, empty ``exc_value``.
"""

from __future__ import annotations

import hashlib
import io
import linecache
import os
import threading
import tokenize
import traceback as tb_module
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType

from .models import TraceFrame, TraceStack
from .text import safe_repr, safe_str, storable

__all__ = [
    "CONTEXT_AFTER", "CONTEXT_BEFORE", "FRAMES_MAX", "INNER_KEEP", "MEMBERS_DEPTH", "MEMBERS_MAX", "NO_MESSAGE",
    "bound_frames", "capture_stacks", "collapse_recursion", "describe", "format_exception", "message",
    "source_digest", "type_name",
]

_LOCALS_MAX = 20
_LOCAL_REPR_MAX = 200
#: source lines kept above and below a user frame's failing line
CONTEXT_BEFORE = 3
CONTEXT_AFTER = 2
CONTEXT_LINES_MAX = CONTEXT_BEFORE + 1 + CONTEXT_AFTER
CONTEXT_LINE_MAX = 300  # characters of one stored source line
#: frames of one exception stored at most (``bound_frames``)
FRAMES_MAX = 50
#: innermost frames never collapsed into a recursion marker
INNER_KEEP = 10
#: a recursion is a block of up to PERIOD_MAX frames repeated at least REPEAT_MIN times in a row
PERIOD_MAX = 4
REPEAT_MIN = 3
#: an ExceptionGroup's members kept per group, and how deep groups nest
MEMBERS_MAX = 10
MEMBERS_DEPTH = 3
#: what an exception raised with an empty message says
NO_MESSAGE = "(no message)"
_OUTER_KEEP_MAX = 20  # outermost frames kept down to the first user frame when a traceback is cut


def capture_stacks(exc: BaseException, *, capture_locals: bool = False) -> tuple[TraceStack, ...]:
    """A structured traceback, outermost exception first (like Rich and Python print it).

    Stored so the dashboard can render file/line/function/source without the
    exception object, and without keeping locals unless asked (they can hold secrets).
    """
    return _capture(exc, capture_locals, depth=0)


def _capture(exc: BaseException, capture_locals: bool, depth: int) -> tuple[TraceStack, ...]:
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
        frames = bound_frames(collapse_recursion(_drop_machinery(_frames(e.__traceback__, capture_locals))))
        stacks.append(TraceStack(exc_type=type_name(e), exc_value=message(e, empty=""), frames=tuple(frames),
                                 is_cause=cause, members=_members(e, capture_locals, depth)))
    # is_cause on a stack: it was the direct cause of the stack after it (else: "during handling").
    return tuple(stacks)


def _members(exc: BaseException, capture_locals: bool, depth: int) -> tuple[TraceStack, ...]:
    """An ExceptionGroup's members, each as the stack of the member itself (its own chain is not kept)."""
    if not isinstance(exc, BaseExceptionGroup) or depth >= MEMBERS_DEPTH:
        return ()
    try:
        members = list(exc.exceptions[:MEMBERS_MAX])
    except Exception:  # a subclass that broke .exceptions
        return ()
    out = []
    for member in members:
        if isinstance(member, BaseException):
            out.append(_capture(member, capture_locals, depth + 1)[-1])
    return tuple(out)


def _frames(tb: TracebackType | None, capture_locals: bool) -> list[TraceFrame]:
    from .fingerprint import is_library_file  # fingerprint imports models, as this module does: no cycle at use

    frames = []
    for frame, lineno in tb_module.walk_tb(tb):
        code = frame.f_code
        filename, lineno = code.co_filename, lineno or 0
        loc = None
        if capture_locals:
            loc = {}
            for k, v in list(frame.f_locals.items())[:_LOCALS_MAX]:
                loc[storable(k)] = storable(safe_repr(v)[:_LOCAL_REPR_MAX])
        lines, digest = _source(filename, frame.f_globals)
        line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
        context: tuple[str, ...] = ()
        start = 0
        if lines and not is_library_file(filename) and 0 < lineno <= len(lines):
            start = max(1, lineno - CONTEXT_BEFORE)
            context = tuple(storable(x.rstrip("\r\n")[:CONTEXT_LINE_MAX])
                            for x in lines[start - 1: lineno + CONTEXT_AFTER])
        frames.append(TraceFrame(
            filename=storable(filename), lineno=lineno, name=storable(code.co_name), line=storable(line),
            locals=loc, context=context, context_start=start if context else 0,
            source_digest=digest if context else None,
        ))
    return frames


def _is_machinery(filename: str) -> bool:
    """chunkq's own code or the standard library's (asyncio, thread pools): what calls the user's code."""
    from .fingerprint import _OWN_DIRS, _OWN_USER_CODE, _STDLIB_DIRS

    if filename == _OWN_USER_CODE:
        return False
    return filename.startswith(_OWN_DIRS) or filename.startswith(_STDLIB_DIRS) or filename.startswith("<frozen")


def _drop_machinery(frames: list[TraceFrame]) -> list[TraceFrame]:
    """Without the leading frames of chunkq and the standard library that called the user's code."""
    for i, f in enumerate(frames):
        if not _is_machinery(f.filename):
            return frames[i:] if i else frames
    return frames  # nothing but machinery (chunkq's own failure): keep it all


def _key(f: TraceFrame) -> tuple[str, int, str]:
    return (f.filename, f.lineno, f.name)


def collapse_recursion(frames: Sequence[TraceFrame]) -> list[TraceFrame]:
    """Frames with each recursion kept once and then one marker frame (see the module docstring).

    The innermost ``INNER_KEEP`` frames are left as they are.
    """
    n = len(frames)
    region = max(0, n - INNER_KEEP)
    keys = [_key(f) for f in frames]
    out: list[TraceFrame] = []
    i = 0
    while i < region:
        best: tuple[int, int] | None = None  # (copies, period)
        for p in range(1, PERIOD_MAX + 1):
            block = keys[i:i + p]
            if i + p > region:
                break
            k = 1
            while i + (k + 1) * p <= region and keys[i + k * p:i + (k + 1) * p] == block:
                k += 1
            if k >= REPEAT_MIN and (best is None or k * p > best[0] * best[1]):
                best = (k, p)
        if best is None:
            out.append(frames[i])
            i += 1
            continue
        k, p = best
        out.extend(frames[i:i + p])
        names = []
        for f in frames[i:i + p]:
            if f.name not in names:
                names.append(f.name)
        out.append(_marker((k - 1) * p, " and ".join(names)))
        i += k * p
    out.extend(frames[i:])
    return out


def _marker(count: int, of: str) -> TraceFrame:
    return TraceFrame(filename="", lineno=0, name=storable(f"<{count} repeated frames of {of}>"[:300]), line="",
                      repeated=count)


def bound_frames(frames: Sequence[TraceFrame], limit: int = FRAMES_MAX) -> tuple[TraceFrame, ...]:
    """At most ``limit`` frames: the outermost down to the first user frame, a marker, the innermost.

    The first user frame is the caller into whatever went deep; the innermost
    frames are where it failed. What lies between is counted in the marker.
    """
    frames = tuple(frames)
    if len(frames) <= limit:
        return frames
    from .fingerprint import is_library_file

    head = 1
    for i, f in enumerate(frames[:_OUTER_KEEP_MAX]):
        if f.filename and not is_library_file(f.filename):
            head = i + 1
            break
    tail = limit - head - 1
    cut = frames[head:len(frames) - tail]
    skipped = sum(f.repeated or 1 for f in cut)
    names = []
    for f in cut:
        if not f.repeated and f.name not in names:
            names.append(f.name)
            if len(names) == 3:
                break
    return (*frames[:head], _marker(skipped, ", ".join(names) or "frames"), *frames[len(frames) - tail:])


# --------------------------------------------------------------------------- source files, read once per version

_SOURCES: OrderedDict[tuple[str, int, int], tuple[list[str], str | None]] = OrderedDict()
_SOURCES_MAX = 256
_SOURCES_LOCK = threading.Lock()  # sync callbacks fail on many threads at once


def _source(filename: str, module_globals: object = None) -> tuple[list[str], str | None]:
    """The file's lines and digest, as they are now (at capture); read once per (mtime, size) of a file."""
    try:
        st = os.stat(filename)
    except (OSError, ValueError):
        # not a file (``<string>``, a notebook cell, a zip import): linecache may know it, with no digest
        try:
            globs = module_globals if isinstance(module_globals, dict) else None
            return linecache.getlines(filename, globs), None
        except Exception:
            return [], None
    key = (filename, st.st_mtime_ns, st.st_size)
    with _SOURCES_LOCK:
        hit = _SOURCES.get(key)
        if hit is not None:
            _SOURCES.move_to_end(key)
            return hit
    try:
        with open(filename, "rb") as fh:
            raw = fh.read(20_000_000)
    except OSError:
        return [], None
    found = (_decode(raw), hashlib.blake2b(raw, digest_size=12).hexdigest())
    with _SOURCES_LOCK:
        _SOURCES[key] = found
        while len(_SOURCES) > _SOURCES_MAX:
            _SOURCES.popitem(last=False)
    return found


def _decode(raw: bytes) -> list[str]:
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError:
        encoding = "utf-8"
    try:
        text = raw.decode(encoding, "replace")
    except LookupError:
        text = raw.decode("utf-8", "replace")
    return text.splitlines(keepends=True)


def source_digest(filename: str) -> str | None:
    """The digest of ``filename`` as it is now, comparable with ``TraceFrame.source_digest``; None if unreadable."""
    if not filename or filename.startswith("<"):
        return None
    return _source(filename)[1]


# --------------------------------------------------------------------------- names and messages


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

    An empty message is ``empty`` (``NO_MESSAGE`` when None), so a list of errors never shows a blank,
    and never the type's name twice (``ValueError: ValueError``).
    """
    text = safe_str(exc)
    if not text:
        return NO_MESSAGE if empty is None else empty
    return storable(text)


def _trim_text_stacks(te: tb_module.TracebackException, seen: set[int]) -> None:
    """The printed traceback without chunkq's and the standard library's leading frames, as stored stacks."""
    if id(te) in seen:
        return
    seen.add(id(te))
    stack = te.stack
    for i, frame in enumerate(stack):
        if not _is_machinery(frame.filename):
            if i:
                te.stack = tb_module.StackSummary.from_list(list(stack)[i:])
            break
    for inner in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())):
        if inner is not None:
            _trim_text_stacks(inner, seen)


def describe(error_type: str, message: str) -> str:
    """``Type: message``, or ``Type (no message)`` for an exception raised with an empty one."""
    if not message or message == NO_MESSAGE:
        return f"{error_type} {NO_MESSAGE}"
    return f"{error_type}: {message}"


def format_exception(exc: BaseException) -> str:
    """The traceback as Python prints it, storable; never raises, whatever the exception does.

    An exception with an empty message ends in ``ValueError (no message)`` rather than a bare ``ValueError``.
    """
    try:
        te = tb_module.TracebackException.from_exception(exc)
        _trim_text_stacks(te, set())
        text = "".join(te.format()).rstrip()
        if not safe_str(exc):
            head, _, last = text.rpartition("\n")
            if last.strip() and ":" not in last:
                text = f"{head}\n{last} {NO_MESSAGE}" if head else f"{last} {NO_MESSAGE}"
    except BaseException:  # a broken __str__ inside the chain, a traceback that cannot be walked
        text = describe(type_name(exc), message(exc))
    return storable(text)
