"""Reading entity IDs from a file or stdin for `chunkq enqueue`, one line at a time.

The file is never loaded whole: ``IdSource`` is iterated lazily by
``Queue.enqueue_job``, which validates and inserts in batches inside one
transaction, so a million-line file streams through and a bad line anywhere
leaves nothing behind. Every problem is an ``InvalidInput`` that names the file
and the line, because that is what a person needs to fix it.

Bytes are decoded here (strictly, as UTF-8) rather than by Python's text layer,
so an undecodable byte is reported with its line instead of as a traceback.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterator
from typing import IO

from chunkq.core import InvalidInput, clean_entity_id

log = logging.getLogger("chunkq.cli")

FORMATS = ("lines", "csv", "jsonl")
_CORE_PREFIX = re.compile(r"^entity ID #\d+ ")


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
        """The input's lines as text, newline kept (csv needs it for quoted fields)."""
        for raw in self.stream:
            self._lineno += 1
            if self._lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as Excel writes
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"{self.where()}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                    "is not valid UTF-8 (save the file as UTF-8)"
                ) from None

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
