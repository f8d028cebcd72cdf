"""Error groups: the error log read one bug at a time, and the rows a group stands for (issues 16, 27).

Longer than 500 lines: record, read, merge and rebuild share the group row's invariants.

A failure's group is decided when it is logged (``record``, in the commit's
transaction): its *family* is where it happened (the exception type and the
user's own frames, ``fingerprint.py``, or a name the processor gave it), and
within a family the message's *template* (``templates.py``) tells bugs apart.
The template state and each group's counters live in ``chunkq_error_groups``,
one row per template of a job; an error row carries its template's key in
``fingerprint``. So:

- the grouped view (``read_page``) reads the job's group rows, not its errors:
  a job with a million errors in 103 groups reads 103 rows, and says 103, paged;
  each row keeps its first three distinct real messages (``samples``), so the
  view reads no error row at all (a searched view reads the matching ones);
- one group's rows are an index seek on ``(job_id, fingerprint)``, for each key
  of the group (a group merged from others has several);
- a group can be merged into another (``merge``, by an operator, or
  automatically when a word of the message turns out to vary) and split off
  again (``unmerge``); the merge is the group row's ``root``, so it holds for
  the job's future errors of that template too: it is the rule.

``entities`` of a merged group adds its parts' up: an entity that failed with
two of its templates counts twice (rare: one entity's retries mostly fail
alike). Search (``search_condition``) matches the entity ID or the message
text, case-insensitively, as a plain substring: ``%`` and ``_`` are no
wildcards (``sql.contains_pattern``, which job searches use too); a searched
view groups the matching rows, so it costs what they do.

Rows of a worker older than schema 3 have no fingerprint: migration 0009
assigned every stored row a group (``rebuild``); a ``legacy:`` key (their
exact type and message, hashed: ``legacy_key``) still names such rows.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BindParameter, and_, bindparam, delete, false, func, insert, not_, or_, select, update
from sqlalchemy.engine import Connection

from . import rows
from . import schema as s
from .bounds import ERRORS_PAGE, OFFSET
from .errors import InvalidInput
from .fingerprint import Fingerprint, FingerprintCache
from .models import ErrorGroup, to_datetime
from .sql import contains_pattern
from .templates import SIMILAR, Known, decide, generalize, render

__all__ = ["KNOWN_SCAN", "LEGACY_PREFIX", "SAMPLES", "group_condition", "group_keys", "known_statement",
           "known_to_processor", "legacy_key", "merge", "read_group_entities", "read_groups", "read_page", "rebuild",
           "record", "resolve", "search_condition", "unmerge"]

LEGACY_PREFIX = "legacy:"
#: distinct real messages shown with a group's normalised one
SAMPLES = 3
_SAMPLE_ROWS = 30  # rows read to find them in a searched view (most groups repeat one message)
_SAMPLE_CHARS = 1000  # of each one kept on the group row
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


def group_keys(conn: Connection, job_id: int, key: str) -> list[str]:
    """The fingerprints of one group: its own and those of the groups merged into it (``root``)."""
    g = s.error_groups.c
    found = conn.execute(select(g.key).where(g.job_id == job_id, or_(g.key == key, g.root == key))
                         .order_by(g.n.desc(), g.key)).scalars().all()
    return list(found) or [key]


def is_group(conn: Connection, job_id: int, key: str) -> bool:
    """Job ``job_id`` has (or had) a group ``key``: a row of its groups, or a legacy key among its rows.

    Asked only when a read of one group found nothing, so that a key with a typo is said to be
    one ("no error group"), not shown as a group without errors."""
    key = check_key(key)
    if key.startswith(LEGACY_PREFIX):
        return _legacy_pair(conn, job_id, key) is not None
    g = s.error_groups.c
    return conn.execute(select(g.key).where(g.job_id == job_id, g.key == key)).first() is not None


def group_condition(conn: Connection, job_id: int, key: str) -> Any:
    """The rows of one group of a job, as a condition (on ``chunkq_errors``).

    A group is one index seek per key it holds (a single ``=`` when it holds
    one, so a page of it is read in id order off the index). A legacy key
    names a (type, message) pair among the job's rows without a fingerprint:
    those pairs are read once to find it.
    """
    er = s.errors.c
    key = check_key(key)
    if not key.startswith(LEGACY_PREFIX):
        keys = group_keys(conn, job_id, key)
        return er.fingerprint == keys[0] if len(keys) == 1 else er.fingerprint.in_(keys)
    pair = _legacy_pair(conn, job_id, key)
    if pair is None:
        return false()
    return and_(er.fingerprint.is_(None), er.error_type == pair[0], er.message == pair[1])


def _legacy_pair(conn: Connection, job_id: int, key: str) -> tuple[str, str] | None:
    """The (type, message) a legacy key names among the job's rows without a fingerprint, if any."""
    er = s.errors.c
    pairs = conn.execute(select(er.error_type, er.message)
                         .where(er.job_id == job_id, er.fingerprint.is_(None)).distinct()).all()
    for error_type, message in pairs:
        if legacy_key(error_type, message) == key:
            return str(error_type), str(message)
    return None


