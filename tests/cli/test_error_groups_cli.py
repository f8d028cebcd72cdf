"""`chunkq errors --groups/--group/--search`, `chunkq retry --group [--in-place]` and
`chunkq process --stop-on-new-error [job|processor]` (issues 16, 27), on SQLite and PostgreSQL, in the pipe form."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import Result

from tests.cli.helpers import get_job, one_line_error

Cli = Callable[..., Result]

TWO_BUGS = """
def two_bugs(entity_id, job):
    record(entity_id)
    n = int(entity_id[3:])
    if n % 3 == 0:
        raise LookupError(f"no match for {entity_id} at https://api.example.com/v1/find/{entity_id}")
    if n % 3 == 1:
        raise TimeoutError(f"read timed out after {n}.5s")
"""


def doc(result: Result) -> Any:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _job(cli: Cli, write_processor: Callable[[str], str], n: int = 12, *extra: str) -> tuple[int, str]:
    mod = write_processor(TWO_BUGS)
    data = "".join(f"ent{i}\n" for i in range(n))
    made = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--chunk-size", "3",
               "--max-attempts", "1", *extra, input=data)
    assert made.exit_code == 0, made.stderr
    return int(made.stdout.strip()), mod


def _groups(cli: Cli, job_id: int) -> dict[str, dict[str, Any]]:
    return {g["error_type"]: g for g in doc(cli("errors", str(job_id), "--groups", "--json"))["groups"]}


def test_errors_groups_group_and_search(cli: Cli, write_processor: Callable[[str], str]) -> None:
    job_id, mod = _job(cli, write_processor)
    assert cli("process", "--until-empty", "--processor", f"{mod}:two_bugs", "-q").exit_code == 0
    groups = _groups(cli, job_id)
    assert set(groups) == {"LookupError", "TimeoutError"}
    lookup = groups["LookupError"]
    assert (lookup["message"], lookup["count"], lookup["entities"]) == (
        "no match for <id> at https://api.example.com/v1/find/<id>", 4, 4)
    assert groups["TimeoutError"]["message"] == "read timed out after <dur>"
    assert len(lookup["samples"]) == 3 and lookup["location"].endswith(":two_bugs")
    # the pipe form: a header, then one row per group, biggest first, its key first
    rows = [line.split("\t") for line in cli("errors", str(job_id), "--groups").stdout.splitlines()]
    assert rows[0][:5] == ["group", "error_type", "message", "count", "entities"]
    assert {r[0] for r in rows[1:]} == {lookup["fingerprint"], groups["TimeoutError"]["fingerprint"]}
    # one group's errors, and a search by entity ID or text
    one = doc(cli("errors", str(job_id), "--group", lookup["fingerprint"], "--json"))["errors"]
    assert sorted(e["entity_id"] for e in one) == ["ent0", "ent3", "ent6", "ent9"]
    assert {e["fingerprint"] for e in one} == {lookup["fingerprint"]}
    found = doc(cli("errors", str(job_id), "--search", "ENT9", "--json"))["errors"]
    assert [e["entity_id"] for e in found] == ["ent9"]
    jsonl = cli("errors", str(job_id), "--format", "jsonl", "--search", "timed out").stdout.splitlines()
    assert len(jsonl) == 4
    searched = doc(cli("errors", str(job_id), "--groups", "--search", "api.example", "--json"))["groups"]
    assert [g["fingerprint"] for g in searched] == [lookup["fingerprint"]]
    bad = cli("errors", str(job_id), "--groups", "--group", lookup["fingerprint"])
    assert bad.exit_code == 2 and "--groups" in one_line_error(bad.stderr)
    bad = cli("errors", str(job_id), "--group", "not a\tkey")
    assert bad.exit_code == 2 and "group" in one_line_error(bad.stderr)
    # a key of no group of this job (a typo, another job's): said, in every form, with no header written
    other = groups["TimeoutError"]["fingerprint"][::-1]
    for form in ([], ["--json"], ["--format", "csv"], ["--format", "jsonl"], ["--search", "ent"]):
        bad = cli("errors", str(job_id), "--group", other, *form)
        assert (bad.exit_code, bad.stdout) == (2, ""), form
        assert one_line_error(bad.stderr) == f"Error: job {job_id} has no error group {other}"
    # a group that exists but whose rows the search leaves out is only empty
    none = cli("errors", str(job_id), "--group", lookup["fingerprint"], "--search", "zzz", "--format", "csv")
    assert (none.exit_code, none.stdout.splitlines()[1:]) == (0, [])


def test_retry_one_group_as_a_new_job_or_in_place(
    cli: Cli, db_url: str, write_processor: Callable[[str], str],
) -> None:
    job_id, mod = _job(cli, write_processor)
    assert cli("process", "--until-empty", "--processor", f"{mod}:two_bugs", "-q").exit_code == 0
    groups = _groups(cli, job_id)
    lookup, timeout = groups["LookupError"]["fingerprint"], groups["TimeoutError"]["fingerprint"]
    new = cli("retry", str(job_id), "--group", lookup)
    assert new.exit_code == 0, new.stderr
    assert get_job(db_url, int(new.stdout)).total_count == 4
    requeued = cli("retry", str(job_id), "--group", timeout, "--in-place")
    assert requeued.exit_code == 0, requeued.stderr
    assert requeued.stdout.strip().split("\t") == [str(job_id), "pending", "4"]
    job = get_job(db_url, job_id)
    assert (job.failed_count, job.waiting_count) == (4, 4)  # the other group's entities stay failed
    again = cli("retry", str(job_id), "--group", timeout, "--in-place")
    assert again.exit_code == 2 and "no failed entities in group" in one_line_error(again.stderr)
    # the 4 failed entities left are the lookup group's, which its retry job still holds
    refused = cli("retry", str(job_id))
    assert refused.exit_code == 2
    assert f"already has a retry job waiting: job {new.stdout.strip()} (pending)" in one_line_error(refused.stderr)
    assert cli("cancel", new.stdout.strip()).exit_code == 0
    whole = doc(cli("retry", str(job_id), "--json"))
    assert whole["total_count"] == 4


LATE_BUG = TWO_BUGS + """
def late_bug(entity_id, job):
    if entity_id == "ent10":
        raise KeyError("email")
    two_bugs(entity_id, job)
