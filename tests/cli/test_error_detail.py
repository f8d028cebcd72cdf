"""`chunkq errors JOB --id N`: one error whole, with the callback's captured output (issue 28)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import Result

from tests.cli.helpers import one_line_error

Cli = Callable[..., Result]

# prints a bell, a C1 CSI and Rich markup; the second entity fails without writing anything
NOISY = """
import logging, sys
log = logging.getLogger("provider")
def process(entity_id, job):
    if entity_id == "quiet":
        raise LookupError("no such company: quiet")
    print(f"looked up {entity_id}\\x07 [bold red]loud[/]")
    sys.stderr.write("to stderr \\x9b31m red\\n")
    log.warning("slow answer")
    raise ValueError(f"cannot enrich {entity_id}")
"""
HEADING = "Output (what the callback printed and logged)"


def _failed_job(cli: Cli, write_processor: Callable[[str], str]) -> tuple[int, int, int]:
    """A job whose two entities failed for good: (job id, the noisy one's error id, the quiet one's)."""
    module = write_processor(NOISY)
    created = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--max-attempts", "1",
                  input="a1\nquiet\n")
    assert created.exit_code == 0, created.stderr
    ran = cli("process", "--until-empty", "--processor", f"{module}:process")
    assert ran.exit_code == 0, ran.stderr
    listed = json.loads(cli("errors", "1", "--json").stdout)["errors"]
    ids = {e["entity_id"]: e["id"] for e in listed}
    assert "output" not in listed[0], "a page of the log does not carry the output (see --id)"
    return 1, ids["a1"], ids["quiet"]


def test_errors_id_shows_traceback_and_captured_output_as_plain_text(
    cli: Cli, write_processor: Callable[[str], str]
) -> None:
    job, noisy, quiet = _failed_job(cli, write_processor)
    shown = cli("errors", str(job), "--id", str(noisy))
    assert shown.exit_code == 0, shown.stderr
    text = shown.stdout
    assert "entity\ta1" in text.splitlines()
    assert "ValueError: cannot enrich a1" in text  # the traceback
    assert text.index("Traceback") < text.index(HEADING)
    after = text.split(HEADING, 1)[1]
    # control characters made visible, markup left as it was written
    assert "looked up a1\\x07 [bold red]loud[/]" in after
    assert "to stderr \\x9b31m red" in after
    assert "slow answer" in after
    assert "\x07" not in text and "\x9b" not in text and "\x1b" not in text

    none = cli("errors", str(job), "--id", str(quiet))
    assert none.exit_code == 0, none.stderr
    assert "LookupError: no such company: quiet" in none.stdout
    assert "(none: the callback wrote nothing for this entity)" in none.stdout.split(HEADING, 1)[1]


def test_errors_id_json_has_the_exact_output(cli: Cli, write_processor: Callable[[str], str]) -> None:
    job, noisy, quiet = _failed_job(cli, write_processor)
    doc = json.loads(cli("errors", str(job), "--id", str(noisy), "--json").stdout)
    assert doc["job_id"] == job and doc["error"]["id"] == noisy
    error = doc["error"]
    assert error["entity_id"] == "a1" and error["error_type"] == "ValueError"
    assert "ValueError: cannot enrich a1" in error["traceback"]
    lines = error["output"].splitlines()
    assert lines[0] == "looked up a1\x07 [bold red]loud[/]"  # exact: JSON escapes it, a script gets it back
    assert lines[1] == "to stderr \x9b31m red"
    assert lines[2].endswith("slow answer")
    assert json.loads(cli("--json", "errors", str(job), "--id", str(quiet)).stdout)["error"]["output"] is None


def test_errors_id_on_a_terminal_prints_no_markup(
    cli: Cli, write_processor: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chunkq.tui.cli import output

    job, noisy, _ = _failed_job(cli, write_processor)
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)
    shown = cli("errors", str(job), "--id", str(noisy))
    assert shown.exit_code == 0, shown.stderr
    assert HEADING in shown.stdout
    assert "looked up a1\\x07 [bold red]loud[/]" in shown.stdout
    assert "\x07" not in shown.stdout and "\x9b" not in shown.stdout
    table = cli("errors", str(job))
    assert f"chunkq errors {job} --id ID" in table.stdout  # the table says where the detail is


def test_errors_id_refusals_exit_2(cli: Cli, write_processor: Callable[[str], str]) -> None:
    job, noisy, _ = _failed_job(cli, write_processor)
    other = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", input="z\n")
    assert other.exit_code == 0, other.stderr
    wrong = cli("errors", "2", "--id", str(noisy))
    assert wrong.exit_code == 2
    assert one_line_error(wrong.stderr) == (f"Error: error {noisy} is not one of job 2's (it is job {job}'s: "
                                            f"chunkq errors {job} --id {noisy})")
    missing = cli("errors", str(job), "--id", "4242")
    assert missing.exit_code == 2
    assert "no error with id 4242" in one_line_error(missing.stderr)
    for extra in (["--groups"], ["--format", "csv"], ["--search", "a"], ["--limit", "3"]):
        mixed = cli("errors", str(job), "--id", str(noisy), *extra)
        assert mixed.exit_code == 2, extra
        assert one_line_error(mixed.stderr) == f"Error: --id shows one error: it cannot be combined with {extra[0]}"
    zero = cli("errors", str(job), "--id", "0")
    assert zero.exit_code == 2
