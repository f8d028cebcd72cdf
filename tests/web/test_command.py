"""`chunkq web` and `chunkq web adduser` refuse what they cannot use: one line, exit status 2, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests import forkserver

from .helpers import TOKEN


def _web(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return forkserver.run([sys.executable, "-m", "chunkq.tui.cli", *args], input=stdin, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "env_token", "message"), [
    ([], None, "refusing to start without a way to log in"),
    ([], "short", "too short"),
    (["--proxy-user-header", "X-User"], None, "needs --trusted-proxy"),
    (["--proxy-user-header", "X-User", "--trusted-proxy", "proxy.example"], None, "not an IP address"),
    (["--processor", "no_such_module:fn"], TOKEN, "no_such_module"),
    (["--concurrency", "2"], TOKEN, "need --processor"),
    (["--public-url", "ftp://x"], TOKEN, "--public-url"),
])
def test_bad_setups_are_refused_before_listening(args: list[str], env_token: str | None, message: str,
                                                  demo_db: str, python_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(python_env)
    env.pop("CHUNKQ_WEB_TOKEN", None)
    if env_token:
        env["CHUNKQ_WEB_TOKEN"] = env_token
    done = _web(["--db", demo_db, "web", "--port", "0", *args], env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_adduser_writes_a_hash_and_refuses_bad_input(python_env: dict[str, str], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    base = ["web", "adduser", "--users-file", str(users), "--password-stdin"]
    done = _web([*base, "ann", "--role", "viewer"], python_env, tmp_path, "long enough secret\n")
    assert done.returncode == 0, done.stderr
    assert users.read_text().count("ann:viewer:scrypt$") == 1 and "long enough secret" not in users.read_text()
    before = users.read_text()
    for args, stdin, message in (([*base, "ann", "--role", "viewer"], "short\n", "at least 8"),
                                 ([*base, "a:b", "--role", "viewer"], "long enough secret\n", "user name"),
                                 ([*base, "ann", "--role", "admin"], "long enough secret\n", "admin")):
        done = _web(args, python_env, tmp_path, stdin)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert users.read_text() == before  # nothing changed
    users.write_text("ann:viewer:plaintext\n")
    done = _web(["web", "--port", "0", "--users-file", str(users)], python_env, tmp_path)
    assert done.returncode == 2 and "line 1" in done.stderr
