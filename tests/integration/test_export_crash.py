"""``kill -9`` of ``maestro serve`` in the middle of an export, then a restart: exactly one export.

Database export: the test kills the process as soon as the MariaDB target holds the export's
staging table (rows are loading), so the attempt was under way and never recorded. The restarted
leader re-reads the open delivery and makes the attempt again under the same export id: the target
ends with the table once, one row in ``_maestro_exports``, no staging table, and the delivery's log
has one plan and one success.

Sheets export: the fake holds the first ``values.update`` (the run's tab exists, the spreadsheet is
recorded, no row is written) and the test kills the process then. After the restart: one
spreadsheet, one tab for the run, written in full."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fakes.sheets_api import FakeGoogle

from db_targets import mysql_database, mysql_fetch, mysql_tables
from test_crash import Serve, _stop_local_stack
from test_sheets_reactor import ACCOUNT, service_account

pytestmark = pytest.mark.slow
ROWS = 300_000


async def _delivery_events(dsn: str, kind: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT e.type FROM events e JOIN deliveries d ON e.stream_id = 'delivery-' || d.delivery_id "
            "WHERE d.kind = $1 ORDER BY e.position", kind)
        return [r["type"] for r in rows]
    finally:
        await conn.close()


async def _until(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached in time")
        await asyncio.sleep(poll)


def _serve(tmp_path: Path, dsn: str) -> Serve:
    serve = Serve(tmp_path / "data", dsn, tmp_path / "serve.log")
    serve.env.update(MAESTRO_EXPORT_RETRY_INITIAL="0.5", MAESTRO_EXPORT_RETRY_MAX_DELAY="2")
    return serve


async def _call(serve: Serve, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return await asyncio.to_thread(serve.call, method, path, body)


async def test_kill_9_mid_database_export_then_restart_exports_once(dsn: str, tmp_path: Path) -> None:
    serve = _serve(tmp_path, dsn)
    async with mysql_database() as target:
        try:
            serve.start()
            await asyncio.to_thread(serve.wait_healthy)
            await _call(serve, "POST", "/api/v1/databases", {"name": "reports", "driver": "mysql", "dsn": target.dsn,
                                                            "landing_dataset": "landing", "export": True})
            table = await _call(serve, "POST", "/api/v1/tables", {
                "dataset": "crashx", "name": "big", "extract": {"format": "csv", "compression": "gzip"},
                "query": f"SELECT x AS id, CONCAT('row ', CAST(x AS STRING)) AS label "
                         f"FROM UNNEST(GENERATE_ARRAY(1, {ROWS})) AS x",
                "db_export": {"database": "reports"},
            })
            run = await _call(serve, "POST", f"/api/v1/tables/{table['id']}/run", {})

            async def staging() -> bool:
                return any(t.startswith("_maestro_stage_") for t in await mysql_tables(target))

            await _until(staging, timeout=180, what="the export's staging table", poll=0.01)
            await asyncio.to_thread(serve.kill)  # rows loading, nothing recorded about it
            assert "DeliverySucceeded" not in await _delivery_events(dsn, "db_export")

            serve.start()
            await asyncio.to_thread(serve.wait_healthy)

            async def exported() -> bool:
                return "DeliverySucceeded" in await _delivery_events(dsn, "db_export")

            await _until(exported, timeout=180, what="the export's success")
            await asyncio.sleep(1.0)  # anything that would come twice would come now
            types = await _delivery_events(dsn, "db_export")
            assert types.count("DeliveryPlanned") == 1 and types.count("DeliverySucceeded") == 1, types
            assert "DeliveryFailed" not in types
            assert await mysql_fetch(target, "SELECT COUNT(*), COUNT(DISTINCT id) FROM big") == [(ROWS, ROWS)]
            done = await mysql_fetch(target, "SELECT export_id FROM _maestro_exports")
            assert done == [(f"{run['id']}/{table['id']}",)], done
            assert not any(t.startswith("_maestro_stage_") for t in await mysql_tables(target))
            view = await _call(serve, "GET", f"/api/v1/runs/{run['id']}")
            assert [s["state"] for s in view["tables"][0]["steps"]] == ["succeeded"]
        finally:
            serve.stop()
            await asyncio.to_thread(_stop_local_stack, tmp_path / "data")


async def test_kill_9_mid_sheets_export_then_restart_writes_one_tab(dsn: str, tmp_path: Path, local_stack: Any) -> None:
    from maestro.adapters import google, localstack

    async with FakeGoogle() as fake:
        key, public = service_account(fake)
        fake.register_key(ACCOUNT, public)
        held, release = asyncio.Event(), asyncio.Event()

        async def hold_the_first_write(method: str, path: str) -> None:
            if method == "PUT" and not held.is_set():
                held.set()
                await release.wait()  # never applied: the process that sent it is killed meanwhile

        fake.before = hold_the_first_write
        gcs = localstack.storage_client(local_stack)
        await asyncio.to_thread(google.ensure_bucket, gcs, "maestro-local")
        gcs.close()
        serve = _serve(tmp_path, dsn)
        serve.env.update(MAESTRO_BIGQUERY_ENDPOINT=local_stack.bigquery_endpoint,
                         MAESTRO_STORAGE_ENDPOINT=local_stack.gcs_endpoint, MAESTRO_SHEETS_ENDPOINT=fake.base_url,
                         MAESTRO_JOB_WAIT="poll")
        try:
            serve.start()
            await asyncio.to_thread(serve.wait_healthy)
            await _call(serve, "PUT", "/api/v1/config/bigquery", {"project": "maestro-local",
                                                                   "service_account_json": key})
            table = await _call(serve, "POST", "/api/v1/tables", {
                "dataset": "crashs", "name": "report", "sheets_export": {},
                "query": "SELECT x AS id FROM UNNEST(GENERATE_ARRAY(1, 20)) AS x"})
            run = await _call(serve, "POST", f"/api/v1/tables/{table['id']}/run", {})
            await asyncio.wait_for(held.wait(), timeout=180)
            await asyncio.to_thread(serve.kill)
            [sid] = fake.spreadsheets  # created, recorded, and the run's tab added before the kill
            [tab] = fake.tabs(sid)
            assert fake.values(sid, tab) == []  # not a row written yet

            serve.start()
            await asyncio.to_thread(serve.wait_healthy)

            async def exported() -> bool:
                return "DeliverySucceeded" in await _delivery_events(dsn, "sheets")

            await _until(exported, timeout=180, what="the Sheets export's success")
            types = await _delivery_events(dsn, "sheets")
            assert types.count("DeliveryPlanned") == 1 and types.count("DeliverySucceeded") == 1, types
            assert list(fake.spreadsheets) == [sid]
            assert fake.tabs(sid) == [tab]  # the same tab, rewritten: one per run
            assert fake.values(sid, tab) == [["id"]] + [[i] for i in range(1, 21)]
            view = await _call(serve, "GET", f"/api/v1/runs/{run['id']}")
            assert [s["state"] for s in view["tables"][0]["steps"]] == ["succeeded"]
        finally:
            release.set()
            serve.stop()
            await asyncio.to_thread(_stop_local_stack, tmp_path / "data")
