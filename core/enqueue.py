"""Creating a job: every setting checked, every ID validated, all or nothing.

IDs may come from any iterable, including a generator over a file of millions of
lines: they are validated and inserted in batches inside one transaction, so a
bad ID on the millionth line leaves the database exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from . import schema as s
from .backend import Backend
from .bounds import (
    CHUNK_SIZE,
    ENTITY_TYPE,
    MAX_ATTEMPTS,
    MAX_ERROR_RATIO,
    MAX_ERRORS,
    MAX_WORKERS,
    NAME,
    PRIORITY,
    PROCESSOR_NAME,
    PROVIDER,
    TENANT,
    check_params,
    clean_entity_id,
)
from .db import describe_db_error
from .errors import DatabaseUnavailable, InvalidInput
from .sql import status_in
from .status import ACTIVE_STATUSES, PENDING

#: entity rows handed to the driver at once
INSERT_BATCH = 5_000


def new_job_row(now: float, **values: Any) -> dict[str, Any]:
    """A job row with every counter at zero (a job created by enqueue or by ``retry_failed``)."""
    return {
        "status": PENDING, "total_count": 0, "next_pos": 0, "next_chunk": 0, "leased_chunks": 0,
        "processed_count": 0, "succeeded_count": 0, "failed_count": 0, "waiting_count": 0, "error_count": 0,
        "dead_chunks": 0, "created_at": now, "updated_at": now, **values,
    }


#: a job's settings and the check each gets, in the order they are checked: enqueue's, and an import's
#: (``archive.py``: an imported job is one enqueue would take)
SETTING_CHECKS: dict[str, Callable[[Any], Any]] = {
    "entity_type": ENTITY_TYPE.check_required, "provider": PROVIDER.check_required, "chunk_size": CHUNK_SIZE.check,
    "priority": PRIORITY.check, "max_workers": MAX_WORKERS.check, "max_attempts": MAX_ATTEMPTS.check,
    "max_errors": MAX_ERRORS.check_optional, "max_error_ratio": MAX_ERROR_RATIO.check_optional,
    "name": NAME.check, "processor": PROCESSOR_NAME.check, "tenant": TENANT.check, "params": check_params,
}


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``enqueue_job``'s keyword arguments, checked and normalised (raises ``InvalidInput`` naming the field)."""
    out = dict(settings)
    for field, check in SETTING_CHECKS.items():
        out[field] = check(settings.get(field))
    out["tenant"] = out["tenant"] or ""
    params = out["params"]
    if params:
        try:  # caught here, not as a driver error with the SQL in it (PostgreSQL also rejects NaN)
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"params must be plain JSON (no NaN/Infinity): {exc}", field="params") from None
        except RecursionError:
            raise InvalidInput("params are nested too deeply to store", field="params") from None
    out["params"] = params
    return out


def checked_ids(entity_ids: Iterable[str]) -> Iterator[str]:
    """The IDs, each validated; a list is checked whole before any lock is taken, a stream as it is read."""
    if isinstance(entity_ids, str | bytes):
        raise InvalidInput("entity_ids must be a list of IDs, not a single string", field="entity_ids")
    try:
        iterator = iter(entity_ids)
    except TypeError:
        raise InvalidInput(
            f"entity_ids must be a list of strings, got {type(entity_ids).__name__}", field="entity_ids"
        ) from None
    if isinstance(entity_ids, list | tuple):
        cleaned = [clean_entity_id(v, i) for i, v in enumerate(entity_ids, 1)]
        if not cleaned:
            raise InvalidInput("no entity IDs: a job needs at least one", field="entity_ids")
        return iter(cleaned)
    # A stream is validated as it is inserted: the first bad ID rolls everything back.
    return (clean_entity_id(v, i) for i, v in enumerate(iterator, 1))


async def enqueue(
    backend: Backend, now: Callable[[], float], entity_ids: Iterable[str], *, dedupe: bool,
    parent_id: int | None, **settings: Any,
) -> int:
    """Create the job; returns its id."""
    job = check_settings(settings)
    ids = checked_ids(entity_ids)

    def tx(conn: Connection) -> int:
        join_tenant(backend, conn, job["tenant"])
        job_id = conn.execute(
            insert(s.jobs).values(**new_job_row(now(), parent_id=parent_id, **job)).returning(s.jobs.c.id)
        ).scalar_one()
        total = _insert_ids(backend, conn, job_id, ids, dedupe)
        if total == 0:
            raise InvalidInput("no entity IDs: a job needs at least one", field="entity_ids")
        conn.execute(update(s.jobs).where(s.jobs.c.id == job_id).values(total_count=total))
        return int(job_id)

    # Not retried: a generator cannot be replayed.
    try:
        return await backend.write_once(tx)
    except DBAPIError as exc:  # an OSError from the caller's own ID source is theirs to report
        if isinstance(exc, IntegrityError):
            raise
        raise DatabaseUnavailable(f"enqueue failed, nothing was created: {describe_db_error(exc)}") from exc


def join_tenant(backend: Backend, conn: Connection, tenant: str) -> None:
    """Give ``tenant`` its row, and a turn no earlier than the tenants already waiting.

    Its virtual time (``schema.tenants``) starts at the lowest of the tenants that have a
    live job, or stays where it was if that is later: a tenant new to the queue, or back
    after a quiet week, takes its turn among the others instead of being owed every turn
    it did not use. Enqueueing is rare next to claiming; this reads the tenants with
    live jobs (one index probe each) once per job.
    """
    t, j = s.tenants.c, s.jobs.c
    floor = conn.execute(
        select(func.min(t.vtime)).where(exists(select(j.id).where(j.tenant == t.name, status_in(ACTIVE_STATUSES))))
    ).scalar()
    own = conn.execute(select(t.vtime).where(t.name == tenant)).first()
    if own is None:
        # two first jobs of one tenant enqueued at once (PostgreSQL): the second finds the row made
        conn.execute(backend.insert_ignoring_conflicts(s.tenants).values(name=tenant, vtime=floor or 0.0))
    elif floor is not None and own.vtime < floor and not conn.execute(
            select(j.id).where(j.tenant == tenant, status_in(ACTIVE_STATUSES)).limit(1)).first():
        conn.execute(update(s.tenants).where(t.name == tenant).values(vtime=floor))


def _insert_ids(backend: Backend, conn: Connection, job_id: int, ids: Iterable[str], dedupe: bool) -> int:
    """Insert already-validated IDs in batches; returns how many were kept."""
    seen: set[str] | None = set() if dedupe else None
    batch: list[tuple[int, int, str]] = []
    pos = 0
    for v in ids:
        if seen is not None:
            if v in seen:
                continue
            seen.add(v)
        batch.append((job_id, pos, v))
        pos += 1
        if len(batch) >= INSERT_BATCH:
            backend.insert_entities(conn, batch)
            batch = []
    if batch:
        backend.insert_entities(conn, batch)
    return pos
