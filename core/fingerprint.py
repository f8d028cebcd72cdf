"""Error fingerprints: which failures are the same bug.

Longer than 500 lines: the normalisation rules are one ordered table, with the frame filter.

Since issue 27 this module prepares a failure and ``error_groups.py`` decides
its group when it is logged: ``Fingerprint.family`` is where it happened (the
type and the user's own frames, ``file.py:function`` outermost first, no line
numbers, library and chunkq frames left out: ``user_frames``), or the name a
processor gave the bug (``fingerprint_as`` / the ``chunkq_fingerprint``
attribute: every failure so named is one group); ``tokens`` is the message,
normalised by the rules below, for the template miner (``templates.py``), which
learns per family which words vary. The rules alone (``Fingerprint.key``) are
no longer what groups: they met the next processor's message and split it.
What follows describes them, as the first step.

The error log is read one group at a time, so a group must be what an operator
calls "one problem". Grouping by the exact message fails on every real provider:
``upstream 500 for s-000011`` and ``upstream 500 for s-000069`` are one outage,
yet two groups. Two failures are the same bug here when they share

- the exception type;
- where it was raised in the user's code: the innermost frame that is not a
  library's (site-packages, dist-packages, the standard library, chunkq's own
  machinery), as ``file.py:function``. No line number, so editing the file above
  the ``raise`` does not split a group; the file's base name, not its path, so
  two workers running the same code from different folders agree;
- the message with its variable parts replaced by placeholders.

Message rules (``normalize_message``), each for a reason:

- ``<id>``: the entity's own ID, as is, lower-cased or URL-encoded. Not when it is
  one character, two letters, or all digits: ``1``, ``a`` or ``to`` would hit
  unrelated text ("line 1") and split one bug by entity; numbers become ``<n>``
  anyway. Two characters with a digit (``a1``) are replaced.
- ``<uuid>``; ``<hex>`` (``0x…``, addresses, SHAs: hex runs of 7+ with a digit
  and a letter); ``<ref>`` (opaque tokens of 8+ mixing letters and digits:
  ``req_<ref>``, ``org-<ref>``; after a prefix, 8+ digits too); ``user<n>`` (letters then 4+ digits).
- ``<n>``: numbers, decimals, versions; a size keeps its unit (``<n>MB``,
  ``<n>%``); a duration is ``<dur>``, since its unit varies with its value
  ("try again in 120ms", "in 1.5s").
- ``<ts>`` ISO dates and clock times (a date, a space and a time are two),
  ``<ip>`` IPv4 and IPv6 (``::1`` stays), ``<email>``.
- Kept, because they name the failure rather than the case: ``[Errno 111]``;
  ``utf-8``, ``HTTP/1.1``; HTTP status codes (1xx-5xx after ``status``,
  ``HTTP``, ``code``, ``error``, ``upstream``, ``returned``, ``got``,
  ``response``, or before a reason phrase as in ``404 Not Found``). A 404 (bad
  data: skip it), a 429 (slow down) and a 500 (the provider is down) call for
  different actions, and there are few codes, so keeping them costs a handful of
  groups: ``upstream 500`` and ``upstream 502`` are two groups.
- URLs and paths keep their scheme, host, port and static segments (letters,
  ``-`` and ``_``; versions like ``v2``; a file name's extension); other
  segments (IDs, numbers, domains, e-mails, encoded text) become ``<seg>``,
  query values ``<val>``, credentials ``<user>``. A slug of letters only
  (``john-smith``) cannot be told from a static segment and stays, unless it is
  the entity's ID.
- A quoted word: a value after ``:`` or ``=`` becomes ``'<str>'``
  (``int() with base 10: 'abc'``) unless it reads as a code
  (``'rate_limit_exceeded'``, ``host='api.x.com'``); a path or URL is
  normalised as above; otherwise a name stays (``KeyError: 'email'``,
  ``no attribute 'x'``, constraint ``"users_pkey"``): the name is the bug, and
  ``'email'`` vs ``'phone'`` are two. Another word with variable parts becomes
  ``'<str>'``. Quoted prose (a nested exception's message) is no value: the
  rules apply inside it, so ``'... [Errno 111] Connection refused'`` keeps what
  failed.

Normalising is idempotent (a normalised message normalises to itself), which the
rules are shaped for: a replacement keeps the kind of character at its edges (a
placeholder's ``<`` and ``>`` count as word characters), never adds or drops a
space or a quote, and the context a rule reads (the ``status`` before a 500) is
never text an earlier rule replaced. Only the first 2,000 characters are read
and at most 2,000 returned, so a megabyte-long message costs what a short one
does. The key hashes the rules' ``VERSION`` too: a change of rules never mixes
old keys with new ones silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import string
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from .models import TraceFrame, TraceStack

__all__ = [
    "ATTRIBUTE", "MAX_CHARS", "VERSION", "Fingerprint", "FingerprintCache", "declared", "family_of", "fingerprint",
    "fingerprint_as", "is_library_file", "normalize_message", "user_frame", "user_frames",
]

#: bump when a rule changes: stored keys from another version must be recomputed, never compared
VERSION = 1
#: characters of a message read, and the longest normalised message returned
MAX_CHARS = 2000

_PH = r"<[a-z]{1,5}>"  # a placeholder, as one unit inside URLs and paths
_E = r"(?![A-Za-z0-9_<])"  # a token ends here; a placeholder's "<" counts as a word character (see _START)
_URLCH = rf"(?:[^\s'\"<>()\[\]{{}}\\|^`]|{_PH})"
_HEXD = "[0-9a-fA-F]"
_REASON = (  # first words of HTTP reason phrases: "404 Not Found", "503 Service Unavailable"
    "Not|Server|Client|Internal|Service|Too|Bad|Gateway|Forbidden|Unauthorized|Conflict|Unprocessable|Payment|"
    "Method|Request|Precondition|Gone|Moved|Found|See|Temporary|Permanent|OK|Created|Accepted|No|Partial|Length|"
    "Unsupported|Expectation|Locked|Failed|Upgrade|Network|Insufficient|Misdirected|Range|Proxy|Payload|URI|"
    "Continue|Switching|Multiple|Variant|Loop|Im"
)
_UNIT = r"(?:ms|us|µs|ns|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|bytes?|[kmgtp]i?b|px|s|m|h|d|b|x)"

# What a message has, checked in a few cheap scans: each rule below needs one of these, and is left out of the
# regex for a message without it (alternatives that cannot match still cost a try at every character).
_DIGIT, _AT, _SCHEME, _DASH, _COLON, _BRACKET, _QUOTE, _SLASH, _WINDOWS = (1 << i for i in range(9))
_HAS_DIGIT = re.compile(r"[0-9]")

#: (name, pattern, what it needs), highest priority first: at one position the first rule that matches wins.
#: Every rule starts a token (``_START``, checked once per position): most positions are inside a word and cost
#: one step. Possessive quantifiers (``*+``) keep a failed try from scanning a word twice.
_RULES: tuple[tuple[str, str, int], ...] = (
    ("url", rf"[A-Za-z][A-Za-z0-9+.-]*+://{_URLCH}+", _SCHEME),
    ("email", rf"[A-Za-z0-9][A-Za-z0-9._%+-]*+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]*[A-Za-z0-9])+{_E}", _AT),
    ("uuid", rf"{_HEXD}{{8}}-{_HEXD}{{4}}-{_HEXD}{{4}}-{_HEXD}{{4}}-{_HEXD}{{12}}{_E}", _DASH),
    # dates and times, never across a space: only a quoted value may drop one (see "quoted")
    ("ts", r"(?:\d{4}-\d\d-\d\d(?:T\d\d:\d\d(?::\d\d(?:[.,]\d+)?)?)?|\d{1,2}:\d\d:\d\d(?:[.,]\d+)?)"
           rf"(?:Z|[+-]\d\d:?\d\d)?{_E}", _DIGIT),
    ("ip4", r"(?<!\.)(?:\d{1,3}\.){3}\d{1,3}(?![A-Za-z0-9_<]|\.[A-Za-z0-9_<])", _DIGIT),
    # IPv6 from a hex digit to a hex digit ("::1" stays): a rule must start and end where a word would
    ("ip6", rf"(?=[0-9a-fA-F]{{1,4}}:)(?=[0-9a-fA-F:]*::|(?:{_HEXD}{{1,4}}:){{7}})"
            rf"{_HEXD}{{1,4}}(?::{_HEXD}{{0,4}}){{1,7}}(?<=[0-9a-fA-F])(?![A-Za-z0-9_<:])", _COLON),
    ("errno", r"\[(?:Errno|WinError) -?\d+\]", _BRACKET),
    # quoted text on one line, with no other quote inside: no rule adds or drops a quote or a space outside a
    # quoted value, so quotes pair up the same way when a normalised message is normalised again
    ("quoted", rf"(?:'[^'\"`\n]*+'|\"[^'\"`\n]*+\"|`[^'\"`\n]*+`){_E}", _QUOTE),
    ("path", rf"(?<![./~:-])(?:~|\.\.?)?/{_URLCH}+", _SLASH),
    ("winpath", rf"[A-Za-z]:\\(?:[^\s'\"<>()\[\]{{}}|^`:*?]|{_PH})+", _WINDOWS),
    ("hex", rf"0[xX]{_HEXD}++(?![A-Za-z0-9_<])", _DIGIT),
    ("num", rf"(?<!\.)\d++(?:[.,]\d++)*+(?:[eE][-+]?\d++)?(?:(?i:{_UNIT}){_E}|%|{_E})(?![.,][A-Za-z0-9_<])", _DIGIT),
    ("token", rf"[A-Za-z_]*+\d[A-Za-z0-9_]*+{_E}", _DIGIT),
)
#: a token starts here (a placeholder's ">" counts as a word character), with a character some rule starts with
_START = r"(?<![A-Za-z0-9_>])(?=[A-Za-z0-9_'\"`\[~./])"
_SIMPLE = {"uuid": "<uuid>", "ts": "<ts>", "ip4": "<ip>", "ip6": "<ip>", "email": "<email>", "hex": "<hex>"}
#: a quoted value of more words is a sentence, not a value ('about 50' and 'Ann Smith' are values)
_VALUE_WORDS = 3
_TIME_UNITS = frozenset(
    ["ms", "us", "µs", "ns", "s", "sec", "secs", "second", "seconds", "m", "min", "mins", "minute", "minutes",
     "h", "hr", "hrs", "hour", "hours", "d", "day", "days"]
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:[eE][-+]?\d+)?")
_STATUS_BEFORE = re.compile(
    r"(?<![A-Za-z0-9>])(?:status[ _]code|status|http(?:/\d(?:\.\d)?)?|code|error|upstream|returned|got|response"
    r"|responded with)[ :=]+$",
    re.IGNORECASE | re.ASCII,
)
_REASON_AFTER = re.compile(rf" (?:{_REASON})(?=[ \t\n,;)\]'\"]|[.:](?:\s|$)|$)")
_VERSION_BEFORE = re.compile(r"(?<![A-Za-z0-9])(?:(?:utf|iso|latin|windows|ucs)(?:-\d+)*-|https?/)$", re.I | re.A)
_ONLY_PLACEHOLDERS = re.compile(rf"(?:{_PH})*")
_PLACEHOLDER = re.compile(_PH)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_STATIC_SEGMENT = re.compile(r"[A-Za-z_-]+|v\d+(?:\.\d+)*(?:[a-z]+\d*)?|[A-Za-z]+\d")
_EXTENSION = re.compile(r"[A-Za-z][A-Za-z0-9]{0,7}")
_WEB_FILES = frozenset(
    ["html", "htm", "json", "xml", "csv", "txt", "js", "css", "php", "asp", "aspx", "jsp", "pdf", "png", "jpg", "jpeg",
     "gif", "svg", "ico"]
)
_PATHLIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|~?\.{0,2}/|[A-Za-z]:\\")
_TRAILING = ".,;:!?"
_IPV4 = re.compile(r"(?:\d{1,3}\.){3}\d{1,3}")
_SEP = re.compile(r"[/\\]")
_TOKEN = re.compile(r"((?:[A-Za-z][A-Za-z0-9]*_)*)([A-Za-z0-9]+)")
_LETTERS_NUMBER = re.compile(r"([A-Za-z]+)\d{4,}")
_HEX_RUN = re.compile(r"[0-9a-fA-F]+")
_ALNUM = re.compile(r"[A-Za-z0-9]")
_ALNUM_OR_PH = re.compile(r"[^\W_]|<")
_EDGES = re.compile(r"([^A-Za-z0-9_<>]*)(.*?)([^A-Za-z0-9_<>]*)", re.DOTALL)
_DROP_DIGITS = str.maketrans("", "", "0123456789")


def normalize_message(message: str, *, entity_id: str | None = None) -> str:
    """``message`` with its variable parts as placeholders (rules in the module docstring)."""
    if not isinstance(message, str):
        message = str(message)
    cut = MAX_CHARS
    while True:
        text = message[:cut]
        if entity_id:
            text = _replace_entity(text, entity_id)
        out = _normalize(text)
        if len(out) <= MAX_CHARS:
            return out
        # placeholders made it longer (at most ~3x): read less, so normalising the result reads all of it
        cut = max(0, min(cut - 1, cut * MAX_CHARS // len(out)))


@functools.lru_cache(maxsize=2048)  # a provider that is down repeats one message (its ID made <id>) again and again
def _normalize(text: str) -> str:
    mask = _DIGIT if _HAS_DIGIT.search(text) else 0
    for bit, needle in _NEEDLES:
        if needle in text:
            mask |= bit
    if "'" in text or '"' in text or "`" in text:
        mask |= _QUOTE
    rules = _compiled(mask)
    if rules is None:
        return text
    changed_until = 0  # where the last replaced match ended: a rule reading context must not look behind it

    def replace(m: re.Match[str]) -> str:
        nonlocal changed_until
        out = _replace(m, changed_until)
        if out != m.group():
            changed_until = m.end()
        return out

    return rules.sub(replace, text)


_NEEDLES = (
    (_AT, "@"), (_SCHEME, "://"), (_DASH, "-"), (_COLON, ":"), (_BRACKET, "["), (_SLASH, "/"), (_WINDOWS, ":\\"),
)


@functools.lru_cache(maxsize=1 << len(_RULES))
def _compiled(mask: int) -> re.Pattern[str] | None:
    """The rules a message with these features can need, as one regex (a handful of masks occur in practice)."""
    parts = [f"(?P<{name}>{pattern})" for name, pattern, need in _RULES if need & mask]
    return re.compile(f"{_START}(?:{'|'.join(parts)})", re.ASCII) if parts else None


def _replace(m: re.Match[str], floor: int) -> str:
    kind = m.lastgroup or ""
    simple = _SIMPLE.get(kind)
    if simple is not None:
        return simple
    if kind == "num":
        return _number(m, floor)
    if kind == "token":
        return _token(m.group())
    if kind == "quoted":
        return _quoted(m)
    if kind == "errno":
        return m.group()  # "[Errno 111]" names the failure
    # a URL or a path: the regex takes trailing punctuation that is the sentence's, not the URL's
    text = m.group()
    body = text.rstrip(_TRAILING)
    tail = text[len(body) :]
    if kind == "url":
        return _url(body) + tail
    if kind == "winpath":
        drive, *segments = body.split("\\")
        return "\\".join([drive, *(_segment(s, url=False) for s in segments)]) + tail
    return _path(body, url=False) + tail


def _number(m: re.Match[str], floor: int) -> str:
    """``<n>``, but an HTTP status or a part of a name stays; the words that say so must not have been replaced
    (text before ``floor`` was, and normalising again would not see them)."""
    text, s, start = m.group(), m.string, m.start()
    window = max(floor, start - 24)
    number = _NUMBER.match(text).group()  # type: ignore[union-attr]  # text is a match that starts with a number
    unit = text[len(number) :]
    if (
        not unit
        and len(number) == 3
        and number.isdigit()
        and number[0] in "12345"
        and (start == 0 or _STATUS_BEFORE.search(s, window, start) or _REASON_AFTER.match(s, m.end()))
    ):
        return text  # an HTTP status: "upstream 500", "404 Not Found", "404, message='Not Found'" (aiohttp)
    if start and _VERSION_BEFORE.search(s, window, start):
        return text  # part of a name: utf-8, ISO-8859-1, HTTP/1.1
    if unit.lower() in _TIME_UNITS:
        return "<dur>"  # "try again in 120ms" and "in 1.5s": the unit varies with the value
    return "<n>" + unit


def _quoted(m: re.Match[str]) -> str:
    text = m.group()
    q, content = text[0], text[1:-1]
    inner = _normalize(content)
    if _PATHLIKE.match(inner):
        return q + inner + q  # a file or URL: normalised as one
    start, s = m.start(), m.string
    before = s[max(0, start - 2) : start]
    if before.rstrip()[-1:] in (":", "=") and before[-1:] in (" ", ":", "="):  # a value: "base 10: 'abc'"
        if _NAME.fullmatch(inner) and ("_" in inner or "." in inner):
            return q + inner + q  # a code: 'rate_limit_exceeded', host='api.x.com'
        if len(inner.split()) > _VALUE_WORDS:
            return q + inner + q  # a sentence ('message': 'Rate limit reached for ...'): read inside it
        return f"{q}<str>{q}"
    if any(c.isspace() for c in inner) or _ONLY_PLACEHOLDERS.fullmatch(inner) or _NAME.fullmatch(inner):
        return q + inner + q  # prose (a nested message: '... [Errno 111] Connection refused'), or a name ('email')
    if not _ALNUM_OR_PH.search(inner):
        return q + inner + q  # punctuation: "Expecting ',' delimiter"
    return f"{q}<str>{q}"


def _token(text: str) -> str:
    """A word with digits in it: an opaque ID, a hex run, or a name like ``sha256`` that stays."""
    if len(text) < 5:
        return text  # v2, utf8, sha1, ipv6: too short to be an ID
    if len(text) >= 7 and _HEX_RUN.fullmatch(text) and not text.isdigit():
        return "<hex>"
    m = _TOKEN.fullmatch(text)
    if m is None:
        return text
    prefix, body = m.groups()
    letters = len(body.translate(_DROP_DIGITS))
    digits = len(body) - letters
    lm = _LETTERS_NUMBER.fullmatch(body)
    if lm is not None:
        return prefix + lm.group(1) + "<n>"  # user12345, s000011
    if len(body) >= 8 and letters and digits >= (1 if prefix else 2) and (letters >= 2 or prefix):
        return prefix + "<ref>"
    if prefix and len(body) >= 8 and body.isdigit():
        # a reference that happened to draw only digits (req_00012345 beside req_0000d889): one bug, one group
        return prefix + "<ref>"
    if body.isdigit() and len(body) >= 3 and prefix:
        return prefix + "<n>"
    return text


@functools.lru_cache(maxsize=1024)  # the same few URLs, again and again
def _url(text: str) -> str:
    scheme, rest = text.split("://", 1)
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    _, at, hostport = authority.rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if hostport.count(":") != 1:
        host, colon, port = hostport, "", ""
    if _IPV4.fullmatch(host):
        host = "<ip>"
    return f"{scheme}://{'<user>@' if at else ''}{host}{colon}{port}{_path(path, url=True)}"


def _path(text: str, *, url: bool) -> str:
    text, hash_, fragment = text.partition("#")
    text, qmark, query = text.partition("?")
    out = "/".join(_segment(s, url=url) for s in text.split("/"))
    if qmark:
        out += "?" + "&".join(_query_item(item) for item in query.split("&"))
    if hash_:
        out += "#" + _segment(fragment, url=url)
    return out


def _query_item(item: str) -> str:
    key, eq, value = item.partition("=")
    if not eq:
        return _segment(item, url=True)
    return f"{key}={_variable(value, '<val>')}"


def _segment(seg: str, *, url: bool) -> str:
    if seg.isalpha() and seg.isascii():
        return seg  # the common case, a word: "v1/people"
    rest = _PLACEHOLDER.sub("", seg) if "<" in seg else seg
    if rest in (".", "..") or _STATIC_SEGMENT.fullmatch(rest):
        return seg
    stem, dot, ext = seg.rpartition(".")
    if dot and _EXTENSION.fullmatch(ext) and (not url or ext.lower() in _WEB_FILES):
        return _segment(stem, url=url) + "." + ext  # the file's kind stays: "<seg>.json"
    return _variable(seg, "<seg>")


def _variable(text: str, placeholder: str) -> str:
    """``text`` as ``placeholder``, punctuation at its edges kept (the next rule reads them), unless it has no
    letter or digit outside placeholders (then it is already normalised, or punctuation)."""
    rest = _PLACEHOLDER.sub("", text) if "<" in text else text
    if not _ALNUM.search(rest):
        return text
    lead, _, trail = _EDGES.fullmatch(text).groups()  # type: ignore[union-attr]  # the pattern matches any text
    return lead + placeholder + trail


_ID_EDGES = string.punctuation + string.whitespace
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]+")


def _replace_entity(text: str, entity_id: str) -> str:
    """The entity's own ID as ``<id>``, where it stands as a whole token, in any letter case."""
    ident = entity_id.strip(_ID_EDGES)
    # two characters are enough when one is a digit ("a1", "x9": no English word); two letters ("to", "us")
    # would hit the prose around them
    if len(ident) < (2 if any(c.isdigit() for c in ident) else 3) or ident.isdigit() or "<" in ident or ">" in ident:
        return text
    variants = {ident}
    if not _URL_SAFE.fullmatch(ident):  # the encoded forms differ from the ID only when it has such characters
        for encode in (functools.partial(quote, safe=""), quote, quote_plus):
            try:
                variants.add(encode(ident, errors="surrogatepass"))
            except (UnicodeError, TypeError):  # a lone surrogate in the ID: its plain form is enough
                pass
    for variant in sorted(variants, key=len, reverse=True):
        text = _replace_whole(text, variant)
    return text


