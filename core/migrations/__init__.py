"""Schema migrations: Alembic scripts shipped inside the package, run by chunkq itself.

Policy (README "Upgrading"): a missing or empty database is created, at the
newest revision, by the commands that create (``enqueue``, ``demo``, ``db
upgrade``, and ``Queue(url)`` by default). An existing database of an older
schema is **not** upgraded behind the operator's back: every command refuses
it with one line that says to run ``chunkq db upgrade``. That keeps the moment
of an upgrade a decision; workers of the older chunkq on other hosts keep
running after it (migrations are additive: new columns are nullable or have a
database-side default) and, once restarted, refuse the newer schema until
chunkq is upgraded there too.

Here: ``schema_status`` (read only, never creates a file) and ``upgrade_schema``.
``runner.py`` runs Alembic; ``env.py`` is Alembic's entry point; the steps are
``versions/NNNN_*.py``.

Adding a migration: write ``versions/NNNN_what.py`` by hand (``script.py.mako``
is the template) with ``revision = "NNNN"`` and ``down_revision`` the previous
one, change the tables in ``schema.py`` to match, and raise
``schema.SCHEMA_VERSION`` to ``NNNN``. Keep it additive where possible (new
columns nullable or with a ``server_default``) so running older workers keep
working. On SQLite, use ``op.batch_alter_table`` for anything but adding a
column. ``tests/migrations`` checks the chain, the numbers, and that the newest
revision builds exactly the tables ``schema.py`` declares, on both backends.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import DBAPIError

from ..backend import Backend, backend_for
from ..db import describe_db_error
from ..errors import DatabaseUnavailable
from ..schema import SCHEMA_VERSION, SchemaState, refuse

__all__ = ["SCHEMA_VERSION", "SchemaState", "SchemaUpgrade", "schema_status", "upgrade_schema"]


@dataclass(frozen=True)
class SchemaUpgrade:
    """What ``upgrade_schema`` did: ``before`` as found, ``after`` as left; ``upgraded`` says whether this
    process changed it (False when it was current, or another process upgraded it first)."""

    before: SchemaState
    after: SchemaState
    upgraded: bool

    def to_dict(self) -> dict[str, Any]:
        return {"upgraded": self.upgraded, "before": self.before.to_dict(), "after": self.after.to_dict()}


@asynccontextmanager
async def _opened(backend: Backend) -> AsyncIterator[Backend]:
    try:
        yield backend
    except (DBAPIError, OSError) as exc:
        raise DatabaseUnavailable(f"cannot open database {backend.where}: {describe_db_error(exc)}") from exc
    finally:
        await backend.close()


async def schema_status(url: str | os.PathLike[str] | None) -> SchemaState:
    """The schema of the database at ``url`` as it is; writes nothing (a SQLite file is opened read-only,
    a missing one is reported ``missing``, not created)."""
    backend = backend_for(url)
    backend.readonly = True
    async with _opened(backend):
        return replace(await backend.read_schema(), where=backend.where)


async def upgrade_schema(url: str | os.PathLike[str] | None) -> SchemaUpgrade:
    """Create the database, or bring its schema to the newest revision (one process at a time).

    Raises ``SchemaMismatch`` for a newer schema or tables chunkq did not make,
    changing nothing.
    """
    backend = backend_for(url)
    async with _opened(backend):
        before = await backend.read_schema()
        refuse(before, backend.where, create=True, upgrade=True, readonly=False)
        after = await backend.migrate(create=True, upgrade=True) if before.needs_upgrade else before
        found = backend.migrated_from
        return SchemaUpgrade(replace(found or before, where=backend.where), replace(after, where=backend.where),
                             found is not None)
