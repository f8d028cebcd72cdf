"""The headless commands pass the callback's own output through to stderr, entity ID first (issue 28)."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import Result

from tests.cli.helpers import get_job

Cli = Callable[..., Result]

NOISY = """
import logging, sys
log = logging.getLogger("provider")
def process(entity_id, job):
    print(f"looked up {entity_id}")
    sys.stderr.write("to stderr\\n")
    log.warning("slow answer")
    print("\\x1b]2;title\\x07 from the provider")
"""


def test_process_json_keeps_stdout_clean_and_prefixes_output_on_stderr(
    cli: Cli, write_processor: Callable[[str], str], db_url: str
) -> None:
    module = write_processor(NOISY)
    created = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", input="a1\nb2\n")
    assert created.exit_code == 0, created.stderr
    result = cli("process", "--json", "--processor", f"{module}:process")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["entities"] == 2, "stdout is the one JSON document"
    err = result.stderr.splitlines()
    for entity in ("a1", "b2"):
        assert f"{entity}: looked up {entity}" in err
        assert f"{entity}: to stderr" in err
        assert any(line.startswith(f"{entity}: ") and line.endswith("slow answer") for line in err)
        # a terminal escape (here: set the window title) is dropped from captured output, echo included
        assert f"{entity}:  from the provider" in err
        assert not any("\x1b" in line or "title" in line for line in err)
    assert "\x1b" not in result.stderr
    assert get_job(db_url, 1).processed_count == 2
