"""The catalog over HTTP: tables, inferred dependencies, cycles, history, lineage, frequencies."""

from __future__ import annotations

import asyncio
import io
import datetime as dt

import pytest

from maestro.errors import Conflict
from maestro.events import Metadata
from maestro.events.catalog import TableSpec
from maestro.handlers.catalog.service import CatalogService
from people import user_token


async def _count_events(runtime) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events")


async def _create(client, dataset: str, name: str, query: str, **extra) -> dict:
    resp = await client.post("/api/v1/tables", json={"dataset": dataset, "name": name, "query": query, **extra})
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def test_create_infers_dependencies_including_unquoted_and_comma_joins(client) -> None:
    orders = await _create(client, "raw", "orders", "SELECT 1 AS id, 10 AS amount")
    users = await _create(client, "raw", "users", "SELECT 1 AS id, 'ann' AS name")
    daily = await _create(
        client, "mart", "daily",
        "SELECT u.name, SUM(o.amount) AS total FROM raw.orders o, raw.users u "
        "JOIN `maestro-local.ext.rates` r ON TRUE WHERE o.id = u.id GROUP BY 1",
    )
    assert daily["created_by"] == "user:admin-1"
    assert sorted(daily["dependencies"]["parents"]) == sorted([orders["id"], users["id"]])
    assert daily["dependencies"]["external"] == ["maestro-local.ext.rates"]

    resp = await client.get(f"/api/v1/tables/{daily['id']}/parents")
    body = await resp.json()
    assert {p["name"] for p in body["parents"]} == {"orders", "users"}
    resp = await client.get(f"/api/v1/tables/{orders['id']}/children")
    assert [c["name"] for c in (await resp.json())["children"]] == ["daily"]


async def test_a_table_created_later_adopts_its_readers(client) -> None:
    reader = await _create(client, "mart", "report", "SELECT * FROM stage.clean")
    assert reader["dependencies"]["external"] == ["maestro-local.stage.clean"]
    clean = await _create(client, "stage", "clean", "SELECT 1 AS x")
    resp = await client.get(f"/api/v1/tables/{clean['id']}/children")
    assert [c["id"] for c in (await resp.json())["children"]] == [reader["id"]]


async def test_wildcards_depend_on_every_matching_table(client) -> None:
    a = await _create(client, "web", "events_2024", "SELECT 1 AS x")
    b = await _create(client, "web", "events_2025", "SELECT 2 AS x")
    await _create(client, "web", "other", "SELECT 3 AS x")
    all_events = await _create(client, "mart", "all_events", "SELECT * FROM web.events_* WHERE _TABLE_SUFFIX > '2023'")
    assert sorted(all_events["dependencies"]["parents"]) == sorted([a["id"], b["id"]])


async def test_a_table_reading_itself_is_not_its_own_parent(client) -> None:
    t = await _create(client, "mart", "log", "SELECT * FROM mart.log UNION ALL SELECT 1", write_disposition="append")
    assert t["dependencies"] == {"parents": [], "children": [], "external": []}


async def test_cycle_is_refused_with_its_path_and_nothing_is_stored(client, runtime) -> None:
    a = await _create(client, "s", "a", "SELECT 1 AS x")
    b = await _create(client, "s", "b", "SELECT * FROM s.a")
    await _create(client, "s", "c", "SELECT * FROM s.b")
    before = await _count_events(runtime)
    resp = await client.patch(f"/api/v1/tables/{a['id']}", json={"query": "SELECT * FROM s.c"})
    assert resp.status == 409
    error = (await resp.json())["error"]
    assert error["code"] == "cycle_detected"
    assert error["details"]["path"] == ["s.a", "s.b", "s.c", "s.a"]
    assert "s.a -> s.b -> s.c -> s.a" in error["message"]
    assert await _count_events(runtime) == before
    # Creating a table that closes a loop with an existing reader is refused too.
    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "d", "query": "SELECT * FROM s.e"})
    assert resp.status == 201
    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "e", "query": "SELECT * FROM s.d"})
    assert resp.status == 409 and (await resp.json())["error"]["details"]["path"][0] == "s.e"
    resp = await client.get(f"/api/v1/tables/{b['id']}")
    assert (await resp.json())["version"] == 1


