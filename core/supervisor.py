"""``--processes N``: N worker processes under one supervisor, so a CPU-bound callback uses every core.

One Python process runs one callback at a time on its GIL (sync callbacks run
in threads, which do not run Python code in parallel). A supervisor starts N
copies of the same command (its argv minus ``--processes``) and:

- **forwards the two-stage stop**: the first SIGINT/SIGTERM it gets is sent on
  to each child, which finishes and commits its chunk in flight; a second one
  is sent on too, and each child gives its chunk up (its lease is released).
  Children run in their own process group, so a terminal's Ctrl-C reaches them
  once, through the supervisor, and never counts twice;
- **restarts a crashed child** (killed, out of memory, ``wedged`` exit 3, any
  status but 0 and 2) after a back-off that doubles with each crash in a row
  (1 s, 2 s, ... up to 30 s; a child that ran a minute resets it), and says so
  in one log line. A child that exits 0 is done (the queue is empty, or someone
  stopped that worker) and is not restarted; exit 2 (bad input) would fail the
  same way again, so the others are stopped and the supervisor exits 2;
- **exits** once every child has ended, with one status: 0 when each ended
  cleanly (after a graceful stop, or because the queue is empty), 128+signal
  after an abort, otherwise the first failure's status.

On Linux each child also gets SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``),
so killing the supervisor with -9 leaves no worker behind without a graceful stop.

Core may start processes; it prints nothing: ``say`` (one line per event) is the
front end's voice, the standard logger by default.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("chunkq.supervisor")

#: set in each child's environment: its slot number (1..N), and that it is supervised
#: (so it draws no progress bar of its own and never supervises in turn)
ENV_CHILD = "CHUNKQ_SUPERVISED"
#: exit status of a child refusing its input: restarting it would fail again
EXIT_USAGE = 2
#: a child that ran at least this long before crashing starts the back-off over
STABLE_SECONDS = 60.0

_PR_SET_PDEATHSIG = 1


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (e.g. ``--processes 4``): the children's command."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg == name:
            skip = True
            continue
        if arg.startswith(name + "="):
            continue
        out.append(arg)
    return out


def supervised() -> bool:
    """Is this process a child of a supervisor?"""
    return bool(os.environ.get(ENV_CHILD))


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0  # in a row
    restart_at: float | None = None
    status: int | None = None  # final: set once it ended and will not be restarted
    restarts: int = 0


@dataclass
class Supervisor:
    """Runs ``command`` ``processes`` times (see the module's docstring); ``run()`` returns the exit status.

    ``max_crashes``: consecutive crashes of one child after which it is not
    restarted (None: forever, as a ``worker`` should); ``say(level, line)``
    receives each event as one line (a logging level: restarts are warnings).
    """

    command: Sequence[str]
    processes: int
    env: Mapping[str, str] | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    max_crashes: int | None = None
    say: Callable[[int, str], None] = log.log
    poll: float = 0.05
    children: list[_Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        self.stops = 0
        self.stop_signal: int | None = None
        self._pending: list[int] = []

    # -- signals

    def _on_signal(self, signum: int, frame: object) -> None:
        self._pending.append(signum)

    def _forward(self, signum: int) -> None:
        self.stops += 1
        self.stop_signal = signum
        name = signal.Signals(signum).name
        if self.stops == 1:
            self.say(logging.WARNING, f"{name}: stopping {self.processes} worker processes after their chunks "
                     "in flight (send it again to give those chunks up now)")
        else:
            self.say(logging.WARNING, f"{name} again: worker processes give up their chunks in flight")
        for child in self.children:
            child.restart_at = None  # a stop cancels pending restarts
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    # -- children

    def _spawn(self, child: _Child) -> None:
        env = dict(os.environ if self.env is None else self.env)
        env[ENV_CHILD] = str(child.index)
        child.proc = subprocess.Popen(list(self.command), env=env, start_new_session=True,
                                      preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        child.started = time.monotonic()
        child.restart_at = None

    def _reap(self, child: _Child, code: int) -> None:
        """A child ended with ``code`` (negative: killed by that signal)."""
        pid = child.proc.pid if child.proc is not None else 0
        child.proc = None
        if self.stops or code == 0:
            # killed by the stop signal we forwarded: it was still starting up (a worker handles that
            # signal before it claims anything), so it held no chunk - a clean stop, not a failure
            clean = code == 0 or (self.stops == 1 and code == -(self.stop_signal or 0))
            child.status = 0 if clean else (128 - code if code < 0 else code)
            return
        if code == EXIT_USAGE:
            child.status = code
            self.say(logging.ERROR,
                     f"worker process {child.index} (pid {pid}) refused its input (exit 2); stopping the others")
            self._forward(signal.SIGTERM)
            return
        ran = time.monotonic() - child.started
        child.crashes = 1 if ran >= STABLE_SECONDS else child.crashes + 1
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        if self.max_crashes is not None and child.crashes > self.max_crashes:
            child.status = 128 - code if code < 0 else code
            self.say(logging.ERROR, f"worker process {child.index} (pid {pid}) {how}; "
                     f"{child.crashes} crashes in a row, not restarting it")
            return
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (child.crashes - 1))
        child.restart_at = time.monotonic() + delay
        child.restarts += 1
        self.say(logging.WARNING, f"worker process {child.index} (pid {pid}) {how}; restarting it in {delay:g}s "
                 f"(restart {child.restarts})")

    def pids(self) -> list[int]:
        """The children running now."""
        return [c.proc.pid for c in self.children if c.proc is not None]

    def run(self) -> int:
        """Start the children, supervise them until all have ended; the combined exit status."""
        installed = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                installed[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: signals cannot be handled here
                pass
        try:
            self.children = [_Child(i + 1) for i in range(self.processes)]
            for child in self.children:
                self._spawn(child)
            self.say(logging.INFO, f"started {self.processes} worker processes: pids "
                     f"{', '.join(str(p) for p in self.pids())}")
            while True:
                while self._pending:
                    self._forward(self._pending.pop(0))
                now = time.monotonic()
                for child in self.children:
                    if child.proc is not None:
                        code = child.proc.poll()
                        if code is not None:
                            self._reap(child, code)
                    elif child.restart_at is not None and now >= child.restart_at and not self.stops:
                        self._spawn(child)
                        assert child.proc is not None
                        self.say(logging.INFO, f"worker process {child.index} restarted: pid {child.proc.pid}")
                if all(c.proc is None and c.restart_at is None for c in self.children):
                    break
                time.sleep(self.poll)
        finally:
            for child in self.children:  # only on an error of our own: nothing may outlive us unsupervised
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.terminate()
            for sig, previous in installed.items():
                signal.signal(sig, previous)
        return self._status()

    def _status(self) -> int:
        statuses = [c.status if c.status is not None else 0 for c in self.children]
        if self.stops >= 2 and self.stop_signal is not None:
            return 128 + self.stop_signal
        if EXIT_USAGE in statuses:
            return EXIT_USAGE
        return next((s for s in statuses if s != 0), 0)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this child when the supervisor dies (a graceful stop, not an orphan worker)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except Exception:
        pass
