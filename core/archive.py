"""Jobs to a file and back: JSON Lines that ``chunkq export`` writes and ``chunkq import`` reads.

Longer than 500 lines: writer and reader of one format, kept together so the round trip is one.

Archive before delete (issue 26): a finished job leaves the database whole, to a
file a person can keep, grep, and load back into any chunkq database.

The format, one JSON object per line, each with a ``type``:

* ``header`` (first line): ``{"format": "chunkq-export", "version": 1}``;
* per job: one ``job`` line (the job row's columns as stored, times in epoch
  seconds), then its ``entity`` lines in position order (``pos``, ``entity_id``
  and ``outcome``: ``succeeded``, ``failed``, ``waiting`` for a retry, with its
  ``attempt`` and ``due_at``, or ``unprocessed``), its ``chunk`` lines (the chunk
  history the dashboard draws), its ``error`` lines (every attempt, with the
  traceback and structured stacks), and an ``end`` line with the three counts,
  so a truncated file is told apart from a complete one.

Text is written as ASCII JSON (``\\uXXXX`` escapes), so whatever a row holds reads
back exactly. Everything streams: rows are read a page at a time by keyset
(never an offset, never a whole job in memory) and written line by line; a
``.gz`` name, or ``gzip=True``, compresses.

Only finished jobs are exported: nothing changes them while they are read page
by page (an active job's pages would come from different moments). Import gives
each job a new id (its ``parent_id`` follows a parent imported from the same file,
else it is cleared), checks the whole file first (a malformed line is refused
with its number before anything is written, and so is a value no queue writes: a
time a reader cannot show, a negative count, a label, entity ID or params that
enqueue's own checks refuse), then writes each job in
transactions of at most ``retention.BATCH_ROWS`` rows; if writing fails half-way,
the jobs it created are deleted again.
"""

from __future__ import annotations

import gzip as gzip_module
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Integer, String, Text, insert, select, update
from sqlalchemy.engine import Connection

from . import error_groups
from . import schema as s
from .bounds import (
    DURATION,
    MAX_ROW_ID,
    TIMESTAMP,
    check_id,
    clean_entity_id,
    shown,
)
from .enqueue import SETTING_CHECKS
from .errors import InvalidInput, InvalidTransition, JobNotFound
from .retention import BATCH_ROWS, Pruner
from .status import FINISHED_STATUSES

if TYPE_CHECKING:
    from .queue import Queue

FORMAT = "chunkq-export"
VERSION = 1
#: rows read per query while exporting
PAGE = 2_000
#: the outcome of an entity, as an export says it
OUTCOMES = ("succeeded", "failed", "waiting", "unprocessed")

# Columns that describe a moment of a live run, not the job: left out of an export, empty after import.
_TRANSIENT = {"lease_owner", "lease_expires_at", "heartbeat_at", "released_by", "released_at"}
_JOB_COLUMNS = [c for c in s.jobs.c if c.name not in _TRANSIENT]
_CHUNK_COLUMNS = [c for c in s.chunks.c if c.name != "job_id"]
_ERROR_COLUMNS = [c for c in s.errors.c if c.name != "job_id"]


