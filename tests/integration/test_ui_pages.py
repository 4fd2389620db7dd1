"""The UI's pages over HTTP (no browser): every page renders for whom its rule admits, refusals look
like pages to a browser and stay JSON for API clients, and one-time login links work once.

The browser tests (tests/browser/) drive the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer
from people import TESTS, bearer, user_token

from maestro.events.catalog import FrequencySpec, TableSpec
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM
from maestro.handlers.people.login_links import LoginLinks
from maestro.http.app import create_app

HTML = {"Accept": "text/html,application/xhtml+xml"}
PAGES = ["/tables", "/tables/new", "/tables/new?kind=import", "/tables/new?kind=external", "/runs", "/costs",
         "/costs?by=day", "/costs?by=table", "/audit", "/admin/users", "/admin/groups", "/admin/frequencies",
         "/admin/datasets", "/admin/databases", "/admin/config", "/tokens", "/tokens?all=true", "/signin"]


@pytest.fixture
async def ui(runtime):
    group = await runtime.users.create_group("analysts", TESTS)
    freq = await runtime.catalog.create_frequency(FrequencySpec(name="daily", period=86400), TESTS)
    parent = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="parent", query="SELECT 1 AS x", group_id=group.group_id, frequency_id=freq), TESTS)
    child = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="child", query="SELECT x FROM ds.parent", group_id=group.group_id), TESTS)
    await runtime.catalog.update_table(child.table_id, {"description": "the child <b>table</b>"}, TESTS)
    run_id = await runtime.runs.plan_table(parent.table_id, descendants=False, actor=TESTS)
    stats = JobStatistics(total_bytes_billed=2**40, total_bytes_processed=2**40, total_slot_ms=10,
                          ended=dt.datetime.now(dt.timezone.utc))
    await runtime.store.append("job-billed", NO_STREAM, [
        JobPlanned(job_id="billed", run_id=run_id, table_id=parent.table_id, config=JobConfig(project="p", query="SELECT 1"),
                   group_id=group.group_id),
        JobSucceeded(job_id="billed", run_id=run_id, table_id=parent.table_id, statistics=stats)], TESTS)
    await runtime.projections.catch_up("costs")
    admin = await user_token(runtime, "root", admin=True)
    plain = await user_token(runtime, "paul", groups=(group.group_id,))
    app = create_app(runtime.settings, runtime=runtime)
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "admin": admin, "plain": plain, "parent": parent.table_id, "child": child.table_id,
               "runtime": runtime, "run": run_id}


async def test_every_page_renders_for_an_administrator(ui) -> None:
    client = ui["client"]
    pages = [*PAGES, f"/runs/{ui['run']}", "/runs?status=running", f"/tables/{ui['parent']}", f"/tables/{ui['child']}", "/tables?q=child&kind=summary&sort=-updated"]
    for path in pages:
        resp = await client.get(path, headers={**HTML, **bearer(ui["admin"])})
        text = await resp.text()
        assert resp.status == 200, (path, resp.status, text[:500])
        assert resp.content_type == "text/html" and "<h1>" in text and "Traceback" not in text
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


async def test_runs_show_their_cost(ui) -> None:
    headers = {**HTML, **bearer(ui["admin"])}
    price = ui["runtime"].config.price_per_tib
    runs = await (await ui["client"].get("/runs", headers=headers)).text()
    assert f'data-run-id="{ui["run"]}"' in runs and f"${price:,.2f}" in runs
    run = await (await ui["client"].get(f"/runs/{ui['run']}", headers=headers)).text()
    assert "<svg class=\"dag\"" in run and f"${price:,.2f}" in run and "1.0 TiB" in run


async def test_a_table_page_escapes_what_users_wrote(ui) -> None:
    resp = await ui["client"].get(f"/tables/{ui['child']}", headers={**HTML, **bearer(ui["admin"])})
    text = await resp.text()
    assert "the child &lt;b&gt;table&lt;/b&gt;" in text and "<b>table</b>" not in text
    assert f'href="/tables/{ui["parent"]}"' in text  # its parent is linked


async def test_pages_follow_the_api_rules(ui) -> None:
    client = ui["client"]
    resp = await client.get("/tables", headers=HTML, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/signin?return_to=%2Ftables"
    resp = await client.get("/admin/users", headers={**HTML, **bearer(ui["plain"])})
    assert resp.status == 403 and "forbidden by rule &#39;admin&#39;" in await resp.text()
    # The same refusal to an API client is the API's JSON (the route-rules test relies on it).
    resp = await client.get("/admin/users", headers=bearer(ui["plain"]))
    assert resp.status == 403 and (await resp.json())["error"]["details"]["rule"] == "admin"
    resp = await client.get("/tables", headers={**HTML, **bearer(ui["plain"])})
    assert resp.status == 200


async def test_missing_objects_are_404_pages_not_stack_traces(ui) -> None:
    client = ui["client"]
    for path in ("/tables/nope", "/runs/nope", "/no/such/page"):
        resp = await client.get(path, headers={**HTML, **bearer(ui["admin"])})
        text = await resp.text()
        assert resp.status == 404 and resp.content_type == "text/html", path
        assert "Not found" in text and "Traceback" not in text
    resp = await client.get("/tables?kind=nonsense", headers={**HTML, **bearer(ui["admin"])})
    assert resp.status == 422 and "kind" in await resp.text()


async def test_a_login_link_opens_one_session_once(ui) -> None:
    client, runtime = ui["client"], ui["runtime"]
    links = LoginLinks(runtime.store, runtime.users, runtime.sessions)
    token, _ = await links.create("root", TESTS)
    page = await client.get(f"/login/link?token={token}", headers=HTML)
    assert page.status == 200 and token in await page.text()  # a GET shows a button, uses nothing
    resp = await client.post("/login/link", data={"token": token, "return_to": "/runs"}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/runs"
    session = resp.cookies["__Host-maestro_session"]
    assert session["secure"] and session["httponly"] and resp.cookies["__Host-maestro_csrf"].value
    me = await client.get("/api/v1/me", headers={"Cookie": f"__Host-maestro_session={session.value}"})
    assert (await me.json())["id"] == "root"
    again = await client.post("/login/link", data={"token": token}, allow_redirects=False)
    assert again.status == 401 and "maestro login-link" in await again.text()
    events = [e.type for e in await runtime.store.read(f"login-link-{token.split('_')[1]}")]
    assert events == ["LoginLinkCreated", "LoginLinkUsed"]


async def test_a_login_link_is_refused_when_expired_forged_or_raced(ui) -> None:
    client, runtime = ui["client"], ui["runtime"]
    links = LoginLinks(runtime.store, runtime.users, runtime.sessions)
    expired, _ = await links.create("root", TESTS, lifetime=dt.timedelta(milliseconds=1))
    await asyncio.sleep(0.01)
    forged = re.sub(r"_[^_]+$", "_forged", (await links.create("root", TESTS))[0])
    for token in (expired, forged, "nonsense"):
        resp = await client.post("/login/link", data={"token": token}, allow_redirects=False)
        assert resp.status == 401, token
    raced, _ = await links.create("root", TESTS)
    answers = await asyncio.gather(*(client.post("/login/link", data={"token": raced}, allow_redirects=False)
                                     for _ in range(4)))
    assert sorted(r.status for r in answers) == [303, 401, 401, 401]
    open_sessions = await runtime.pool.fetchval("SELECT count(*) FROM auth_sessions WHERE ended_at IS NULL")
    assert open_sessions == 1
    denied = await runtime.pool.fetchval("SELECT count(*) FROM events WHERE type = 'LoginDenied'")
    assert denied >= 3 + 3


async def test_a_login_form_from_another_site_is_refused(ui) -> None:
    runtime = ui["runtime"]
    token, _ = await LoginLinks(runtime.store, runtime.users, runtime.sessions).create("root", TESTS)
    resp = await ui["client"].post("/login/link", data={"token": token}, headers={"Origin": "https://evil.example"},
                                   allow_redirects=False)
    assert resp.status == 403
    assert [e.type for e in await runtime.store.read(f"login-link-{token.split('_')[1]}")] == ["LoginLinkCreated"]


async def test_static_files_are_cached_by_content_hash(ui) -> None:
    text = await (await ui["client"].get("/tables", headers={**HTML, **bearer(ui["admin"])})).text()
    script = re.search(r'src="(/ui/static/app\.js\?v=[0-9a-f]+)"', text).group(1)
    resp = await ui["client"].get(script)
    assert resp.status == 200 and "immutable" in resp.headers["Cache-Control"]
    assert resp.content_type in ("text/javascript", "application/javascript")
    assert (await ui["client"].get("/ui/static/nope.js")).status == 404


async def test_costs_csv_is_the_api_answering_csv(ui) -> None:
    resp = await ui["client"].get("/costs/export.csv?by=table", headers=bearer(ui["admin"]))
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert (await resp.text()).splitlines()[0] == "table,name,bytes_billed,bytes_processed,slot_ms,jobs,usd"