def _replace_whole(text: str, needle: str) -> str:
    hay = text.lower()
    if len(hay) == len(text) and len(needle.lower()) == len(needle):
        needle = needle.lower()  # lower-casing kept every index where it is: search the lower-cased copy
    else:
        hay = text
    if needle not in hay:
        return text
    parts, pos = [], 0
    check_start, check_end = _wordish(needle[0]), _wordish(needle[-1])
    while (i := hay.find(needle, pos)) >= 0:
        j = i + len(needle)
        if (check_start and i > 0 and _wordish(text[i - 1])) or (check_end and j < len(text) and _wordish(text[j])):
            parts.append(text[pos : i + 1])
            pos = i + 1
            continue
        parts.append(text[pos:i])
        parts.append("<id>")
        pos = j
    parts.append(text[pos:])
    return "".join(parts)


def _wordish(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c in "_<>")


# --------------------------------------------------------------------------- where it was raised

_LIBRARY_PARTS = re.compile(r"[/\\](?:site|dist)-packages[/\\]|[/\\]lib[/\\]python\d+(?:\.\d+)?[/\\]", re.IGNORECASE)
_CORE_DIR = os.path.dirname(os.path.abspath(__file__))
#: chunkq's machinery (core, tui) is no one's bug location; its demo processor plays the user's part
_OWN_DIRS = (_CORE_DIR + os.sep, os.path.join(os.path.dirname(_CORE_DIR), "tui") + os.sep)
_OWN_USER_CODE = os.path.join(_CORE_DIR, "demo.py")
_STDLIB_DIRS = tuple(
    {
        os.path.join(path, "")
        for key in ("stdlib", "platstdlib")
        if (p := sysconfig.get_paths().get(key))
        for path in (p, os.path.realpath(p))
    }
)


