"""Maintained job counts: views read history's totals instead of recounting it (issue 26).

Revision ID: 0008
Revises: 0007

* ``chunkq_job_counts``: one row per (finished status, provider, tenant) with the
  number of such jobs and the sums of their counted columns. Finished jobs
  (complete, failed, cancelled) are history and only grow; live ones (pending,
  running, paused) are the working set and are still summed from their rows,
  which the claim index already reaches by status. A header, ``chunkq jobs``,
  ``GET /jobs`` and ``/metrics`` then read a handful of rows plus the live jobs,
  whatever the history: measured before, 1,000,000 finished jobs made the idle
  dashboard use 13% of a core and ``chunkq jobs`` take 1.1 s (every poll grouped
  and summed every job).
* **Triggers keep it exact**, in the transaction that changes a job: inserted
  finished, entering or leaving a finished status (finish, retry, requeue),
  changing a counted column while finished, deleted (prune, import clean-up).
  Triggers rather than code in commit/control/retention because they hold on
  every path, including a worker of an older revision during a rolling upgrade,
  and there is nothing to forget when a new path appears. A row changes only
  when a job ends or is pruned, never per chunk, so it is no hot row; the hot
  path's updates of a running job only evaluate the triggers' ``WHEN``. On
  PostgreSQL two transactions that each end jobs of several (status, provider,
  tenant) in opposite orders can deadlock on these rows: PostgreSQL aborts one,
  which chunkq retries as a transient error (``db.with_retries``).
* ``ix_chunkq_jobs_list`` (status, id) and ``ix_chunkq_jobs_tenant_list``
  (tenant, status, id): the jobs list (``Reads.list_jobs``: by status rank, newest
  first) reads each status' page as an index walk with a LIMIT instead of sorting
  every job.

The backfill is one grouped scan of the finished jobs, under the migration's
lock (about a second per million jobs on SQLite). The triggers are created
before it, in the same transaction: on PostgreSQL ``CREATE TRIGGER`` waits for
(and then holds off) every writer of ``chunkq_jobs``, so no job ends between
the backfill's snapshot and the triggers.

A later revision that rebuilds ``chunkq_jobs`` on SQLite (``batch_alter_table``)
drops these triggers with the old table and must create them again
(``TRIGGERS``); ``tests/queue/test_job_counts.py`` checks they exist at head.

Additive: workers of the previous revision keep working, and the triggers count
what they do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE = "chunkq_job_counts"
FINISHED = "('complete', 'failed', 'cancelled')"
#: the jobs' columns summed per (status, provider, tenant), named alike in both tables
SUMS = ("total_count", "processed_count", "succeeded_count", "failed_count", "waiting_count", "error_count")
KEY = ("status", "provider", "tenant")
TRIGGERS = ("chunkq_job_counts_insert", "chunkq_job_counts_update", "chunkq_job_counts_delete")
FUNCTION = "chunkq_job_counts_apply"
INSERTED = "chunkq_job_counts_inserted"
DELETED = "chunkq_job_counts_deleted"


def _sqlite_add(row: str, sign: str) -> list[str]:
    """SQLite trigger body statements adding (``sign`` +) or taking away (-) job ``row`` (NEW or OLD)."""
    key = " AND ".join(f"{k} = {row}.{k}" for k in KEY)
    sets = ", ".join([f"jobs = jobs {sign} 1"] + [f"{c} = {c} {sign} {row}.{c}" for c in SUMS])
    when = f"{row}.status IN {FINISHED}"
    return [
        f"INSERT OR IGNORE INTO {TABLE} ({', '.join(KEY)}) SELECT {', '.join(f'{row}.{k}' for k in KEY)} "
        f"WHERE {when};",
        f"UPDATE {TABLE} SET {sets} WHERE {when} AND {key};",
    ]


def sqlite_ddl() -> list[str]:
    """The three triggers, SQLite's way (no upsert needed: insert the key if missing, then add)."""
    watched = ", ".join(("status", "provider", "tenant", *SUMS))
    return [
        f"CREATE TRIGGER chunkq_job_counts_insert AFTER INSERT ON chunkq_jobs WHEN NEW.status IN {FINISHED} "
        f"BEGIN {' '.join(_sqlite_add('NEW', '+'))} END",
        f"CREATE TRIGGER chunkq_job_counts_update AFTER UPDATE OF {watched} ON chunkq_jobs "
        f"WHEN OLD.status IN {FINISHED} OR NEW.status IN {FINISHED} "
        f"BEGIN {' '.join(_sqlite_add('OLD', '-') + _sqlite_add('NEW', '+'))} END",
        f"CREATE TRIGGER chunkq_job_counts_delete AFTER DELETE ON chunkq_jobs WHEN OLD.status IN {FINISHED} "
        f"BEGIN {' '.join(_sqlite_add('OLD', '-'))} END",
    ]