def _dumps(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n").encode("ascii")


class ArchiveWriter:
    """JSON Lines into a file or a binary stream, gzipped if asked; ``sync`` puts what was written on disk."""

    def __init__(self, target: str | os.PathLike[str] | IO[bytes], *, gzip: bool | None = None) -> None:
        if isinstance(target, str | os.PathLike):
            self.name: str | None = str(target)
            self._raw: IO[bytes] = open(target, "xb")  # noqa: SIM115 - closed by close()
            self._owned = True
            gzip = str(target).endswith(".gz") if gzip is None else gzip
        else:
            self.name = None
            self._raw = target
            self._owned = False
        self._out: IO[bytes] | gzip_module.GzipFile = (
            gzip_module.GzipFile(fileobj=self._raw, mode="wb", mtime=0) if gzip else self._raw)
        self._out.write(_dumps({"type": "header", "format": FORMAT, "version": VERSION}))
        self.jobs = 0

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(_dumps(record))

    async def add_job(self, queue: Queue, job_id: int) -> None:
        await export_job(queue, job_id, self)
        self.jobs += 1

    def sync(self) -> None:
        if isinstance(self._out, gzip_module.GzipFile):
            self._out.flush()  # a full flush: everything so far decompresses on its own
        self._raw.flush()
        if self._owned:
            os.fsync(self._raw.fileno())

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()
        if self._owned:
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
        else:
            self._raw.flush()

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def export_job(queue: Queue, job_id: int, writer: ArchiveWriter, *, page: int = PAGE) -> dict[str, int]:
    """Write one finished job, its entities with their outcomes, its chunks and its errors; returns the counts."""
    check_id(job_id)
    backend = queue.backend
    j = s.jobs.c
    row = await backend.read(lambda conn: conn.execute(select(*_JOB_COLUMNS).where(j.id == job_id)).first(),
                             f"exporting job {job_id}")
    if row is None:
        raise JobNotFound(job_id)
    job = dict(row._mapping)
    if job["status"] not in FINISHED_STATUSES:
        raise InvalidTransition(f"job {job_id} is {job['status']}: only finished jobs (complete, failed, cancelled) "
                                "can be exported")
    writer.write({"type": "job", **job})
    counts = {"entities": 0, "chunks": 0, "errors": 0}
    e, er, r, c = s.entities.c, s.errors.c, s.retries.c, s.chunks.c
    next_pos = int(job["next_pos"])

    def entities(last: int) -> Callable[[Connection], list[dict[str, Any]]]:
        def read(conn: Connection) -> list[dict[str, Any]]:
            found = conn.execute(select(e.pos, e.entity_id).where(e.job_id == job_id, e.pos > last)
                                 .order_by(e.pos).limit(page)).all()
            if not found:
                return []
            lo, hi = found[0].pos, found[-1].pos
            failed = set(conn.execute(select(er.pos).where(
                er.job_id == job_id, er.pos >= lo, er.pos <= hi, er.final.is_(True), er.resolved_at.is_(None)
            )).scalars())
            waiting = {p.pos: p for p in conn.execute(select(r.pos, r.attempt, r.due_at).where(
                r.job_id == job_id, r.pos >= lo, r.pos <= hi))}
            # ranges handed out but never committed (a cancelled job's leased or aborted chunks)
            open_ranges = conn.execute(select(c.start_pos, c.end_pos).where(
                c.job_id == job_id, c.start_pos.is_not(None), c.state.in_(("leased", "aborted")),
                c.start_pos <= hi, c.end_pos > lo)).all()
            out = []
            for pos, entity_id in found:
                rec: dict[str, Any] = {"type": "entity", "job": job_id, "pos": pos, "entity_id": entity_id}
                if pos in failed:
                    rec["outcome"] = "failed"
                elif pos in waiting:
                    w = waiting[pos]
                    rec.update(outcome="waiting", attempt=w.attempt, due_at=w.due_at)
                elif pos >= next_pos or any(a <= pos < b for a, b in open_ranges):
                    rec["outcome"] = "unprocessed"
                else:
                    rec["outcome"] = "succeeded"
                out.append(rec)
            return out

        return read

    last = -1
    while True:
        recs = await backend.read(entities(last), f"exporting job {job_id}")
        for rec in recs:
            writer.write(rec)
        counts["entities"] += len(recs)
        if len(recs) < page:
            break
        last = recs[-1]["pos"]
    for table, key, cols, kind in ((s.chunks, c.chunk_index, _CHUNK_COLUMNS, "chunk"),
                                   (s.errors, er.id, _ERROR_COLUMNS, "error")):
        last = -1
        while True:
            def read(conn: Connection, last: int = last, table: Any = table, key: Any = key,
                     cols: Any = cols) -> Sequence[Any]:
                return conn.execute(select(*cols).where(table.c.job_id == job_id, key > last)
                                    .order_by(key).limit(page)).all()

            found = await backend.read(read, f"exporting job {job_id}")
            for x in found:
                writer.write({"type": kind, "job": job_id, **x._mapping})
            counts[kind + "s"] += len(found)
            if len(found) < page:
                break
            last = getattr(found[-1], key.name)
    writer.write({"type": "end", "job": job_id, **counts})
    return counts


# ---------------------------------------------------------------------------------------------- import


class MalformedArchive(InvalidInput):
    """A line of an export file that import cannot take: ``number`` is the line, ``reason`` what is wrong."""


@dataclass
class ImportResult:
    #: (id in the file, new id) per job, in file order
    jobs: list[tuple[int, int]] = field(default_factory=list)
    entities: int = 0
    errors: int = 0
    chunks: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": [{"from": a, "id": b} for a, b in self.jobs], "entities": self.entities,
                "errors": self.errors, "chunks": self.chunks}


