"""Tenants in the dashboard (issue 25): the enqueue form's Tenant box and the jobs table's Tenant column."""

from __future__ import annotations

import pytest
from chunkq.core import Queue
from chunkq.tui.dashboard.screens.enqueue import EnqueueScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from chunkq.tui.dashboard.widgets.job_filters import ANY_TENANT, tenant_options
from chunkq.tui.dashboard.widgets.job_rows import COLUMN_KEYS, fit_columns, job_cells
from rich.text import Text
from textual.widgets import DataTable, Input, Select, TextArea

from tests.dashboard.conftest import fixed_clock, refresh, settle
from tests.dashboard.test_app import SIZE, make_app, notes, shown_ids, table
from tests.dashboard.test_table_logic import NOW, job


async def _open_form(pilot, app) -> EnqueueScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("n")
    await pilot.pause()
    form = app.screen
    assert isinstance(form, EnqueueScreen)
    form.query_one("#entity-type", Input).value = "company"
    form.query_one("#provider", Input).value = "clearbit"
    form.query_one("#ids", TextArea).text = "acme\nglobex\n"
    return form


@pytest.mark.slow
async def test_the_form_stores_the_tenant_and_empty_means_none(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        form = await _open_form(pilot, app)
        form.query_one("#tenant", Input).value = "  acme [b]corp  "
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen), notes(app)
        form = await _open_form(pilot, app)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen), notes(app)
        first, second = sorted(await app.queue.list_jobs(), key=lambda j: j.id)
        assert (first.tenant, second.tenant or "") == ("acme [b]corp", ""), "stripped, brackets kept as text"


@pytest.mark.slow
async def test_a_bad_tenant_is_refused_in_its_box_and_nothing_is_created(sqlite_url: str) -> None:
    app = make_app(sqlite_url)
    async with app.run_test(size=SIZE) as pilot:
        form = await _open_form(pilot, app)
        for bad, message in (("a\x1b]2;owned\x07", "tenant contains a control character"),
                             ("t" * 201, "tenant must be at most 200 characters, got 201")):
            form.query_one("#tenant", Input).value = bad
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert app.screen is form, "the form stays open"
            assert str(form.query_one("#tenant-error").render()).startswith(message)
            assert form.query_one("#tenant").has_class("invalid")
            assert str(form.query_one("#ids-error").render()) == ""
            assert await app.queue.count_jobs() == 0
        form.query_one("#tenant", Input).value = "acme"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, JobsScreen)
        assert [j.tenant for j in await app.queue.list_jobs()] == ["acme"]


async def test_the_tenant_column_appears_only_with_a_tenanted_job(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        plain = await q.enqueue_job(["a"], entity_type="company", provider="p", name="plain")
    app = make_app(sqlite_url, clock=fixed_clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(pilot, full=True)
        t: DataTable = table(app)
        assert "tenant" not in [str(k.value) for k in t.columns], "no tenant on the page: no column"
        tenanted = await app.queue.enqueue_job(["a"], entity_type="company", provider="p", tenant="[b]acme")
        await refresh(pilot)
        assert "tenant" in [str(k.value) for k in t.columns], "a tenanted job arrived: the column with it"
        cell = t.get_cell(str(tenanted.id), "tenant")
        assert isinstance(cell, Text) and cell.plain == "[b]acme" and not cell.spans, "plain text, not markup"
        assert t.get_cell(str(plain.id), "tenant").plain == "—"
        assert t.get_cell(str(plain.id), "name").plain == "plain", "the rows were laid out again in place"


def test_a_tenant_cell_escapes_control_characters() -> None:
    # core refuses them at enqueue; a row written by hand (or by an older version) may still hold one
    cells = job_cells(job(1, tenant="[b]acme\x1b]2;owned\x07"), NOW, 0.0)
    assert cells["tenant"].plain == "[b]acme\\x1b]2;owned\\x07"
    assert job_cells(job(2), NOW, 0.0)["tenant"].plain == "—"


def test_the_tenant_column_is_left_out_unless_present() -> None:
    for width in (78, 158, 298):
        assert "tenant" not in fit_columns(width)
    assert list(fit_columns(298, present={"tenant"})) == list(COLUMN_KEYS)
    assert "tenant" in fit_columns(158, present={"tenant"})


@pytest.mark.slow
async def test_the_jobs_list_filters_by_tenant_once_there_are_tenants(sqlite_url: str) -> None:
    async with Queue(sqlite_url) as q:
        plain = await q.enqueue_job(["a"], entity_type="company", provider="p")
    app = make_app(sqlite_url, clock=fixed_clock)
    async with app.run_test(size=SIZE) as pilot:
        await refresh(pilot, full=True)
        screen = app.jobs_screen
        box = screen.query_one("#tenant-filter", Select)  # type: ignore[union-attr]
        assert not box.display, "no tenant yet: no tenant filter"
        acme = await app.queue.enqueue_job(["a"], entity_type="company", provider="p", tenant="acme")
        globex = await app.queue.enqueue_job(["a"], entity_type="company", provider="p", tenant="[b]globex")
        await refresh(pilot, full=True)
        assert box.display
        assert sorted(shown_ids(app)) == [plain.id, acme.id, globex.id]
        box.value = ("t", "[b]globex")
        await refresh(pilot)
        assert shown_ids(app) == [globex.id]
        assert screen.filters.describe() == "tenant '[b]globex'"  # type: ignore[union-attr]
        later = await app.queue.enqueue_job(["b"], entity_type="company", provider="p", tenant="[b]globex")
        await app.queue.enqueue_job(["b"], entity_type="company", provider="p", tenant="acme")
        await refresh(pilot)  # an incremental poll keeps to the tenant too
        assert sorted(shown_ids(app)) == [globex.id, later.id]
        box.value = ("t", "")
        await refresh(pilot)
        assert shown_ids(app) == [plain.id], "tenant: none lists the jobs without a tenant"
        await pilot.press("ctrl+a")
        await settle(pilot)
        assert any("do not filter by tenant" in n for n in notes(app)), "bulk never reaches unseen jobs"
        box.value = ANY_TENANT
        await refresh(pilot)
        assert len(shown_ids(app)) == 5


def test_tenant_filter_choices_are_plain_escaped_text() -> None:
    options = tenant_options([None, "zeta", "[b]acme\x1b]2;x"])
    assert [(prompt.plain, value) for prompt, value in options] == [
        ("tenant: all", ANY_TENANT), ("tenant: none", ("t", "")),
        ("tenant: [b]acme\\x1b]2;x", ("t", "[b]acme\x1b]2;x")), ("tenant: zeta", ("t", "zeta"))]
    assert all(not prompt.spans for prompt, _ in options)
