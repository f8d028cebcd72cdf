"""Message templates (issue 27): generated bugs with variable parts of every kind group into one group each.

The grouping here is the one a commit runs (``error_groups._Families`` over
``FingerprintCache``), without a database: the database tests are in
``test_error_groups.py``.
"""

from __future__ import annotations

import json
import random
import string
import uuid

import pytest
from chunkq.core.error_groups import _Families
from chunkq.core.fingerprint import FingerprintCache, fingerprint, fingerprint_as
from chunkq.core.models import TraceFrame, TraceStack
from chunkq.core.templates import WORD_VALUES, generalize, is_variable, tokenize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WORDS = ("invoice", "lookup", "failed", "for", "account", "while", "reading", "the", "record", "upstream", "rejected",
         "payload", "because", "of", "missing", "field", "in", "request", "tenant", "sync", "could", "not", "load",
         "customer", "profile", "order", "is", "locked", "by", "another", "worker", "quota", "exceeded")
TYPES = ("ValueError", "KeyError", "RuntimeError", "ConnectionError", "httpx.HTTPStatusError", "LookupError")
KINDS = ("digits", "hex", "name", "quoted", "ip", "timestamp", "uuid", "json", "email", "id")
_SYLLABLES = ("zor", "vex", "qua", "lin", "mar", "dax", "bel", "tor", "kin", "sul", "rho", "pem", "gan", "wil")


def _name(rng: random.Random, occurrence: int = 0) -> str:
    """A company or person name without digits, of one to three words; a name of its own per occurrence
    (a name slot that took only two values is two bugs by design: ``WORD_VALUES``)."""
    own = "".join(_SYLLABLES[int(d, 14)] for d in _base14(occurrence))
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 2))) for _ in range(rng.randint(0, 2))]
    return " ".join(w.capitalize() for w in [own + rng.choice(_SYLLABLES), *words])


def _base14(n: int) -> str:
    digits = "0123456789abcd"
    out = digits[n % 14]
    while n >= 14:
        n //= 14
        out = digits[n % 14] + out
    return out


def _value(kind: str, rng: random.Random, entity: str, occurrence: int = 0) -> str:
    if kind == "digits":
        return str(rng.randint(0, 10**rng.randint(1, 9)))
    if kind == "hex":
        return "".join(rng.choice("0123456789abcdef" if rng.random() < 0.8 else "abcdef") for _ in range(8))
    if kind == "name":
        return _name(rng, occurrence)
    if kind == "quoted":
        return repr(rng.choice(("sku_", "ref-", "x")) + "".join(rng.choices(string.ascii_lowercase + "_", k=6)))
    if kind == "ip":
        return ".".join(str(rng.randint(0, 255)) for _ in range(4))
    if kind == "timestamp":
        return (f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
                f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z")
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if kind == "json":
        return json.dumps({"id": rng.randint(1, 10**6), "name": _name(rng, occurrence), "ok": False})
    if kind == "email":
        return f"{_name(rng, occurrence).split()[0].lower()}{rng.randint(1, 999)}@example{rng.randint(0, 9)}.com"
    return entity  # the entity's own ID


def _stacks(place: str) -> tuple[TraceStack, ...]:
    frames = (TraceFrame("/usr/lib/python3.11/asyncio/events.py", 80, "_run", ""),
              TraceFrame("/app/processor.py", 12, "process", ""),
              TraceFrame(f"/app/{place}.py", 40, place, ""),
              TraceFrame("/venv/lib/python3.11/site-packages/httpx/_models.py", 760, "raise_for_status", ""))
    return (TraceStack("X", "", frames),)


@st.composite
def bugs(draw: st.DrawFn) -> list[tuple[str, str, list[str | None]]]:
    """K bugs: a type, a place of their own, and a template of constant words and variable slots."""
    k = draw(st.integers(1, 5))
    out = []
    for i in range(k):
        parts: list[str | None] = []
        for _ in range(draw(st.integers(1, 3))):
            parts.extend(draw(st.lists(st.sampled_from(WORDS), min_size=2, max_size=4)))
            parts.append(None)  # a variable slot
        out.append((draw(st.sampled_from(TYPES)), f"step_{i}", parts))
    return out


def _group(failures: list[tuple[str, str, tuple[TraceStack, ...], str]]) -> _Families:
    fams = _Families()
    cache = FingerprintCache()
    for error_type, message, stacks, entity in failures:
        fams.assign(error_type, cache(error_type, message, stacks, entity_id=entity))
    return fams


def _roots(fams: _Families) -> set[str]:
    return {k.key for family in fams.known.values() for k in family if k.root is None}


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bugs(), st.data(), st.randoms(use_true_random=False))
def test_k_generated_bugs_with_every_kind_of_variable_part_make_k_groups(
    found: list[tuple[str, str, list[str | None]]], data: st.DataObject, rng: random.Random,
) -> None:
    n = WORD_VALUES + 5  # a name must take WORD_VALUES values before it is one
    kinds = [[data.draw(st.sampled_from(KINDS)) for p in parts if p is None] for _t, _p, parts in found]
    failures = []
    for occurrence in range(n):
        for (error_type, place, parts), slot_kinds in zip(found, kinds, strict=True):
            entity = f"ent-{occurrence:05d}{rng.randint(0, 9)}"
            slots = iter(slot_kinds)
            words = [p if p is not None else _value(next(slots), rng, entity, occurrence) for p in parts]
            failures.append((error_type, " ".join(words), _stacks(place), entity))
    rng.shuffle(failures)
    assert len(_roots(_group(failures))) == len(found)


