"""Untrusted text on screen: the dashboard and the CLI's human output show it plain and inert.

A job name like ``[/x] weekly import`` or a provider's message like
``GET [/v2/companies/acme.com] returned 502`` used to crash the dashboard
(``MarkupError``) and leave it with exit status 0; an ``ESC ] 2 ;`` sequence in a
name retitled the operator's terminal, and ``ESC [31m`` in a message came out
raw in the Activity log. Here such text is seeded everywhere it can be shown
(names, entity types, providers, IDs, messages, tracebacks, params, a fail
reason, toasts, the header) and every screen is walked: nothing crashes, and no
control character, C1 code or bidi override reaches the rendered screen (the
exported screenshot) or the CLI's tables, TSV, log lines and one-line errors,
while ``--json`` keeps the text exact.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import select
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from chunkq.core import JobFailed, Processor, Queue
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens import job_actions
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.humanize import printable
from textual.widgets import Input, TextArea

from tests.cli.helpers import CHUNKQ, run_chunkq
from tests.dashboard.conftest import NEVER, fixed_clock, settle

OSC_TITLE = "\x1b]2;pwned\x07"
RED = "\x1b[31m"
#: text that must never reach a terminal raw: C0 (bar \n in a multi-line view), DEL, C1, bidi controls
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
NAME = f"[/x] weekly import {OSC_TITLE}\u202eevil 👩\u200d👩\u200d👧"
MESSAGE = f"GET [/v2/companies/{{}}] returned 502 {RED}red{OSC_TITLE} [b]bold\x9b مرحبا"
IDS = ["acme.com", "[/x]id", "e[b]mo👩\u200d👩\u200d👧", "ok-1"]


def provider_error(entity_id: str, job: object) -> None:
    if entity_id != "ok-1":
        raise ValueError(MESSAGE.format(entity_id))


def job_failed(entity_id: str, job: object) -> None:
    raise JobFailed(f"401 {RED}revoked{OSC_TITLE} [/x]")


async def seed_nasty(url: str) -> tuple[int, int]:
    """Two jobs: one with nasty errors and params, one failed with a nasty reason; then names that
    could only be stored before enqueue checked them (an old row), written directly."""
    async with Queue(url) as q:
        a = await q.enqueue_job(IDS, entity_type="co[/t]", provider="p[/y]\u202e", name="placeholder",
                                params={"header": f"X-{RED}[b]", "nested": [OSC_TITLE]})
        await q.process_chunk(a.id, Processor(on_process=provider_error))
        b = await q.enqueue_job(["z1", "z2"], entity_type="person", provider="hunter", name="second")
        await q.process_chunk(b.id, Processor(on_process=job_failed))
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE chunkq_jobs SET name = ? WHERE id = ?", (NAME, a.id))
        db.execute("UPDATE chunkq_jobs SET name = ?, provider = ? WHERE id = ?", (f"{RED}b\x9b", "[/p]", b.id))
    return a.id, b.id


def assert_inert(app: ChunkqApp, where: str) -> str:
    """Nothing raw on screen, the dashboard alive; returns the screenshot for more checks."""
    assert app._exception is None, f"{where}: {app._exception!r}"
    svg = app.export_screenshot()
    found = sorted(set(RAW.findall(svg)))
    assert not found, f"{where}: raw characters on screen: {found!r}"
    return svg


async def pump(pilot: Any, app: ChunkqApp, until: Any = None, wait: float = 10.0) -> None:
    """Settle, and again until ``until()`` holds (at most ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        await settle(pilot)
        if until is None or until() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


@pytest.fixture
def nasty_processor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "nasty_proc.py").write_text(textwrap.dedent(f'''
        def process(entity_id, job):
            if entity_id != "ok-1":
                raise ValueError({MESSAGE!r}.format(entity_id))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "nasty_proc:process"
    sys.modules.pop("nasty_proc", None)


@pytest.mark.slow
async def test_every_dashboard_screen_shows_nasty_text_plain(sqlite_url: str, nasty_processor: str) -> None:
    a, b = await seed_nasty(sqlite_url)
    app = ChunkqApp(sqlite_url, processor=nasty_processor, refresh_interval=NEVER, clock=fixed_clock)
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        await pump(pilot, app, lambda: len(app.jobs_screen.table.jobs) == 2)  # type: ignore[union-attr]
        svg = assert_inert(app, "jobs")
        assert "[/x]" in svg.replace("&#91;", "[")  # shown, not parsed
        # the header's sub-title, and toasts (notify would parse markup)
        app.sub_title = NAME
        app.notify(MESSAGE, title=NAME)
        await pump(pilot, app)
        assert_inert(app, "notify")
        assert all(not n.markup and not RAW.search(n.message + n.title) for n in app._notifications)
        # a step over the nasty job: Activity log lines quote entity IDs and provider messages
        await pilot.press("s")
        await pump(pilot, app, lambda: app.stepping is None)
        assert_inert(app, "activity")
        # the job's detail: title, errors, grouped errors, traceback, chunks, fields (params)
        table = app.jobs_screen.table  # type: ignore[union-attr]
        table.move_cursor(row=table.get_row_index(str(a)))
        await pilot.press("enter")
        await pump(pilot, app, lambda: isinstance(app.screen, JobDetailScreen) and app.screen.loads > 0)
        svg = assert_inert(app, "detail")
        assert "\\x1b]2;pwned" in svg, "the escape sequence should be shown escaped"
        await pilot.press("shift+tab")  # the grouped errors table
        await pilot.press("enter")  # narrow the log to one group: its caption quotes the message
        await pump(pilot, app, lambda: app.screen.error_filter is not None)  # type: ignore[attr-defined]
        assert_inert(app, "group chosen")
        for tab in ("2", "3"):
            await pilot.press(tab)
            await pump(pilot, app)
            assert_inert(app, f"tab {tab}")
        await pilot.press("escape", "escape")
        await pump(pilot, app)
        # the failed job: its fail reason in the row and the cancel dialog quoting its name
        table.move_cursor(row=table.get_row_index(str(b)))
        await pilot.press("p")  # failed: not pausable; the refusal is a toast
        await pump(pilot, app)
        table.move_cursor(row=table.get_row_index(str(a)))
        # Job a is complete: "c" refuses with a toast (this used to wait 10 s for a dialog that never
        # opens); the dialog quoting the name is then opened as "c" opens it on an unfinished job.
        await pilot.press("c")
        await pump(pilot, app, lambda: any("nothing to cancel" in n.message for n in app._notifications))
        assert_inert(app, "cancel refused")
        chosen = app.jobs_screen.selected_job()  # type: ignore[union-attr]
        assert chosen is not None and chosen.id == a
        app.push_screen(job_actions.cancel_from_list(chosen))
        await pump(pilot, app, lambda: isinstance(app.screen, ConfirmScreen))
        assert isinstance(app.screen, ConfirmScreen)
        assert_inert(app, "cancel dialog")
        shown = str(app.screen.query_one("#dialog-message").render())
        assert "[/x] weekly import" in shown and not RAW.search(shown)  # the name, shown, not parsed
        await pilot.press("escape")
        await pump(pilot, app)
        await pilot.press("question_mark")
        await pump(pilot, app, lambda: isinstance(app.screen, HelpScreen))
        assert_inert(app, "help")
        await pilot.press("escape")
        await pump(pilot, app)
    assert app._exception is None and not app.return_code


@pytest.mark.slow
async def test_enqueue_form_notification_with_brackets_does_not_crash(sqlite_url: str) -> None:
    """``job 1 enqueued: … for p[/y]`` went through ``notify``, which parses markup."""
    app = ChunkqApp(sqlite_url, refresh_interval=NEVER, clock=fixed_clock)
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pump(pilot, app, lambda: isinstance(app.screen, EnqueueScreen))
        form = app.screen
        form.query_one("#entity-type", Input).value = "co[/t]"
        form.query_one("#provider", Input).value = "p[/y]"
        form.query_one("#name", Input).value = "[/x] weekly import"
        form.query_one("#ids", TextArea).text = "[/a]\n[b]b\n"
        await pilot.press("ctrl+s")
        await pump(pilot, app, lambda: not isinstance(app.screen, EnqueueScreen))
        assert_inert(app, "after enqueue")
        assert any("p[/y]" in n.message for n in app._notifications)
        jobs = await app.queue.list_jobs()
        assert [(j.name, j.provider) for j in jobs] == [("[/x] weekly import", "p[/y]")]
    assert app._exception is None


@pytest.mark.slow
@pytest.mark.parametrize(("box", "text", "names"), [
    ("#name", f"weekly {OSC_TITLE}", "name contains a control character"),
    ("#provider", "p\x9b", "provider contains a control character"),
    ("#entity-type", "co\udcff", "entity_type is not valid UTF-8"),
    ("#ids", f"ok\nbad{RED}\n", "entity ID #2 contains a control character"),
])
async def test_enqueue_form_refuses_unstorable_text_and_shows_why_plainly(
    db_url: str, box: str, text: str, names: str,
) -> None:
    app = ChunkqApp(db_url, refresh_interval=NEVER, clock=fixed_clock)
    async with app.run_test(size=(160, 45), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await pump(pilot, app, lambda: isinstance(app.screen, EnqueueScreen))
        form = app.screen
        form.query_one("#entity-type", Input).value = "company"
        form.query_one("#provider", Input).value = "clearbit"
        form.query_one("#ids", TextArea).text = "a\nb\n"
        if box == "#ids":
            form.query_one("#ids", TextArea).text = text
        else:
            form.query_one(box, Input).value = text
        await pilot.press("ctrl+s")
        await pump(pilot, app)
        assert isinstance(app.screen, EnqueueScreen), "the form must stay open"
        shown = str(form.query_one(f"{box}-error").render())
        assert names in shown, shown
        # what the operator typed stays in its box as typed (Textual's Input draws it); the rest is inert
        if box == "#ids":
            form.query_one("#ids", TextArea).text = ""
        else:
            form.query_one(box, Input).value = ""
        await pump(pilot, app)
        assert_inert(app, "form error")
        assert await app.queue.count_jobs() == 0
    assert app._exception is None


# ---------------------------------------------------------------------- `chunkq tui` exits non-zero on a crash


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path, *, timeout: float = 60,
               size: tuple[int, int] = (45, 160)) -> tuple[int, bytes]:
    """Run ``argv`` on a pseudo-terminal (the dashboard wants one); its exit status and all it wrote."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"},
                            cwd=cwd, start_new_session=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the other side closed
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{argv} did not finish within {timeout}s; it wrote:\n{bytes(out)[-2000:]!r}")
    finally:
        os.close(master)
    return proc.wait(timeout=10), bytes(out)


CRASHING_LAUNCHER = '''
import sys
from chunkq.tui.dashboard.app import ChunkqApp
from chunkq.tui.dashboard.screens.jobs import JobsScreen

async def boom(self):
    raise RuntimeError("boom [/x] in the jobs screen \x1b]2;pwned\x07")

JobsScreen.on_mount = boom  # an unexpected error while the dashboard runs
from chunkq.tui.cli import main
sys.argv = ["chunkq", "--db", sys.argv[1], "tui"]
main()
'''


@pytest.mark.slow
def test_a_crashing_dashboard_exits_non_zero_and_says_why(sqlite_url: str, python_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    asyncio.run(seed_nasty(sqlite_url))
    (tmp_path / "launch.py").write_text(CRASHING_LAUNCHER)
    code, out = run_in_pty([sys.executable, "launch.py", sqlite_url], python_env, tmp_path)
    text = out.decode(errors="replace")
    assert code == 1, f"exit status {code}; output:\n{text[-3000:]}"
    assert "the dashboard stopped on an unexpected RuntimeError: boom [/x] in the jobs screen" in text
    assert b"\x1b]2;pwned" not in out, "the crash's message reached the terminal raw"


# ---------------------------------------------------------------------- the CLI's human output


@pytest.fixture
def nasty_cli_db(sqlite_url: str) -> tuple[str, int, int]:
    a, b = asyncio.run(seed_nasty(sqlite_url))
    return sqlite_url, a, b


def assert_no_raw(data: str, where: str) -> None:
    found = sorted(set(RAW.findall(data.replace("\t", " "))))
    assert not found, f"{where}: raw characters in the output: {found!r}"


@pytest.mark.slow
@pytest.mark.parametrize("args", [["jobs"], ["show", "{a}"], ["show", "{b}"], ["errors", "{a}"]])
def test_cli_tables_and_tsv_escape_control_characters(
    nasty_cli_db: tuple[str, int, int], python_env: dict[str, str], tmp_path: Path, args: list[str],
) -> None:
    url, a, b = nasty_cli_db
    argv = ["--db", url, *(x.format(a=a, b=b) for x in args)]
    tsv = run_chunkq(argv, python_env, tmp_path)  # stdout is a pipe: TSV
    assert tsv.returncode == 0, tsv.stderr
    assert_no_raw(tsv.stdout, f"TSV of {args}")
    assert "\\x1b" in tsv.stdout  # shown, escaped
    code, out = run_in_pty([*CHUNKQ, *argv], python_env, tmp_path, size=(50, 250))  # a terminal: Rich tables
    assert code == 0, out
    text = out.decode()
    for raw in (OSC_TITLE[:-1], RED + "red", RED + "b", "\x9b", "\u202e"):
        assert raw not in text, f"{args}: {raw!r} reached the terminal"
    assert "\\x1b" in text


@pytest.mark.slow
def test_cli_json_keeps_the_text_exact(nasty_cli_db: tuple[str, int, int], python_env: dict[str, str],
                                       tmp_path: Path) -> None:
    url, a, b = nasty_cli_db
    jobs = json.loads(run_chunkq(["--db", url, "--json", "jobs"], python_env, tmp_path).stdout)["jobs"]
    assert {j["id"]: j["name"] for j in jobs} == {a: NAME, b: f"{RED}b\x9b"}
    errors = json.loads(run_chunkq(["--db", url, "--json", "errors", str(a)], python_env, tmp_path).stdout)
    assert {e["message"] for e in errors["errors"]} == {MESSAGE.format(i) for i in IDS if i != "ok-1"}


@pytest.mark.slow
@pytest.mark.parametrize("args", [["errors", "{a}", "--format", "csv"], ["errors", "{a}", "--format", "jsonl"],
                                  ["--json", "errors", "{a}"], ["--json", "jobs"], ["--json", "show", "{a}"],
                                  ["errors", "{a}", "--groups"], ["--json", "errors", "{a}", "--groups"]])
def test_cli_exports_and_json_are_inert_on_a_terminal(
    nasty_cli_db: tuple[str, int, int], python_env: dict[str, str], tmp_path: Path, args: list[str],
) -> None:
    """Issue 24: `errors --format csv` wrote a provider's escape sequences raw; JSON (which escapes only
    C0) wrote C1 codes and bidi overrides raw. CSV is escaped like TSV; JSON stays exact, as escapes."""
    url, a, b = nasty_cli_db
    argv = ["--db", url, *(x.format(a=a, b=b) for x in args)]
    piped = run_chunkq(argv, python_env, tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert_no_raw(piped.stdout, f"{args} in a pipe")
    code, out = run_in_pty([*CHUNKQ, *argv], python_env, tmp_path, size=(50, 250))
    assert code == 0, out
    text = out.decode()
    for raw in (OSC_TITLE[:-1], RED + "red", RED + "b", "\x9b", "\u202e"):
        assert raw not in text, f"{args}: {raw!r} reached the terminal"
    expected = {MESSAGE.format(i) for i in IDS if i != "ok-1"}
    if "csv" in args:
        rows = list(csv.DictReader(io.StringIO(piped.stdout)))
        assert {r["message"] for r in rows} == {printable(m, lines=True) for m in expected}
        assert {r["entity_id"] for r in rows} == {printable(i) for i in IDS if i != "ok-1"}
    elif "jsonl" in args:
        assert {json.loads(line)["message"] for line in piped.stdout.splitlines()} == expected  # exact
    elif args[1:2] == ["errors"] and "--groups" not in args:
        assert {e["message"] for e in json.loads(piped.stdout)["errors"]} == expected  # exact
    elif args[1:2] == ["jobs"]:
        assert {j["id"]: j["name"] for j in json.loads(piped.stdout)["jobs"]} == {a: NAME, b: f"{RED}b\x9b"}


@pytest.mark.slow
def test_cli_one_line_errors_and_log_lines_escape_control_characters(
    sqlite_url: str, python_env: dict[str, str], tmp_path: Path,
) -> None:
    (tmp_path / "broken_proc.py").write_text(f"raise RuntimeError({('import failed ' + OSC_TITLE + RED + '[b]')!r})\n")
    r = run_chunkq(["--db", sqlite_url, "process", "--processor", "broken_proc:fn"], python_env, tmp_path)
    assert r.returncode == 2 and "import failed \\x1b]2;pwned\\x07\\x1b[31m[b]" in r.stderr, r.stderr
    assert_no_raw(r.stderr, "one-line error")
    # a log line quoting a file name (a CSV with an empty ID cell logs a warning naming the file)
    name = f"ids{RED}.csv"
    (tmp_path / name).write_text("id\na\n\nb\n,\n")
    r = run_chunkq(["--db", sqlite_url, "enqueue", name, "--format", "csv", "-t", "x", "-p", "y"],
                   python_env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ids\\x1b[31m.csv: skipped 1 row" in r.stderr, r.stderr
    assert_no_raw(r.stderr, "log line")
