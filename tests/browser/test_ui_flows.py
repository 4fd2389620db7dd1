"""The UI's main flows in Chromium, as a person uses them (see conftest.py for the set-up)."""

from __future__ import annotations

import datetime as dt
import re

from playwright.async_api import Page, expect

from maestro.events import Metadata
from maestro.events.catalog import TableSpec
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM

TESTS = Metadata(actor="system:tests")


async def _people(runtime) -> str:
    """An administrator ``root`` and a member ``mia``, both in group analysts; the group's id."""
    group = await runtime.users.create_group("analysts", TESTS)
    for user_id, admin in (("root", True), ("mia", False)):
        await runtime.users.ensure_service_user(user_id, user_id, TESTS, admin=admin)
        await runtime.users.add_member(group.group_id, user_id, TESTS)
    return group.group_id


async def _mark(page: Page) -> None:
    """A value only this document holds: still there later means the page was never reloaded."""
    await page.evaluate("window.__notReloaded = true")


async def _not_reloaded(page: Page) -> bool:
    return await page.evaluate("window.__notReloaded === true")


async def test_log_in_with_a_link_create_a_table_with_an_error_fix_it_and_watch_it_run(site) -> None:
    await _people(site.runtime)
    page = await site.page_for("root")
    await expect(page.get_by_role("heading", name="Tables")).to_be_visible()
    await page.get_by_role("link", name="New summary table").click()
    await page.get_by_label("Dataset").fill("ui")
    await page.get_by_label("Name").fill("daily_numbers")
    sql = page.locator("#f-query")
    typed = "SELECT 1 AS n,\n  FROM WHERE"
    await sql.fill(typed)
    await page.get_by_role("button", name="Create").click()
    error = page.locator("[data-error-for=query]")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("line 2")
    await expect(sql).to_have_value(typed)  # what the user typed is kept
    await expect(sql).to_have_attribute("aria-invalid", "true")
    await expect(page.locator(".sql-highlight .line.bad")).to_have_count(1)
    assert await page.locator(".sql-highlight .line.bad").inner_text() == "  FROM WHERE\n"
    caret = await sql.evaluate("el => el.selectionStart")
    assert typed[:caret].count("\n") == 1  # the caret is on the error's line
    assert await site.runtime.pool.fetchval("SELECT count(*) FROM catalog_tables") == 0  # nothing saved half
    await site.shot(page, "table-error")

    await sql.fill("SELECT 1 AS n, 'two' AS label")
    await page.get_by_role("button", name="Create").click()
    await page.wait_for_url(re.compile(r"/tables/[^/]+$"))
    await expect(page.get_by_role("heading", name=re.compile("ui.daily_numbers"))).to_be_visible()
    await expect(page.locator(".sql-highlight .sql-keyword").first).to_have_text("SELECT")

    await page.get_by_role("button", name="Run now").click()
    await page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    await _mark(page)
    status = page.locator("[data-run-status]")
    await expect(status).to_have_text("succeeded", timeout=60_000)
    await expect(page.locator("svg.dag g.node")).to_have_class(re.compile("state-succeeded"))
    # At its end the run's timeline and jobs are drawn again in place, still without a reload.
    await expect(page.locator("svg.gantt rect.bar")).to_have_count(1)
    await expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    await expect(page.get_by_role("button", name="Retry what failed")).to_be_hidden()
    assert await _not_reloaded(page)
    await site.shot(page, "run")


async def test_the_runs_list_changes_live(site) -> None:
    group = await _people(site.runtime)
    view = await site.runtime.catalog.create_table(
        TableSpec(dataset="ui", name="live", query="SELECT 1 AS x", group_id=group), TESTS)
    page = await site.page_for("mia")
    await page.goto(f"{site.url}/runs")
    await expect(page.locator("[data-runs-live]")).to_have_attribute("data-following", "yes")
    await _mark(page)
    run_id = await site.runtime.runs.plan_table(view.table_id, descendants=False, actor=TESTS)
    row = page.locator(f'tr[data-run-id="{run_id}"]')
    await expect(row).to_be_visible(timeout=30_000)
    await expect(row.locator(".status")).to_have_text("succeeded", timeout=60_000)
    assert await _not_reloaded(page)
    await site.shot(page, "runs")


async def test_restore_an_old_version(site) -> None:
    group = await _people(site.runtime)
    view = await site.runtime.catalog.create_table(
        TableSpec(dataset="ui", name="versions", query="SELECT 1 AS first", group_id=group), TESTS)
    await site.runtime.catalog.update_table(view.table_id, {"query": "SELECT 2 AS second"}, TESTS)
    page = await site.page_for("mia")
    await page.goto(f"{site.url}/tables/{view.table_id}")
    await expect(page.locator("#f-query")).to_have_value("SELECT 2 AS second")
    await page.locator("tr[data-version='2'] summary").click()
    await expect(page.locator("tr[data-version='2'] .diff .add", has_text="+SELECT 2 AS second")).to_have_count(1)
    await expect(page.locator("tr[data-version='2'] .diff .del", has_text="-SELECT 1 AS first")).to_have_count(1)
    await site.shot(page, "table")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Restore version 1").click()
    await expect(page.locator("#f-query")).to_have_value("SELECT 1 AS first")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("version 3")
    assert (await site.runtime.catalog.get_table(view.table_id)).spec["query"] == "SELECT 1 AS first"


