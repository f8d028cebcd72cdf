"""Message templates: which words of a failure's message are the bug and which are the case (issue 27).

Regex rules (``fingerprint.normalize_message``) know the variable parts someone
thought of: numbers, IDs, URLs, addresses, times. The next processor's message
has others (``tenant acme_11``, a hash that happened to draw no digit, a
company name). So the rules only *prepare* a message; what is variable is
learnt from the messages themselves, one place in the code at a time, the way
log-template miners such as Drain do it:

- A message is a list of tokens (split at white space). A token with a digit
  or a placeholder of the rules, a quoted single word, or a run of 8+ hex
  letters (a hash that drew no digit: ``deadbeef``) is a *value*
  (``is_variable``); the others are words. A template keeps a token while it is
  the same in every message (``upstream 500 for <id>``) and makes it ``<*>`` as
  soon as one differs (below): the rules' kinds (``<n>``, ``<hex>``, ``<str>``)
  can disagree about one value, and one bug must not split on that.
- Failures of one *family* (same exception type, same frames of the user's
  code: ``fingerprint.py``) keep a few templates. A message joins a template
  when every constant token of the template is in it, in order, and every
  ``<*>`` covers what is left (``match``).
- Otherwise the most similar template is generalised (``generalize``: the
  longest common token sequence, every differing stretch made one ``<*>``),
  when enough of the two agree (``SIMILAR``: the share of constant words they
  have in common) and
  * the differing stretches differ only in values (a number, an ID): at once;
  * a stretch of plain words differs (``Acme Corp`` / ``Globex``;
    ``Unauthorized`` / ``Not Found``): only once ``WORD_VALUES`` different
    templates would fit the generalised one. A name takes many values, a reason
    phrase or an enum a few; so ``company Acme Corp not found`` and
    ``company Globex not found`` become one group once five companies failed,
    while ``401 Unauthorized`` and ``404 Not Found`` raised by the same
    ``raise_for_status()`` stay two. The templates that fit are merged into
    the biggest (``Decision.merged``): the grouped view adds them up.
- A family keeps at most ``FAMILY_MAX`` templates: past that a message joins
  the most similar one whatever it says, so the state stays small.

Pure functions on token tuples: ``error_groups.py`` keeps the state in the
database and calls ``decide`` inside the transaction that logs the errors.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["FAMILY_MAX", "SIMILAR", "WILD", "WORD_VALUES", "Decision", "Known", "decide", "generalize", "matches",
           "render", "tokenize"]

WILD = "<*>"
#: distinct templates a word position must take before it counts as variable (see the module docstring)
WORD_VALUES = 5
#: share of constant words two messages must have in common to be one template
SIMILAR = 0.5
#: templates kept per family
FAMILY_MAX = 64
#: most similar templates tried for a word that varies (each try reads the family once)
_WORD_TRIES = 8
#: tokens of a message read (a long message's tail is one more stretch, not hundreds of tokens)
TOKENS_MAX = 200

_PLACEHOLDER = re.compile(r"<(?:[a-z]{1,5}|\*)>")
_DIGIT = re.compile(r"[0-9]")
_HEX_WORD = re.compile(r"[0-9a-fA-F]{8,}")
_EDGE = re.compile(r"^([^A-Za-z0-9_<>]*)(.*?)([^A-Za-z0-9_<>]*)$", re.DOTALL)
_SEPARATORS = "=:/#-_.,;()[]{}'\"`"  # where a value's constant prefix or suffix may end (status=<*>, acme_<*>)
_QUOTED_WORD = re.compile(r"""^(['"`])[^\s'"`]+\1$""")


def tokenize(normalized: str) -> tuple[str, ...]:
    """The message's tokens (split at white space, at most ``TOKENS_MAX``)."""
    return tuple(normalized.split()[:TOKENS_MAX])


@functools.lru_cache(maxsize=8192)
def is_variable(token: str) -> bool:
    """A value rather than a word of the message: it differs from one failure to the next without making
    another bug (a number, an ID, a placeholder of the rules, a quoted word, a hash)."""
    if token == WILD or _DIGIT.search(token) or _PLACEHOLDER.search(token):
        return True
    if _QUOTED_WORD.match(token.rstrip(".,;:!?)]}")):
        return True  # 'email', 'sku_x': which key was missing is the case; where it was looked up is the bug
    m = _EDGE.match(token)
    return bool(m and _HEX_WORD.fullmatch(m.group(2)))


def render(tokens: Sequence[str]) -> str:
    return " ".join(tokens)


@dataclass(frozen=True, slots=True)
class Generalized:
    tokens: tuple[str, ...]
    similarity: float
    word_stretches: int  # stretches of plain words that differ (need WORD_VALUES templates to become <*>)
    changed: bool  # the template itself had to change
    word_positions: tuple[int, ...] = ()  # the wildcards of ``tokens`` that stand for those words


def generalize(template: Sequence[str], message: Sequence[str]) -> Generalized:
    """The template that fits both, and how alike they are (``SIMILAR``) and why they differ.

    Two alignments are tried when the two are as long as each other: the longest common token
    sequence (``difflib``), and position by position (as Drain compares messages of one length).
    The first alone can pair the wrong runs: ``a a <n> a a <n>`` and ``a a <hex> a a <n>`` share the
    run ``a a <n>`` at two offsets, and aligned on it they looked half alike, with words that differ
    at both ends, so one bug made two groups whenever a hex ID happened to draw only digits. The
    alignment that keeps more words in common wins."""
    sm = difflib.SequenceMatcher(None, template, message, autojunk=False)
    found = _generalized(template, message, sm.get_opcodes())
    if len(template) == len(message) and found.changed:
        n = len(template)
        by_position = _generalized(template, message, [
            ("equal" if template[i] == message[i] else "replace", i, i + 1, i, i + 1) for i in range(n)])
        if (by_position.similarity, -by_position.word_stretches) > (found.similarity, -found.word_stretches):
            return by_position
    return found


def _generalized(template: Sequence[str], message: Sequence[str],
                 opcodes: Sequence[tuple[str, int, int, int, int]]) -> Generalized:
    out: list[tuple[str, bool]] = []  # (token, a wildcard for words that differ)
    common = stretches = 0
    changed = False
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            out.extend((t, False) for t in template[i1:i2])
            common += sum(1 for t in template[i1:i2] if not is_variable(t))
            continue
        left, right = template[i1:i2], message[j1:j2]
        if len(left) == len(right) and all(_fits(a, b) for a, b in zip(left, right, strict=True)):
            out.extend((t, False) for t in left)  # "(<*>)" takes "(<hex>)"
            continue
        words = False
        if left and all(t == WILD for t in left):
            pass  # a wildcard of the template takes it
        else:
            changed = True
            if [t for t in left if not is_variable(t)] != [t for t in right if not is_variable(t)]:
                stretches += 1  # words differ ("Unauthorized" / "Not Found"), not only values
                words = True
        if len(left) == 1 and len(right) == 1:
            out.append((_wild_token(left[0], right[0]), words))
        else:
            out.append((WILD, words))
    total = sum(1 for t in template if not is_variable(t)) + sum(1 for t in message if not is_variable(t))
    similarity = 1.0 if total == 0 else 2 * common / total
    merged: list[tuple[str, bool]] = []
    for t, words in out:  # a wildcard next to a wildcard is one
        if t == WILD and merged and merged[-1][0] == WILD:
            merged[-1] = (WILD, merged[-1][1] or words)
        else:
            merged.append((t, words))
    positions = tuple(i for i, (_t, words) in enumerate(merged) if words)
    return Generalized(tuple(t for t, _w in merged), similarity, stretches, changed, positions)


def values_at(template: Sequence[str], message: Sequence[str]) -> dict[int, tuple[str, ...]]:
    """What each wildcard of ``template`` takes in ``message`` (which fits it), by the wildcard's index."""
    found: dict[int, tuple[str, ...]] = {}
    if len(template) == len(message) and all(_fits(t, m) for t, m in zip(template, message, strict=True)):
        return {i: (m,) for i, (t, m) in enumerate(zip(template, message, strict=True)) if t == WILD}
    sm = difflib.SequenceMatcher(None, template, message, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for i in range(i1, i2):
                if template[i] == WILD:
                    found[i] = (WILD,)
            continue
        wild = [i for i in range(i1, i2) if template[i] == WILD]
        if len(wild) == 1:
            found[wild[0]] = tuple(message[j1:j2])
    return found


@functools.lru_cache(maxsize=4096)
def _pattern(token: str) -> re.Pattern[str]:
    return re.compile(".+?".join(re.escape(part) for part in token.split(WILD)), re.DOTALL)


def _fits(template_token: str, token: str) -> bool:
    if WILD not in template_token:
        return template_token == token
    return _pattern(template_token).fullmatch(token) is not None


def _common(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _wild_token(a: str, b: str) -> str:
    """One token for two that differ: ``<*>``, with the punctuation both have around it kept (``(<*>)``)."""
    head = a[:_common(a, b)]
    rest_a, rest_b = a[len(head):][::-1], b[len(head):][::-1]
    tail = rest_a[:_common(rest_a, rest_b)][::-1]
    head = head[:max((head.rfind(c) + 1 for c in _SEPARATORS), default=0)]
    cut = [i for i in (tail.find(c) for c in _SEPARATORS) if i >= 0]
    tail = tail[min(cut):] if cut else ""
    if WILD in head or WILD in tail or (not head and not tail):
        return WILD
    return head + WILD + tail


def matches(template: Sequence[str], message: Sequence[str]) -> bool:
    """The message fits the template as it is."""
    if tuple(template) == tuple(message):
        return True
    if WILD not in template:
        return False
    return not generalize(template, message).changed


@dataclass(slots=True)
class Known:
    """One template of a family, as ``decide`` reads and changes it."""

    key: str
    tokens: tuple[str, ...]
    n: int = 0  # failures logged with it
    root: str | None = None  # the group it was merged into, if it was
    specificity: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.specificity = -sum(1 for t in self.tokens if t == WILD)


def _retemplate(g: Generalized, k: Known) -> Decision:
    k.tokens = g.tokens
    k.specificity = -sum(1 for t in g.tokens if t == WILD)
    return Decision(k, generalized=True)


@dataclass(slots=True)
class Decision:
    """What ``decide`` did: the template the message joined, and the templates it changed."""

    joined: Known
    created: bool = False  # a new template (a bug not seen at this place before)
    generalized: bool = False  # ``joined``'s tokens changed
    merged: list[Known] = field(default_factory=list)  # templates now merged into ``joined``


def decide(family: list[Known], message: tuple[str, ...], new_key: str, *, force: bool = False) -> Decision:
    """Where a message of this family goes; ``family`` is updated in place.

    ``new_key`` names the template made when the message fits none. With
    ``force`` (the processor named the bug itself) every message joins the
    family's one template, which generalises to fit.
    """
    fitting = [k for k in family if matches(k.tokens, message)]
    if fitting:  # the most specific template that fits: a split-off (unmerged) one wins over the generic one
        return Decision(max(fitting, key=lambda k: (k.specificity, k.n)))
    ranked = sorted(((generalize(k.tokens, message), k) for k in family),
                    key=lambda gk: (gk[0].similarity, gk[0].word_stretches == 0, gk[1].n), reverse=True)
    if ranked and (force or len(family) >= FAMILY_MAX):
        return _retemplate(*ranked[0])
    alike = [(g, k) for g, k in ranked if g.similarity >= SIMILAR]
    for g, k in alike:
        if g.word_stretches == 0:
            return _retemplate(g, k)  # only values differ: at once
    for g, _k in alike[:_WORD_TRIES]:
        siblings = [k for k in family if matches(g.tokens, k.tokens)]
        if len(siblings) + 1 < WORD_VALUES:
            continue
        taken = [values_at(g.tokens, k.tokens) for k in siblings] + [values_at(g.tokens, message)]
        if any(len({v.get(p) for v in taken}) < WORD_VALUES for p in g.word_positions):
            continue  # a word that takes a few values here (a reason phrase, an enum) is part of the bug
        survivor = max(siblings, key=lambda k: (k.root is None, k.n, k.key))
        _retemplate(g, survivor)
        merged = [k for k in siblings if k is not survivor and k.root is None]
        for k in merged:
            k.root = survivor.root or survivor.key
        return Decision(survivor, generalized=True, merged=merged)
    known = Known(new_key, message)
    family.append(known)
    return Decision(known, created=True)
