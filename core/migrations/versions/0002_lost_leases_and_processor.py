"""Chunks count their lost leases; jobs may name the processor they are routed to.

Revision ID: 0002
Revises: 0001

* ``chunkq_chunks.lost_leases`` (NOT NULL, default 0): leases of the chunk that
  ran out with no commit. A chunk that keeps killing workers is isolated.
* ``chunkq_jobs.processor`` (NULL: any worker may run the job).

Both are additive, with a database-side default, so workers of chunkq 0.1.0 that
are still running keep inserting and reading rows as before (they name their
columns). Adding a column with a constant default rewrites no table on either
backend.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunkq_chunks",
                  sa.Column("lost_leases", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("chunkq_jobs", sa.Column("processor", sa.Text()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # SQLite before 3.35 cannot drop a column: batch mode rebuilds the table (foreign keys are off
        # for the migration's connection, so rebuilding a parent table cascades nothing).
        with op.batch_alter_table("chunkq_jobs") as batch:
            batch.drop_column("processor")
        with op.batch_alter_table("chunkq_chunks", table_kwargs={"sqlite_with_rowid": False}) as batch:
            batch.drop_column("lost_leases")
        return
    op.drop_column("chunkq_jobs", "processor")
    op.drop_column("chunkq_chunks", "lost_leases")
