"""Fixtures for the HTTP trigger's tests: an in-process client and real uvicorn subprocesses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import upgrade_schema

from .helpers import PROCESSOR_SOURCE, TOKEN, ServerProcess, serve_command


@pytest.fixture
def make_client(db_url: str) -> Iterator[Callable[..., Any]]:
    """``make_client(processor=None, token=TOKEN, **create_app_kwargs)`` -> an open TestClient."""
    from chunkq.tui.http import create_app
    from starlette.testclient import TestClient

    opened: list[TestClient] = []

    def make(processor: Any = None, token: str | None = TOKEN, **kwargs: Any) -> TestClient:
        client = TestClient(create_app(db_url, processor, token=token, **kwargs))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def processor_env(python_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Subprocess environment with ``httpproc:record`` importable and its log file set."""
    (tmp_path / "httpproc.py").write_text(PROCESSOR_SOURCE)
    env = dict(python_env)
    env["HTTP_TEST_LOG"] = str(tmp_path / "processed.log")
    env.pop("CHUNKQ_TOKEN", None)
    env.pop("HTTP_TEST_GATE", None)
    return env


@pytest.fixture
def start_server(processor_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """``start_server(db_url, *args, token=TOKEN, env=None)`` -> a started server; stopped afterwards.

    Started as `chunkq --db URL serve --port 0 ARGS`; with ``via_cli=False`` as
    ``python -m chunkq.tui.http`` with the database in CHUNKQ_DB.
    """
    started: list[ServerProcess] = []

    def start(db_url: str, *args: str, token: str | None = TOKEN, env: dict[str, str] | None = None,
              via_cli: bool = True) -> ServerProcess:
        e = dict(env or processor_env)
        if token is not None:
            e["CHUNKQ_TOKEN"] = token
        if not via_cli:
            e["CHUNKQ_DB"] = db_url
        # as a deployment does before `serve`: serve refuses a missing database rather than make one
        asyncio.run(upgrade_schema(db_url))
        server = ServerProcess(serve_command(db_url if via_cli else None, ["--port", "0", *args]), e, tmp_path)
        started.append(server)
        server.wait_started()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
