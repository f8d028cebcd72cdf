"""Error groups that hold on messages nobody anticipated (issue 27).

Revision ID: 0009
Revises: 0008

* ``chunkq_error_groups``: one row per message template of a job
  (``core/error_groups.py``, ``core/templates.py``): the template state that
  decides which group a new error joins, the group's counters (attempts and
  entities, all and unresolved, first and last time, three real messages) moved
  in the transaction that logs the errors, and merges (``root``/``parent``/``merged_by``: automatic
  when a word turned out to vary, or an operator's, kept as the rule for the
  job's future errors). The grouped view reads these rows instead of grouping
  the job's errors: measured on SQLite, ``group_errors`` of a job with 100,000
  errors in 5 groups no longer grows with the errors (see the benchmark
  section ``error_groups``).
* ``ix_chunkq_errors_pos`` on ``chunkq_errors (job_id, pos)``: which groups an
  entity already failed in (to count distinct entities at write) and which rows
  a recovered entity resolves, by index instead of reading the job's errors.

Existing errors are grouped again here, job by job, a batch of 2,000 rows at a
time (``error_groups.rebuild``): their ``fingerprint`` becomes the key of their
new group, so a job logged before the upgrade groups with the errors it logs
after it. It reads every stored error once (with its stack): a database with
millions of errors takes minutes, done once, in the upgrade.

Additive for readers; writers of the previous revision do not maintain the
groups (their errors are left out of the grouped view until the next
``chunkq db upgrade`` rebuilds it): upgrade workers together, as for 0003.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_chunkq_errors_pos", "chunkq_errors", ["job_id", "pos"])
    op.create_table(
        "chunkq_error_groups",
        sa.Column("job_id", _BigId, sa.ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("family", sa.String(32), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("location", sa.Text()),
        sa.Column("parent", sa.String(32)),
        sa.Column("root", sa.String(32)),
        sa.Column("merged_by", sa.String(16)),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("entities", sa.BigInteger(), nullable=False),
        sa.Column("open_n", sa.BigInteger(), nullable=False),
        sa.Column("open_entities", sa.BigInteger(), nullable=False),
        sa.Column("first_at", sa.Float(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("samples", sa.JSON()),
    )
    op.create_index("ix_chunkq_error_groups_family", "chunkq_error_groups", ["job_id", "family"])
    op.create_index("ix_chunkq_error_groups_root", "chunkq_error_groups", ["job_id", "root"])
    _rebuild()


def _rebuild() -> None:
    """Group every job's stored errors with today's rules (see the docstring)."""
    from chunkq.core.error_groups import rebuild

    bind = op.get_bind()
    errors = sa.table("chunkq_errors", sa.column("job_id"))
    for job_id in bind.execute(sa.select(errors.c.job_id).distinct().order_by(errors.c.job_id)).scalars().all():
        rebuild(bind, job_id)


def downgrade() -> None:
    op.drop_index("ix_chunkq_error_groups_root", table_name="chunkq_error_groups")
    op.drop_index("ix_chunkq_error_groups_family", table_name="chunkq_error_groups")
    op.drop_table("chunkq_error_groups")
    # the errors' fingerprints stay the new groups' keys: the previous revision groups rows by that column
    # as it finds it, so nothing is lost
    op.drop_index("ix_chunkq_errors_pos", table_name="chunkq_errors")