# --------------------------------------------------------------------------- writing: which group, and counting


def _tokens(template: str) -> tuple[str, ...]:
    return tuple(t for t in template.split(" ") if t)


@dataclass
class _Tally:
    n: int = 0
    entities: int = 0
    open_n: int = 0
    open_entities: int = 0


@dataclass
class _Families:
    """The templates of a job's families, as ``decide`` changes them, and what changed."""

    known: dict[str, list[Known]] = field(default_factory=dict)
    info: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # new key: (error type, location)
    created: dict[str, str] = field(default_factory=dict)  # new key -> family
    retemplated: set[str] = field(default_factory=set)
    merged: dict[str, str] = field(default_factory=dict)  # key -> the group it was merged into
    by_key: dict[str, Known] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)  # key -> its real messages (up to SAMPLES)
    sampled: set[str] = field(default_factory=set)  # keys whose samples changed
    memo: dict[tuple[str, tuple[str, ...]], Known] = field(default_factory=dict)  # (family, tokens) -> template

    def add(self, family: str, key: str, template: str, n: int, root: str | None, samples: Any = None) -> None:
        k = Known(key, _tokens(template), n, root)
        self.known.setdefault(family, []).append(k)
        self.by_key[key] = k
        self.samples[key] = [x for x in samples if isinstance(x, str)][:SAMPLES] if isinstance(samples, list) else []

    def sample(self, key: str, message: str) -> None:
        """Keep ``message`` as one of the group's real messages, while it has fewer than ``SAMPLES``."""
        kept = self.samples.setdefault(key, [])
        if len(kept) < SAMPLES:
            text = message[:_SAMPLE_CHARS]
            if text not in kept:
                kept.append(text)
                self.sampled.add(key)

    def assign(self, error_type: str, fp: Fingerprint) -> str:
        """The key of the group this failure joins (a new one, maybe), its template learnt from it."""
        memo = (fp.family, fp.tokens)
        known = self.memo.get(memo)
        if known is not None:  # the same message again: where it went, it still fits (templates only widen)
            known.n += 1
            return known.key
        family = self.known.setdefault(fp.family, [])
        new_key = fp.template_key()
        if new_key in self.by_key and not fp.declared:
            chosen = self.by_key[new_key]  # its template was generalised since; it is still this template's group
        else:
            d = decide(family, fp.tokens, new_key, force=fp.declared)
            chosen = d.joined
            if d.created:
                self.by_key[chosen.key] = chosen
                self.created[chosen.key] = fp.family
                self.info[chosen.key] = (error_type, fp.where)
            elif d.generalized:
                self.retemplated.add(chosen.key)
            for k in d.merged:
                self.merged[k.key] = chosen.root or chosen.key
        chosen.n += 1
        self.memo[memo] = chosen
        return chosen.key