@functools.lru_cache(maxsize=4096)
def is_library_file(filename: str) -> bool:
    """True for code the user did not write: installed packages, the standard library, chunkq itself."""
    if filename.startswith("<"):
        return filename.startswith("<frozen")  # "<string>", "<stdin>": the user's own code, run by hand
    if _LIBRARY_PARTS.search(filename) or filename.startswith(_STDLIB_DIRS):
        return True
    return filename.startswith(_OWN_DIRS) and filename != _OWN_USER_CODE


def _last_frames(stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None) -> Sequence[Any]:
    """The frames of the exception raised (the last stack), or none for stored data from a broken writer."""
    if not stacks or not isinstance(stacks, Sequence):
        return ()
    last = stacks[-1]
    if isinstance(last, TraceStack):
        frames: Any = last.frames
    else:
        frames = last.get("frames") if isinstance(last, Mapping) else None
    if not isinstance(frames, Sequence) or isinstance(frames, str):
        return ()  # stored data from an older or broken writer: no frame, rather than no error log
    return frames


def _user_places(frames: Sequence[Any]) -> list[str]:
    """``file.py:function`` of each frame of the user's code, outermost first."""
    out = []
    filename: str | None
    name: str | None
    for frame in frames:
        if isinstance(frame, TraceFrame):
            filename, name = frame.filename, frame.name
        elif isinstance(frame, Mapping):
            filename, name = frame.get("filename"), frame.get("name")
        else:
            continue
        if isinstance(filename, str) and filename and not is_library_file(filename):
            out.append(f"{_SEP.split(filename)[-1]}:{name if isinstance(name, str) else '?'}")
    return out


