"""Reading entity IDs from a file or stdin for `chunkq enqueue`, one line at a time.

The file is never loaded whole: ``IdSource`` is iterated lazily by
``Queue.enqueue_job``, which validates and inserts in batches inside one
transaction, so a million-line file streams through and a bad line anywhere
leaves nothing behind. Every problem is an ``InvalidInput`` that names the file
and the line, because that is what a person needs to fix it.

Bytes are decoded here (as UTF-8, an undecodable byte reported with its line
and column instead of as a traceback), and lines are read with a bound: a line
longer than ``limits.INPUT_LINE_LENGTH`` characters is refused once that many
have been read, so a 300 MB line or ``/dev/zero`` costs a megabyte or so of
memory, not all of it. Line endings are universal: ``\n``, ``\r\n`` and a lone
``\r`` (old Mac exports) each end a line. ``spool_stdin`` copies a pipe to a
temporary file under the same bound and a total size cap.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from typing import IO

from chunkq.core import InvalidInput, clean_entity_id, limits

log = logging.getLogger("chunkq.cli")

FORMATS = ("lines", "csv", "jsonl")
_CORE_PREFIX = re.compile(r"^entity ID #\d+ ")
#: what ``surrogateescape`` makes of a byte that is not UTF-8
_BAD_BYTE = re.compile(r"[\udc80-\udcff]")
STDIN_LIMIT_ENV = "CHUNKQ_STDIN_MAX_BYTES"
_SPOOL_BLOCK = 1 << 20


def too_long(where: str, limit: int) -> InvalidInput:
    return InvalidInput(
        f"{where}: longer than {limit:,} characters (an entity ID is at most {limits.ENTITY_ID_LENGTH:,}); "
        "is this a file of IDs, one a line?")


def stdin_limit() -> int:
    """The stdin spool's cap in bytes: ``CHUNKQ_STDIN_MAX_BYTES``, else ``limits.STDIN_BYTES``."""
    raw = os.environ.get(STDIN_LIMIT_ENV, "").strip()
    if not raw:
        return limits.STDIN_BYTES
    if not (raw.isascii() and raw.isdigit() and int(raw) > 0):
        raise InvalidInput(f"{STDIN_LIMIT_ENV} must be a positive whole number of bytes, got {raw!r:.40}")
    return int(raw)


def spool_stdin(source: IO[bytes], *, max_bytes: int | None = None,
                line_length: int = limits.INPUT_LINE_LENGTH) -> IO[bytes]:
    """``source`` copied to a temporary file (returned at its start), refusing what cannot be IDs.

    Enqueueing holds the database's write transaction while it reads, so a slow
    producer on a pipe must not keep the write lock: the pipe is drained first.
    The copy stops, with the line's number, at a run of more than
    ``line_length * 4`` bytes without a line break (no line of IDs is that long;
    ``/dev/zero`` is), and at ``max_bytes`` in all (``stdin_limit()``).
    """
    cap = stdin_limit() if max_bytes is None else max_bytes
    run_cap = line_length * 4  # UTF-8 needs at most 4 bytes a character
    size = min(_SPOOL_BLOCK, run_cap)  # so no line that starts and ends inside one block can be too long
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open; closed by the caller
    total = run = 0  # run: bytes since the last line break
    line = 1
    after_cr = False  # the previous block ended in CR: a LF starting this one is the same break
    try:
        while block := source.read(size):
            total += len(block)
            if total > cap:
                raise InvalidInput(
                    f"stdin holds more than {cap:,} bytes; save the IDs to a file and pass its path "
                    f"(a file is read in place, not copied), or raise {STDIN_LIMIT_ENV}")
            first = min((i for i in (block.find(b"\n"), block.find(b"\r")) if i >= 0), default=len(block))
            if run + first > run_cap:
                raise too_long(f"stdin, line {line}", line_length)
            last = max(block.rfind(b"\n"), block.rfind(b"\r"))
            run = run + len(block) if last < 0 else len(block) - last - 1
            line += _count_breaks(block, after_cr)
            after_cr = block.endswith(b"\r")
            spool.write(block)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _count_breaks(block: bytes, after_cr: bool) -> int:
    n = block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
    return n - 1 if after_cr and block.startswith(b"\n") else n