"""


def test_process_stops_at_the_first_new_kind_of_error(cli: Cli, write_processor: Callable[[str], str]) -> None:
    mod = write_processor(LATE_BUG)
    made = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--chunk-size", "3",
               "--max-attempts", "1", input="".join(f"ent{i}\n" for i in range(15)))
    job_id = int(made.stdout)
    first = doc(cli("process", "--until-empty", "--stop-on-new-error", "--processor", f"{mod}:late_bug", "--json"))
    # the first chunk (ent0-ent2) logged two kinds never seen: it stops there, naming the first
    assert (first["stopped_by"], first["new_error_job"], first["chunks"]) == ("new_error", job_id, 1)
    assert first["new_error"] == _groups(cli, job_id)["LookupError"]["fingerprint"]
    # the same kinds again are no breakpoint; the KeyError of ent10 (fourth chunk) is
    plain = cli("process", "--until-empty", "--stop-on-new-error", "--processor", f"{mod}:late_bug")
    assert plain.exit_code == 0, plain.stderr
    (line,) = plain.stdout.strip().splitlines()
    key = _groups(cli, job_id)["KeyError"]["fingerprint"]
    # (a worker may have claimed the fifth chunk while the fourth committed: that one finishes too)
    assert ("3 chunks" in line or "4 chunks" in line) and "new kind of error" in line
    assert f"chunkq errors {job_id} --group {key}" in line
    rest = doc(cli("process", "--until-empty", "--stop-on-new-error", "--processor", f"{mod}:late_bug", "--json"))
    assert rest["stopped_by"] == "empty" and rest["chunks"] <= 1 and "new_error" not in rest


def test_stop_on_new_error_processor_goes_past_the_bugs_of_yesterdays_job(
    cli: Cli, write_processor: Callable[[str], str],
) -> None:
    """Issue 27: ``--stop-on-new-error processor`` stops only at a kind no job of the processor logged."""
    mod = write_processor(LATE_BUG)
    route = f"{mod}:late_bug"

    def enqueue(n: int) -> int:
        made = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--chunk-size", "3",
                   "--max-attempts", "1", "--processor", route, input="".join(f"ent{i}\n" for i in range(n)))
        assert made.exit_code == 0, made.stderr
        return int(made.stdout)

    yesterday = enqueue(6)  # the LookupError and the TimeoutError, not the KeyError of ent10
    assert cli("process", "--until-empty", "--processor", route, "-q").exit_code == 0
    today = enqueue(15)
    run = doc(cli("process", "--until-empty", "--job", str(today), "--stop-on-new-error", "processor",
                  "--processor", route, "--json"))
    # it went past the first chunk's two kinds (new to this job only) and stopped at the fourth chunk's KeyError
    # (a worker may have claimed the fifth chunk while the fourth committed: that one finishes too)
    assert (run["stopped_by"], run["new_error_job"]) == ("new_error", today) and run["chunks"] in (4, 5)
    assert run["new_error"] == _groups(cli, today)["KeyError"]["fingerprint"]
    assert set(_groups(cli, yesterday)) == {"LookupError", "TimeoutError"}
    # the flag alone is scope job, as before: a fresh job stops at its first chunk
    fresh = enqueue(15)
    first = doc(cli("process", "--until-empty", "--job", str(fresh), "--stop-on-new-error", "--processor", route,
                    "--json"))
    assert first["stopped_by"] == "new_error" and first["chunks"] in (1, 2)
    assert first["new_error"] == _groups(cli, fresh)["LookupError"]["fingerprint"]
    bad = cli("process", "--stop-on-new-error", "tenant", "--processor", route)
    assert bad.exit_code == 2
    assert "'tenant' is not one of 'job', 'processor'" in one_line_error(bad.stderr)


def test_groups_say_the_total_page_and_merge_and_unmerge(cli: Cli, write_processor: Callable[[str], str]) -> None:
    """Issue 27: no silent cap (the total and --offset), and an operator says what one bug is."""
    job_id, mod = _job(cli, write_processor)
    assert cli("process", "--until-empty", "--processor", f"{mod}:two_bugs", "-q").exit_code == 0
    page = doc(cli("errors", str(job_id), "--groups", "--limit", "1", "--json"))
    assert (page["total"], page["limit"], page["offset"], len(page["groups"])) == (2, 1, 0, 1)
    rest = doc(cli("errors", str(job_id), "--groups", "--limit", "1", "--offset", "1", "--json"))
    assert rest["total"] == 2 and rest["groups"][0]["fingerprint"] != page["groups"][0]["fingerprint"]
    groups = _groups(cli, job_id)
    lookup, timeout = groups["LookupError"]["fingerprint"], groups["TimeoutError"]["fingerprint"]
    merged = cli("errors", str(job_id), "--merge", timeout, "--into", lookup)
    assert merged.exit_code == 0, merged.stderr
    assert merged.stdout.strip().split("\t") == [timeout, lookup]
    (one,) = doc(cli("errors", str(job_id), "--groups", "--json"))["groups"]
    assert (one["fingerprint"], one["count"], one["merged"]) == (lookup, 8, [timeout])
    assert len(doc(cli("errors", str(job_id), "--group", lookup, "--json"))["errors"]) == 8
    again = cli("errors", str(job_id), "--merge", timeout, "--into", lookup)
    assert again.exit_code == 2 and "already" in one_line_error(again.stderr)
    alone = cli("errors", str(job_id), "--merge", timeout)
    assert alone.exit_code == 2 and "--into" in one_line_error(alone.stderr)
    split = doc(cli("errors", str(job_id), "--unmerge", timeout, "--json"))
    assert split == {"job_id": job_id, "unmerged": [timeout], "from": lookup}
    assert doc(cli("errors", str(job_id), "--groups", "--json"))["total"] == 2
    unknown = cli("errors", str(job_id), "--unmerge", "0123456789abcdef")
    assert unknown.exit_code == 2 and "no error group" in one_line_error(unknown.stderr)
