"""The tables, declared once for SQLite and PostgreSQL, and how to tell which version a database holds.

Layout choices that keep a chunk's cost flat as a job grows:

* entity IDs are rows keyed by ``(job_id, pos)``: a chunk reads a position range
  through the primary key instead of parsing one JSON array of the whole job;
* the error log is rows, appended to, never rewritten;
* the lease lives on the chunk, not the job, so several workers can share one job.

Times are epoch seconds (``Float``): one comparable type on both backends.

These declarations are what the queries use and what the newest migration
(``migrations/versions``) produces; a test compares the two on both backends.
Changing a table means adding a revision there and raising ``SCHEMA_VERSION``.

Versions: revision ``NNNN`` is schema version ``N``. Every migration also
writes that number to ``chunkq_meta.schema_version``, which is what chunkq 0.1.0
reads (it refuses a number above its own), so an older chunkq refuses a newer
database instead of misreading it. ``read_state`` reads both without writing
anything and says what the database is: missing, empty, 0.1.0 (tables and
``schema_version`` 1 but no revision table), older, current, newer, or not
chunkq's at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection

from .errors import NoDatabase, SchemaMismatch

#: the number of the newest revision in migrations/versions (tests/migrations checks they agree)
SCHEMA_VERSION = 11
#: chunkq 0.1.0: tables made by ``create_all``, ``schema_version`` 1, no revision table
LEGACY_VERSION = 1
#: Alembic's version table under a chunkq name, so an application's own Alembic in the same
#: PostgreSQL database never mistakes it for its own
VERSION_TABLE = "chunkq_alembic_version"
META_KEY = "schema_version"

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
    # the processor (queue) the job is routed to; NULL: any worker may run it (revision 0002)
    Column("processor", Text),
    # the error row that paused or failed the job (circuit breaker, error budget, JobFailed) (0003)
    Column("reason_error_id", _BigId),
    # a deliberate release of the job's leases, told apart from a worker that went silent (0003)
    Column("released_by", Text),
    Column("released_at", Float),
    # when a claim last handed out a chunk of the job: the fair order serves the job served least
    # recently first; 0 (never served) sorts first, then the oldest job (0005)
    Column("served_at", Float, nullable=False, server_default=text("0")),
    # who the job is for (a customer, a team): tenants take turns before their jobs do; '' is the
    # tenant of every job enqueued without one (0005)
    Column("tenant", Text, nullable=False, server_default=text("''")),
)
Index("ix_chunkq_jobs_claim", jobs.c.status, jobs.c.priority, jobs.c.id)
#: the claim's two orders (``claims.ClaimStatements``), over live jobs only: a claim reads the first
#: claimable entry instead of sorting every live job (partial: finished jobs are not in them) (0005)
ACTIVE_WHERE = text("status IN ('pending', 'running')")
Index("ix_chunkq_jobs_fair", jobs.c.priority.desc(), jobs.c.served_at, jobs.c.id,
      sqlite_where=ACTIVE_WHERE, postgresql_where=ACTIVE_WHERE)
Index("ix_chunkq_jobs_fifo", jobs.c.priority.desc(), jobs.c.id, sqlite_where=ACTIVE_WHERE,
      postgresql_where=ACTIVE_WHERE)
#: the fair order within one tenant (``claims.ClaimStatements``) (0005)
Index("ix_chunkq_jobs_tenant", jobs.c.tenant, jobs.c.priority.desc(), jobs.c.served_at, jobs.c.id,
      sqlite_where=ACTIVE_WHERE, postgresql_where=ACTIVE_WHERE)
Index("ix_chunkq_jobs_updated", jobs.c.updated_at)
#: the jobs that name a job as their parent: deleting one (``ON DELETE SET NULL``, retention) and the
#: pruner's "a live retry names it" check read this instead of every job (0006)
Index("ix_chunkq_jobs_parent", jobs.c.parent_id, sqlite_where=text("parent_id IS NOT NULL"),
      postgresql_where=text("parent_id IS NOT NULL"))
#: the jobs list's order (``Reads.list_jobs``): each status' page, newest first, is an index walk with a
#: LIMIT, for every job and for one tenant's (0008)
Index("ix_chunkq_jobs_list", jobs.c.status, jobs.c.id)
Index("ix_chunkq_jobs_tenant_list", jobs.c.tenant, jobs.c.status, jobs.c.id)

# Finished jobs' counts and sums per (status, provider, tenant), kept exact by triggers on chunkq_jobs in the
# transaction that finishes, reopens or deletes a job (``migrations/versions/0008_job_counts.py``), so views
# read history's totals in a few rows instead of summing every job (issue 26). Live jobs are summed from
# their rows. A row whose ``jobs`` fell to 0 stays (readers skip it).
job_counts = Table(
    "chunkq_job_counts",
    metadata,
    Column("status", String(16), primary_key=True),
    Column("provider", Text, primary_key=True),
    Column("tenant", Text, primary_key=True),
    *(Column(name, BigInteger, nullable=False, server_default=text("0"))
      for name in ("jobs", "total_count", "processed_count", "succeeded_count", "failed_count", "waiting_count",
                   "error_count")),
)

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
    # leases of this chunk that ran out with no commit (a worker died or froze on it): a chunk
    # that keeps killing workers is isolated entity by entity (revision 0002)
    Column("lost_leases", Integer, nullable=False, default=0, server_default=text("0")),
    # when this lease's worker started running the chunk with nothing else in flight: only such a
    # lost lease counts toward isolation, so a window's innocent chunks are redone, not split (0004)
    Column("solo_at", Float),
    # the worker an operator sees holding the lease: a supervisor's id for its child processes' chunks,
    # NULL for a worker on its own (the owner is its own team); ``max_workers`` counts these (0007)
    Column("team", Text),
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
    # what groups the failure (core/fingerprint.py), computed at write; NULL only for rows written
    # by a worker of an older revision during a rolling upgrade (0003)
    Column("fingerprint", String(32)),
    Column("normalized", Text),
    Column("location", Text),
    # what the callback printed and logged for this entity, bounded (core/capture.py); NULL: nothing (0010)
    Column("output", Text),
)
Index("ix_chunkq_errors_job", errors.c.job_id, errors.c.id)
Index("ix_chunkq_errors_fingerprint", errors.c.job_id, errors.c.fingerprint, errors.c.id)
# an entity's own errors: which groups it already failed in (error_groups.record), which rows it resolves (0009)
Index("ix_chunkq_errors_pos", errors.c.job_id, errors.c.pos)

# Error groups (issue 27, core/error_groups.py): one row per message template of a job, keyed by the
# ``fingerprint`` its error rows carry, its counters moved in the transaction that logs them, so the grouped
# view reads a job's groups, never its errors. ``root`` is the group it was merged into (automatically, when a
# word turned out to vary, or by an operator: ``merged_by``), ``parent`` the one it was merged into directly
# (what ``unmerge`` restores). ``n``/``entities`` count every attempt logged; ``open_*`` the unresolved ones.
error_groups = Table(
    "chunkq_error_groups",
    metadata,
    Column("job_id", _BigId, ForeignKey("chunkq_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(32), primary_key=True),
    Column("family", String(32), nullable=False),
    Column("template", Text, nullable=False),
    Column("error_type", Text, nullable=False),
    Column("location", Text),
    Column("parent", String(32)),
    Column("root", String(32)),
    Column("merged_by", String(16)),
    Column("n", BigInteger, nullable=False),
    Column("entities", BigInteger, nullable=False),
    Column("open_n", BigInteger, nullable=False),
    Column("open_entities", BigInteger, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("samples", JSON),  # up to 3 distinct real messages, kept at write: the view reads no error row
)
Index("ix_chunkq_error_groups_family", error_groups.c.job_id, error_groups.c.family)
Index("ix_chunkq_error_groups_root", error_groups.c.job_id, error_groups.c.root)
#: a family's groups across jobs, newest job first: whether another job of a processor logged a bug already
#: (``error_groups.known_statement``, the breakpoint's "new for the processor") (0011)
Index("ix_chunkq_error_groups_family_job", error_groups.c.family, error_groups.c.job_id, error_groups.c.key)

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

# Tenants take turns (issue 25): the claim serves the tenant with the lowest ``vtime`` (virtual time) among
# those with a claimable job, and advances it by ``1 / weight`` (stride scheduling), so a tenant of weight 2 gets
# twice the chunks of one of weight 1, whatever the number of jobs each has. A row per tenant ever
# enqueued; '' (jobs without a tenant) is one tenant like the others (0005).
tenants = Table(
    "chunkq_tenants",
    metadata,
    Column("name", Text, primary_key=True),
    Column("weight", Float, nullable=False, server_default=text("1")),
    Column("vtime", Float, nullable=False, server_default=text("0")),
)
Index("ix_chunkq_tenants_vtime", tenants.c.vtime, tenants.c.name)

# Every process that processes work (worker, cron `process`, the dashboard's auto-run, `serve`):
# registered at start, heartbeated, asked to stop through `stop_request` (0003).
workers = Table(
    "chunkq_workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # worker | process | dashboard | serve
    Column("processor", Text),
    Column("version", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("heartbeat_interval", Float, nullable=False),
    Column("state", String(16), nullable=False),  # busy | idle | stopping | stopped
    Column("job_id", _BigId),
    Column("chunks", Integer, nullable=False, default=0, server_default=text("0")),
    Column("concurrency", Integer),  # the current concurrency limit (moves under --concurrency auto)
    Column("done", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("failed", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("stop_request", String(16)),  # NULL | finish | release
    Column("stopped_at", Float),
    Column("detail", Text),
)
Index("ix_chunkq_workers_heartbeat", workers.c.heartbeat_at)

#: what chunkq 0.1.0 created (revision 0001)
LEGACY_TABLES = frozenset({meta.name, jobs.name, entities.name, chunks.name, retries.name, errors.name,
                           rate_limits.name})


def revision_of(version: int) -> str:
    """Revision ``NNNN`` for schema version ``N``."""
    return f"{version:04d}"


@dataclass(frozen=True)
class SchemaState:
    """What a database holds, as read without changing anything.

    ``kind`` is one of ``missing`` (no SQLite file), ``empty`` (no chunkq table),
    ``legacy`` (chunkq 0.1.0: no revision table yet), ``older``, ``current``,
    ``newer`` or ``foreign`` (chunkq tables chunkq did not make, or a version it
    cannot read: ``problem`` says what).
    """

    kind: str
    revision: str | None = None
    version: int | None = None
    problem: str | None = None
    #: the database, as messages name it (filled in by whoever knows it)
    where: str | None = None

    @property
    def needs_upgrade(self) -> bool:
        return self.kind in ("missing", "empty", "legacy", "older")

    @property
    def pending(self) -> list[str]:
        """The revisions an upgrade would apply, oldest first."""
        if not self.needs_upgrade:
            return []
        done = (self.version or 0) if self.kind in ("legacy", "older") else 0
        return [revision_of(n) for n in range(done + 1, SCHEMA_VERSION + 1)]

    def refusal(self, where: str | None = None) -> str | None:
        """Why even ``chunkq db upgrade`` cannot use this database (newer, not chunkq's); None if it can."""
        if self.kind not in ("newer", "foreign"):
            return None
        try:
            refuse(self, where or self.where or "the database", create=True, upgrade=True, readonly=False)
        except SchemaMismatch as exc:
            return str(exc)
        return None  # pragma: no cover - refuse raises for both kinds

    @property
    def label(self) -> str:
        """``revision 0002 (version 2)``, as messages name a schema."""
        if self.kind == "legacy":
            return f"version {self.version} (chunkq 0.1.0, no revision table)"
        if self.revision is None:
            return f"version {self.version}" if self.version is not None else "no version"
        return f"revision {self.revision} (version {self.version})"

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.where, "state": self.kind, "revision": self.revision, "version": self.version,
                "problem": self.problem, "head_revision": revision_of(SCHEMA_VERSION), "head_version": SCHEMA_VERSION,
                "pending": self.pending}


