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
  same way again, so the others are stopped and the supervisor exits 2; exit 4
  (``EXIT_WORK_LEFT``: its ``--max-seconds`` ran out with work left, e.g. chunks
  of a worker that is gone still leased) is final too - a restart would run past
  the budget - and is the supervisor's status;
- **keeps one deadline** (``deadline``: ``process --max-seconds``) for the whole run: each child is
  told how much of it is left (``ENV_DEADLINE``, read by ``time_left``), so a restarted child does not
  get the budget afresh, and a child that crashes when no time is left is not restarted (its status
  is the supervisor's: work is left);
- **is one worker** to a job's ``max_workers``: each child is given the
  supervisor's id (``ENV_TEAM``, read by ``team``) and its leases carry it
  (``claims.Claims.team``), so ``--processes N`` on one job enqueued with the
  default ``max_workers`` 1 runs it in all N processes, while a worker started
  elsewhere still waits for that one slot;
- **exits** once every child has ended, with one status: 0 when each ended
  cleanly (after a graceful stop, or because the queue is empty), 128+signal
  after an abort, otherwise the first failure's status. A child of
  ``process --until-empty`` exits 0 only when the queue is empty as
  ``core/orphans.py`` defines it: a sibling killed with its chunks leased is
  restarted, and it (or any sibling still running) waits for those leases to
  expire and redoes the chunks, so 0 means the work is done.

**Children die with their supervisor.** A supervisor killed with -9 cannot
forward anything, and a child left alone would run, and renew its leases,
forever. Each child watches its parent (``watch_supervisor``, a thread polling
``getppid()``; on Linux ``PR_SET_PDEATHSIG`` covers its start-up until then)
and stops itself in the same two stages: at once the first (its chunks in flight
may commit), ``ORPHAN_GRACE_SECONDS`` later the second (they are released for
another worker), and ``hard_exit_after`` after that ``os._exit(143)`` from the
watching thread itself, so a sync callback that never returns, or a blocked
event loop, cannot keep it alive.

**Children start from the supervisor, already imported.** Executing
``command`` afresh imports Python, chunkq and the processor again in every
child: ``--processes 2`` took three times as long as one process to start on an
empty queue. Given ``start`` (the command's entry point, run in the child), a
supervisor that can be forked safely - Linux, no thread but its own (counted by
the kernel: a library's native threads too), and it never holds a database
connection (``Supervisor`` knows no database) - forks each child instead, which
sets up what ``Popen`` did (a session of its own, the parent-death signal, the
environment, default signal handlers) and calls ``start``. Otherwise
``command`` is executed, as before; either way the child is the same command,
watched and stopped the same way.

Core may start processes; it prints nothing: ``say`` (one line per event) is the
front end's voice, the standard logger by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("chunkq.supervisor")

#: set in each child's environment: its slot number (1..N), and that it is supervised
#: (so it draws no progress bar of its own and never supervises in turn)
ENV_CHILD = "CHUNKQ_SUPERVISED"
#: set in each child's environment: the supervisor's pid, which the child watches (``watch_supervisor``)
ENV_SUPERVISOR = "CHUNKQ_SUPERVISOR_PID"
#: set in each child's environment when the run has a deadline: when it ends, epoch seconds (``time_left``)
ENV_DEADLINE = "CHUNKQ_RUN_DEADLINE"
#: set in each child's environment: the supervisor's id (``host:pid:nonce``), the team its leases count as
ENV_TEAM = "CHUNKQ_TEAM"
#: exit status of a child refusing its input: restarting it would fail again
EXIT_USAGE = 2
#: exit status of a run whose time ran out with work left: chunks of a worker that is gone still leased
#: (``RunSummary.stopped_by == "orphaned"``), or a database that stopped answering. Not restarted.
EXIT_WORK_LEFT = 4
#: a child whose supervisor is gone lets its chunks in flight commit this long, then gives them up
ORPHAN_GRACE_SECONDS = 2.0
#: how often a child checks that its supervisor is still its parent
PARENT_POLL_SECONDS = 0.2
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


def team() -> str | None:
    """The team a supervised child's leases count as (its supervisor's id); None: not supervised."""
    return (os.environ.get(ENV_TEAM) or None) if supervised() else None


def make_team() -> str:
    """A supervisor's id: ``host:pid:nonce`` like a lease owner (``claims.make_owner``), so it reads the
    same in a message, and never equal to one (no worker runs in the supervisor's process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"[:200]


def time_left(max_seconds: float | None) -> float | None:
    """``max_seconds``, or less in a supervised child: what is left of its supervisor's deadline."""
    if not supervised():
        return max_seconds
    try:
        left = float(os.environ.get(ENV_DEADLINE, "")) - time.time()
    except ValueError:
        return max_seconds
    if left != left:  # NaN: not a deadline
        return max_seconds
    left = max(left, 0.001)
    return left if max_seconds is None else min(max_seconds, left)


class _Forked:
    """A child forked from the supervisor: the part of ``subprocess.Popen`` a ``Supervisor`` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Its exit status once it ended (negative: the signal that killed it), reaped; else None."""
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: its status is lost
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def can_fork() -> bool:
    """May this process fork a child that runs on (``Supervisor.start``)? Linux (macOS frameworks do not
    survive a fork), and no thread but this one: a lock held by another thread at the fork would never
    be released in the child. Threads are counted by the kernel, so a C library's count too."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


@dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes] | _Forked | None = None
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
    ``deadline`` (seconds from ``run()``): the run's one time budget (see the module).
    ``start``: ``command``'s entry point in this process (it returns the exit status); a child
    is then forked and runs it when that is safe (``can_fork``), instead of executing ``command``.
    """

    command: Sequence[str]
    processes: int
    env: Mapping[str, str] | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    max_crashes: int | None = None
    say: Callable[[int, str], None] = log.log
    poll: float = 0.05
    deadline: float | None = None
    children: list[_Child] = field(default_factory=list)
    #: the one worker its children are to a job's ``max_workers`` (``ENV_TEAM``)
    team: str = field(default_factory=make_team)
    start: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("processes must be at least 1")
        self.stops = 0
        self.stop_signal: int | None = None
        self._pending: list[int] = []
        self._ends: float | None = None  # the deadline, on the monotonic clock, once ``run()`` started

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
        env[ENV_SUPERVISOR] = str(os.getpid())
        env[ENV_TEAM] = self.team
        if self._ends is not None:
            env[ENV_DEADLINE] = repr(time.time() + (self._ends - time.monotonic()))
        if self.start is not None and can_fork():
            child.proc = self._fork(env, self.start)
        else:
            child.proc = subprocess.Popen(list(self.command), env=env, start_new_session=True,
                                          preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        child.started = time.monotonic()
        child.restart_at = None

    @staticmethod
    def _fork(env: Mapping[str, str], start: Callable[[], int]) -> _Forked:
        """A child that runs ``start`` as ``Popen`` would have run ``command`` (see the module)."""
        for stream in (sys.stdout, sys.stderr):  # or what is buffered would be written twice
            with contextlib.suppress(Exception):
                stream.flush()
        pid = os.fork()
        if pid:
            return _Forked(pid)
        code = 1  # pragma: no cover - the child (the tests run it as a real process)
        try:
            os.setsid()  # start_new_session: a terminal's Ctrl-C reaches it through the supervisor only
            _die_with_parent()
            # not the supervisor's handlers: a fresh interpreter's
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(env)
            code = start()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            # never back into the supervisor's own loop (its ``finally`` would terminate its children)
            with contextlib.suppress(Exception):
                logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code & 0xFF if code >= 0 else 1)
        raise AssertionError("unreachable")  # pragma: no cover

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
        if code == EXIT_WORK_LEFT:
            child.status = code
            self.say(logging.ERROR, f"worker process {child.index} (pid {pid}) stopped with work left when its "
                     "time ran out (exit 4); not restarting it")
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
        if self._ends is not None and time.monotonic() + delay >= self._ends:
            child.status = 128 - code if code < 0 else code
            self.say(logging.ERROR, f"worker process {child.index} (pid {pid}) {how}; the run's time is up, "
                     "not restarting it")
            return
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
        self._ends = None if self.deadline is None else time.monotonic() + self.deadline
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
    _parent_death_signal(int(signal.SIGTERM))


class Stopper(Protocol):
    """What ``watch_supervisor`` needs of ``signals.SignalStop`` (this module knows no database, and
    ``signals`` leads to the worker's)."""

    count: int

    def handle(self, sig: signal.Signals) -> None: ...


def _parent_death_signal(signum: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except Exception:
        pass


@contextlib.contextmanager
def watch_supervisor(
    stopper: Stopper,
    *,
    hard_exit_after: float,
    grace: float = ORPHAN_GRACE_SECONDS,
    say: Callable[[int, str], None] = log.log,
    poll: float = PARENT_POLL_SECONDS,
) -> Iterator[None]:
    """In a supervised child (else nothing), while inside: stop ``stopper``'s worker if the supervisor dies.

    The module's docstring says how. The watching thread takes over from
    ``PR_SET_PDEATHSIG`` (cleared once it runs, so the kernel's SIGTERM cannot
    arrive late and count as a third stop, which would skip releasing the leases).
    Call it inside ``stopper`` (``with worker.stop_on_signals(...)``), on the loop's thread.
    """
    if not supervised():
        yield
        return
    try:
        parent = int(os.environ.get(ENV_SUPERVISOR, "") or os.getppid())
    except ValueError:
        parent = os.getppid()
    loop = asyncio.get_running_loop()
    done = threading.Event()

    def stage(n: int) -> None:
        while stopper.count < n:
            stopper.handle(signal.SIGTERM)

    def call(n: int) -> None:
        try:
            loop.call_soon_threadsafe(stage, n)
        except RuntimeError:  # the loop is closed: the run is over
            pass

    def watch() -> None:
        while os.getppid() == parent:
            if done.wait(poll):
                return
        say(logging.WARNING, f"the supervisor (pid {parent}) is gone: stopping; the chunks in flight have "
            f"{grace:g}s to commit, then they are given up for another worker")
        call(1)
        if not done.wait(grace):  # (a run that ended meanwhile is not aborted after the fact)
            call(2)
        # from here on nothing may keep this process alive: not a hung thread, not a blocked loop
        time.sleep(hard_exit_after + 0.5)
        for stream in (sys.stdout, sys.stderr):  # what was printed, then the end (``signals._hard_exit``)
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(128 + int(signal.SIGTERM))

    thread = threading.Thread(target=watch, name="chunkq-supervisor-watch", daemon=True)
    thread.start()
    _parent_death_signal(0)
    try:
        yield
    finally:
        done.set()
