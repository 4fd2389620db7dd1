"""PostgreSQL stops and starts again under a running daemon (issue 8, item 1).

The test owns its database server (the embedded binaries, in a temporary directory), so it can
stop it: while it is down ``/healthz`` answers 503 naming what is down; once it is back every
loop resumes from its checkpoint, the runner re-takes its leadership and recovers, and a new run
completes."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from maestro.adapters import embedded_pg, postgres
from maestro.events import Metadata
from maestro.events.catalog import TableSpec

from people import bearer, user_token

ME = Metadata(actor="user:tests")
pytestmark = pytest.mark.slow


async def _run_to_end(runtime, table_id: str, timeout: float = 60) -> str:
    run_id = await runtime.runs.plan_table(table_id, descendants=False, actor=ME)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        status = await runtime.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
        if status != "running":
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still running after {timeout} s")


async def test_the_daemon_survives_a_database_restart_and_runs_again(tmp_path, local_stack) -> None:
    from maestro.http.app import create_app
    from maestro.runtime import open_runtime
    from maestro.services import start_services
    from maestro.settings import Settings

    server = await embedded_pg.start_embedded(tmp_path / "pg")
    await postgres.ensure_database(server.dsn, "maestro")
    dsn = server.database_dsn("maestro")
    settings = Settings(database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2, scheduler_tick=0.2)
    runtime = await open_runtime(settings)
    services = None
    try:
        services = await start_services(runtime, stack=local_stack)
        token = await user_token(runtime, "admin-1", admin=True)
        table = await runtime.catalog.create_table(TableSpec(dataset="outage", name="t", query="SELECT 1 AS x"), ME)
        assert await _run_to_end(runtime, table.table_id) == "succeeded"
        async with TestClient(TestServer(create_app(settings, runtime=runtime)), headers=bearer(token)) as client:
            assert (await client.get("/healthz")).status == 200

            await asyncio.to_thread(server.stop)
            t0 = time.monotonic()
            body = None
            while time.monotonic() - t0 < 20:
                resp = await client.get("/healthz")
                body = await resp.json()
                if resp.status == 503 and "runner" in body["down"]:
                    break
                await asyncio.sleep(0.1)
            assert resp.status == 503, body
            assert {"database", "runner"} <= set(body["down"]), body
            metrics = await (await client.get("/metrics")).text()
            assert 'maestro_component_state{component="database",state="down"} 1.0' in metrics
            await asyncio.sleep(3)  # down for a while, every loop retrying

            restarted = await embedded_pg.start_embedded(tmp_path / "pg")
            assert restarted.dsn == server.dsn  # same socket: the daemon's DSN works again
            server = restarted
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                resp = await client.get("/healthz")
                if resp.status == 200 and services.is_leader and services.runner._main is not None:
                    break
                await asyncio.sleep(0.1)
            assert resp.status == 200, await resp.json()

            # Writes, projections, the runner: all back.
            later = await runtime.catalog.create_table(TableSpec(dataset="outage", name="after", query="SELECT 2 AS x"), ME)
            assert await _run_to_end(runtime, later.table_id) == "succeeded"
            resp = await client.get(f"/api/v1/tables/{later.table_id}")
            assert resp.status == 200
    finally:
        if services is not None:
            await services.close()
        await runtime.close()
        server.stop()
