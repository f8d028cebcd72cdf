"""A bug new to the processor, not only to the job (issue 27: the breakpoint's scope).

Revision ID: 0011
Revises: 0010

* ``ix_chunkq_error_groups_family_job`` on ``chunkq_error_groups (family,
  job_id, key)``: the groups of one family (an exception type and the user's
  frames, or a name the processor gave the bug) across every job, newest job
  first. ``Worker(stop_on_new_error=True, new_error_scope="processor")``
  (``chunkq process --stop-on-new-error processor``, the dashboard's ``B``)
  asks whether another job of the same processor logged a bug already
  (``error_groups.known_to_processor``): without the index that question
  reads every group row of the database; with it, at most ``KNOWN_SCAN``
  entries of the index, whatever the number of errors or jobs (its plan is
  checked in ``tests/queue/test_breakpoint_scope.py``). The existing
  ``(job_id, family)`` index answers one job's question and cannot serve
  this one.

Additive: an index only; workers of the previous revision neither need nor
notice it. Built in the upgrade from the group rows (one per bug and job, not
per error): quick even on a database with millions of errors.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunkq_error_groups_family_job", "chunkq_error_groups", ["family", "job_id", "key"])


def downgrade() -> None:
    op.drop_index("ix_chunkq_error_groups_family_job", table_name="chunkq_error_groups")
