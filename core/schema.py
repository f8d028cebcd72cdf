"""The tables, declared once for SQLite and PostgreSQL.

Layout choices that keep a chunk's cost flat as a job grows:

* entity IDs are rows keyed by ``(job_id, pos)``: a chunk reads a position range
  through the primary key instead of parsing one JSON array of the whole job;
* the error log is rows, appended to, never rewritten;
* the lease lives on the chunk, not the job, so several workers can share one job.

Times are epoch seconds (``Float``): one comparable type on both backends.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from .errors import DatabaseUnavailable

SCHEMA_VERSION = 1

metadata = MetaData()

# An autoincrementing 64-bit key that SQLite also treats as its rowid.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

meta = Table(
    "chunkq_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

jobs = Table(
    "chunkq_jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("name", Text),
    Column("entity_type", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("max_workers", Integer, nullable=False, default=1),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("max_errors", Integer),
    Column("max_error_ratio", Float),
    Column("total_count", BigInteger, nullable=False, default=0),
    # next entity position not yet handed to any chunk
    Column("next_pos", BigInteger, nullable=False, default=0),
    Column("next_chunk", Integer, nullable=False, default=0),
    Column("leased_chunks", Integer, nullable=False, default=0),
    Column("processed_count", BigInteger, nullable=False, default=0),
    Column("succeeded_count", BigInteger, nullable=False, default=0),
    Column("failed_count", BigInteger, nullable=False, default=0),
    Column("waiting_count", BigInteger, nullable=False, default=0),
    Column("error_count", BigInteger, nullable=False, default=0),
    Column("dead_chunks", Integer, nullable=False, default=0),
    Column("next_retry_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("lease_owner", Text),
    Column("lease_expires_at", Float),
    Column("heartbeat_at", Float),
    Column("fail_reason", Text),
    Column("parent_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="SET NULL")),
    Column("params", JSON),
)
Index("ix_chunkq_jobs_claim", jobs.c.status, jobs.c.priority, jobs.c.id)
Index("ix_chunkq_jobs_updated", jobs.c.updated_at)

entities = Table(
    "chunkq_entities",
    metadata,
    Column("job_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("pos", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("entity_id", Text, nullable=False),
    sqlite_with_rowid=False,
)

chunks = Table(
    "chunkq_chunks",
    metadata,
    Column("job_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("chunk_index", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),  # range | retry
    Column("start_pos", BigInteger),
    Column("end_pos", BigInteger),
    Column("size", Integer, nullable=False),
    Column("state", String(8), nullable=False),  # leased | done
    Column("owner", Text),
    # fencing token: bumped on every claim, a commit must present the one it got
    Column("attempt", Integer, nullable=False, default=1),
    Column("lease_expires_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration", Float),
    Column("ok", Integer, nullable=False, default=0),
    Column("errors", Integer, nullable=False, default=0),
    sqlite_with_rowid=False,
)
Index("ix_chunkq_chunks_lease", chunks.c.state, chunks.c.lease_expires_at)
Index("ix_chunkq_chunks_finished", chunks.c.finished_at)

# Entities waiting for another attempt after a transient failure.
retries = Table(
    "chunkq_retries",
    metadata,
    Column("job_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("pos", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("entity_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),  # the attempt number to run next
    Column("due_at", Float, nullable=False),
    Column("chunk_index", Integer),  # set while a retry chunk holds it
)
Index("ix_chunkq_retries_due", retries.c.job_id, retries.c.chunk_index, retries.c.due_at)

errors = Table(
    "chunkq_errors",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("job_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("pos", BigInteger, nullable=False),
    Column("entity_id", Text, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("stacks", JSON),
    Column("chunk_index", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("final", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
)
Index("ix_chunkq_errors_job", errors.c.job_id, errors.c.id)

# Shared token buckets: one row per provider, so every worker on the database obeys one limit.
rate_limits = Table(
    "chunkq_rate_limits",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("rate", Float, nullable=False),  # tokens per second
    Column("burst", Float, nullable=False),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


def ensure_schema(conn: Connection) -> None:
    """Create missing tables and refuse a database written by a newer chunkq.

    Runs inside the caller's write transaction, after the backend has made sure
    no other process is creating the same tables at the same moment.
    """
    metadata.create_all(conn)
    version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    if version is None:
        conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
    elif int(version) > SCHEMA_VERSION:
        raise DatabaseUnavailable(
            f"database schema version {version} is newer than this chunkq understands ({SCHEMA_VERSION}); "
            "upgrade chunkq"
        )
