"""Error groups: the error log read one bug at a time, and the rows a group stands for.

A group is one fingerprint (``fingerprint.py``), computed when the error was
written and indexed per job (``ix_chunkq_errors_fingerprint``), so grouping
reads an index instead of normalising every message, and reading one group's
rows or entities seeks straight to them.

Rows written by a worker older than schema 3 (during a rolling upgrade) have no
fingerprint: they group by their exact type and message, as before, under a
key ``legacy:`` + a stable hash of the two (``legacy_key``); every function
here accepts such a key too.

Search (``search_condition``) matches the entity ID or the message text,
case-insensitively, as a plain substring: ``%`` and ``_`` are no wildcards
(``sql.contains_pattern``, which job searches use too).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import and_, false, func, literal, not_, null, or_, select
from sqlalchemy.engine import Connection

from . import rows
from . import schema as s
from .errors import InvalidInput
from .limits import ERRORS_PAGE, OFFSET
from .models import ErrorGroup
from .sql import contains_pattern

__all__ = ["LEGACY_PREFIX", "SAMPLES", "group_condition", "legacy_key", "read_group_entities", "read_groups",
           "search_condition"]

LEGACY_PREFIX = "legacy:"
#: distinct real messages shown with a group's normalised one
SAMPLES = 3
_SAMPLE_ROWS = 30  # rows read to find them (most groups repeat one message)
_KEY_MAX = 64


def legacy_key(error_type: str, message: str) -> str:
    """The key of a group of rows without a fingerprint: their exact type and message, hashed."""
    h = hashlib.blake2b(digest_size=8)
    for part in (error_type or "", message or ""):
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return LEGACY_PREFIX + h.hexdigest()


def check_key(key: object) -> str:
    """A group key from a user: short printable text, or ``InvalidInput``."""
    if not isinstance(key, str) or not key.strip() or len(key) > _KEY_MAX or not key.isprintable():
        raise InvalidInput(f"group must be a group key such as 3f2a9c0d1b7e4a55, got {key!r}"[:200], field="group")
    return key.strip()


def search_condition(search: str | None) -> Any:
    """Rows whose entity ID or message contains ``search`` (any letter case); None for no search."""
    like = contains_pattern(search)
    if like is None:
        return None
    er = s.errors.c
    return or_(func.lower(er.entity_id).like(like, escape="\\"), func.lower(er.message).like(like, escape="\\"))


def group_condition(conn: Connection, job_id: int, key: str) -> Any:
    """The rows of one group of a job, as a condition (on ``chunkq_errors``).

    A fingerprint is one index seek. A legacy key names a (type, message) pair
    among the job's rows without a fingerprint: those pairs are read once to
    find it (a job has them only until ``chunkq db upgrade`` fills them in).
    """
    er = s.errors.c
    key = check_key(key)
    if not key.startswith(LEGACY_PREFIX):
        return er.fingerprint == key
    pairs = conn.execute(select(er.error_type, er.message)
                         .where(er.job_id == job_id, er.fingerprint.is_(None)).distinct()).all()
    for error_type, message in pairs:
        if legacy_key(error_type, message) == key:
            return and_(er.fingerprint.is_(None), er.error_type == error_type, er.message == message)
    return false()


def _where(job_id: int, include_resolved: bool, search: str | None) -> list[Any]:
    er = s.errors.c
    where: list[Any] = [er.job_id == job_id]
    if not include_resolved:
        where.append(er.resolved_at.is_(None))
    if (found := search_condition(search)) is not None:
        where.append(found)
    return where


def read_groups(
    conn: Connection, job_id: int, *, limit: int, include_resolved: bool, search: str | None
) -> list[ErrorGroup]:
    """A job's groups, biggest first (attempts logged), with up to ``SAMPLES`` real messages each."""
    er = s.errors.c
    where = _where(job_id, include_resolved, search)
    stats = (func.count().label("n"), func.count(er.pos.distinct()).label("ents"),
             func.min(er.created_at).label("first"), func.max(er.created_at).label("last"))
    printed = conn.execute(
        select(er.fingerprint.label("key"), func.min(er.error_type).label("error_type"),
               func.min(er.normalized).label("message"), func.min(er.location).label("location"), *stats)
        .where(*where, er.fingerprint.is_not(None)).group_by(er.fingerprint)
        .order_by(func.count().desc(), er.fingerprint).limit(limit)
    ).all()
    legacy = conn.execute(
        select(null().label("key"), er.error_type, er.message, literal(None).label("location"), *stats)
        .where(*where, er.fingerprint.is_(None)).group_by(er.error_type, er.message)
        .order_by(func.count().desc(), er.error_type, er.message).limit(limit)
    ).all()
    found = sorted([*printed, *legacy], key=lambda r: (-int(r.n), r.error_type or "", r.message or ""))[:limit]
    groups = []
    for r in found:
        if r.key is None:
            groups.append(rows.error_group(r, legacy_key(r.error_type, r.message), (r.message,)))
            continue
        recent = conn.execute(select(er.message).where(*where, er.fingerprint == r.key)
                              .order_by(er.id).limit(_SAMPLE_ROWS)).scalars().all()
        groups.append(rows.error_group(r, r.key, list(dict.fromkeys(recent))[:SAMPLES]))
    return groups


def read_group_entities(
    conn: Connection, job_id: int, key: str, *, limit: int, offset: int, include_resolved: bool
) -> list[str]:
    """The distinct entities of one group: failed for good first, then the others, each in the order logged.

    Read in the index's order (``job_id, fingerprint, id``) a batch at a time
    and made distinct here, so a page costs what the rows up to it cost, not
    the whole group: the first page of a group of 100,000 errors is as quick as
    that of a group of 10.
    """
    ERRORS_PAGE.check(limit)
    OFFSET.check(offset)
    er = s.errors.c
    where = [*_where(job_id, include_resolved, None), group_condition(conn, job_id, key)]
    dead = and_(er.final.is_(True), er.resolved_at.is_(None))
    seen: set[int] = set()
    out: list[str] = []
    skip = offset
    batch = min(max(limit + offset, 100), 5000)
    for phase in (dead, not_(dead)):
        last = 0
        while len(out) < limit:
            found = conn.execute(select(er.id, er.pos, er.entity_id).where(*where, phase, er.id > last)
                                 .order_by(er.id).limit(batch)).all()
            for r in found:
                if r.pos in seen:
                    continue
                seen.add(r.pos)  # phase two comes only once phase one read every dead row: none is listed twice
                if skip:
                    skip -= 1
                    continue
                out.append(rows.readable(r.entity_id))
                if len(out) == limit:
                    break
            if len(found) < batch:
                break
            last = found[-1].id
    return out


def final_positions(conn: Connection, job_id: int, key: str | None) -> Any:
    """A select of the positions of the entities failed for good (in one group, when ``key`` is given)."""
    er = s.errors.c
    q = select(er.pos).where(er.job_id == job_id, er.final.is_(True), er.resolved_at.is_(None))
    if key is not None:
        q = q.where(group_condition(conn, job_id, key))
    return q