def _opener(path: Path) -> IO[bytes] | gzip_module.GzipFile:
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes it
    magic = raw.read(2)
    raw.seek(0)
    return gzip_module.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw


#: the longest line import reads (a traceback is at most 100,000 characters; its escapes, six times that)
MAX_LINE = 16 * 1024 * 1024


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every line, refusing what is not one JSON object with a known ``type``."""
    try:
        stream = _opener(path)
    except OSError as exc:
        raise InvalidInput(f"cannot read {str(path)!r}: {exc.strerror or exc}", field="file") from None
    with stream:
        number = 0
        while True:
            try:
                line = stream.readline(MAX_LINE + 1)
            except (OSError, EOFError, gzip_module.BadGzipFile) as exc:
                raise _bad(number + 1, f"the file cannot be read ({exc})") from None
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE:
                raise _bad(number, f"the line is longer than {MAX_LINE // (1024 * 1024)} MiB")
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_constant=_no_constant)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _bad(number, f"not JSON ({str(exc)[:80]})") from None
            if not isinstance(record, dict) or record.get("type") not in _KINDS:
                raise _bad(number, f"not a chunkq export record (type must be one of {', '.join(_KINDS)})")
            yield number, record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _bad(number: int, reason: str) -> MalformedArchive:
    return MalformedArchive(f"line {number}: {reason}", field="file", number=number, reason=reason)


_KINDS = ("header", "job", "entity", "chunk", "error", "end")


def _check_value(column: Any, value: Any, number: int, where: str, *, ranged: bool = True) -> Any:
    """``value`` as ``column`` stores it; ``ranged``: and within what the queue writes (``_check_range``)."""
    name = f"{where}.{column.name}"
    if value is None:
        if not column.nullable or column.primary_key:
            raise _bad(number, f"{name} is missing")
        return None
    t = column.type
    if isinstance(t, Boolean):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(t, Integer | BigInteger):
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        kind = "a whole number"
    elif isinstance(t, Float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    elif isinstance(t, JSON):
        ok, kind = isinstance(value, dict | list), "a JSON object or list"
    elif isinstance(t, String | Text):
        ok, kind = isinstance(value, str), "a string"
        if ok and ("\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value if not ch.isascii())):
            raise _bad(number, f"{name} holds a NUL or a lone surrogate, which cannot be stored")
        if ok and t.length and len(value) > t.length:
            raise _bad(number, f"{name} is longer than {t.length} characters")
    else:  # pragma: no cover - every column type is above
        ok, kind = True, ""
    if not ok:
        raise _bad(number, f"{name} must be {kind}, got {json.dumps(value)[:40]}")
    if ranged:
        _check_range(column, value, number, name)
    return value


#: the largest value of an ``Integer`` column (32 bits on PostgreSQL); a ``BigInteger`` holds up to ``MAX_ROW_ID``
_INT_MAX = 2**31 - 1


def _check_range(column: Any, value: Any, number: int, name: str) -> None:
    """A number the queue itself could have written: every count, size, position and attempt a whole
    number from 0, every time one a reader can show (``bounds.TIMESTAMP``: 1e300 seconds overflowed
    every ``datetime`` made of it), a duration finite and not negative."""
    if value is None or isinstance(value, bool):
        return
    t = column.type
    if isinstance(t, Integer | BigInteger):
        hi = MAX_ROW_ID if isinstance(t, BigInteger) else _INT_MAX
        if value < 0:
            raise _bad(number, f"{name} cannot be negative, got {shown(value)}")
        if value > hi:
            raise _bad(number, f"{name} must be at most {hi:,}, got {shown(value)}")
    elif isinstance(t, Float):
        limit = DURATION if column.name == "duration" else TIMESTAMP
        try:
            limit.check(value)
        except InvalidInput:
            raise _bad(number, f"{name} must be {limit.must}, got {shown(value)}") from None


def _checked(check: Callable[[Any], object], value: Any, number: int, name: str, field: str) -> None:
    """``check`` (one of enqueue's) on ``value``, its refusal naming ``name`` (``job.name``) for ``field``."""
    try:
        check(value)
    except InvalidInput as exc:
        text = str(exc)
        raise _bad(number, text.replace(field, name, 1) if field in text else f"{name}: {text}") from None


def _check_entity_id(value: Any, number: int, name: str) -> None:
    """An entity ID as enqueue checks it (``bounds.clean_entity_id``): no control character, not blank."""
    try:
        clean_entity_id(value, number)
    except InvalidInput as exc:
        raise _bad(number, f"{name} {exc.reason}") from None


def _row(record: dict[str, Any], columns: list[Any], number: int, where: str) -> dict[str, Any]:
    known = {c.name for c in columns} | {"type", "job"}
    unknown = sorted(set(record) - known)
    if unknown:
        raise _bad(number, f"unknown field {unknown[0]!r} in a {where} record")
    out = {}
    for c in columns:
        if c.name not in record and c.server_default is not None:
            continue  # a column newer than the file: the database fills it in
        value = record.get(c.name)
        if value is None and c.default is not None and not c.nullable and not c.primary_key:
            value = c.default.arg if not callable(c.default.arg) else None
        # a job's settings: enqueue's very checks (an import writes no job enqueue would refuse)
        setting = where == "job" and c.name in SETTING_CHECKS
        out[c.name] = _check_value(c, value, number, where, ranged=not setting)
        if setting:
            _checked(SETTING_CHECKS[c.name], out[c.name], number, f"job.{c.name}", c.name)
        elif c.name == "entity_id":
            _check_entity_id(out[c.name], number, f"{where}.entity_id")
    return out


_ENTITY_FIELDS = {"type", "job", "pos", "entity_id", "outcome", "attempt", "due_at"}


def _entity(record: dict[str, Any], number: int) -> dict[str, Any]:
    unknown = sorted(set(record) - _ENTITY_FIELDS)
    if unknown:
        raise _bad(number, f"unknown field {unknown[0]!r} in an entity record")
    pos, entity_id, outcome = record.get("pos"), record.get("entity_id"), record.get("outcome")
    _check_value(s.entities.c.pos, pos, number, "entity")
    _check_value(s.entities.c.entity_id, entity_id, number, "entity")
    _check_entity_id(entity_id, number, "entity.entity_id")
    if outcome not in OUTCOMES:
        raise _bad(number, f"entity.outcome must be one of {', '.join(OUTCOMES)}, got {str(outcome)[:40]!r}")
    if outcome == "waiting":
        _check_value(s.retries.c.attempt, record.get("attempt"), number, "entity")
        _check_value(s.retries.c.due_at, record.get("due_at"), number, "entity")
    return record


class _Checker:
    """One pass over the file, in constant memory: every record well formed and in its place."""

    def __init__(self) -> None:
        self.job: int | None = None
        self.counts = {"entities": 0, "chunks": 0, "errors": 0}
        self.last_pos = -1
        self.seen_header = False
        self.jobs = 0

    def check(self, number: int, record: dict[str, Any]) -> None:
        kind = record["type"]
        if not self.seen_header:
            if kind != "header" or record.get("format") != FORMAT:
                raise _bad(number, f"not a chunkq export: the first line must be its header ({FORMAT})")
            if record.get("version") != VERSION:
                raise _bad(number, f"export format version {record.get('version')!r}; this chunkq reads "
                                   f"version {VERSION}")
            self.seen_header = True
            return
        if kind == "header":
            raise _bad(number, "a second header")
        if kind == "job":
            if self.job is not None:
                raise _bad(number, f"job {self.job} has no end line before the next job")
            row = _row(record, _JOB_COLUMNS, number, "job")
            if row["status"] not in FINISHED_STATUSES:
                raise _bad(number, f"job.status is {row['status']!r}: only finished jobs (complete, failed, "
                                   "cancelled) are imported")
            if row["total_count"] < 1 or row["chunk_size"] < 1:
                raise _bad(number, "job.total_count and job.chunk_size must be positive")
            if row["processed_count"] > row["total_count"]:  # a progress over 100%
                raise _bad(number, f"job.processed_count ({row['processed_count']:,}) is more than job.total_count "
                                   f"({row['total_count']:,})")
            self.job, self.counts, self.last_pos = row["id"], {"entities": 0, "chunks": 0, "errors": 0}, -1
            return
        if self.job is None:
            raise _bad(number, f"a {kind} record outside a job")
        if record.get("job") != self.job:
            raise _bad(number, f"a {kind} record of job {record.get('job')!r} inside job {self.job}")
        if kind == "entity":
            rec = _entity(record, number)
            if rec["pos"] <= self.last_pos:
                raise _bad(number, "entity positions must increase")
            self.last_pos = rec["pos"]
            self.counts["entities"] += 1
        elif kind == "chunk":
            _row(record, _CHUNK_COLUMNS, number, "chunk")
            self.counts["chunks"] += 1
        elif kind == "error":
            _row(record, _ERROR_COLUMNS, number, "error")
            self.counts["errors"] += 1
        else:  # end
            want = {k: record.get(k) for k in self.counts}
            if want != self.counts:
                raise _bad(number, f"job {self.job} ends with counts {want} but the file holds {self.counts}")
            self.job = None
            self.jobs += 1

    def finish(self, number: int) -> None:
        if not self.seen_header:
            raise _bad(max(number, 1), "the file is empty")
        if self.job is not None:
            raise _bad(number, f"the file ends inside job {self.job} (no end line): it was cut short")


async def import_jobs(queue: Queue, path: str | os.PathLike[str], *,
                      on_job: Callable[[int, int], None] | None = None) -> ImportResult:
    """Load an export file back: every job as a new job (see the module docstring for what is kept)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no export file at {str(path)!r}", field="file")
    checker = _Checker()
    last = 0
    for number, record in _lines(path):
        checker.check(number, record)
        last = number
    checker.finish(last + 1)

    result = ImportResult()
    mapping: dict[int, int] = {}
    backend = queue.backend
    try:
        job: dict[str, Any] = {}
        new_id = 0
        buffers: dict[str, list[Any]] = {"entity": [], "retry": [], "chunk": [], "error": []}
        reason_error: int | None = None

        async def flush() -> None:
            if not any(buffers.values()):
                return
            taken = dict(buffers)
            for k in buffers:
                buffers[k] = []

            def tx(conn: Connection) -> int | None:
                if taken["entity"]:
                    backend.insert_entities(conn, taken["entity"])
                if taken["retry"]:
                    conn.execute(insert(s.retries), taken["retry"])
                if taken["chunk"]:
                    conn.execute(insert(s.chunks), taken["chunk"])
                found = None
                plain = []
                for err in taken["error"]:
                    row = {k: v for k, v in err.items() if k != "_old"}
                    if err["_old"] == reason_error:
                        found = conn.execute(insert(s.errors).values(**row).returning(s.errors.c.id)).scalar_one()
                    else:
                        plain.append(row)
                if plain:
                    conn.execute(insert(s.errors), plain)
                return found

            found = await backend.write(tx, "importing jobs")
            if found is not None:
                await backend.write(lambda conn: conn.execute(update(s.jobs).where(s.jobs.c.id == new_id)
                                                              .values(reason_error_id=found)),
                                    "importing jobs")

        for number, record in _lines(path):
            kind = record["type"]
            if kind == "job":
                job = _row(record, _JOB_COLUMNS, number, "job")
                old_id = job.pop("id")
                reason_error = job.pop("reason_error_id")
                job["parent_id"] = mapping.get(job["parent_id"]) if job["parent_id"] is not None else None
                new_id = await backend.write(
                    lambda conn, job=job: conn.execute(insert(s.jobs).values(**job).returning(s.jobs.c.id)  # type: ignore[misc]  # mypy infers no lambda with a default
                                                       ).scalar_one(), "importing jobs")
                mapping[old_id] = new_id
                result.jobs.append((old_id, new_id))
            elif kind == "entity":
                buffers["entity"].append((new_id, record["pos"], record["entity_id"]))
                if record["outcome"] == "waiting":
                    buffers["retry"].append({"job_id": new_id, "pos": record["pos"], "entity_id": record["entity_id"],
                                             "attempt": record["attempt"], "due_at": record["due_at"],
                                             "chunk_index": None})
                result.entities += 1
            elif kind == "chunk":
                row = _row(record, _CHUNK_COLUMNS, number, "chunk")
                if row["state"] == "leased":  # a lease nobody holds any more: given back (expiry 0)
                    row.update(owner=None, lease_expires_at=0.0)
                buffers["chunk"].append({**row, "job_id": new_id})
                result.chunks += 1
            elif kind == "error":
                row = _row(record, _ERROR_COLUMNS, number, "error")
                old = row.pop("id")
                buffers["error"].append({**row, "job_id": new_id, "_old": old})
                result.errors += 1
            elif kind == "end":
                await flush()
                # the job's error groups, made from its imported errors (not exported: they follow from them)
                await backend.write(lambda conn, job_id=new_id: error_groups.rebuild(conn, job_id), "importing jobs")  # type: ignore[misc]  # mypy infers no lambda with a default
                if on_job is not None:
                    on_job(*result.jobs[-1])
                continue
            if sum(len(v) for v in buffers.values()) >= BATCH_ROWS:
                await flush()
    except BaseException:
        # nothing half-created: the jobs written so far go again, in the pruner's small transactions
        pruner = Pruner(queue)
        for _old, new in result.jobs:
            try:
                await pruner.delete_job(new)
            except Exception:  # pragma: no cover - the database failed twice; say what the first failure was
                break
        raise
    return result


def open_export(path: str | os.PathLike[str] | None, *, gzip: bool = False) -> ArchiveWriter:
    """An export file (``-`` or None: standard output), refused with a one-line message if it cannot be made."""
    if path is None or str(path) == "-":
        import sys

        return ArchiveWriter(io.BufferedWriter(_Unclosed(sys.stdout.buffer)), gzip=gzip)
    try:
        return ArchiveWriter(path, gzip=True if gzip else None)
    except FileExistsError:
        raise InvalidInput(f"{str(path)!r} already exists; give a new file name", field="output") from None
    except OSError as exc:
        raise InvalidInput(f"cannot create {str(path)!r}: {exc.strerror or exc}", field="output") from None


class _Unclosed(io.RawIOBase):
    """Standard output, written through but never closed by the archive."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._target = raw

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._target.write(b)
        return len(b)

    def flush(self) -> None:
        self._target.flush()


__all__ = ["ArchiveWriter", "ImportResult", "MalformedArchive", "export_job", "import_jobs", "open_export"]