def record(conn: Connection, job_id: int, logged: Sequence[dict[str, Any]], prints: Sequence[Fingerprint],
           now: float) -> tuple[str, ...]:
    """Put each error row about to be logged in its group: sets its ``fingerprint`` and moves the group's
    counters. Returns the keys of the groups it created, in order (a bug the job had not logged before).

    Runs inside the transaction that inserts the rows, after locking the job's
    row: on PostgreSQL two commits of one job then learn templates one after
    the other, and neither counts on a template the other is changing. Costs
    two reads (the families' templates, the entities' earlier errors, by
    index) and a write per group touched, whatever the job's size.
    """
    if not logged:
        return ()
    st = _statements()
    conn.execute(st.lock, {"b_job": job_id})
    fams = _Families()
    wanted = sorted({fp.family for fp in prints})
    for r in conn.execute(st.families, {"b_job": job_id, "b_wanted": wanted}):
        fams.add(r.family, r.key, r.template, int(r.n), r.root, r.samples)
    positions = sorted({int(row["pos"]) for row in logged})
    earlier: dict[int, dict[str, bool]] = {}  # pos -> key -> has an unresolved row
    for r in conn.execute(st.earlier, {"b_job": job_id, "b_positions": positions}):
        keys = earlier.setdefault(int(r.pos), {})
        keys[r.fingerprint] = keys.get(r.fingerprint, False) or r.resolved_at is None
    tallies: dict[str, _Tally] = {}
    for row, fp in zip(logged, prints, strict=True):
        key = fams.assign(row["error_type"], fp)
        row["fingerprint"] = key
        fams.sample(key, row["message"])
        t = tallies.setdefault(key, _Tally())
        seen = earlier.setdefault(int(row["pos"]), {})
        t.n += 1
        t.open_n += 1
        if key not in seen:
            t.entities += 1
        if not seen.get(key):
            t.open_entities += 1
        seen[key] = True
    _write(conn, job_id, fams, tallies, now)
    return tuple(fams.created)


def _write(conn: Connection, job_id: int, fams: _Families, tallies: dict[str, _Tally], now: float) -> None:
    g = s.error_groups.c
    if fams.created:
        conn.execute(insert(s.error_groups), [{
            "job_id": job_id, "key": key, "family": family, "template": render(fams.by_key[key].tokens),
            "error_type": fams.info[key][0], "location": fams.info[key][1], "parent": None, "root": None,
            "merged_by": None, "n": tallies.get(key, _Tally()).n, "entities": tallies.get(key, _Tally()).entities,
            "open_n": tallies.get(key, _Tally()).open_n, "open_entities": tallies.get(key, _Tally()).open_entities,
            "first_at": now, "last_at": now, "samples": fams.samples.get(key, []),
        } for key, family in fams.created.items()])
    changed = [key for key in fams.retemplated if key not in fams.created]
    if changed:
        conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == bindparam("b_key"))
                     .values(template=bindparam("b_template")),
                     [{"b_key": key, "b_template": render(fams.by_key[key].tokens)} for key in changed])
    resampled = [key for key in fams.sampled if key not in fams.created]
    if resampled:
        conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == bindparam("b_key"))
                     .values(samples=bindparam("b_samples")),
                     [{"b_key": key, "b_samples": fams.samples[key]} for key in resampled])
    for key, into in fams.merged.items():
        _set_root(conn, job_id, key, into, "auto")
    moved = [(key, t) for key, t in tallies.items() if key not in fams.created]
    if moved:
        conn.execute(_statements().count, [
            {"b_job": job_id, "b_key": key, "b_n": t.n, "b_ents": t.entities, "b_open": t.open_n,
             "b_open_ents": t.open_entities, "b_now": now} for key, t in moved])


@dataclass(frozen=True)
class _Statements:
    """The statements every commit that logs errors runs, built once (building one costs more than running it)."""

    lock: Any
    families: Any
    earlier: Any
    count: Any


@functools.cache
def _statements() -> _Statements:
    g, er, j = s.error_groups.c, s.errors.c, s.jobs.c
    job: BindParameter[int]
    wanted: BindParameter[list[str]]
    job, wanted = bindparam("b_job"), bindparam("b_wanted", expanding=True)
    return _Statements(
        lock=select(j.id).where(j.id == job).with_for_update(),
        families=select(g.key, g.family, g.template, g.n, g.root, g.samples).where(g.job_id == job,
                                                                                    g.family.in_(wanted)),
        earlier=select(er.pos, er.fingerprint, er.resolved_at).where(
            er.job_id == job, er.pos.in_(bindparam("b_positions", expanding=True)), er.fingerprint.is_not(None)),
        count=update(s.error_groups).where(g.job_id == bindparam("b_job"), g.key == bindparam("b_key")).values(
            n=g.n + bindparam("b_n"), entities=g.entities + bindparam("b_ents"),
            open_n=g.open_n + bindparam("b_open"), open_entities=g.open_entities + bindparam("b_open_ents"),
            last_at=bindparam("b_now")),
    )


