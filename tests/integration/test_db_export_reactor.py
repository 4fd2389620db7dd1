"""Database exports as run steps (issue 10, items 5 and 6) through the running service: a real run
on the local BigQuery + GCS, the export reactor and the dispatcher on the leader, and real
PostgreSQL and MariaDB targets registered through the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from db_targets import mysql_database, mysql_fetch, pg_fetch
from maestro.handlers.transfers.db_export import ExportDatabase
from people import bearer, user_token

ROWS = 50
QUERY = f"SELECT x AS id, CONCAT('row ', CAST(x AS STRING)) AS label FROM UNNEST(GENERATE_ARRAY(1, {ROWS})) AS x"


@dataclass
class World:
    runtime: Any
    services: Any
    client: TestClient


def export_settings(dsn: str, tmp_path: Any, **extra: Any) -> Any:
    from maestro.settings import Settings

    return Settings(database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2, scheduler_tick=0.2,
                    export_retry_initial=0.3, export_retry_max_delay=1.0, export_retry_window=60.0, **extra)


@pytest.fixture
async def world(dsn: str, tmp_path: Any, local_stack: Any) -> AsyncIterator[World]:
    from maestro.http.app import create_app
    from maestro.runtime import open_runtime
    from maestro.services import start_services

    runtime = await open_runtime(export_settings(dsn, tmp_path))
    services = await start_services(runtime, stack=local_stack)
    try:
        for _ in range(300):
            if services.is_leader:
                break
            await asyncio.sleep(0.01)
        token = await user_token(runtime, "admin-1", admin=True)
        async with TestClient(TestServer(create_app(runtime.settings, runtime=runtime)), headers=bearer(token)) as c:
            yield World(runtime, services, c)
    finally:
        await services.close()
        runtime.services = None
        await runtime.close()


async def register(w: World, target: ExportDatabase) -> None:
    resp = await w.client.post("/api/v1/databases", json={
        "name": target.name, "driver": target.driver, "dsn": target.dsn, "landing_dataset": "landing", "export": True})
    assert resp.status == 201, await resp.text()


async def table(w: World, dataset: str, name: str, database: str, frequency_id: str, **export: Any) -> str:
    resp = await w.client.post("/api/v1/tables", json={
        "dataset": dataset, "name": name, "query": QUERY, "frequency_id": frequency_id,
        "extract": {"format": "csv", "compression": "gzip"}, "db_export": {"database": database, **export},
    })
    body = await resp.json()
    assert resp.status == 201, body
    return body["id"]


async def frequency(w: World, name: str) -> str:
    resp = await w.client.post("/api/v1/frequencies", json={"name": name, "period": 86400, "offset": 14400})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def run_until_steps_end(w: World, frequency_id: str, steps: int, timeout: float = 120) -> dict[str, Any]:
    """Start a run of the frequency; its view once it has finished and ``steps`` steps have ended."""
    resp = await w.client.post("/api/v1/runs", json={"frequency_id": frequency_id})
    assert resp.status == 201, await resp.text()
    run_id = (await resp.json())["id"]
    for _ in range(int(timeout * 10)):
        run = await (await w.client.get(f"/api/v1/runs/{run_id}")).json()
        ended = [s for t in run["tables"] for s in t["steps"] if s["state"] in ("succeeded", "failed")]
        if run["status"] != "running" and len(ended) >= steps:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(run)


@pytest.fixture
async def pg_target(fresh_database: tuple[str, str]) -> ExportDatabase:
    # The test server's DSN has an empty password ("user:@"); a registered DSN may not name one.
    dsn = urlunsplit(urlsplit(fresh_database[0])._replace(netloc=urlsplit(fresh_database[0]).netloc.replace(":@", "@")))
    return ExportDatabase("warehouse", "postgres", dsn, None, export=True)


@pytest.fixture
async def my_target() -> AsyncIterator[ExportDatabase]:
    async with mysql_database() as created:
        yield ExportDatabase("reports", created.driver, created.dsn, None, export=True)


async def test_a_run_writes_both_targets_and_shows_each_export_as_a_step(
    world: World, pg_target: ExportDatabase, my_target: ExportDatabase,
) -> None:
    await register(world, pg_target)
    await register(world, my_target)
    freq = await frequency(world, "exports")
    to_pg = await table(world, "mart", "sales", "warehouse", freq, key_columns=["id"])
    to_my = await table(world, "mart", "visits", "reports", freq, table="site_visits")
    run = await run_until_steps_end(world, freq, steps=2)
    assert run["status"] == "succeeded", run
    tables = {t["table_id"]: t for t in run["tables"]}
    assert [(s["kind"], s["state"], s["target"], s["error"]) for s in tables[to_pg]["steps"]] == [
        ("db_export", "succeeded", "warehouse:sales", None)]
    assert [(s["kind"], s["state"], s["target"]) for s in tables[to_my]["steps"]] == [
        ("db_export", "succeeded", "reports:site_visits")]

    rows = await pg_fetch(pg_target, "SELECT id, label FROM sales ORDER BY id")
    assert [tuple(r) for r in rows] == [(i, f"row {i}") for i in range(1, ROWS + 1)]
    key = await pg_fetch(pg_target, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                         "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'sales'::regclass AND i.indisprimary")
    assert [r["attname"] for r in key] == ["id"]
    assert await mysql_fetch(my_target, "SELECT COUNT(*), MAX(label) FROM site_visits") == [(ROWS, "row 9")]
    # Exactly once per run, recorded in each target under the run's export id.
    recorded = await pg_fetch(pg_target, "SELECT export_id FROM _maestro_exports")
    assert [r["export_id"] for r in recorded] == [f"{run['id']}/{to_pg}"]

    # The delivery's own log: planned, one attempt, succeeded.
    delivery_id = tables[to_pg]["steps"][0]["delivery_id"]
    types = [r.event.type_name() for r in await world.runtime.store.read(f"delivery-{delivery_id}")]
    assert types == ["DeliveryPlanned", "DeliveryAttempted", "DeliverySucceeded"]


async def test_a_refused_export_fails_its_step_and_leaves_the_other_tables_alone(
    world: World, pg_target: ExportDatabase, my_target: ExportDatabase,
) -> None:
    await register(world, pg_target)
    await register(world, my_target)
    # A view depends on the target table: PostgreSQL refuses to drop it, so the replace cannot swap.
    conn = await asyncpg.connect(pg_target.dsn)
    try:
        await conn.execute("CREATE TABLE refused (id bigint, label text); INSERT INTO refused VALUES (7, 'before'); "
                           "CREATE VIEW refused_view AS SELECT * FROM refused")
    finally:
        await conn.close()
    freq = await frequency(world, "mixed")
    bad = await table(world, "mart", "refused", "warehouse", freq)
    good = await table(world, "mart", "fine", "reports", freq)
    run = await run_until_steps_end(world, freq, steps=2)
    tables = {t["table_id"]: t for t in run["tables"]}
    # The run and both tables' jobs succeeded: an export never fails the BigQuery work.
    assert run["status"] == "succeeded" and {t["state"] for t in tables.values()} == {"succeeded"}, run
    [failed] = tables[bad]["steps"]
    assert failed["state"] == "failed" and failed["reason"] == "rejected" and failed["attempts"] == 1, failed
    assert failed["error"].startswith("target_refused: ") and "refused_view" in failed["error"], failed
    assert [s["state"] for s in tables[good]["steps"]] == ["succeeded"]
    # Nothing half-written: the previous table is as it was, no staging table is left.
    assert [tuple(r) for r in await pg_fetch(pg_target, "SELECT * FROM refused")] == [(7, "before")]
    names = {r["tablename"] for r in await pg_fetch(pg_target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert not any(n.startswith("_maestro_stage_") for n in names), names
    assert await mysql_fetch(my_target, "SELECT COUNT(*) FROM fine") == [(ROWS,)]


async def test_a_database_no_longer_marked_for_export_fails_the_step_without_an_attempt(
    world: World, pg_target: ExportDatabase,
) -> None:
    await register(world, pg_target)
    freq = await frequency(world, "switched_off")
    table_id = await table(world, "mart", "later", "warehouse", freq)
    resp = await world.client.patch("/api/v1/databases/warehouse", json={"export": False})
    assert resp.status == 200, await resp.text()
    run = await run_until_steps_end(world, freq, steps=1)
    [step] = run["tables"][0]["steps"]
    assert run["tables"][0]["table_id"] == table_id and run["tables"][0]["state"] == "succeeded"
    assert step["state"] == "failed" and step["reason"] == "refused" and step["attempts"] == 0, step
    assert "not registered for export" in step["error"], step
    names = {r["tablename"] for r in await pg_fetch(pg_target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "later" not in names


async def test_a_target_that_is_down_is_retried_then_fails_with_the_reason(
    world: World, tmp_path: Any,
) -> None:
    # Nothing listens on port 1: every attempt is refused at connect (retryable), until the deadline.
    down = ExportDatabase("down", "postgres", "postgresql://maestro@127.0.0.1:1/nowhere", None, export=True)
    await register(world, down)
    freq = await frequency(world, "unreachable")
    await table(world, "mart", "nowhere", "down", freq)
    # The schedule's window is 60 s in these settings; watch the first retries, not the end.
    resp = await world.client.post("/api/v1/runs", json={"frequency_id": freq})
    run_id = (await resp.json())["id"]
    for _ in range(900):
        run = await (await world.client.get(f"/api/v1/runs/{run_id}")).json()
        steps = [s for t in run["tables"] for s in t["steps"]]
        if steps and steps[0]["attempts"] >= 2:
            break
        await asyncio.sleep(0.1)
    [step] = steps
    assert step["state"] == "retrying" and step["next_attempt_at"] is not None, step
    assert step["error"].startswith("target_unavailable: "), step


async def test_the_run_event_stream_carries_the_export_and_ends_with_it(world: World, pg_target: ExportDatabase) -> None:
    await register(world, pg_target)
    freq = await frequency(world, "streamed")
    await table(world, "mart", "streamed", "warehouse", freq)
    run_id = (await (await world.client.post("/api/v1/runs", json={"frequency_id": freq})).json())["id"]
    resp = await world.client.get(f"/api/v1/runs/{run_id}/events")
    assert resp.status == 200
    text = (await asyncio.wait_for(resp.text(), timeout=120)).splitlines()
    types = [line.removeprefix("event: ") for line in text if line.startswith("event: ")]
    # The export is planned after the extract, often after the run's end: the stream waits for it.
    assert "RunFinished" in types and types[-1] == "DeliverySucceeded", types
    assert types.count("DeliveryPlanned") == 1, types
