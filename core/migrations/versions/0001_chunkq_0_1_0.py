"""The schema of chunkq 0.1.0, exactly as its ``metadata.create_all`` made it.

Revision ID: 0001
Revises: (none)

A database made by 0.1.0 has these tables and ``chunkq_meta.schema_version`` 1
but no revision table; chunkq stamps it 0001 before upgrading it. Frozen: the
columns are spelled out here, never imported from ``schema.py``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# An autoincrementing 64-bit key that SQLite also treats as its rowid.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chunkq_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text()),
        sa.Column("entity_type", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_workers", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("max_errors", sa.Integer()),
        sa.Column("max_error_ratio", sa.Float()),
        sa.Column("total_count", sa.BigInteger(), nullable=False),
        sa.Column("next_pos", sa.BigInteger(), nullable=False),
        sa.Column("next_chunk", sa.Integer(), nullable=False),
        sa.Column("leased_chunks", sa.Integer(), nullable=False),
        sa.Column("processed_count", sa.BigInteger(), nullable=False),
        sa.Column("succeeded_count", sa.BigInteger(), nullable=False),
        sa.Column("failed_count", sa.BigInteger(), nullable=False),
        sa.Column("waiting_count", sa.BigInteger(), nullable=False),
        sa.Column("error_count", sa.BigInteger(), nullable=False),
        sa.Column("dead_chunks", sa.Integer(), nullable=False),
        sa.Column("next_retry_at", sa.Float()),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires_at", sa.Float()),
        sa.Column("heartbeat_at", sa.Float()),
        sa.Column("fail_reason", sa.Text()),
        sa.Column("parent_id", BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="SET NULL")),
        sa.Column("params", sa.JSON()),
    )
    op.create_index("ix_chunkq_jobs_claim", "chunkq_jobs", ["status", "priority", "id"])
    op.create_index("ix_chunkq_jobs_updated", "chunkq_jobs", ["updated_at"])

    op.create_table(
        "chunkq_chunks",
        sa.Column("job_id", BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("chunk_index", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("start_pos", sa.BigInteger()),
        sa.Column("end_pos", sa.BigInteger()),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("owner", sa.Text()),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", sa.Float()),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
        sa.Column("duration", sa.Float()),
        sa.Column("ok", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_chunkq_chunks_lease", "chunkq_chunks", ["state", "lease_expires_at"])
    op.create_index("ix_chunkq_chunks_finished", "chunkq_chunks", ["finished_at"])

    op.create_table(
        "chunkq_entities",
        sa.Column("job_id", BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pos", BigId, primary_key=True, autoincrement=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "chunkq_errors",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("job_id", BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pos", sa.BigInteger(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("stacks", sa.JSON()),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("resolved_at", sa.Float()),
    )
    op.create_index("ix_chunkq_errors_job", "chunkq_errors", ["job_id", "id"])

    op.create_table(
        "chunkq_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )

    op.create_table(
        "chunkq_rate_limits",
        sa.Column("provider", sa.Text(), primary_key=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("burst", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )

    op.create_table(
        "chunkq_retries",
        sa.Column("job_id", BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pos", BigId, primary_key=True, autoincrement=False),
        sa.Column("entity_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
        sa.Column("chunk_index", sa.Integer()),
    )
    op.create_index("ix_chunkq_retries_due", "chunkq_retries", ["job_id", "chunk_index", "due_at"])


def downgrade() -> None:
    for table in ("chunkq_retries", "chunkq_rate_limits", "chunkq_meta", "chunkq_errors", "chunkq_entities",
                  "chunkq_chunks", "chunkq_jobs"):
        op.drop_table(table)
