"""Text from user code made storable: what a callback or a provider says is kept, never refused.

Input from people is validated at the boundary (``bounds.py``: refused, with a
reason). Text produced *while processing* - an exception's message, a
traceback, a local's repr, a provider's error string - cannot be refused: it is
the record of what went wrong. So it is made storable instead, the same way on
both backends: a lone surrogate (what ``surrogateescape`` makes of undecodable
bytes) cannot be encoded as UTF-8, and PostgreSQL refuses NUL in text and JSON.
Both become visible backslash escapes, so the stored text still says what was
there.
"""

from __future__ import annotations

import re

#: NUL and lone surrogates: the characters one backend or the other cannot store
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch)
    if code == 0:
        return "\\x00"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for the undecodable byte 0x80-0xFF
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def storable(text: object) -> str:
    """``text`` as a string both backends store and give back unchanged.

    NUL becomes ``\\x00``; a byte ``surrogateescape`` smuggled in becomes ``\\xNN``;
    any other lone surrogate ``\\udNNN``. Text without them is returned as is.
    """
    if not isinstance(text, str):
        text = safe_str(text)
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub(_escape, text)


def safe_str(value: object) -> str:
    """``str(value)``, or ``<unprintable T>`` when its ``__str__`` raises (or returns garbage)."""
    try:
        text = str(value)
    except BaseException:  # any failure of user code here means "unprintable"
        return f"<unprintable {_type_label(value)}>"
    return text if type(text) is str else str.__str__(text)  # a str subclass: plain text from here on


def safe_repr(value: object) -> str:
    """``repr(value)``, or ``<repr failed: E>`` when it raises."""
    try:
        text = repr(value)
    except BaseException as exc:  # a local's repr is user code
        return f"<repr failed: {_type_label(exc)}>"
    return text if type(text) is str else str.__str__(text)


def _type_label(value: object) -> str:
    try:
        return str(type(value).__name__)
    except BaseException:  # a metaclass can break even this
        return "object"