def _version_number(raw: object) -> int | None:
    text_ = str(raw).strip()
    return int(text_) if re.fullmatch(r"[0-9]{1,9}", text_) else None


def read_state(conn: Connection) -> SchemaState:
    """Which schema the database holds; only reads (run it on a read-only connection where possible)."""
    ours = {n for n in inspect(conn).get_table_names() if n.startswith("chunkq_")}
    if not ours:
        return SchemaState("empty")
    version: int | None = None
    if meta.name in ours:
        raw = conn.execute(select(meta.c.value).where(meta.c.key == META_KEY)).scalar()
        if raw is not None:
            version = _version_number(raw)
            if version is None:
                return SchemaState("foreign", problem=f"{meta.name}.{META_KEY} holds {str(raw)[:40]!r}, not a "
                                   "version number (the database was not written by chunkq, or edited by hand)")
    if VERSION_TABLE not in ours:
        if version is None:
            found = ", ".join(sorted(ours))
            return SchemaState("foreign", problem=f"it has tables named like chunkq's ({found}) but no "
                               f"{meta.name}.{META_KEY}: they were not made by chunkq")
        if version > SCHEMA_VERSION:
            return SchemaState("newer", version=version)
        missing: frozenset[str] | set[str] = LEGACY_TABLES - ours
        if version != LEGACY_VERSION or missing:
            why = f"tables {', '.join(sorted(missing))} are missing" if missing else "it has no revision table"
            return SchemaState("foreign", version=version,
                               problem=f"{META_KEY} is {version} but {why}: not a schema chunkq made")
        return SchemaState("legacy", version=version)
    stamped = [str(r) for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()]
    if len(stamped) != 1 or _version_number(stamped[0]) is None:
        return SchemaState("foreign", version=version, problem=f"{VERSION_TABLE} holds {stamped[:3]!r}, not one "
                           "chunkq revision")
    revision = stamped[0]
    number = _version_number(revision) or 0
    version = max(number, version or 0)
    if version > SCHEMA_VERSION:
        return SchemaState("newer", revision, version)
    if number < SCHEMA_VERSION:
        return SchemaState("older", revision, version)
    missing = set(metadata.tables) - ours
    if missing:
        return SchemaState("foreign", revision, version,
                           problem=f"it is stamped {revision} but tables {', '.join(sorted(missing))} are missing")
    return SchemaState("current", revision, version)