def _set_root(conn: Connection, job_id: int, key: str, into: str, how: str) -> None:
    """Merge group ``key`` (and what was merged into it) into ``into``."""
    g = s.error_groups.c
    conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == key)
                 .values(parent=into, root=into, merged_by=how))
    conn.execute(update(s.error_groups).where(g.job_id == job_id, g.root == key).values(root=into))


def resolve(conn: Connection, job_id: int, condition: Any) -> None:
    """Before the rows matching ``condition`` are marked resolved: their groups' open counts go down.

    An entity's unresolved rows are resolved all at once (it got through), so
    its distinct positions per group are the open entities that group loses.
    """
    er, g = s.errors.c, s.error_groups.c
    found = conn.execute(
        select(er.fingerprint, func.count().label("n"), func.count(er.pos.distinct()).label("ents"))
        .where(er.job_id == job_id, condition, er.resolved_at.is_(None), er.fingerprint.is_not(None))
        .group_by(er.fingerprint)
    ).all()
    if found:
        conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == bindparam("b_key")).values(
            open_n=g.open_n - bindparam("b_n"), open_entities=g.open_entities - bindparam("b_ents"),
        ), [{"b_key": r.fingerprint, "b_n": int(r.n), "b_ents": int(r.ents)} for r in found])


def rebuild(conn: Connection, job_id: int, *, batch: int = 2000) -> int:
    """Group a job's stored errors again, from scratch, a batch of rows at a time; returns the groups made.

    For rows logged before the groups table existed (migration 0009) and for
    tests and benchmarks that insert rows directly. Operator merges of the job
    are lost: there were none before 0009.
    """
    er, g = s.errors.c, s.error_groups.c
    conn.execute(delete(s.error_groups).where(g.job_id == job_id))
    fams = _Families()
    tallies: dict[str, _Tally] = {}
    times: dict[str, list[float]] = {}
    seen: dict[str, dict[int, bool]] = {}
    last = 0
    while True:
        found = conn.execute(select(er.id, er.pos, er.entity_id, er.error_type, er.message, er.stacks,
                                    er.created_at, er.resolved_at)
                             .where(er.job_id == job_id, er.id > last).order_by(er.id).limit(batch)).all()
        if not found:
            break
        cache = FingerprintCache()
        updates = []
        for r in found:
            fp = cache(r.error_type or "", r.message or "", r.stacks, entity_id=r.entity_id)
            key = fams.assign(r.error_type or "", fp)
            fams.sample(key, r.message or "")
            updates.append({"b_id": r.id, "b_fp": key, "b_norm": fp.normalized, "b_loc": fp.where})
            t = tallies.setdefault(key, _Tally())
            t.n += 1
            entities = seen.setdefault(key, {})
            is_open = r.resolved_at is None
            if int(r.pos) not in entities:
                t.entities += 1
            if is_open:
                t.open_n += 1
                if not entities.get(int(r.pos)):
                    t.open_entities += 1
            entities[int(r.pos)] = entities.get(int(r.pos), False) or is_open
            span = times.setdefault(key, [r.created_at, r.created_at])
            span[0], span[1] = min(span[0], r.created_at), max(span[1], r.created_at)
        conn.execute(update(s.errors).where(er.id == bindparam("b_id"))
                     .values(fingerprint=bindparam("b_fp"), normalized=bindparam("b_norm"),
                             location=bindparam("b_loc")), updates)
        last = found[-1].id
    if fams.created:
        conn.execute(insert(s.error_groups), [{
            "job_id": job_id, "key": key, "family": family, "template": render(fams.by_key[key].tokens),
            "error_type": fams.info[key][0], "location": fams.info[key][1], "parent": fams.merged.get(key),
            "root": None, "merged_by": "auto" if key in fams.merged else None,
            "n": tallies[key].n, "entities": tallies[key].entities, "open_n": tallies[key].open_n,
            "open_entities": tallies[key].open_entities, "first_at": times[key][0], "last_at": times[key][1],
            "samples": fams.samples.get(key, []),
        } for key, family in fams.created.items() if key in tallies])
        for key in fams.merged:
            root = key
            while root in fams.merged:
                root = fams.merged[root]
            conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == key).values(root=root))
    return len(fams.created)