def postgresql_ddl() -> list[str]:
    """A row trigger for updates, statement triggers (transition tables) for inserts and deletes.

    An update finishes or reopens one job at a time (a claim, a commit, a cancel): a row
    trigger whose ``WHEN`` filters in C costs nothing on the hot path. Inserts and deletes
    come in bulk (an archive import, a prune of 5,000 jobs): a row trigger would update the
    same counter row once per job in one transaction, and PostgreSQL then walks every
    earlier version of that row on each update (measured: a 100,000-row insert ran for
    minutes; the prune ran at ~400 jobs/s). Aggregated per statement, it is one upsert per
    (status, provider, tenant). A bulk update of many finished jobs in one statement (an
    operator's bulk retry) still goes row by row: bounded by what one person selects.

    ``OR REPLACE``: dropping the tables (a reset by hand, the tests) leaves the functions behind.
    """
    cols = ", ".join(("jobs", *SUMS))
    keys = ", ".join(KEY)
    merge = (f"ON CONFLICT ({keys}) DO UPDATE SET "
             + ", ".join(f"{c} = {TABLE}.{c} + EXCLUDED.{c}" for c in ("jobs", *SUMS)))

    def apply(row: str, sign: str) -> str:
        vals = ", ".join([f"{sign}1"] + [f"{sign}{row}.{c}" for c in SUMS])
        return (f"IF {row}.status IN {FINISHED} THEN "
                f"INSERT INTO {TABLE} ({keys}, {cols}) "
                f"VALUES ({', '.join(f'{row}.{k}' for k in KEY)}, {vals}) {merge}; END IF;")

    def apply_all(rows: str, sign: str) -> str:
        sums = ", ".join([f"{sign}count(*)"] + [f"{sign}coalesce(sum({c}), 0)" for c in SUMS])
        return (f"INSERT INTO {TABLE} ({keys}, {cols}) SELECT {keys}, {sums} FROM {rows} "
                f"WHERE status IN {FINISHED} GROUP BY {keys} {merge};")

    watched = ", ".join(("status", "provider", "tenant", *SUMS))
    return [
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{apply('OLD', '-')} {apply('NEW', '')} RETURN NULL; END $$",
        f"CREATE OR REPLACE FUNCTION {INSERTED}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{apply_all('new_rows', '')} RETURN NULL; END $$",
        f"CREATE OR REPLACE FUNCTION {DELETED}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"{apply_all('old_rows', '-')} RETURN NULL; END $$",
        f"CREATE TRIGGER chunkq_job_counts_insert AFTER INSERT ON chunkq_jobs REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {INSERTED}()",
        f"CREATE TRIGGER chunkq_job_counts_update AFTER UPDATE OF {watched} ON chunkq_jobs FOR EACH ROW "
        f"WHEN (OLD.status IN {FINISHED} OR NEW.status IN {FINISHED}) EXECUTE FUNCTION {FUNCTION}()",
        f"CREATE TRIGGER chunkq_job_counts_delete AFTER DELETE ON chunkq_jobs REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {DELETED}()",
    ]


def backfill_sql() -> str:
    """The finished jobs' counts summed from their rows, in one grouped scan (also the benchmarks' bulk load)."""
    cols = ", ".join(("jobs", *SUMS))
    sums = ", ".join(f"coalesce(sum({c}), 0)" for c in SUMS)
    return (f"INSERT INTO {TABLE} ({', '.join(KEY)}, {cols}) SELECT {', '.join(KEY)}, count(*), {sums} "
            f"FROM chunkq_jobs WHERE status IN {FINISHED} GROUP BY {', '.join(KEY)}")


def create_triggers() -> None:
    bind = op.get_bind()
    for ddl in postgresql_ddl() if bind.dialect.name == "postgresql" else sqlite_ddl():
        op.execute(sa.text(ddl))


def drop_triggers() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGERS:
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {name}" + (" ON chunkq_jobs" if postgres else "")))
    if postgres:
        for function in (FUNCTION, INSERTED, DELETED):
            op.execute(sa.text(f"DROP FUNCTION IF EXISTS {function}()"))


def upgrade() -> None:
    zero = sa.text("0")
    op.create_table(
        TABLE,
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("provider", sa.Text(), primary_key=True),
        sa.Column("tenant", sa.Text(), primary_key=True),
        *(sa.Column(c, sa.BigInteger(), nullable=False, server_default=zero) for c in ("jobs", *SUMS)),
    )
    op.create_index("ix_chunkq_jobs_list", "chunkq_jobs", ["status", "id"])
    op.create_index("ix_chunkq_jobs_tenant_list", "chunkq_jobs", ["tenant", "status", "id"])
    create_triggers()  # before the backfill: see the docstring
    op.execute(sa.text(backfill_sql()))


def downgrade() -> None:
    drop_triggers()
    op.drop_index("ix_chunkq_jobs_tenant_list", table_name="chunkq_jobs")
    op.drop_index("ix_chunkq_jobs_list", table_name="chunkq_jobs")
    op.drop_table(TABLE)
