"""Authorization of EVERY route, generated from the router.

For each route the application registers, the test looks up its declared rule and calls it as
anonymous, a disabled user, a plain user, a member of the table's group and an administrator,
expecting the middleware to admit exactly whom the rule admits. A route registered without a
rule fails the test (and is refused to everyone at run time).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from people import TESTS, bearer, user_token

from maestro.events.catalog import TableSpec
from maestro.handlers.people.tokens import REFUSED
from maestro.http.app import create_app
from maestro.http.auth import NO_CREDENTIALS
from maestro.http.routing import RULES, ROUTE_TABLE

WHO = ("anonymous", "disabled", "plain", "member", "admin")
ADMITTED = {
    "public": set(WHO),
    "read": {"plain", "member", "admin"},
    "write": {"member", "admin"},
    "extract": {"member", "admin"},  # the world's table does not share its extracts
    "admin": {"admin"},
}


def undeclared_routes(app: web.Application) -> list[str]:
    """Every registered route without a declared rule (HEAD twins of GET routes included)."""
    table = app.get(ROUTE_TABLE) or {}
    missing = []
    for route in app.router.routes():
        declared = table.get(route)
        if declared is None or declared.rule not in RULES:
            missing.append(f"{route.method} {route.resource.canonical if route.resource else '?'}")
    return missing


@pytest.fixture
async def world(runtime) -> AsyncIterator[dict]:
    group = await runtime.users.create_group("analysts", TESTS)
    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="t", query="SELECT 1 AS x", group_id=group.group_id), TESTS
    )
    tokens = {
        "admin": await user_token(runtime, "root", admin=True),
        "member": await user_token(runtime, "mia", groups=(group.group_id,)),
        "plain": await user_token(runtime, "paul"),
        "disabled": await user_token(runtime, "dora", groups=(group.group_id,), enabled=False),
    }
    # Every route is called by a disabled user: keep the failure limiter out of the way here.
    settings = runtime.settings.model_copy(update={"auth_failure_burst": 100_000})
    app = create_app(settings, runtime=runtime)
    async with TestClient(TestServer(app)) as client:
        yield {"client": client, "app": app, "tokens": tokens, "table": view.table_id, "group": group.group_id}


def _path(canonical: str, world: dict) -> str:
    values = {"table_id": world["table"], "group_id": world["group"], "stream_id": f"table-{world['table']}"}
    return re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values.get(m.group(1), "nothing-here"), canonical)


async def _refused(resp: aiohttp.ClientResponse) -> str | None:
    """'401'/'403' when the middleware refused the request; None when it let it through."""
    if resp.status not in (401, 403) or resp.content_type != "application/json":
        return None
    error = (await resp.json())["error"]
    if resp.status == 401 and error["message"] in (NO_CREDENTIALS, REFUSED):
        return "401"
    if resp.status == 403 and "rule" in error.get("details", {}):
        return "403"
    return None  # a handler's own answer (e.g. the login callback's 401)


async def test_every_route_admits_exactly_whom_its_rule_admits(world: dict) -> None:
    app, client = world["app"], world["client"]
    assert undeclared_routes(app) == []
    table = app[ROUTE_TABLE]
    problems = []
    checked = 0
    for aio_route, route in table.items():
        path = _path(aio_route.resource.canonical, world)
        for who in WHO:
            headers = bearer(world["tokens"][who]) if who in world["tokens"] else {}
            kwargs = {"json": {}} if route.method in ("POST", "PUT", "PATCH") else {}
            async with client.request(route.method, path, headers=headers, timeout=aiohttp.ClientTimeout(total=10),
                                      **kwargs) as resp:
                refused = await _refused(resp)
                admitted = who in ADMITTED[route.rule]
                expected = None if admitted else ("401" if who in ("anonymous", "disabled") else "403")
                if refused != expected:
                    problems.append(f"{route.method} {route.path} ({route.rule}) as {who}: "
                                    f"{resp.status} refused={refused}, expected refused={expected}")
                if refused == "403":
                    assert (await resp.json())["error"]["details"]["rule"] == route.rule
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked == len(table) * len(WHO) and len(table) >= 50


async def test_a_route_without_a_rule_is_caught_and_refused(world: dict, runtime) -> None:
    async def sneaky(request: web.Request) -> web.Response:
        return web.json_response({"secret": "data"})

    app = create_app(runtime.settings, runtime=runtime)
    app.router.add_get("/api/v1/sneaky", sneaky)  # bypassing the route table
    assert undeclared_routes(app) == ["HEAD /api/v1/sneaky", "GET /api/v1/sneaky"]
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/api/v1/sneaky", headers=bearer(world["tokens"]["admin"]))
        assert resp.status == 403 and "no authorization rule" in (await resp.json())["error"]["message"]


async def test_refusals_append_only_audit_events(world: dict, runtime) -> None:
    client, tokens = world["client"], world["tokens"]
    before = await runtime.store.last_position()
    attempts = [
        ("POST", "/api/v1/groups", tokens["plain"]),  # rule admin
        ("PATCH", f"/api/v1/tables/{world['table']}", tokens["plain"]),  # rule write, not a member
        ("POST", "/api/v1/tables", tokens["member"]),  # group_id of a group they are not in
        ("GET", "/api/v1/tables", tokens["disabled"]),
        ("GET", "/api/v1/tables", "mae_nope_nope"),
    ]
    for method, path, token in attempts:
        body = {"dataset": "ds", "name": "u", "query": "SELECT 1", "group_id": "elsewhere"} if method == "POST" else {}
        resp = await client.request(method, path, headers=bearer(token), json=body)
        assert resp.status in (401, 403), (method, path, resp.status)
    # Token refusals are appended at once; 403s are counted, one event per user, rule, route and minute.
    assert [e.type for e in await runtime.store.read_all_raw(before, 100)] == ["TokenRejected"] * 2
    await runtime.audit.flush()
    appended = await runtime.store.read_all_raw(before, 100)
    assert [e.type for e in appended] == ["TokenRejected"] * 2 + ["AccessDenied"] * 3
    assert all(e.stream_id.startswith("audit-") for e in appended)
    assert appended[0].data["reason"] == "user disabled" and appended[1].data["token_id"] == "nope"
    assert appended[2].data["rule"] == "admin" and appended[2].metadata["actor"] == "user:paul"
    assert [e.data["count"] for e in appended[2:]] == [1, 1, 1]
