"""A server under test as a real subprocess (`chunkq serve`, `chunkq web`), its output read by a thread.

The thread keeps the pipe drained (a server that logs a lot never blocks on it) and lets every wait
here be bounded: started, a line in the output, stopped.
"""

from __future__ import annotations

import queue as stdlib_queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests import forkserver


class ServedProcess:
    """``command`` in a subprocess, stdout and stderr as one stream; ``url`` once ``STARTED`` is seen."""

    #: the line that says the server listens; its first group is what ``url_of`` turns into ``url``
    STARTED: re.Pattern[str]
    WHAT = "the server"
    STOP_GRACE = 15.0

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = forkserver.popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._queue: stdlib_queue.Queue[str | None] = stdlib_queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""

    def url_of(self, found: str) -> str:
        return found

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_started(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except stdlib_queue.Empty:
                break
            if line is None:
                raise AssertionError(f"{self.WHAT} exited ({self.proc.wait()}) before starting:\n{self.output()}")
            self.lines.append(line)
            if m := self.STARTED.search(line):
                self.url = self.url_of(m.group(1))
                return self.url
        raise AssertionError(f"{self.WHAT} did not start within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except stdlib_queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in {self.WHAT}'s output within {timeout}s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_GRACE`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._reader.join(timeout=5)
        return self.proc.returncode
