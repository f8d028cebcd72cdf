"""Error fingerprints, the workers registry, and why a job stopped.

Revision ID: 0003
Revises: 0002

* ``chunkq_errors.fingerprint`` / ``normalized`` / ``location``: what groups a
  failure (``core/fingerprint.py``), computed when the error is written and
  indexed per job, so grouping a job with a million errors reads an index
  instead of normalising every message. Rows written before this revision are
  filled in here, in batches.
* ``chunkq_workers``: every process that processes work registers itself and
  heartbeats; an operator's stop request travels through ``stop_request``.
* ``chunkq_jobs.reason_error_id`` (the error row that paused or failed a job:
  circuit breaker, error budget, ``JobFailed``), ``released_by`` and
  ``released_at`` (a deliberate release, told apart from a silent worker).

All additive, nullable or with a database-side default: workers of the previous
revision that are still running keep writing rows as before (they name their
columns); their errors get no fingerprint and are grouped by their exact
message until the next upgrade fills them in.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("chunkq_errors", sa.Column("fingerprint", sa.String(32)))
    op.add_column("chunkq_errors", sa.Column("normalized", sa.Text()))
    op.add_column("chunkq_errors", sa.Column("location", sa.Text()))
    op.create_index("ix_chunkq_errors_fingerprint", "chunkq_errors", ["job_id", "fingerprint", "id"])
    op.add_column("chunkq_jobs", sa.Column("reason_error_id", _BigId))
    op.add_column("chunkq_jobs", sa.Column("released_by", sa.Text()))
    op.add_column("chunkq_jobs", sa.Column("released_at", sa.Float()))
    op.create_table(
        "chunkq_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("processor", sa.Text()),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_interval", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", _BigId),
        sa.Column("chunks", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("concurrency", sa.Integer()),
        sa.Column("done", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("failed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("stop_request", sa.String(16)),
        sa.Column("stopped_at", sa.Float()),
        sa.Column("detail", sa.Text()),
    )
    op.create_index("ix_chunkq_workers_heartbeat", "chunkq_workers", ["heartbeat_at"])
    _backfill_fingerprints()


def _backfill_fingerprints() -> None:
    """Fingerprint the error rows written before this revision, a batch at a time.

    Uses today's normaliser, so an error logged by 0.1.0 groups with the same
    failure logged after the upgrade.
    """
    from chunkq.core.fingerprint import fingerprint

    bind = op.get_bind()
    t = sa.table("chunkq_errors", sa.column("id"), sa.column("entity_id"), sa.column("error_type"),
                 sa.column("message"), sa.column("stacks", sa.JSON()), sa.column("fingerprint"),
                 sa.column("normalized"), sa.column("location"))
    last = 0
    while True:
        rows = bind.execute(sa.select(t.c.id, t.c.entity_id, t.c.error_type, t.c.message, t.c.stacks)
                            .where(t.c.id > last, t.c.fingerprint.is_(None)).order_by(t.c.id).limit(2000)).all()
        if not rows:
            return
        updates: list[dict[str, Any]] = []
        for r in rows:
            fp = fingerprint(r.error_type or "", r.message or "", r.stacks, entity_id=r.entity_id)
            updates.append({"b_id": r.id, "fp": fp.key, "norm": fp.normalized, "loc": fp.where})
        bind.execute(t.update().where(t.c.id == sa.bindparam("b_id"))
                     .values(fingerprint=sa.bindparam("fp"), normalized=sa.bindparam("norm"),
                             location=sa.bindparam("loc")), updates)
        last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_chunkq_workers_heartbeat", table_name="chunkq_workers")
    op.drop_table("chunkq_workers")
    op.drop_index("ix_chunkq_errors_fingerprint", table_name="chunkq_errors")
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        with op.batch_alter_table("chunkq_jobs") as batch:
            for name in ("released_at", "released_by", "reason_error_id"):
                batch.drop_column(name)
        with op.batch_alter_table("chunkq_errors") as batch:
            for name in ("location", "normalized", "fingerprint"):
                batch.drop_column(name)
        return
    for name in ("released_at", "released_by", "reason_error_id"):
        op.drop_column("chunkq_jobs", name)
    for name in ("location", "normalized", "fingerprint"):
        op.drop_column("chunkq_errors", name)
