"""Saving a table with a Sheets export: refused while Maestro has no Google credentials (the
local stack), through the API and through ``maestro apply``; accepted once they are configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from maestro.events.model import Metadata
from maestro.handlers.catalog.apply import execute, load_rows, plan
from maestro.handlers.catalog.folder import read_folder
from maestro.handlers.catalog.import_check import ImportsRefused

ACTOR = Metadata(actor="cli:tester")
TABLE = {"dataset": "mart", "name": "report", "query": "SELECT 1 AS x", "sheets_export": {"keep_tabs": 3}}


def service_account_key() -> str:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "project_id": "acme-data", "private_key_id": "k1",
                       "private_key": pem, "client_email": "maestro@acme-data.iam.gserviceaccount.com",
                       "token_uri": "https://oauth2.googleapis.com/token"})


async def events(runtime) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events")


async def test_a_sheets_export_needs_google_credentials(client, runtime) -> None:
    before = await events(runtime)
    resp = await client.post("/api/v1/tables", json=TABLE)
    body = await resp.json()
    assert resp.status == 422, body
    assert body["error"]["code"] == "sheets_needs_google_credentials"
    assert "needs Google credentials" in body["error"]["message"] and "service_account_json" in body["error"]["message"]
    assert body["error"]["details"]["field"] == "sheets_export"
    assert await events(runtime) == before  # a rejected command appends nothing

    # A table without the export saves; adding the export to it is refused the same way.
    plain = await client.post("/api/v1/tables", json={k: v for k, v in TABLE.items() if k != "sheets_export"})
    assert plain.status == 201
    path = f"/api/v1/tables/{(await plain.json())['id']}"
    resp = await client.patch(path, json={"sheets_export": {}})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "sheets_needs_google_credentials"
    assert (await client.patch(path, json={"description": "unrelated"})).status == 200

    resp = await client.put("/api/v1/config/bigquery", json={"project": "acme-data", "service_account_json": service_account_key()})
    assert resp.status == 200, await resp.text()
    resp = await client.patch(path, json={"sheets_export": {"keep_tabs": 3}})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["sheets_export"] == {"sheet_id": None, "keep_tabs": 3}, body


async def test_apply_of_a_folder_with_a_sheets_export_is_refused_without_credentials(runtime, tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    (folder / "mart").mkdir(parents=True)
    (folder / "mart" / "plain.sql").write_text("SELECT 1 AS x\n")
    (folder / "mart" / "report.sql").write_text("SELECT 2 AS y\n")
    (folder / "mart" / "report.yaml").write_text("sheets_export: {keep_tabs: 2}\n")
    the_plan = plan(read_folder(folder), await load_rows(runtime.catalog), prune=False)
    with pytest.raises(ImportsRefused) as caught:
        await execute(the_plan, runtime.catalog, ACTOR)
    assert [p["table"] for p in caught.value.details["problems"]] == ["mart.report"]
    assert caught.value.details["problems"][0]["code"] == "sheets_needs_google_credentials"
    assert await runtime.pool.fetchval("SELECT count(*) FROM catalog_tables") == 0