async def test_bad_input_is_refused_and_nothing_is_appended(client, runtime) -> None:
    before = await _count_events(runtime)
    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "x", "query": "SELECT a,\n  FROM WHERE"})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "sql_syntax_error"
    assert error["details"]["line"] == 2 and error["details"]["column"] >= 1

    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "x", "query": "SELECT 1", "colour": "red"})
    assert resp.status == 422 and "colour" in (await resp.json())["error"]["message"]

    for bad in ({"dataset": "has-dash", "name": "x"}, {"dataset": "s", "name": "bad*name"}, {"dataset": "s", "name": " padded"}):
        resp = await client.post("/api/v1/tables", json={"query": "SELECT 1", **bad})
        assert resp.status == 422, bad

    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "imp", "kind": "import", "query": "SELECT 1"})
    assert resp.status == 422

    resp = await client.post("/api/v1/tables", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 422

    resp = await client.post("/api/v1/tables", data=io.BytesIO(b"x" * (2 * 1024 * 1024)), headers={"Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"

    await _create(client, "s", "dup", "SELECT 1")
    after_one = await _count_events(runtime)
    resp = await client.post("/api/v1/tables", json={"dataset": "s", "name": "dup", "query": "SELECT 2"})
    assert resp.status == 409
    assert await _count_events(runtime) == after_one == before + 1


async def test_two_processes_creating_one_name_exactly_one_wins(runtime) -> None:
    """Two catalog services (two replicas) race; the read model's unique index decides."""
    services = [CatalogService(runtime.store, "maestro-local") for _ in range(2)]
    for s in services:
        await s.refresh()
    spec = TableSpec(dataset="race", name="t", query="SELECT 1")
    results = await asyncio.gather(
        *(s.create_table(spec, Metadata(actor=f"user:{i}")) for i, s in enumerate(services)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if isinstance(r, Conflict)) == 1, results
    assert await runtime.pool.fetchval("SELECT count(*) FROM catalog_tables WHERE name = 't'") == 1


async def test_history_as_of_and_restore(client) -> None:
    t = await _create(client, "h", "t", "SELECT 1 AS x", description="first")
    created = dt.datetime.now(dt.timezone.utc)
    await asyncio.sleep(0.01)
    resp = await client.patch(f"/api/v1/tables/{t['id']}", json={"query": "SELECT 2 AS x", "description": "second", "version": 1})
    assert resp.status == 200
    changed = await resp.json()
    assert changed["version"] == 3  # a query change and a settings change

    resp = await client.patch(f"/api/v1/tables/{t['id']}", json={"description": "stale", "version": 1})
    assert resp.status == 409  # someone changed it since version 1

    resp = await client.get(f"/api/v1/tables/{t['id']}/history")
    versions = (await resp.json())["versions"]
    assert [v["type"] for v in versions] == ["TableCreated", "TableQueryChanged", "TableSettingsChanged"]
    assert all(v["actor"] == "user:admin-1" for v in versions)
    assert "-SELECT 1 AS x" in versions[1]["diff"] and "+SELECT 2 AS x" in versions[1]["diff"]
    assert versions[2]["changes"] == {"description": {"from": "first", "to": "second"}}

    resp = await client.get(f"/api/v1/tables/{t['id']}", params={"as_of": created.isoformat()})
    old = await resp.json()
    assert old["query"] == "SELECT 1 AS x" and old["description"] == "first"

    resp = await client.post(f"/api/v1/tables/{t['id']}/restore", json={"version": 1})
    restored = await resp.json()
    assert restored["query"] == "SELECT 1 AS x" and restored["description"] == "first"
    assert restored["version"] == 5
    resp = await client.get(f"/api/v1/tables/{t['id']}/history")
    assert (await resp.json())["versions"][-1]["restored_from_version"] == 1

    resp = await client.delete(f"/api/v1/tables/{t['id']}")
    assert (await resp.json())["deleted"] is True
    resp = await client.get("/api/v1/tables", params={"dataset": "h"})
    assert (await resp.json())["total"] == 0
    resp = await client.post(f"/api/v1/tables/{t['id']}/restore", json={})
    assert (await resp.json())["deleted"] is False

    resp = await client.get("/api/v1/catalog", params={"as_of": created.isoformat()})
    tables = (await resp.json())["tables"]
    assert [(x["name"], x["query"]) for x in tables] == [("t", "SELECT 1 AS x")]


async def test_list_filters_search_and_pagination(client) -> None:
    for i in range(5):
        await _create(client, "lst", f"t{i}", f"SELECT {i} AS x", description="revenue" if i % 2 else "")
    await _create(client, "other", "z", "SELECT 1 AS x")
    resp = await client.get("/api/v1/tables", params={"dataset": "lst", "limit": "2", "offset": "2"})
    body = await resp.json()
    assert body["total"] == 5 and [t["name"] for t in body["tables"]] == ["t2", "t3"]
    resp = await client.get("/api/v1/tables", params={"q": "revenue"})
    assert [t["name"] for t in (await resp.json())["tables"]] == ["t1", "t3"]
    resp = await client.get("/api/v1/tables", params={"kind": "import"})
    assert (await resp.json())["total"] == 0
    resp = await client.get("/api/v1/tables", params={"limit": "0"})
    assert resp.status == 422


async def test_graph_with_depth(client) -> None:
    a = await _create(client, "g", "a", "SELECT 1 AS x")
    b = await _create(client, "g", "b", "SELECT * FROM g.a")
    c = await _create(client, "g", "c", "SELECT * FROM g.b")
    resp = await client.get("/api/v1/graph")
    whole = await resp.json()
    assert {n["id"]: n["priority"] for n in whole["nodes"]} == {a["id"]: 2, b["id"]: 1, c["id"]: 0}
    assert whole["generations"] == [[a["id"]], [b["id"]], [c["id"]]]
    resp = await client.get("/api/v1/graph", params={"table": c["id"], "depth": "1", "direction": "up"})
    sub = await resp.json()
    assert {n["id"] for n in sub["nodes"]} == {b["id"], c["id"]}
    assert sub["edges"] == [{"parent": b["id"], "child": c["id"], "kind": "inferred"}]


async def test_lineage_and_impact(client) -> None:
    orders = await _create(client, "raw", "orders", "SELECT 1 AS id, 10 AS net, 2 AS tax")
    gross = await _create(client, "stage", "gross", "SELECT id, net + tax AS gross FROM raw.orders")
    total = await _create(client, "mart", "total", "SELECT SUM(gross) AS revenue, COUNT(*) AS n FROM stage.gross")
    resp = await client.get(f"/api/v1/tables/{gross['id']}/lineage", params={"column": "gross"})
    sources = (await resp.json())["sources"]
    assert {(s["table_id"], s["column"]) for s in sources} == {(orders["id"], "net"), (orders["id"], "tax")}
    resp = await client.get(f"/api/v1/tables/{orders['id']}/impact", params={"column": "tax"})
    impacted = (await resp.json())["impacted"]
    assert [(i["table_id"], i["column"]) for i in impacted] == [(gross["id"], "gross"), (total["id"], "revenue")]
    resp = await client.get(f"/api/v1/tables/{gross['id']}/lineage", params={"column": "nope"})
    assert resp.status == 422


async def test_frequencies_validate_and_need_an_admin(client, anon_client, runtime) -> None:
    resp = await client.post("/api/v1/frequencies", json={"name": "daily", "period": 86400, "offset": 14400})
    assert resp.status == 201
    daily = await resp.json()
    assert daily["active"] is True
    for bad in ({"name": "", "period": 60}, {"name": "x", "period": 0}, {"name": "x", "period": 60, "offset": 60}):
        resp = await client.post("/api/v1/frequencies", json=bad)
        assert resp.status == 422, bad
    resp = await client.post("/api/v1/frequencies", json={"name": "daily", "period": 3600})
    assert resp.status == 409
    resp = await client.patch(f"/api/v1/frequencies/{daily['id']}", json={"active": False})
    assert (await resp.json())["active"] is False
    resp = await client.patch(f"/api/v1/frequencies/{daily['id']}", json={"offset": 90000})
    assert resp.status == 422

    plain = await user_token(runtime, "u-2")
    resp = await anon_client.post(
        "/api/v1/frequencies", json={"name": "hourly", "period": 3600}, headers={"Authorization": f"Bearer {plain}"}
    )
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"


async def test_datasets(client) -> None:
    await _create(client, "used", "t", "SELECT 1")
    resp = await client.post("/api/v1/datasets", json={"dataset": "empty_one", "description": "for later"})
    assert resp.status == 201
    resp = await client.get("/api/v1/datasets")
    names = {d["dataset"]: d for d in (await resp.json())["datasets"]}
    assert names["used"]["tables"] == 1 and names["empty_one"]["description"] == "for later"
    resp = await client.post("/api/v1/datasets", json={"dataset": "bad-name"})
    assert resp.status == 422


async def test_openapi_describes_every_api_route(client) -> None:
    resp = await client.get("/api/v1/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/v1/tables"]
    assert "TableSpec" in doc["components"]["schemas"]
    registered = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented


@pytest.mark.parametrize("field,value", [("partitioning", {"type": "column"}), ("timezone", "Mars/Base"), ("labels", {"Bad Key": "x"})])
async def test_kind_and_field_rules(client, field, value) -> None:
    resp = await client.post("/api/v1/tables", json={"dataset": "v", "name": "t", "query": "SELECT 1", field: value})
    assert resp.status == 422
