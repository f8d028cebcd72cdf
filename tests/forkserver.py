"""A fork server for the suite's `chunkq` children: real processes without the interpreter's start-up.

The suite starts about 600 Python processes, most of them `chunkq` commands, and a fresh one spends
0.34 s of its 0.37 s of CPU starting Python and importing chunkq (SQLAlchemy, click, Rich): about 180
CPU-seconds of a run that has two cores (measured on 2026-12-07 from every child's own usage, read when
it was reaped). This server, one per pytest process, imports what every `chunkq`
command imports, once, and forks each child from there, as CPython's ``multiprocessing`` forkserver
does. A child is still a real process - its own pid, its own database connections, killed by real
signals, its exit status read by the test - only its start costs about 0.03 s.

What a fresh interpreter would do differently is done in the child: the arguments, environment and
folder it was given, ``PYTHONPATH`` and ``sys.path[0]`` as ``python -m`` or the console script would set
them, its standard streams rebuilt on the descriptors passed (``PYTHONUNBUFFERED`` honoured), signal
dispositions back to Python's, and at the end what ``Py_FinalizeEx`` does: non-daemon threads joined,
``atexit`` run, streams flushed. What cannot be redone in a fork - an environment that changes how the
interpreter starts (encoding, locale, hash seed, dev mode, warnings) - is started fresh instead
(``_STARTUP_ENV``), as is everything that is not a `chunkq` command line. Tests about the process
itself (what a command imports, the terminal it draws on) start it fresh by calling ``subprocess``.

``popen`` and ``run`` take ``subprocess.Popen``/``subprocess.run``'s arguments and return objects that
behave like theirs for what the suite uses.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: how a test names the `chunkq` command (``tests/cli/helpers.py``): the console script, or ``-m``
_SCRIPT = Path(sys.executable).parent / "chunkq"
#: what may be forked as ``python -m NAME``: the CLI, and the suite's own drivers of core (a worker to kill,
#: a migration held at a step), which import what the CLI does
MODULES = ("chunkq.tui.cli", "tests.reliability.driver", "tests.migrations.hooked")
#: variables a fresh interpreter reads while it starts, before any of chunkq's code: a child whose value
#: differs from the server's is started fresh (a fork would keep the server's)
_STARTUP_ENV = ("PYTHONIOENCODING", "PYTHONUTF8", "PYTHONLEGACYWINDOWSSTDIO", "LANG", "LANGUAGE", "LC_ALL",
                "LC_CTYPE", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONASYNCIODEBUG",
                "PYTHONFAULTHANDLER", "PYTHONOPTIMIZE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH", "PYTHONTRACEMALLOC",
                "PYTHONMALLOC", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONSTARTUP",
                "PYTHONINSPECT", "PYTHONVERBOSE", "PYTHONNODEBUGRANGES", "PYTHONINTMAXSTRDIGITS",
                "PYTHONPLATLIBDIR", "PYTHONEXECUTABLE", "PYTHONBREAKPOINT", "PYTHONPROFILEIMPORTTIME",
                "PYTHONCOERCECLOCALE", "PYTHONDEBUG", "PYTHONUSERBASE")
#: Popen's arguments this module takes over (any other sends the call to ``subprocess`` itself)
_TAKEN = {"env", "cwd", "stdin", "stdout", "stderr", "text", "universal_newlines", "start_new_session",
          "encoding", "errors"}
#: off switch (``CHUNKQ_TEST_FORK=0``): every child started fresh, as before
ENABLED = os.environ.get("CHUNKQ_TEST_FORK", "1") != "0"
STARTUP_SECONDS = 60.0


# --------------------------------------------------------------------------- the server


def _serve(path: str) -> None:
    import chunkq.tui.cli.root  # noqa: F401 - what every `chunkq` command imports before it reads a word

    own_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = [p for p in sys.path[1:] if p not in own_path]
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    listener.listen(128)
    os.rename(path + ".new", path)  # the path appears listening: a client that sees it can connect
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "accept":
                conn, _ = listener.accept()
                try:
                    header, fds = _receive(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(header, fds, base_path, [listener, conn, *children.values()], (wake_r, wake_w))
                for fd in fds:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    conn.sendall(f"{pid}\n".encode())
                children[pid] = conn
            else:
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 4096):
                        pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()
        if os.getppid() != parent:  # the pytest process is gone: so is this server (its children live on)
            return


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 8:
        raise ValueError("short header")
    size = int(data[:8])
    data = data[8:]
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise ValueError("truncated header")
        data += more
    return json.loads(data), list(fds)


def _child(header: dict[str, Any], fds: list[int], base_path: list[str], sockets: list[socket.socket],
           wake: tuple[int, int]) -> None:
    """In the forked child: become the process a fresh start would have made, run the command, exit."""
    code: int = 1
    interrupted = False
    try:
        signal.set_wakeup_fd(-1)
        for fd in wake:
            os.close(fd)
        for s in sockets:
            s.close()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as Python sets it at start-up
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if header["new_session"]:
            os.setsid()
        moved = [os.dup(fd) for fd in fds]  # out of 0-2 first, so no dup2 overwrites a descriptor still to move
        for i, fd in enumerate(moved):
            os.dup2(fd, i)
        os.closerange(3, 65536)
        env: dict[str, str] = header["env"]
        os.chdir(header["cwd"])
        os.environ.clear()
        os.environ.update(env)
        module = header["module"]
        first = header["cwd"] if module else str(Path(header["argv"][0]).parent)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.path.abspath(first), *extra, *base_path]
        import importlib

        importlib.invalidate_caches()  # modules a test wrote after the server started
        _reopen_streams(bool(env.get("PYTHONUNBUFFERED")))
        try:
            if module:
                import runpy

                sys.argv = [module, *header["argv"][3:]]  # runpy puts the module's file first, as -m does
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            else:
                from chunkq.tui.cli.root import main

                sys.argv = list(header["argv"])
                main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int) and exc.code is not None:
                print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # Python ends such a process by SIGINT, so its parent sees the signal
        import traceback

        traceback.print_exc()
        interrupted = True
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            threading._shutdown()  # type: ignore[attr-defined]  # what interpreter exit does first: join threads
            atexit._run_exitfuncs()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            if interrupted:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
        finally:
            os._exit(code)


def _reopen_streams(unbuffered: bool) -> None:
    """Standard streams on the descriptors the child was given, made as a fresh interpreter makes them."""
    enc_in, err_in = sys.stdin.encoding if sys.stdin else "utf-8", sys.stdin.errors if sys.stdin else "strict"
    enc_out, err_out = sys.stdout.encoding, sys.stdout.errors

    def writer(fd: int, errors: str, line_buffering: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "wb", closefd=False)
        buffered: Any = raw if unbuffered else io.BufferedWriter(raw)
        return io.TextIOWrapper(buffered, encoding=enc_out, errors=errors, line_buffering=line_buffering,
                                write_through=unbuffered)

    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)),
                                                 encoding=enc_in, errors=err_in)
    sys.stdout = sys.__stdout__ = writer(1, err_out, os.isatty(1) and not unbuffered)
    sys.stderr = sys.__stderr__ = writer(2, "backslashreplace", not unbuffered)


# --------------------------------------------------------------------------- the client


class _Server:
    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="chunkq-fork-")
        self.path = os.path.join(self.folder, "s")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(ROOT)
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.forkserver", self.path], cwd=ROOT, env=env,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test fork server did not start (exit {self.proc.poll()})")
            time.sleep(0.01)
        self.pid = os.getpid()
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        for leftover in (self.path, self.path + ".new"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        with contextlib.suppress(OSError):
            os.rmdir(self.folder)


_server: _Server | None = None
_server_lock = threading.Lock()


def _the_server() -> _Server:
    global _server
    with _server_lock:
        if _server is None or _server.pid != os.getpid() or _server.proc.poll() is not None:
            _server = _Server()
        return _server


def _connect(conn: socket.socket, path: str) -> None:
    """Connect, waiting out a full backlog (many workers starting children at once) for a bounded while."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            conn.connect(path)
            return
        except (ConnectionRefusedError, BlockingIOError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _forkable(args: Sequence[Any], kw: dict[str, Any]) -> tuple[bool, bool]:
    """(this call can be forked, it names the command as ``python -m``)."""
    if not ENABLED or set(kw) - _TAKEN:
        return False, False
    argv = [os.fsdecode(a) if isinstance(a, bytes) else os.fspath(a) for a in args]
    module = len(argv) >= 3 and argv[:2] == [sys.executable, "-m"] and argv[2] in MODULES
    if not (module or (argv and argv[0] == str(_SCRIPT))):
        return False, False
    env = kw.get("env")
    reference = os.environ if env is None else env
    server_env = _the_server().env
    if any(reference.get(k) != server_env.get(k) for k in _STARTUP_ENV):
        return False, False
    return True, module


def _fd_of(target: Any, default: int, *, write: bool) -> tuple[int, int | None]:
    """(descriptor to send, our end of a pipe or None) for a Popen stdin/stdout/stderr argument."""
    if target is None:
        return default, None
    if target == subprocess.PIPE:
        r, w = os.pipe()
        return (w, r) if write else (r, w)
    if target == subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR), None
    if isinstance(target, int):
        return target, None
    return target.fileno(), None