def user_frame(stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None) -> str | None:
    """``file.py:function`` of the innermost non-library frame of the exception raised (the last stack)."""
    places = _user_places(_last_frames(stacks))
    return places[-1] if places else None


#: the user's frames a family is told apart by, innermost first: deep recursion or a long call chain above
#: the failing code does not make every depth a bug of its own
FRAMES_KEPT = 8


def user_frames(stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    """The user's own frames of the exception raised, ``file.py:function``, outermost first (at most
    ``FRAMES_KEPT``, the innermost). No line numbers: an edit above the ``raise`` splits nothing."""
    return tuple(_user_places(_last_frames(stacks))[-FRAMES_KEPT:])


#: the attribute a processor sets on an exception to say which bug it is (``fingerprint_as``)
ATTRIBUTE = "chunkq_fingerprint"
_USER_MAX = 200


def fingerprint_as(exc: BaseException, name: str) -> BaseException:
    """Say which bug ``exc`` is: every failure given the same ``name`` is one group, whatever its type,
    place or message. Returns ``exc``, so ``raise fingerprint_as(ValueError(...), "bad-vat-number")`` reads."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a fingerprint is a non-empty string, got {name!r}"[:200])
    setattr(exc, ATTRIBUTE, name)
    return exc


def declared(exc: BaseException) -> str | None:
    """The fingerprint a processor set on ``exc`` (``fingerprint_as``, or the attribute by hand), if any."""
    try:
        value = getattr(exc, ATTRIBUTE, None)
    except Exception:  # a broken __getattr__
        return None
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text.strip()[:_USER_MAX] or None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What groups a failure: ``key`` to index and compare, the rest to show.

    ``family`` is where it happened (type and user frames, or the name a
    processor gave it) and ``tokens`` its message prepared for templates
    (``templates.py``): the group an error row is stored under is decided from
    these when it is written (``error_groups.record``), since it depends on the
    job's earlier failures.
    """

    key: str  # 16 hex characters: type, innermost user frame and normalised message
    normalized: str  # the message with placeholders
    where: str | None  # "file.py:function" in the user's code, None when every frame is a library's
    family: str = ""
    tokens: tuple[str, ...] = ()
    declared: bool = False  # the processor named the bug: the family's one template takes every message

    def template_key(self) -> str:
        """The key of a new group for this failure: its family and its template, hashed."""
        return self.family if self.declared else _hash(("t", str(FAMILY_VERSION), self.family, " ".join(self.tokens)))


#: bump when a family or template rule changes
FAMILY_VERSION = 2


def family_of(error_type: str, frames: Sequence[str], name: str | None) -> str:
    """16 hex characters: a declared name alone, else the type and the user's frames."""
    if name is not None:
        return _hash(("declared", name))
    return _hash(("f", str(FAMILY_VERSION), error_type, *frames))


def _hash(parts: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()


def _complete(error_type: str, key: str, normalized: str, where: str | None,
              stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None, name: str | None) -> Fingerprint:
    from .templates import tokenize

    family = family_of(error_type, user_frames(stacks), name)
    return Fingerprint(key=key, normalized=normalized, where=where, family=family, tokens=tokenize(normalized),
                       declared=name is not None)


def fingerprint(
    error_type: str,
    message: str,
    stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None,
    *,
    entity_id: str | None = None,
    declared: str | None = None,
) -> Fingerprint:
    """The failure's fingerprint: same type, same user frame and same normalised message, same key."""
    normalized = normalize_message(message, entity_id=entity_id)
    where = user_frame(stacks)
    return _complete(error_type, _key(error_type, where, normalized), normalized, where, stacks, declared)


def _key(error_type: str, where: str | None, normalized: str) -> str:
    return _hash((str(VERSION), error_type, where or "", normalized))


class FingerprintCache:
    """``fingerprint`` for a batch of failures (a chunk's), normalising each distinct failure once.

    A chunk of 50 entities failing alike logs 50 messages that differ only by
    the entity's ID: with the ID replaced first (``_replace_entity``, a plain
    search), they are one key here, normalised and hashed once.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, tuple[str, ...], str | None, str], Fingerprint] = {}

    def __call__(
        self, error_type: str, message: str,
        stacks: Sequence[TraceStack] | Sequence[Mapping[str, Any]] | None, *, entity_id: str | None = None,
        declared: str | None = None,
    ) -> Fingerprint:
        if not isinstance(message, str):
            message = str(message)
        places = tuple(_user_places(_last_frames(stacks))[-FRAMES_KEPT:])
        where = places[-1] if places else None
        head = message[:MAX_CHARS]
        templated = _replace_entity(head, entity_id) if entity_id else head
        cache_key = (error_type, places, declared, templated)
        found = self._seen.get(cache_key)
        if found is None:
            normalized = _normalize(templated)  # normalize_message's first (and nearly always only) step
            if len(normalized) > MAX_CHARS:  # placeholders made it longer than the cap: the full rule
                normalized = normalize_message(message, entity_id=entity_id)
            found = _complete(error_type, _key(error_type, where, normalized), normalized, where, stacks, declared)
            self._seen[cache_key] = found
        return found
