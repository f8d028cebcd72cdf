"""Helpers for the HTTP trigger's tests: a real uvicorn subprocess, its processor, small builders.

The subprocess is the real ``serve`` command on port 0 of the loopback interface; its port is read from
uvicorn's startup line, so two test runs never race for a port.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from .. import forkserver
from ..served import ServedProcess

TOKEN = "s3cret-token-for-tests-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STARTUP_TIMEOUT = 30.0

# The processor the subprocess servers load: it records every entity it sees in a file
# (outside the database), and its first calls wait until a second chunk has started
# somewhere, so "two requests shared the work" is a fact, not a timing accident.
PROCESSOR_SOURCE = '''
import os
import time
import uuid

LOG = os.environ["HTTP_TEST_LOG"]
GATE = os.environ.get("HTTP_TEST_GATE")


def record(entity_id, job):
    if GATE:
        open(os.path.join(GATE, uuid.uuid4().hex), "w").close()
        deadline = time.monotonic() + 10
        while len(os.listdir(GATE)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    with open(LOG, "a") as f:
        f.write(f"{os.getpid()} {entity_id}\\n")
    time.sleep(float(os.environ.get("HTTP_TEST_SLEEP", "0")))
    if entity_id.startswith("bad"):
        raise ValueError(f"cannot enrich {entity_id}")
'''


def job_body(ids: list[Any], **extra: Any) -> dict[str, Any]:
    return {"entity_ids": ids, "entity_type": "company", "provider": "clearbit", **extra}


def read_log(path: Path) -> list[tuple[int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, entity = line.split(" ", 1)
        out.append((int(pid), entity))
    return out


class ServerProcess(ServedProcess):
    """``serve`` in a subprocess (``tests/served.py``); its port read from uvicorn's startup line."""

    STARTED = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

    def url_of(self, found: str) -> str:
        return f"http://127.0.0.1:{found}"

    def wait_started(self, timeout: float = STARTUP_TIMEOUT) -> str:
        return super().wait_started(timeout)


def http_client(base_url: str, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=60.0)


def serve_command(db_url: str | None, args: list[str]) -> list[str]:
    """`chunkq --db URL serve ARGS` through the real CLI group (its lazy loading, its --db).

    ``db_url=None``: ``python -m chunkq.tui.http ARGS`` instead, the command alone, database from CHUNKQ_DB.
    """
    if db_url is None:
        return [sys.executable, "-m", "chunkq.tui.http", *args]
    return [sys.executable, "-m", "chunkq.tui.cli", "--db", db_url, "serve", *args]


def run_serve(
    db_url: str | None, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """``serve`` expected to exit on its own (refusing to start)."""
    return forkserver.run(serve_command(db_url, args), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