async def _billed(runtime, job_id: str, table_id: str, group: str, billed: int) -> None:
    stats = JobStatistics(total_bytes_billed=billed, total_bytes_processed=billed, total_slot_ms=10,
                          ended=dt.datetime.now(dt.timezone.utc))
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [
        JobPlanned(job_id=job_id, run_id=None, table_id=table_id, config=JobConfig(project="p", query="SELECT 1"),
                   owner_id="root", group_id=group),
        JobSucceeded(job_id=job_id, run_id=None, table_id=table_id, statistics=stats)], TESTS)


async def test_filter_costs_by_group_and_download_them(site) -> None:
    runtime = site.runtime
    analysts = await _people(runtime)
    other = (await runtime.users.create_group("finance", TESTS)).group_id
    a = await runtime.catalog.create_table(TableSpec(dataset="ui", name="a", query="SELECT 1", group_id=analysts), TESTS)
    b = await runtime.catalog.create_table(TableSpec(dataset="ui", name="b", query="SELECT 1", group_id=other), TESTS)
    await _billed(runtime, "j1", a.table_id, analysts, 2**40)  # 1 TiB
    await _billed(runtime, "j2", b.table_id, other, 3 * 2**40)
    await runtime.projections.catch_up("costs")
    page = await site.page_for("root")
    await page.get_by_role("link", name="Costs").click()
    price = runtime.config.price_per_tib
    await expect(page.locator("[data-total]")).to_have_text(f"${4 * price:,.2f}")
    await expect(page.locator("svg.chart rect")).to_have_count(2)
    await site.shot(page, "costs")
    await page.get_by_label("Group", exact=True).select_option(label="finance")  # a filter select submits at once
    await page.wait_for_url(re.compile(r"group="))
    await expect(page.locator("[data-total]")).to_have_text(f"${3 * price:,.2f}")
    await page.get_by_label("By", exact=True).select_option("table")
    await expect(page.get_by_role("link", name="ui.b")).to_be_visible()
    await expect(page.get_by_role("link", name="ui.a")).to_have_count(0)
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download CSV").click()
    download = await info.value
    with open(await download.path()) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("table,name,bytes_billed") and len(lines) == 2 and "ui.b" in lines[1]


async def test_an_administrator_disables_a_user_whose_session_then_stops(site) -> None:
    await _people(site.runtime)
    admin = await site.page_for("root")
    user = await site.page_for("mia")
    await expect(user.get_by_role("heading", name="Tables")).to_be_visible()
    await admin.get_by_role("link", name="Admin").click()
    await expect(admin.get_by_role("heading", name="Users")).to_be_visible()
    await site.shot(admin, "admin-users")
    await admin.get_by_role("button", name="Disable mia").click()
    await expect(admin.locator("#user-mia")).to_contain_text("no")
    await expect(admin.get_by_role("button", name="Enable mia")).to_be_visible()
    await user.goto(f"{site.url}/runs")
    await user.wait_for_url(re.compile(r"/signin\?return_to=%2Fruns"))
    await expect(user.get_by_role("heading", name="Sign in to Maestro")).to_be_visible()
    # An administrator cannot lock themselves out: the API's 409 is shown on the page.
    await admin.get_by_role("button", name="Disable root").click()
    await expect(admin.locator("#user-error")).to_be_visible()
    await expect(admin.get_by_role("button", name="Disable root")).to_be_visible()


async def test_forms_have_labels_and_work_from_the_keyboard(site) -> None:
    group = await _people(site.runtime)
    await site.runtime.catalog.create_table(TableSpec(dataset="ui", name="k", query="SELECT 1", group_id=group), TESTS)
    page = await site.page_for("root")
    for path in ("/tables", "/tables/new", "/runs", "/costs", "/audit", "/admin/users", "/admin/groups",
                 "/admin/frequencies", "/admin/datasets", "/admin/databases", "/admin/config", "/tokens"):
        await page.goto(f"{site.url}{path}")
        unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && !el.labels.length && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML.slice(0, 120))""")
        assert unlabelled == [], (path, unlabelled)
    await page.goto(f"{site.url}/tables/new")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.get_by_label("Dataset").focus()
    await page.keyboard.type("kb")
    await page.keyboard.press("Tab")
    await page.keyboard.type("typed_by_keyboard")
    await page.locator("#f-query").focus()
    await page.keyboard.type("SELECT FROM")
    await page.keyboard.press("Control+Enter")  # saves; the API refuses; the error is announced at the field
    await expect(page.locator("[data-error-for=query]")).to_be_visible()
    await expect(page.locator("#f-query")).to_be_focused()
    await page.locator("#f-query").fill("SELECT 42 AS answer")
    await page.keyboard.press("Control+Enter")
    await page.wait_for_url(re.compile(r"/tables/[^/]+$"))
    await page.get_by_role("button", name="Run now").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/runs/[^/]+$"))
    await expect(page.locator("[data-run-status]")).to_have_text("succeeded", timeout=60_000)


async def test_a_missing_object_is_a_404_page(site) -> None:
    await _people(site.runtime)
    page = await site.page_for("mia")
    response = await page.goto(f"{site.url}/tables/no-such-table")
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(page.locator(".error-box")).to_contain_text("no-such-table")
    await site.shot(page, "not-found")