# --------------------------------------------------------------------------- new to the processor (the breakpoint)


#: group rows of other jobs read for one family, newest job first, to tell whether a bug is known to a processor
KNOWN_SCAN = 200


def known_statement(job_id: int, family: str, processor: str | None) -> Any:
    """The group rows of ``family`` that other jobs routed to ``processor`` logged: ``(key, template)``.

    An index walk (``ix_chunkq_error_groups_family_job``: the family, newest
    job first) cut at ``KNOWN_SCAN`` rows before any other table is read, so it
    costs the same whether the database holds ten errors or a million, and
    however many jobs the processor ran: it reads group rows, never errors.
    Jobs without a processor (any worker may run them) are one processor of
    their own: the family already names the code (the exception type and the
    user's frames), so a match there is the same code failing the same way.
    """
    g, j = s.error_groups.c, s.jobs.c
    recent = (select(g.job_id, g.key, g.template)
              .where(g.family == family, g.job_id != job_id)
              .order_by(g.job_id.desc(), g.key.desc()).limit(KNOWN_SCAN).subquery("recent"))
    same = j.processor.is_(None) if processor is None else j.processor == processor
    return select(recent.c.key, recent.c.template).join(s.jobs, j.id == recent.c.job_id).where(same)


def known_to_processor(conn: Connection, job_id: int, keys: Sequence[str]) -> set[str]:
    """Which of job ``job_id``'s groups ``keys`` another job of the same processor has logged already.

    Known means the failure would have joined one of that job's groups: the
    same family, and a template it fits or that differs from it only in
    values (``templates.decide`` would widen it at once); a family the
    processor named (``fingerprint_as``) is one group, so any row of it. Every
    group row of the other job counts, merged ones too (a group merged into
    another, by an operator or automatically, is still a bug seen). A key
    this job has no group row for is not known. Only the newest
    ``KNOWN_SCAN`` group rows of the family are read (``known_statement``): a
    bug seen last further back than that counts as new again, and the
    breakpoint stops at it, which is the side to err on.
    """
    if not keys:
        return set()
    g, j = s.error_groups.c, s.jobs.c
    processor = conn.execute(select(j.processor).where(j.id == job_id)).scalar()
    heads = conn.execute(select(g.key, g.family, g.template).where(g.job_id == job_id, g.key.in_(list(keys))))
    known: set[str] = set()
    for head in heads:
        found = conn.execute(known_statement(job_id, head.family, processor)).all()
        if not found:
            continue
        if head.key == head.family or any(r.key == head.key for r in found):  # named by the processor, or the same
            known.add(head.key)
            continue
        tokens = _tokens(head.template)
        if any(_alike(_tokens(t), tokens) for t in dict.fromkeys(r.template for r in found)):
            known.add(head.key)
    return known


def _alike(template: tuple[str, ...], tokens: tuple[str, ...]) -> bool:
    """One bug: either fits the other as it is, or they differ only in values (``decide`` would widen)."""
    seen = generalize(template, tokens)
    if not seen.changed or (seen.similarity >= SIMILAR and seen.word_stretches == 0):
        return True
    return not generalize(tokens, template).changed  # this job's template is the wider one already


# --------------------------------------------------------------------------- an operator says what a bug is


def merge(conn: Connection, job_id: int, keys: Sequence[str], into: str) -> list[str]:
    """Merge groups ``keys`` into group ``into`` (each with what was merged into it); returns the keys merged.

    Kept on the group rows, so the job's future errors of those templates
    count under ``into`` too; ``unmerge`` undoes it.
    """
    target = _root_of(conn, job_id, into)
    done = []
    for key in keys:
        source = _root_of(conn, job_id, key)
        if source == target:
            raise InvalidInput(f"group {key} is already part of group {into}", field="group")
        _set_root(conn, job_id, source, target, "operator")
        done.append(source)
    return done


