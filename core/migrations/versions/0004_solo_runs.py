"""Blame the chunk that crashed, not the window (issue 24).

Revision ID: 0004
Revises: 0003

* ``chunkq_chunks.solo_at``: when the worker holding this lease started running
  the chunk with nothing else in flight (a *suspect* chunk, one that has lost a
  lease before, is always run that way). A lease that expires counts against
  the chunk for isolation only when it was running alone, so the innocent
  chunks of a window that a poison entity took down are redone, not split and
  exhausted (``core/poison.py``).

Additive and nullable: workers of the previous revision keep running; their
lost leases count as before until they are upgraded.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunkq_chunks", sa.Column("solo_at", sa.Float()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        with op.batch_alter_table("chunkq_chunks") as batch:  # no DROP COLUMN before 3.35: a copy
            batch.drop_column("solo_at")
        return
    op.drop_column("chunkq_chunks", "solo_at")