def refuse(
    state: SchemaState, where: str, *, create: bool, upgrade: bool, readonly: bool, writable: bool = True
) -> None:
    """Raise, saying what to do, unless a queue opened with these options may use ``state`` (or bring it
    up to date: ``create`` a missing or empty database, ``upgrade`` an older one). ``writable=False``:
    this user cannot write the database, so the advice says who can."""
    kind = state.kind
    if kind == "current":
        return
    if kind in ("missing", "empty"):
        if create and not readonly:
            return
        if kind == "missing":
            raise NoDatabase(f"no chunkq database at {where}; `chunkq enqueue` or `chunkq db upgrade` creates one")
        raise NoDatabase(f"{where} has no chunkq tables; `chunkq enqueue` or `chunkq db upgrade` creates them")
    if kind in ("legacy", "older"):
        if upgrade and not readonly:
            return
        todo = ("it is read-only for this user: run `chunkq db upgrade` as one who may write to it, or read it "
                "with the older chunkq" if not writable else
                "run `chunkq db upgrade` (workers of the older chunkq keep running after it)")
        raise SchemaMismatch(f"{where}: database schema is at {state.label}, older than this chunkq "
                             f"(version {SCHEMA_VERSION}); {todo}", state)
    if kind == "newer":
        raise SchemaMismatch(f"{where}: database schema is at {state.label}, newer than this chunkq understands "
                             f"(version {SCHEMA_VERSION}); upgrade chunkq", state)
    raise SchemaMismatch(f"{where} is not a database this chunkq can use: {state.problem}; nothing was changed",
                         state)
