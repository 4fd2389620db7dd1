"""Google Sheets exports as run steps (issue 10, items 4 and 6) through the running service.

Maestro is configured as it would be for Google — the BigQuery section holds a project and a
service-account key — with Google's endpoints pointed at local servers: BigQuery and Cloud
Storage at the local stack (``MAESTRO_BIGQUERY_ENDPOINT``, ``MAESTRO_STORAGE_ENDPOINT``), Sheets,
Drive and the OAuth token endpoint at the Sheets fake (``MAESTRO_SHEETS_ENDPOINT``; the key's
``token_uri``). The real google-auth JWT flow signs every call; the fake checks the signatures."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakes.sheets_api import FakeGoogle

from maestro.events.exports import SheetsSpreadsheetCreated
from maestro.handlers.transfers.sheets_plan import tab_title
from people import bearer, user_token

ACCOUNT = "exporter@maestro-local.iam.gserviceaccount.com"
QUERY = "SELECT x AS id, CONCAT('r', CAST(x AS STRING)) AS label FROM UNNEST(GENERATE_ARRAY(1, 5)) AS x"


@dataclass
class World:
    runtime: Any
    services: Any
    client: TestClient
    fake: FakeGoogle


def service_account(fake: FakeGoogle) -> tuple[str, bytes]:
    """A service-account key as Google issues it, whose token_uri is the fake's; and its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {"type": "service_account", "project_id": "maestro-local", "private_key_id": "k1", "private_key": pem,
            "client_email": ACCOUNT, "client_id": "1", "token_uri": fake.token_uri}
    return json.dumps(info), public


@pytest.fixture
async def world(dsn: str, tmp_path: Any, local_stack: Any) -> AsyncIterator[World]:
    from maestro.adapters import google, localstack
    from maestro.http.app import create_app
    from maestro.runtime import open_runtime
    from maestro.services import start_services
    from maestro.settings import Settings

    async with FakeGoogle() as fake:
        key, public = service_account(fake)
        fake.register_key(ACCOUNT, public)
        settings = Settings(
            database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2, scheduler_tick=0.2, job_wait="poll",
            bigquery_endpoint=local_stack.bigquery_endpoint, storage_endpoint=local_stack.gcs_endpoint,
            sheets_endpoint=fake.base_url, export_retry_initial=0.3, export_retry_max_delay=1.0,
            export_retry_window=60.0,
        )
        gcs = localstack.storage_client(local_stack)
        await asyncio.to_thread(google.ensure_bucket, gcs, settings.gcs_bucket)
        gcs.close()
        runtime = await open_runtime(settings)
        services = None
        try:
            token = await user_token(runtime, "admin-1", admin=True)
            async with TestClient(TestServer(create_app(settings, runtime=runtime)), headers=bearer(token)) as c:
                resp = await c.put("/api/v1/config/bigquery", json={"project": "maestro-local",
                                                                     "service_account_json": key})
                assert resp.status == 200, await resp.text()
                services = await start_services(runtime, stack=local_stack)
                assert services.target == "google:maestro-local"
                for _ in range(300):
                    if services.is_leader:
                        break
                    await asyncio.sleep(0.01)
                yield World(runtime, services, c, fake)
        finally:
            if services is not None:
                await services.close()
                runtime.services = None
            await runtime.close()


async def table(w: World, name: str, query: str = QUERY, **export: Any) -> str:
    resp = await w.client.post("/api/v1/tables", json={
        "dataset": "mart", "name": name, "query": query, "sheets_export": export})
    body = await resp.json()
    assert resp.status == 201, body
    return body["id"]


async def run_table(w: World, table_id: str, timeout: float = 120) -> dict[str, Any]:
    """Run the table; the run's view once it finished and its step ended."""
    run_id = (await (await w.client.post(f"/api/v1/tables/{table_id}/run", json={})).json())["id"]
    for _ in range(int(timeout * 10)):
        run = await (await w.client.get(f"/api/v1/runs/{run_id}")).json()
        steps = [s for t in run["tables"] for s in t["steps"]]
        if run["status"] != "running" and steps and all(s["state"] in ("succeeded", "failed") for s in steps):
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(run)


async def recorded(w: World, table_id: str) -> list[str]:
    return [r.event.spreadsheet_id for r in await w.runtime.store.read(f"sheets-{table_id}")
            if isinstance(r.event, SheetsSpreadsheetCreated)]


async def test_a_run_writes_a_dated_tab_and_the_next_run_reuses_the_spreadsheet(world: World) -> None:
    table_id = await table(world, "daily_sales", keep_tabs=2)
    first = await run_table(world, table_id)
    assert first["status"] == "succeeded", first
    [step] = first["tables"][0]["steps"]
    assert (step["kind"], step["state"], step["error"]) == ("sheets", "succeeded", None), step
    [sid] = await recorded(world, table_id)  # the created spreadsheet's id, as an event
    book = world.fake.spreadsheets[sid]
    assert book.title == "mart.daily_sales" and book.owner == ACCOUNT
    day = first["planned_at"][:10]
    [tab] = world.fake.tabs(sid)
    assert tab.startswith(f"{day} ") and tab == tab_title(first["id"], dt.date.fromisoformat(day))
    assert world.fake.values(sid, tab) == [["id", "label"]] + [[i, f"r{i}"] for i in range(1, 6)]

    second = await run_table(world, table_id)
    third = await run_table(world, table_id)
    assert [s["state"] for r in (second, third) for s in r["tables"][0]["steps"]] == ["succeeded", "succeeded"]
    assert await recorded(world, table_id) == [sid] and len(world.fake.spreadsheets) == 1
    tabs = world.fake.tabs(sid)
    assert len(tabs) == 2 and len(set(tabs)) == 2 and tab not in tabs  # the newest two kept, in front


async def test_a_result_beyond_a_limit_fails_its_step_before_any_call_and_others_go_on(world: World) -> None:
    too_wide = await table(world, "too_wide", "SELECT REPEAT('x', 50001) AS text")
    fine = await table(world, "fine")
    failed = await run_table(world, too_wide)
    assert failed["status"] == "succeeded" and failed["tables"][0]["state"] == "succeeded", failed
    [step] = failed["tables"][0]["steps"]
    assert step["state"] == "failed" and step["reason"] == "invalid" and step["attempts"] == 1, step
    assert "at most 50,000" in step["error"] and "(characters_per_cell)" in step["error"], step
    assert world.fake.spreadsheets == {}  # refused before Google was asked anything
    assert await recorded(world, too_wide) == []
    ok = await run_table(world, fine)
    assert [s["state"] for s in ok["tables"][0]["steps"]] == ["succeeded"]
    assert len(world.fake.spreadsheets) == 1


async def test_quota_answers_are_waited_out_and_the_step_succeeds(world: World) -> None:
    table_id = await table(world, "busy")
    world.fake.fail_next = [429, 503]
    run = await run_table(world, table_id)
    [step] = run["tables"][0]["steps"]
    assert step["state"] == "succeeded", step
    assert 429 in world.fake.answered and 503 in world.fake.answered