def unmerge(conn: Connection, job_id: int, key: str) -> str:
    """Split group ``key`` off the group it was merged into, with what had been merged into it; returns the
    group it left."""
    g = s.error_groups.c
    key = check_key(key)
    row = conn.execute(select(g.key, g.root).where(g.job_id == job_id, g.key == key)).first()
    if row is None:
        raise InvalidInput(f"job {job_id} has no error group {key}", field="group")
    if row.root is None:
        raise InvalidInput(f"group {key} is not merged into another", field="group")
    old: str = row.root
    members = {r.key: r.parent for r in conn.execute(select(g.key, g.parent)
                                                     .where(g.job_id == job_id, g.root == old))}
    conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == key)
                 .values(parent=None, root=None, merged_by=None))
    members[key] = None
    for member in members:
        if member == key:
            continue
        step, hops = members.get(member), 0
        while step is not None and step != key and step in members and hops < len(members):
            step, hops = members[step], hops + 1
        if step == key:
            conn.execute(update(s.error_groups).where(g.job_id == job_id, g.key == member).values(root=key))
    return old


def _root_of(conn: Connection, job_id: int, key: str) -> str:
    g = s.error_groups.c
    key = check_key(key)
    row = conn.execute(select(g.key, g.root).where(g.job_id == job_id, g.key == key)).first()
    if row is None:
        raise InvalidInput(f"job {job_id} has no error group {key}", field="group")
    root: str = row.root or row.key
    return root


def _where(job_id: int, include_resolved: bool, search: str | None) -> list[Any]:
    er = s.errors.c
    where: list[Any] = [er.job_id == job_id]
    if not include_resolved:
        where.append(er.resolved_at.is_(None))
    if (found := search_condition(search)) is not None:
        where.append(found)
    return where


def read_groups(
    conn: Connection, job_id: int, *, limit: int, include_resolved: bool, search: str | None, offset: int = 0,
) -> list[ErrorGroup]:
    """A page of the job's groups (``read_page`` without the total)."""
    return read_page(conn, job_id, limit=limit, offset=offset, include_resolved=include_resolved, search=search)[1]


@dataclass(frozen=True, slots=True)
class _Found:
    key: str
    n: int
    ents: int
    first: float
    last: float
    legacy: tuple[str, str] | None = None  # (type, message) of rows without a fingerprint


def read_page(
    conn: Connection, job_id: int, *, limit: int, offset: int, include_resolved: bool, search: str | None,
) -> tuple[int, list[ErrorGroup]]:
    """How many groups the job has, and a page of them, biggest first (attempts logged), each with up
    to ``SAMPLES`` real messages.

    Without a search it reads the job's group rows (their counters), never its
    errors; with one, it groups the matching error rows.
    """
    g = s.error_groups.c
    legacy = _legacy(conn, job_id, include_resolved, search)
    searched = contains_pattern(search) is not None
    root = func.coalesce(g.root, g.key)
    n = func.sum(g.n if include_resolved else g.open_n)
    grouped = (select(root.label("key"), n.label("n"),
                      func.sum(g.entities if include_resolved else g.open_entities).label("ents"),
                      func.min(g.first_at).label("first"), func.max(g.last_at).label("last"))
               .where(g.job_id == job_id).group_by(root))
    if not include_resolved:
        grouped = grouped.having(func.sum(g.open_n) > 0)
    if contains_pattern(search) is not None or legacy:
        # a search groups the matching rows; rows without a fingerprint join the groups' own counts
        parts = _searched(conn, job_id, include_resolved, search) if contains_pattern(search) is not None else [
            _Found(r.key, int(r.n), int(r.ents), r.first, r.last) for r in conn.execute(grouped)]
        found = sorted([*parts, *legacy], key=lambda f: (-f.n, f.legacy or ("", ""), f.key))
        total, page = len(found), found[offset:offset + limit]
    else:
        total = int(conn.execute(select(func.count()).select_from(grouped.subquery())).scalar() or 0)
        page = [_Found(r.key, int(r.n), int(r.ents), r.first, r.last)
                for r in conn.execute(grouped.order_by(n.desc(), root).limit(limit).offset(offset))]
    if not page:
        return total, []
    heads = {r.key: r for r in conn.execute(
        select(g.key, g.template, g.error_type, g.location, g.samples)
        .where(g.job_id == job_id, g.key.in_([f.key for f in page]))
    )}
    kept: dict[str, list[str]] = {key: list(r.samples or []) for key, r in heads.items()}
    if not searched:  # the parts merged into a group add theirs, biggest first: no error row is read
        for r in conn.execute(select(g.root, g.samples).where(g.job_id == job_id, g.root.in_(list(heads)))
                              .order_by(g.n.desc(), g.key)):
            kept[r.root].extend(x for x in r.samples or [] if x not in kept[r.root])
    merged: dict[str, list[str]] = {}
    for r in conn.execute(select(g.key, g.root).where(g.job_id == job_id, g.root.in_([f.key for f in page]),
                                                      g.merged_by == "operator")):
        merged.setdefault(r.root, []).append(r.key)
    groups = []
    for f in page:
        if f.legacy is not None:
            groups.append(ErrorGroup(rows.readable(f.legacy[0]), rows.readable(f.legacy[1]), f.n, f.ents,
                                     to_datetime(f.first), to_datetime(f.last),
                                     fingerprint=f.key, samples=(rows.readable(f.legacy[1]),)))
            continue
        head = heads.get(f.key)
        samples = _samples(conn, job_id, f.key, include_resolved, search) if searched else kept.get(f.key, [])
        samples = [x for x in samples if isinstance(x, str)][:SAMPLES]
        groups.append(ErrorGroup(
            rows.readable(head.error_type if head else ""), rows.readable(head.template if head else ""), f.n,
            f.ents, to_datetime(f.first), to_datetime(f.last),
            fingerprint=f.key, location=rows.readable(head.location if head else None),
            samples=tuple(rows.readable(x) for x in samples), merged=tuple(sorted(merged.get(f.key, ()))),
        ))
    return total, groups


