"""A database export is checked when its table is saved: what can be known without the target
is refused with the field and a clear message, and nothing is appended."""

from __future__ import annotations

from typing import Any

import pytest

CRM = {"driver": "postgres", "dsn": "postgresql://maestro@127.0.0.1:1/crm", "landing_dataset": "crm"}
MART = {"driver": "mysql", "dsn": "mysql://root@127.0.0.1:3306/mart", "landing_dataset": "mart"}


async def register(client: Any, name: str, **values: Any) -> None:
    resp = await client.post("/api/v1/databases", json={"name": name, **values})
    assert resp.status == 201, await resp.text()


def table(**export: Any) -> dict[str, Any]:
    return {"dataset": "mart", "name": export.pop("name", "sales"), "query": "SELECT 1 AS x",
            "extract": export.pop("extract", {"format": "csv"}), "db_export": export}


async def table_events(runtime: Any) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events WHERE stream_id LIKE 'table-%'")


@pytest.mark.parametrize(("body", "field", "needle"), [
    (table(database="nowhere"), "db_export.database", "no database 'nowhere' is registered"),
    (table(database="crm"), "db_export.database", "not registered for export"),
    (table(database="pg", table="t" * 64), "db_export.table", "PostgreSQL names hold at most 63 bytes"),
    (table(database="my", table="é" * 65), "db_export.table", "MySQL names hold at most 64"),
    (table(database="my", table="sales "), "db_export.table", "ends with a space"),
    (table(database="my", schema="s"), "db_export.schema", "PostgreSQL targets only"),
    (table(database="pg", extract={"format": "avro", "compression": "deflate"}), "extract.format", "avro extracts"),
])
async def test_an_export_its_target_cannot_take_is_refused_at_save(
    client: Any, runtime: Any, body: dict[str, Any], field: str, needle: str
) -> None:
    await register(client, "crm", **CRM)
    await register(client, "pg", **CRM, export=True)
    await register(client, "my", **MART, export=True)
    resp = await client.post("/api/v1/tables", json=body)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "validation_failed" and error["details"]["field"] == field
    assert error["message"].startswith(f"{field}: ") and needle in error["message"], error
    assert await table_events(runtime) == 0


async def test_upsert_without_keys_is_refused_by_the_settings(client: Any, runtime: Any) -> None:
    await register(client, "pg", **CRM, export=True)
    resp = await client.post("/api/v1/tables", json=table(database="pg", mode="upsert"))
    assert resp.status == 422 and "key_columns" in await resp.text()
    assert await table_events(runtime) == 0


async def test_a_valid_export_saves_and_an_unrelated_edit_is_not_rechecked(client: Any, runtime: Any) -> None:
    await register(client, "pg", **CRM, export=True)
    resp = await client.post("/api/v1/tables", json=table(database="pg", mode="upsert", key_columns=["x"], schema="mart"))
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    assert created["db_export"] == {"database": "pg", "table": None, "schema": "mart", "mode": "upsert",
                                            "key_columns": ["x"]}
    # The target is switched off for export afterwards: editing the description still saves, changing
    # the export is refused.
    resp = await client.patch("/api/v1/databases/pg", json={"export": False})
    assert resp.status == 200, await resp.text()
    path = f"/api/v1/tables/{created['id']}"
    assert (await client.patch(path, json={"description": "sales by day"})).status == 200
    resp = await client.patch(path, json={"db_export": {"database": "pg", "table": "sales_copy"}})
    assert resp.status == 422 and "not registered for export" in await resp.text()
