"""Each entity's own output: what the callback printed and logged while it ran for that entity.

When a callback fails, what it wrote just before is the first thing a developer
wants to see (issue 28). While the runner calls the callback for an entity, a
context variable names that entity's ``Output``; ``sys.stdout`` and
``sys.stderr`` are replaced (once, on first use) by proxies that write to the
current ``Output`` when there is one and to the stream they replaced when there
is not, and a handler on the root logger adds log records the same way. The
output is kept with the entity's error (``chunkq_errors.output``) and shown in
the dashboard beside the traceback; a success's output is shown by dry runs and
steps.

Decisions:

* **Bounded**: the last ``MAX_LINES`` lines and ``MAX_BYTES`` characters, with a
  first line saying how much was dropped. A callback that logs a megabyte keeps
  64 KB in memory and in the database, not a megabyte.
* **Threads**: the context variable travels where ``contextvars`` travel. An
  async callback's tasks and ``asyncio.to_thread`` copy the context, so what they
  print is the entity's. A plain ``threading.Thread`` the callback starts runs in
  an empty context: what it prints goes to the process's stream, as before
  (there is no honest way to tell whose entity it is working for).
* **Batch callbacks** (``on_chunk``) run once for the whole chunk: their output
  is the chunk's, kept with every failed entity of it.
* **Logging**: records reach the handler only if the logging configuration lets
  them through (the root logger's level is WARNING unless the application sets
  it); chunkq does not change anyone's levels. A record a user's own
  ``StreamHandler`` already wrote into the captured stream is not added twice.
  With no capture going on, a record that only this handler would have seen goes
  to ``logging.lastResort`` as it would have without it.
* **Where it also goes** (``echo``): by default nowhere else (the dashboard owns
  the terminal); the headless commands set an echo that writes each line to
  stderr with the entity ID in front, so ``--json`` stdout stays clean.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from .text import storable

#: lines kept per entity (the last ones)
MAX_LINES = 200
#: characters kept per entity (the last ones)
MAX_BYTES = 64 * 1024

#: called with (entity label, one line without its newline) for every line captured
Echo = Callable[[str, str], None]

_echo: Echo | None = None
_install_lock = threading.Lock()


#: terminal escape sequences: CSI (colours, cursor), OSC (titles, links, clipboard) and two-byte ESC codes
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")

#: ``\x1b``, ``\u202e``: a control as a terminal-safe handler wrote it (``_gist`` reads it back)
_ESCAPED = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8}))")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _unescape(m: re.Match[str]) -> str:
    code = int(m.group(1) or m.group(2) or m.group(3), 16)
    return chr(code) if code <= 0x10FFFF else m.group(0)


def _gist(text: str) -> str:
    """What a line says, however a handler wrote it: escapes read back, colours and controls removed,
    whitespace runs made one space (a one-line form turns breaks and tabs into spaces)."""
    text = _ESCAPED.sub(_unescape, text)
    return " ".join(_CONTROLS.sub("", _ANSI.sub("", text)).split())


class Output:
    """One entity's output as it is written: complete lines, bounded, plus the line in progress.

    ``label`` names whose it is (an entity ID, or a batch's first ID and count) for the echo.
    """

    __slots__ = ("_chars", "_lines", "_partial", "dropped", "label", "last_write")

    def __init__(self, label: str = "") -> None:
        self.label = label
        self._lines: deque[str] = deque()
        self._chars = 0
        self._partial = ""
        #: lines dropped from the front to stay within the bounds
        self.dropped = 0
        #: ``time.time()`` of the last write: the logging handler's test for "already written"
        self.last_write = 0.0

    def restart(self, label: str) -> None:
        """Empty, for the next entity (the runner's sync loop reuses one ``Output`` per chunk)."""
        self.label = label
        if self.last_write:
            self._lines.clear()
            self._chars = 0
            self._partial = ""
            self.dropped = 0
            self.last_write = 0.0

    def take(self) -> str | None:
        """``text()``, or None at once when nothing was written (the hot path's question)."""
        return self.text() if self.last_write else None

    def write(self, text: str) -> None:
        if not text:
            return
        self.last_write = time.time()
        if "\x1b" in text:  # colours and cursor moves (a Rich or coloured log handler): kept as text only
            text = _ANSI.sub("", text)
        text = self._partial + text
        *complete, self._partial = text.split("\n")
        if len(self._partial) > MAX_BYTES:  # one enormous line without an end: keep its tail
            self._partial = self._partial[-MAX_BYTES:]
        for line in complete:
            self._add(line)

    def _add(self, line: str) -> None:
        echo = _echo
        if echo is not None:
            token = _current.set(None)  # what the echo writes is nobody's output (and never loops back)
            try:
                echo(self.label, line)
            except Exception:  # a broken terminal never costs the entity its result
                pass
            finally:
                _current.reset(token)
        if len(line) > MAX_BYTES:
            line = line[-MAX_BYTES:]
        line = line.rstrip()  # a console handler pads its lines to the terminal's width
        self._lines.append(line)
        self._chars += len(line) + 1
        while len(self._lines) > MAX_LINES or (self._chars > MAX_BYTES and len(self._lines) > 1):
            self._chars -= len(self._lines.popleft()) + 1
            self.dropped += 1

    def recent(self, text: str) -> bool:
        """``text`` is in the last lines written (the line in progress included), compared by ``_gist``:
        a handler that escaped its controls (``\\x1b``, as chunkq's own log lines do) or coloured the
        line wrote the same record. Compared as written, a message with an escape sequence in it was
        never found, and the line was added, and echoed, a second time."""
        probe = _gist(text)
        if not probe:
            return bool(self._partial and text in self._partial) or any(text in line for line in list(self._lines)[-3:])
        if self._partial and probe in _gist(self._partial):
            return True
        return any(probe in _gist(line) for line in list(self._lines)[-3:])

    def text(self) -> str | None:
        """What was captured, storable on both backends; None when nothing was written."""
        if self._partial:
            self._add(self._partial)
            self._partial = ""
        if not self._lines:
            return None
        body = "\n".join(self._lines)
        if self.dropped:
            body = f"[output truncated: {self.dropped:,} earlier lines dropped]\n{body}"
        return storable(body)


_current: contextvars.ContextVar[Output | None] = contextvars.ContextVar("chunkq_output", default=None)


def current() -> Output | None:
    """The output being captured here (this task, this thread), if any."""
    return _current.get()


class _Proxy:
    """``sys.stdout``/``sys.stderr`` once capturing has begun: the current entity's output when
    there is one, the replaced stream otherwise (everything else is the replaced stream's)."""

    def __init__(self, fallback: TextIO) -> None:
        self._fallback = fallback

    def write(self, text: str) -> int:
        out = _current.get()
        if out is None:
            return self._fallback.write(text)
        if not isinstance(text, str):  # as a real text stream says it
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        out.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if _current.get() is None:
            self._fallback.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer, …
        return getattr(self._fallback, name)


class _LogHandler(logging.Handler):
    """Adds log records to the current entity's output (any logger whose records reach the root)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        out = _current.get()
        if out is None:
            if logging.lastResort is not None and self._alone(record) and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        try:
            if out.last_write >= record.created and out.recent(record.getMessage()):
                return  # the user's own handler wrote it into the captured stream already
            out.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def _alone(self, record: logging.LogRecord) -> bool:
        """No other handler saw ``record``: without this one, logging's last resort would have."""
        if logging.lastResort is None:
            return False
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


_handler = _LogHandler()


def install() -> None:
    """Route ``sys.stdout``, ``sys.stderr`` and the root logger through the capture (idempotent).

    Called by the runner before a chunk; cheap when already done. A stream someone
    replaced since (Textual does while it runs) is wrapped again.
    """
    handlers = logging.root.handlers
    if isinstance(sys.stdout, _Proxy) and isinstance(sys.stderr, _Proxy) and handlers and handlers[-1] is _handler:
        return
    with _install_lock:
        if not isinstance(sys.stdout, _Proxy):
            sys.stdout = _Proxy(sys.stdout)
        if not isinstance(sys.stderr, _Proxy):
            sys.stderr = _Proxy(sys.stderr)
        # Last among the root's handlers: a handler added later (logging set up again) that writes to
        # the captured stream must run first, so that this one sees the line there and adds it once.
        if not handlers or handlers[-1] is not _handler:
            logging.root.removeHandler(_handler)
            logging.root.addHandler(_handler)


def original_stderr() -> TextIO:
    """The stream ``sys.stderr`` was before the capture wrapped it (the echo writes there)."""
    err: TextIO | _Proxy = sys.stderr
    while isinstance(err, _Proxy):
        err = err._fallback
    return err


def stderr_echo(escape: Callable[[str], str]) -> Echo:
    """An echo for the headless commands: each line on the process's own stderr as ``<entity>: <line>``,
    both made safe for a terminal by ``escape`` (the front end's). Never stdout, where ``--json`` goes."""

    def echo(label: str, line: str) -> None:
        err = original_stderr()
        err.write(f"{escape(label)}: {escape(line)}\n")
        err.flush()

    return echo


def set_echo(echo: Echo | None) -> Echo | None:
    """Also send every captured line to ``echo`` (None: nowhere); returns the previous one."""
    global _echo
    previous, _echo = _echo, echo
    return previous


@contextmanager
def capturing(label: str) -> Iterator[Output]:
    """Capture what is written in this context (and contexts copied from it) into a new ``Output``."""
    install()
    out = Output(label)
    token = _current.set(out)
    try:
        yield out
    finally:
        _current.reset(token)


def activate(out: Output | None) -> contextvars.Token[Output | None]:
    """The runner's hot path: make ``out`` current without a context manager (``reset`` undoes it)."""
    return _current.set(out)


def reset(token: contextvars.Token[Output | None]) -> None:
    _current.reset(token)