def _samples(conn: Connection, job_id: int, key: str, include_resolved: bool, search: str | None) -> list[str]:
    """Up to ``SAMPLES`` distinct real messages: the group's own first, then its biggest merged parts'."""
    er = s.errors.c
    where = _where(job_id, include_resolved, search)
    out: list[str] = []
    for part in group_keys(conn, job_id, key)[:SAMPLES + 2]:
        recent = conn.execute(select(er.message).where(*where, er.fingerprint == part)
                              .order_by(er.id).limit(_SAMPLE_ROWS)).scalars().all()
        out.extend(m for m in dict.fromkeys(recent) if m not in out)
        if len(out) >= SAMPLES:
            break
    return out[:SAMPLES]


def _legacy(conn: Connection, job_id: int, include_resolved: bool, search: str | None) -> list[_Found]:
    """Rows an older worker wrote during a rolling upgrade (no fingerprint), by their exact type and message:
    read off the index's NULL range, empty once every worker is upgraded."""
    er = s.errors.c
    return [_Found(legacy_key(r.error_type, r.message), int(r.n), int(r.ents), r.first, r.last,
                   (r.error_type, r.message))
            for r in conn.execute(
                select(er.error_type, er.message, func.count().label("n"),
                       func.count(er.pos.distinct()).label("ents"), func.min(er.created_at).label("first"),
                       func.max(er.created_at).label("last"))
                .where(*_where(job_id, include_resolved, search), er.fingerprint.is_(None))
                .group_by(er.error_type, er.message))]


def _searched(conn: Connection, job_id: int, include_resolved: bool, search: str | None) -> list[_Found]:
    """The groups of the rows matching a search, each as its root group, biggest first."""
    er, g = s.errors.c, s.error_groups.c
    parts = conn.execute(
        select(er.fingerprint.label("key"), func.count().label("n"), func.count(er.pos.distinct()).label("ents"),
               func.min(er.created_at).label("first"), func.max(er.created_at).label("last"))
        .where(*_where(job_id, include_resolved, search), er.fingerprint.is_not(None)).group_by(er.fingerprint)
    ).all()
    roots = {r.key: r.root for r in conn.execute(select(g.key, g.root).where(
        g.job_id == job_id, g.key.in_([p.key for p in parts]), g.root.is_not(None)))} if parts else {}
    out: dict[str, _Found] = {}
    for p in parts:
        key = roots.get(p.key) or p.key
        had = out.get(key)
        out[key] = _Found(key, int(p.n), int(p.ents), p.first, p.last) if had is None else _Found(
            key, had.n + int(p.n), had.ents + int(p.ents), min(had.first, p.first), max(had.last, p.last))
    return sorted(out.values(), key=lambda f: (-f.n, f.key))


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
