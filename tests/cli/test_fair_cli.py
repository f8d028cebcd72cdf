"""Fair scheduling on the command line (issue 25): `--order`, `--tenant`, both backends."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import Result

from tests.cli.helpers import get_job, one_line_error

Cli = Callable[..., Result]


def _enqueue(cli: Cli, n: int, *extra: str) -> int:
    data = "".join(f"e{i}\n" for i in range(n))
    result = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--chunk-size", "10", *extra,
                 input=data)
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.strip())


@pytest.mark.slow
def test_process_takes_turns_by_default_and_drains_the_oldest_with_order_fifo(cli: Cli, db_url: str) -> None:
    big = _enqueue(cli, 40)
    small = _enqueue(cli, 10)
    done = cli("process", "--max-chunks", "2", "--processor", "chunkq.core.demo:enrich", "--json")
    assert done.exit_code == 0, done.stderr
    assert (get_job(db_url, big).processed_count, get_job(db_url, small).status) == (10, "complete")
    later = _enqueue(cli, 10)
    fifo = cli("process", "--max-chunks", "2", "--order", "fifo", "--processor", "chunkq.core.demo:enrich", "--json")
    assert fifo.exit_code == 0, fifo.stderr
    assert (get_job(db_url, big).processed_count, get_job(db_url, later).processed_count) == (30, 0)


def test_a_bad_order_is_a_usage_error(cli: Cli) -> None:
    for command in ("process", "worker"):
        result = cli(command, "--order", "lifo", "--processor", "chunkq.core.demo:enrich")
        assert result.exit_code == 2
        assert "'lifo' is not one of 'fair', 'fifo'" in one_line_error(result.stderr)


def test_tenant_is_stored_listed_and_filtered(cli: Cli, db_url: str) -> None:
    acme = _enqueue(cli, 3, "--tenant", "  acme ")
    _enqueue(cli, 3)
    listed = json.loads(cli("jobs", "--tenant", "acme", "--json").stdout)["jobs"]
    assert [(j["id"], j["tenant"]) for j in listed] == [(acme, "acme")]
    untenanted = json.loads(cli("jobs", "--tenant", "", "--json").stdout)["jobs"]
    assert [j["tenant"] for j in untenanted] == [None]
    tsv = cli("jobs", "--tenant", "acme").stdout.splitlines()
    assert tsv[0].split("\t")[-1] == "tenant" and tsv[1].split("\t")[-1] == "acme"
    assert "tenant" in cli("show", str(acme)).stdout


def test_a_bad_tenant_is_refused_and_nothing_is_created(cli: Cli, db_url: str) -> None:
    _enqueue(cli, 1)
    result = cli("enqueue", "-", "--entity-type", "company", "--provider", "p", "--tenant", "a\x1b]2;x\x07",
                 input="e1\n")
    assert result.exit_code == 2
    assert "tenant contains a control character" in one_line_error(result.stderr)
    assert len(json.loads(cli("jobs", "--json").stdout)["jobs"]) == 1


def _tenants(cli: Cli) -> dict[str | None, dict[str, object]]:
    result = cli("tenants", "--json")
    assert result.exit_code == 0, result.stderr
    return {t["tenant"]: t for t in json.loads(result.stdout)["tenants"]}


@pytest.mark.slow
def test_tenants_lists_each_weight_with_live_jobs_and_processed(cli: Cli, db_url: str) -> None:
    _enqueue(cli, 10, "--tenant", "acme")
    _enqueue(cli, 10, "--tenant", "acme")
    _enqueue(cli, 10, "--tenant", "[b]globex")
    _enqueue(cli, 10)
    assert cli("process", "--until-empty", "--processor", "chunkq.core.demo:enrich", "--json",
               "--max-chunks", "1").exit_code == 0
    weight = cli("tenants", "weight", "acme", "2.5", "--json")
    assert weight.exit_code == 0, weight.stderr
    assert json.loads(weight.stdout)["weight"] == 2.5
    tenants = _tenants(cli)
    assert list(tenants) == [None, "[b]globex", "acme"]
    assert {k: t["weight"] for k, t in tenants.items()} == {None: 1.0, "[b]globex": 1.0, "acme": 2.5}
    # one chunk of 10 ran, completing the job of whichever tenant had the turn
    done = [k for k, t in tenants.items() if t["processed"] == 10]
    assert len(done) == 1 and sum(t["processed"] for t in tenants.values()) == 10
    live = {None: 1, "[b]globex": 1, "acme": 2}
    live[done[0]] -= 1
    assert {k: t["live_jobs"] for k, t in tenants.items()} == live
    tsv = cli("tenants").stdout.splitlines()
    assert tsv[0].split("\t") == ["tenant", "weight", "live_jobs", "processed"]
    assert tsv[3].split("\t")[:3] == ["acme", "2.5", str(live["acme"])]
    plain = cli("tenants", "weight", "", "3")  # '': the jobs without a tenant
    assert plain.exit_code == 0, plain.stderr
    assert "jobs without a tenant: weight 3" in plain.stdout
    assert _tenants(cli)[None]["weight"] == 3.0


def test_a_bad_tenant_weight_is_a_usage_error_and_changes_nothing(cli: Cli, db_url: str) -> None:
    _enqueue(cli, 1, "--tenant", "acme")
    assert cli("tenants", "weight", "acme", "4").exit_code == 0
    before = _tenants(cli)
    assert before["acme"]["weight"] == 4.0
    for bad in ("0", "-1", "nan", "inf", "-inf", "1e999", "1001", "1_0", "two"):
        result = cli("tenants", "weight", "acme", bad)
        assert result.exit_code == 2, (bad, result.stdout, result.stderr)
        assert "must be a positive number, at most 1,000" in one_line_error(result.stderr), bad
        assert result.stdout == ""
    bad_name = cli("tenants", "weight", "a\x1b]2;x\x07", "2")
    assert bad_name.exit_code == 2
    assert "tenant contains a control character" in one_line_error(bad_name.stderr)
    assert _tenants(cli) == before