@pytest.mark.parametrize("first_hex", ["00000000", "1a2b3c4d"])
def test_a_hex_id_that_drew_only_digits_stays_in_its_bug(first_hex: str) -> None:
    """Found by the test above: ``a a <n> a a <n>`` and ``a a <hex> a a <n>`` share the run ``a a <n>`` at
    two offsets; aligned on it, they looked half alike with words differing at both ends, and one bug
    made two groups whenever its hex ID happened to be all digits. Same length: compared by position."""
    assert generalize(tokenize("invoice invoice <n> invoice invoice <n>"),
                      tokenize("invoice invoice <hex> invoice invoice <n>")).word_stretches == 0
    hexes = [first_hex, "9f8e7d6c", "00000001", "abcdef12", "12345678", "c0ffee00"]
    failures = [("ValueError", f"invoice invoice {h} invoice invoice {i}", _stacks("bill"), f"e{i}")
                for i, h in enumerate(hexes)]
    assert len(_roots(_group(failures))) == 1


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(("Unauthorized", "Forbidden", "Conflict")), st.sampled_from(KINDS),
       st.randoms(use_true_random=False))
def test_two_bugs_that_differ_only_in_a_constant_word_are_two_groups(
    other: str, kind: str, rng: random.Random,
) -> None:
    failures = []
    for occurrence in range(3 * WORD_VALUES):
        entity = f"e{occurrence}"
        for word in ("Timeout", other):
            value = _value(kind, rng, entity, occurrence)
            failures.append(("RuntimeError", f"upstream said {word} for {value} during sync", _stacks("fetch"), entity))
    rng.shuffle(failures)
    assert len(_roots(_group(failures))) == 2


@pytest.mark.slow
def test_the_issues_four_bugs_are_four_groups() -> None:
    """The four processors of issue 27 over 2,000 entities: 103 groups before, 4 now."""
    failures = []
    for n in range(2000):
        d, m = n % 28 + 1, n % 60
        for error_type, message, place in (
            ("KeyError", repr(f"sku_{n}"), "lookup"),
            ("ConnectionError", f"connect to 10.0.{n % 256}.{n % 7}:443 timed out after {n / 13:.2f}s "
                                f"(trace {uuid.UUID(int=n * 7919)})", "connect"),
            ("ValueError", f"invalid email 'user{n}@example{n % 9}.com' for account #{n} "
                           f"(hash {n * 2654435761 % 2**32:08x})", "validate"),
            ("RuntimeError", f"Order ORD-{n:06d} for tenant acme_{n % 50} failed: status={n % 3 + 500} "
                             f"at 2024-01-{d:02d}T10:{m:02d}:00Z", "order"),
        ):
            failures.append((error_type, message, _stacks(place), f"e{n}"))
    assert len(_roots(_group(failures))) == 4


def test_names_become_one_group_once_enough_differ_while_reason_phrases_stay_apart() -> None:
    names = ["Acme Corp", "Globex", "Initech", "Umbrella Inc", "Hooli", "Stark Industries"]
    failures = [("LookupError", f"company {name} not found", _stacks("find"), "e") for name in names]
    reasons = ["401 Unauthorized", "404 Not Found", "403 Forbidden"] * 20
    failures += [("httpx.HTTPStatusError", f"Client error '{r}' for url 'https://api.x.com/v2/c/{i}'",
                  _stacks("fetch"), f"e{i}") for i, r in enumerate(reasons)]
    fams = _group(failures)
    roots = {k.key: k for family in fams.known.values() for k in family if k.root is None}
    templates = sorted(" ".join(k.tokens) for k in roots.values())
    assert "company <*> not found" in templates
    assert sum(t.startswith("Client error") for t in templates) == 3


def test_the_place_is_the_users_frames_without_line_numbers() -> None:
    """Same message, same function at another line: one family; another function: another."""
    a = fingerprint("ValueError", "bad", _stacks("parse"))
    moved = TraceStack("X", "", tuple(TraceFrame(f.filename, f.lineno + 7, f.name, "")
                                      for f in _stacks("parse")[0].frames))
    assert fingerprint("ValueError", "bad", (moved,)).family == a.family
    assert fingerprint("ValueError", "bad", _stacks("load")).family != a.family
    assert fingerprint("KeyError", "bad", _stacks("parse")).family != a.family


def test_a_processor_can_name_the_bug() -> None:
    exc = fingerprint_as(ValueError("anything at all 1"), "vat-number")
    assert exc.chunkq_fingerprint == "vat-number"  # type: ignore[attr-defined]
    failures = [("ValueError", f"totally different text {w}", _stacks(p), "e")
                for w, p in (("alpha", "a"), ("beta", "b"), ("gamma", "c"))]
    fams = _Families()
    cache = FingerprintCache()
    keys = {fams.assign(t, cache(t, m, st_, entity_id=e, declared="vat-number")) for t, m, st_, e in failures}
    assert len(keys) == 1


def test_values_and_words() -> None:
    assert [is_variable(t) for t in tokenize("company Acme <n> 'sku_x' deadbeef ab12 Found'")] == [
        False, False, True, True, True, True, False]
    g = generalize(tokenize("Client error '401 Unauthorized' for url"),
                   tokenize("Client error '404 Not Found' for url"))
    assert g.word_stretches == 1 and g.similarity >= 0.5