class IdSource:
    """The IDs of one input, in one of ``FORMATS``; iterate once.

    ``open()`` reads just enough to catch mistakes before any database work (a
    CSV's header, an unknown ``--column``); iterating yields cleaned IDs.
    """

    def __init__(self, stream: IO[bytes], name: str, fmt: str = "lines", column: str | None = None) -> None:
        if fmt not in FORMATS:
            raise InvalidInput(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if column is not None and fmt == "lines":
            raise InvalidInput("--column applies to --format csv or jsonl, not lines")
        self.stream = stream
        self.name = name
        self.fmt = fmt
        self.column = column
        self.skipped = 0  # blank CSV cells and blank lines, reported after the fact
        self._lineno = 0
        self._lines = self._decoded_lines()
        self._csv: Iterator[list[str]] | None = None
        self._csv_index = 0
        self._opened = False

    # ------------------------------------------------------------------ reading

    def _decoded_lines(self) -> Iterator[str]:
        """The input's lines as text, ``\n`` kept (csv needs it for quoted fields), each bounded."""
        limit = limits.INPUT_LINE_LENGTH
        text = io.TextIOWrapper(self.stream, encoding="utf-8", errors="surrogateescape",
                                newline=None)
        try:
            while line := text.readline(limit + 1):
                self._lineno += 1
                if len(line) > limit and not line.endswith("\n"):
                    raise too_long(self.where(), limit)
                if self._lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]  # a UTF-8 byte-order mark, as Excel writes
                if not line.isascii() and (bad := _BAD_BYTE.search(line)) is not None:
                    column = len(line[:bad.start()].encode("utf-8", "surrogateescape")) + 1
                    raise InvalidInput(
                        f"{self.where()}: byte 0x{ord(bad.group()) - 0xDC00:02x} at column {column} "
                        "is not valid UTF-8 (save the file as UTF-8)"
                    )
                yield line
        finally:
            with contextlib.suppress(ValueError):  # already closed by its owner
                text.detach()  # the caller closes the stream it opened, not this wrapper

    def where(self, lineno: int | None = None) -> str:
        return f"{self.name}, line {self._lineno if lineno is None else lineno}"

    def open(self) -> IdSource:
        """Read a CSV header (and check ``--column``) before anything is written."""
        if self._opened:
            return self
        self._opened = True
        if self.fmt == "csv":
            self._csv = csv.reader(self._lines)
            try:
                header = next(self._csv)
            except StopIteration:
                raise InvalidInput(f"{self.name} is empty: no CSV header, no IDs") from None
            except csv.Error as exc:
                raise InvalidInput(f"{self.where()}: not valid CSV ({exc})") from None
            names = [h.strip() for h in header]
            shown = ", ".join(repr(n) for n in names)
            if self.column is None:
                if len(names) != 1:
                    raise InvalidInput(
                        f"{self.name} has {len(names)} columns ({shown}); pick one with --column NAME")
                self._csv_index = 0
            elif self.column.strip() in names:
                self._csv_index = names.index(self.column.strip())
            else:
                raise InvalidInput(f"{self.name} has no column {self.column!r}; its columns are {shown}")
        return self

    def __iter__(self) -> Iterator[str]:
        self.open()
        if self.fmt == "lines":
            return self._iter_lines()
        if self.fmt == "csv":
            return self._iter_csv()
        return self._iter_jsonl()

    def _clean(self, value: str, lineno: int) -> str:
        try:
            return clean_entity_id(value, lineno)
        except InvalidInput as exc:
            raise InvalidInput(f"{self.where(lineno)}: the ID {_CORE_PREFIX.sub('', str(exc))}") from None

    def _iter_lines(self) -> Iterator[str]:
        for line in self._lines:
            value = line.strip()
            if value:
                yield self._clean(value, self._lineno)

    def _iter_csv(self) -> Iterator[str]:
        assert self._csv is not None
        reader = self._csv
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise InvalidInput(f"{self.where()}: not valid CSV ({exc})") from None
            if not row:
                continue  # a blank line
            value = row[self._csv_index].strip() if self._csv_index < len(row) else ""
            if not value:
                self.skipped += 1
                continue
            yield self._clean(value, self._lineno)
        if self.skipped:
            log.warning("%s: skipped %d row(s) with an empty ID cell", self.name, self.skipped)

    def _iter_jsonl(self) -> Iterator[str]:
        for line in self._lines:
            text = line.strip()
            if not text:
                continue
            n = self._lineno
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(
                    f"{self.where(n)}: not valid JSON ({exc.msg}, column {exc.colno})") from None
            if isinstance(value, dict):
                if self.column is None:
                    raise InvalidInput(
                        f"{self.where(n)}: is a JSON object; say which key holds the ID with --column KEY")
                if self.column not in value:
                    keys = ", ".join(repr(k) for k in list(value)[:20]) or "none"
                    raise InvalidInput(f"{self.where(n)}: no key {self.column!r} (its keys: {keys})")
                value = value[self.column]
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)  # numeric IDs are common and unambiguous
            if not isinstance(value, str):
                shown = json.dumps(value)[:40]
                raise InvalidInput(
                    f"{self.where(n)}: the ID must be a JSON string, got {type(value).__name__} {shown}")
            yield self._clean(value, n)
