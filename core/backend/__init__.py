"""The database behind the queue: engines, the transaction executor, and every SQLite/PostgreSQL difference.

The rest of core writes each transaction once, as a plain function of a
synchronous SQLAlchemy ``Connection``, and hands it to ``backend.write`` (or
``backend.read``). How it runs is this package's business:

* ``base.py``: what every database does the same way, and each difference named
  as a ``Backend`` method with its portable default;
* ``sqlite.py``: the embedded default, one file shared by many worker processes
  (WAL, ``BEGIN IMMEDIATE``, writes whole in a thread, ``_AtOnce``);
* ``postgres.py``: a server shared by many hosts (row locks, advisory locks, COPY,
  sessions bounded by the lease: ``pg_session_bounds``).

Opening reads the schema first, without writing (SQLite: through a read-only
connection), and changes it only when asked to create or upgrade; the change
runs in one process at a time, in one transaction (``migration``; the steps
themselves are in ``migrations/``).

Adding a backend means one subclass and a line in ``backend_for``; nothing else
in core asks which database it talks to.
"""

from __future__ import annotations

from typing import Any

from ..db import normalize_url
from .base import CLOSE_SECONDS, Backend, Rows
from .postgres import (
    BOUND_SECONDS,
    SCHEMA_LOCK,
    STATEMENT_SECONDS,
    PostgresBackend,
    pg_session_bounds,
    pg_socket_options,
)
from .sqlite import SQLITE_BUSY_TIMEOUT_MS, SqliteBackend

__all__ = [
    "BOUND_SECONDS",
    "CLOSE_SECONDS",
    "SCHEMA_LOCK",
    "SQLITE_BUSY_TIMEOUT_MS",
    "STATEMENT_SECONDS",
    "Backend",
    "PostgresBackend",
    "Rows",
    "SqliteBackend",
    "backend_for",
    "pg_session_bounds",
    "pg_socket_options",
]


def backend_for(url: str | Any) -> Backend:
    """The backend for what a person typed: a file path, ``sqlite:///…`` or ``postgresql://…``."""
    normalized = normalize_url(url)
    if normalized.startswith("postgresql"):
        return PostgresBackend(normalized)
    return SqliteBackend(normalized)
