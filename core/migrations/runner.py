"""Alembic, configured in code, run on a connection the backend holds under its schema lock.

Users never see Alembic: no ``alembic.ini``, no command of its own. The
backend takes the lock and opens the one transaction (``Backend.migration``);
``migrate`` reads the schema again under it, stamps a chunkq 0.1.0 database as
revision 0001, runs the steps, and writes the new ``chunkq_meta.schema_version``
inside that same transaction, so a failure at any step leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import delete, insert
from sqlalchemy.engine import Connection

from .. import schema as s

log = logging.getLogger("chunkq.migrations")

HERE = Path(__file__).resolve().parent

#: called inside the migration's transaction after each step with the revision just applied: the
#: tests pause here (two processes migrate once) or raise (a failure half-way changes nothing)
step_hooks: list[Callable[[str], None]] = []


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the scripts are this folder of the installed package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE).replace("%", "%%"))
    cfg.attributes["connection"] = conn
    cfg.attributes["on_step"] = _on_step
    return cfg


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def _on_step(*, step: Any, **_: Any) -> None:
    if step.is_stamp:
        return
    revision = step.up_revision_id if step.is_upgrade else step.down_revision_ids[0]
    log.debug("schema step done: %s", step)
    for hook in list(step_hooks):
        hook(revision)


def migrate(
    conn: Connection, where: str, *, create: bool, upgrade: bool, target: str | None = None
) -> tuple[s.SchemaState, s.SchemaState]:
    """Bring the schema to ``target`` (default: the newest) inside the caller's transaction; ``(before, after)``.

    The caller holds the schema lock. The schema is read again here: a process
    that waited for the lock finds another's work done and changes nothing.
    """
    before = s.read_state(conn)
    s.refuse(before, where, create=create, upgrade=upgrade, readonly=False)
    goal = target or s.revision_of(s.SCHEMA_VERSION)
    if before.revision == goal or (before.kind == "current" and target is None):
        return before, before
    fresh = before.kind in ("missing", "empty")
    # a new database is routine; changing an existing one is news for the operator's log
    log.log(logging.DEBUG if fresh else logging.INFO, "upgrading the schema of %s from %s to revision %s",
            where, "an empty database" if fresh else before.label, goal)
    cfg = config(conn)
    if before.kind == "legacy":
        command.stamp(cfg, s.revision_of(s.LEGACY_VERSION))  # what 0.1.0 made is revision 0001
    current = int(before.revision or before.version or 0)
    if int(goal) < current:
        command.downgrade(cfg, goal)
    else:
        command.upgrade(cfg, goal)
    # What chunkq 0.1.0 reads to refuse a schema newer than it knows.
    conn.execute(delete(s.meta).where(s.meta.c.key == s.META_KEY))
    conn.execute(insert(s.meta).values(key=s.META_KEY, value=str(int(goal))))
    after = s.read_state(conn)
    log.log(logging.DEBUG if fresh else logging.INFO, "upgraded the schema of %s to %s", where, after.label)
    return before, after