class ForkedProcess:
    """What the suite uses of ``subprocess.Popen``, for a child of the fork server."""

    def __init__(self, args: Sequence[Any], *, module: bool, env: dict[str, str] | None = None,
                 cwd: Any = None, stdin: Any = None, stdout: Any = None, stderr: Any = None, text: bool = False,
                 universal_newlines: bool = False, start_new_session: bool = False, encoding: str | None = None,
                 errors: str | None = None) -> None:
        self.args = list(args)
        self.returncode: int | None = None
        self._text = bool(text or universal_newlines or encoding or errors)
        self._encoding, self._errors = encoding or "utf-8", errors or "strict"
        opened: list[int] = []
        in_fd, mine_in = _fd_of(stdin, 0, write=False)
        out_fd, mine_out = _fd_of(stdout, 1, write=True)
        if stderr == subprocess.STDOUT:
            err_fd, mine_err = out_fd, None
        else:
            err_fd, mine_err = _fd_of(stderr, 2, write=True)
        for arg, fd in ((stdin, in_fd), (stdout, out_fd), (stderr, err_fd)):
            if arg in (subprocess.PIPE, subprocess.DEVNULL):
                opened.append(fd)
        # as a fresh interpreter reads its command line: bytes in the file system's encoding, undecodable
        # ones as lone surrogates (JSON carries those as escapes)
        argv = [os.fsdecode(a) if isinstance(a, bytes) else os.fspath(a) for a in args]
        header = json.dumps({"argv": argv, "env": dict(os.environ if env is None else env),
                             "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
                             "new_session": start_new_session,
                             "module": str(args[2]) if module else None}).encode()
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._buffer = b""
        try:
            _connect(self._conn, _the_server().path)
            socket.send_fds(self._conn, [b"%08d" % len(header) + header[: (1 << 16) - 8]], [in_fd, out_fd, err_fd])
            if len(header) > (1 << 16) - 8:
                self._conn.sendall(header[(1 << 16) - 8:])
            self.pid = int(self._line(STARTUP_SECONDS))
        finally:
            for fd in dict.fromkeys(opened):
                os.close(fd)
        self.stdin = self._wrap(mine_in, "wb") if mine_in is not None else None
        self.stdout = self._wrap(mine_out, "rb") if mine_out is not None else None
        self.stderr = self._wrap(mine_err, "rb") if mine_err is not None else None
        self._readers: dict[str, threading.Thread] = {}
        self._read: dict[str, list[bytes]] = {}

    def _wrap(self, fd: int, mode: str) -> Any:
        f = os.fdopen(fd, mode)
        if self._text:
            return io.TextIOWrapper(f, encoding=self._encoding, errors=self._errors,
                                    line_buffering=mode == "wb")
        return f

    def _line(self, timeout: float | None) -> str:
        self._conn.settimeout(timeout)
        while b"\n" not in self._buffer:
            more = self._conn.recv(64)
            if not more:
                raise ConnectionError("the test fork server went away")
            self._buffer += more
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    # ------------------------------------------------------------------ Popen's interface

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(0.0))
            except (TimeoutError, BlockingIOError):
                return None
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self._line(timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout) from None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None and name not in self._readers:
                chunks: list[bytes] = []
                self._read[name] = chunks
                raw = stream.buffer if self._text else stream
                t = threading.Thread(target=lambda r=raw, c=chunks: c.extend(iter(lambda: r.read1(65536), b"")),
                                     daemon=True)
                t.start()
                self._readers[name] = t
        if self.stdin is not None and not self.stdin.closed:
            if input:
                with contextlib.suppress(BrokenPipeError):
                    self.stdin.write(input)
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._readers.values():
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out = self._collected("stdout")
        err = self._collected("stderr")
        return out, err

    def _collected(self, name: str) -> Any:
        if name not in self._read:
            return None
        data = b"".join(self._read[name])
        stream = getattr(self, name)
        with contextlib.suppress(Exception):
            stream.close()
        return data.decode(self._encoding, self._errors).replace("\r\n", "\n") if self._text else data

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdout, self.stderr, self.stdin):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        self.wait()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


def popen(args: Sequence[Any], **kw: Any) -> Any:
    """``subprocess.Popen(args, **kw)``, forked from the server when ``args`` is a `chunkq` command line."""
    forkable, module = _forkable(args, kw)
    if not forkable:
        return subprocess.Popen(args, **kw)
    return ForkedProcess(args, module=module, **kw)


def run(args: Sequence[Any], *, input: Any = None, capture_output: bool = False, timeout: float | None = None,
        check: bool = False, **kw: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run``, forked from the server when ``args`` is a `chunkq` command line."""
    forkable, module = _forkable(args, kw)
    if not forkable:
        return subprocess.run(args, input=input, capture_output=capture_output, timeout=timeout, check=check, **kw)
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    proc = ForkedProcess(args, module=module, **kw)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=proc._collected("stdout"),
                                        stderr=proc._collected("stderr")) from None
    result = subprocess.CompletedProcess(proc.args, proc.wait(), out, err)
    if check:
        result.check_returncode()
    return result


if __name__ == "__main__":
    _serve(sys.argv[1])
