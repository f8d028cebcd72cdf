"""Each entity's own output, kept with its error (issue 28).

Revision ID: 0010
Revises: 0009

* ``chunkq_errors.output`` (nullable text): what the callback printed to stdout
  and stderr and logged while it ran for that entity (``core/capture.py``),
  bounded to its last 200 lines / 64 KB with a first line saying how much was
  dropped. A failure's output is what a developer looks at next to the
  traceback; before this it went to the worker's terminal (or, under the
  dashboard, nowhere). NULL when nothing was written, so a quiet callback costs
  no storage: measured, a callback that logs a megabyte per entity stores
  about 64 KB per failed entity.

Additive: workers of the previous revision write rows without it (NULL reads as
"nothing captured").
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunkq_errors", sa.Column("output", sa.Text()))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # SQLite before 3.35 cannot drop a column: batch mode rebuilds the table.
        with op.batch_alter_table("chunkq_errors") as batch:
            batch.drop_column("output")
        return
    op.drop_column("chunkq_errors", "output")
