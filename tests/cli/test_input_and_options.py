"""Reading IDs (cli/sources.py) and the processing options' click glue (cli/options.py), without a database."""

from __future__ import annotations

import io
import types
from pathlib import Path

import click
import pytest
from chunkq import core
from chunkq.core import InvalidInput, Processor, ProcessorError, ProcessorOptions, parse_rate
from chunkq.tui.cli import options
from chunkq.tui.cli.options import RATE, build_processor
from chunkq.tui.cli.sources import IdSource


def ids(data: bytes, fmt: str = "lines", column: str | None = None, name: str = "ids.txt") -> list[str]:
    return list(IdSource(io.BytesIO(data), name, fmt, column))


def test_lines_ignore_blank_lines_and_surrounding_whitespace() -> None:
    assert ids(b"\xef\xbb\xbfa\n\n  b \r\n\t\n c\t") == ["a", "b", "c"]


def test_lines_source_is_lazy() -> None:
    """A generator all the way: nothing is read before the queue asks for it."""
    stream = io.BytesIO(b"a\nb\n")
    it = iter(IdSource(stream, "ids.txt"))
    assert isinstance(it, types.GeneratorType)
    assert stream.tell() == 0
    assert next(it) == "a"


def test_invalid_utf8_names_the_line() -> None:
    with pytest.raises(InvalidInput, match=r"ids.txt, line 3: byte 0xff at column 2 is not valid UTF-8"):
        ids(b"a\nb\nc\xff\nd\n")


def test_too_long_id_names_the_file_line_not_the_id_count() -> None:
    with pytest.raises(InvalidInput, match=r"^ids.txt, line 4: the ID is 3,000 characters long"):
        ids(b"a\n\n\n" + b"x" * 3000 + b"\n")


def test_csv_column_and_header() -> None:
    data = b'name,domain\nAcme,acme.com\n"Big, Inc",big.com\nNo domain,\n'
    assert ids(data, "csv", "domain") == ["acme.com", "big.com"]
    assert ids(b"domain\na.com\nb.com\n", "csv") == ["a.com", "b.com"]


def test_csv_unknown_column_lists_the_columns() -> None:
    src = IdSource(io.BytesIO(b"name,domain\nx,y\n"), "in.csv", "csv", "url")
    with pytest.raises(InvalidInput, match=r"in.csv has no column 'url'; its columns are 'name', 'domain'"):
        src.open()


def test_csv_several_columns_need_column() -> None:
    with pytest.raises(InvalidInput, match=r"2 columns .*--column"):
        IdSource(io.BytesIO(b"a,b\n1,2\n"), "in.csv", "csv").open()


def test_csv_empty_file() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        IdSource(io.BytesIO(b""), "in.csv", "csv").open()


def test_jsonl_strings_objects_and_numbers() -> None:
    assert ids(b'"a"\n\n"b"\n', "jsonl") == ["a", "b"]
    assert ids(b'{"id": "a", "x": 1}\n{"id": 42}\n', "jsonl", "id") == ["a", "42"]


@pytest.mark.parametrize(
    ("data", "column", "message"),
    [
        (b'"a"\n{not json}\n', None, r"line 2: not valid JSON"),
        (b'{"id": "a"}\n', None, r"line 1: is a JSON object; .*--column"),
        (b'{"id": "a"}\n{"name": "b"}\n', "id", r"line 2: no key 'id' \(its keys: 'name'\)"),
        (b'"a"\n[1, 2]\n', None, r"line 2: the ID must be a JSON string, got list"),
        (b'"a"\n3.5\n', None, r"line 2: the ID must be a JSON string, got float"),
    ],
)
def test_jsonl_errors(data: bytes, column: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ids(data, "jsonl", column)


def test_column_with_lines_is_refused() -> None:
    with pytest.raises(InvalidInput, match="--column applies to"):
        IdSource(io.BytesIO(b"a\n"), "ids.txt", "lines", "id")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prospeo=10/s", ("prospeo", 10.0)),
        ("prospeo=30/m", ("prospeo", 0.5)),
        ("prospeo = 7200/h", ("prospeo", 2.0)),
        ("p=2.5", ("p", 2.5)),
        ("clear bit=1/S", ("clear bit", 1.0)),
    ],
)
def test_rate_option_parses_with_cores_parser(text: str, expected: tuple[str, float]) -> None:
    assert RATE.convert(text, None, None) == expected == parse_rate(text)


@pytest.mark.parametrize("text", ["", "prospeo", "=10/s", "p=0/s", "p=-1/s", "p=10/d", "p=ten/s", "p=1/s/s"])
def test_rate_option_rejects_as_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter, match="rate"):
        RATE.convert(text, None, None)


def test_the_cli_keeps_no_option_rules_of_its_own() -> None:
    """Parsing and merging are core's (chunkq.core.options); the CLI had its own copies that drifted."""
    for name in ("parse_rate", "parse_rates", "processor_overrides"):
        assert getattr(options, name, None) in (None, getattr(core, name, None)), name


def test_build_processor_applies_and_merges_overrides() -> None:
    base = build_processor("chunkq.core.demo:processor")
    assert isinstance(base, Processor) and base.concurrency == 8 and base.timeout == 2.0
    proc = build_processor("chunkq.core.demo:processor", ProcessorOptions(
        concurrency=2, timeout=0.5, rate_limits={"clearbit": 5.0}, capture_locals=True))
    assert (proc.concurrency, proc.timeout, proc.capture_locals) == (2, 0.5, True)
    assert proc.rate_limits == {**base.rate_limits, "clearbit": 5.0}
    assert proc.on_process is base.on_process
    assert base.concurrency == 8, "the module's own processor must not be changed in place"


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("", InvalidInput, "no processor"),
        ("nocolon", ProcessorError, "must look like"),
        ("no_such_module_xyz:f", ProcessorError, "no module named 'no_such_module_xyz'"),
        ("chunkq.core.demo:nope", ProcessorError, "has no attribute 'nope'"),
    ],
)
def test_build_processor_errors(path: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build_processor(path)


@pytest.mark.parametrize("args", [
    ["--name", "x\x1b]2;y"],  # a control character in the name
    ["--chunk-size", "0"],
    ["--max-error-ratio", "1.5"],
    ["--processor", "x" * 501],  # a route name longer than any stored
])
def test_a_refused_enqueue_creates_no_database_file(tmp_path: Path, args: list[str]) -> None:
    """Bad settings are refused before the database is opened: no empty file is left behind."""
    from chunkq.tui.cli import cli
    from click.testing import CliRunner

    db = tmp_path / "new.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "enqueue", "-", "-t", "co", "-p", "p", *args], input="a\n")
    assert result.exit_code == 2, result.output
    assert not list(tmp_path.iterdir()), "nothing was created"
