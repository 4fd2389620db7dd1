"""Bad input is refused with a stable code, and a 500 never carries a driver's text (issue 8, item 14)."""

from __future__ import annotations

import json
import logging

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sample_events import AccountOpened

from maestro.events import Metadata
from maestro.events.store import NO_STREAM
from maestro.http.errors import error_middleware

ME = Metadata(actor="user:1")
HUGE = "1370795644606875" + "0" * 20  # what the fuzzer sent: far beyond int64


async def _events(runtime) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events")


async def test_integers_beyond_int64_in_a_query_are_a_400(client, runtime) -> None:
    """Before: 500 (the driver could not encode the integer as bigint)."""
    await runtime.store.append("account-x", NO_STREAM, [AccountOpened(owner="x")], ME)
    for path, param in [
        ("/api/v1/streams/account-x", "after_version"),
        ("/api/v1/events", "after"),
        ("/api/v1/tables", "offset"),
        ("/api/v1/runs", "offset"),
        ("/api/v1/audit", "after"),
    ]:
        resp = await client.get(path, params={param: HUGE})
        assert resp.status == 400, (path, await resp.text())
        error = (await resp.json())["error"]
        assert error["code"] == "integer_out_of_range" and param in error["message"]
    # Narrower declared bounds (stream versions are PostgreSQL integers) are the field's own 422.
    resp = await client.get("/api/v1/streams/account-x", params={"after_version": str(2**63 - 1)})
    assert resp.status == 422 and "after_version" in (await resp.json())["error"]["message"]
    resp = await client.get("/api/v1/streams/account-x", params={"after_version": str(2**31 - 1)})
    assert resp.status == 200


async def test_integers_beyond_int64_in_a_body_are_a_400_and_append_nothing(client, runtime) -> None:
    resp = await client.post("/api/v1/tables", json={"dataset": "mart", "name": "t", "query": "SELECT 1"})
    assert resp.status == 201, await resp.text()
    table_id = (await resp.json())["id"]
    before = await _events(runtime)
    for method, path, body in [
        ("PATCH", f"/api/v1/tables/{table_id}", {"description": "x", "version": 2**63}),
        ("PATCH", f"/api/v1/tables/{table_id}", {"partitioning": {"type": "range", "start": -(2**70)}}),
        ("POST", f"/api/v1/tables/{table_id}/restore", {"version": 2**63}),
        ("POST", "/api/v1/frequencies", {"name": "f", "period": 2**63}),
        ("POST", "/api/v1/runs", {"frequency_id": "f", "workers": int(HUGE)}),
    ]:
        resp = await client.request(method, path, data=json.dumps(body), headers={"Content-Type": "application/json"})
        assert resp.status in (400, 422), (path, await resp.text())
        assert (await resp.json())["error"]["code"] in ("integer_out_of_range", "validation_failed", "invalid_json")
    # A version beyond what a stream can reach is the field's 422, not the driver's 500.
    resp = await client.patch(f"/api/v1/tables/{table_id}", json={"description": "x", "version": 2**40})
    assert resp.status == 422 and "version" in (await resp.json())["error"]["message"]
    assert await _events(runtime) == before


async def test_nul_characters_are_refused_before_they_reach_postgresql(client, runtime) -> None:
    """Before: 500 whose message quoted PostgreSQL ("unsupported Unicode escape sequence")."""
    before = await _events(runtime)
    resp = await client.post(
        "/api/v1/tables", json={"dataset": "mart", "name": "t", "query": "SELECT 1", "description": "a\x00b"}
    )
    assert resp.status == 422 and "description" in (await resp.json())["error"]["message"]
    for path in ["/api/v1/tables?q=a%00b", "/api/v1/tables/a%00b", "/api/v1/streams/x%00y"]:
        resp = await client.get(path)
        assert resp.status == 422, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "validation_failed"
    assert await _events(runtime) == before


async def test_a_driver_error_is_logged_with_a_request_id_and_never_sent(runtime, caplog) -> None:
    """Before: the event store's 500 said "event store error: <PostgreSQL's message>"."""

    async def broken(request: web.Request) -> web.Response:
        await runtime.pool.execute("SELECT * FROM no_such_relation_xyz")
        return web.Response()

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/broken", broken)
    async with TestClient(TestServer(app)) as c:
        with caplog.at_level(logging.ERROR, logger="maestro.http.errors"):
            resp = await c.get("/broken")
            text = await resp.text()
            given = await (await c.get("/broken", headers={"X-Request-Id": "proxy-123"})).json()
    assert resp.status == 500
    error = json.loads(text)["error"]
    assert error["code"] == "internal_error" and "no_such_relation" not in text
    rid = error["details"]["request_id"]
    assert rid in error["message"] and resp.headers["X-Request-Id"] == rid
    assert given["error"]["details"]["request_id"] == "proxy-123"
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == rid]
    assert logged and "no_such_relation_xyz" in str(logged[0].exc_info[1])


async def test_the_event_store_does_not_quote_the_driver(store) -> None:
    """An append PostgreSQL refuses (here: NUL in JSONB) raises our error; the driver's stays the cause."""
    try:
        await store.append("account-nul", NO_STREAM, [AccountOpened(owner="a\x00b")], ME)
    except Exception as exc:  # noqa: BLE001 - inspected below
        assert exc.__class__.__name__ == "MaestroError" and str(exc) == "event store error"
        assert isinstance(exc.__cause__, asyncpg.PostgresError)
    else:
        raise AssertionError("PostgreSQL accepted a NUL in JSONB")
