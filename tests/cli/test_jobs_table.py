"""`chunkq jobs` on a terminal of any width: which job is which stays readable (ID, name, status first).

Rich shrank every column to fit: at 80 columns with a tenant a name was three letters a line, at 40
the ID and name columns were gone. In-process (click's CliRunner), the width set through COLUMNS as a
terminal's would be.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from click.testing import Result

NAME = "job number 30 with a long name indeed"


@pytest.fixture
def on_a_terminal(cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch) -> Callable[[int], str]:
    from chunkq.tui.cli import output

    assert cli("enqueue", "-", "-t", "company", "-p", "clearbit", "--name", NAME, "--tenant", "acme-corp",
               input="a\nb\n").exit_code == 0
    assert cli("enqueue", "-", "-t", "person", "-p", "pdl", input="c\n").exit_code == 0
    monkeypatch.setattr(output, "stdout_is_tty", lambda: True)

    def jobs(width: int) -> str:
        monkeypatch.setenv("COLUMNS", str(width))
        shown = cli("jobs")
        assert shown.exit_code == 0, shown.stderr
        assert all(len(line) <= width for line in shown.stdout.splitlines()), shown.stdout
        return shown.stdout

    return jobs


def _header(table: str) -> list[str]:
    return [cell.strip() for cell in table.splitlines()[0].split("┃")]


def _names(table: str) -> str:
    """The Name column's lines joined: a long name folds onto several."""
    return " ".join(" ".join(line.split("│")[1].split()) for line in table.splitlines()[2:] if "│" in line)


@pytest.mark.parametrize("width", [40, 60, 80])
def test_a_narrow_terminal_keeps_id_name_status_and_progress_and_says_what_it_left_out(
    on_a_terminal: Callable[[int], str], width: int,
) -> None:
    table = on_a_terminal(width)
    header = _header(table)
    assert header[:2] == ["ID", "Name"] and "Status" in header and "Progress" in header, table
    assert all(len(cell) > 1 and "…" not in cell for cell in header), "no header cut or split"
    assert NAME in _names(table), "the whole name, folded at word boundaries"
    assert "Tenant" not in header and re.search(r"Tenant[^\n]* left out at \d+ columns", table.replace("\n", " "))


def test_a_wide_terminal_shows_every_column_and_leaves_nothing_out(on_a_terminal: Callable[[int], str]) -> None:
    table = on_a_terminal(200)
    assert _header(table) == ["ID", "Name", "Type", "Provider", "Status", "Progress", "Failed", "Waiting", "Prio",
                              "Updated", "Tenant"]
    assert NAME in _names(table) and "left out" not in table
