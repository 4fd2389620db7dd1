"""The BigQuery configuration applies live: the running service switches clients, no restart."""

from __future__ import annotations

import asyncio
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _service_account(project: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps({
        "type": "service_account", "project_id": project, "private_key_id": "k1", "private_key": pem,
        "client_email": f"maestro@{project}.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    })


async def _until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_bigquery_section_switches_the_running_clients(client, runtime, services) -> None:
    assert services.target == "local" and runtime.runs.project == "maestro-local"
    local_client = services.bigquery.client

    resp = await client.put("/api/v1/config/bigquery", json={
        "service_account_json": _service_account("acme-data"), "project": "acme-data",
        "bucket": "acme-extracts", "location": "EU",
    })
    assert resp.status == 200, await resp.text()
    await _until(lambda: services.target == "google:acme-data")
    assert services.bigquery.client is not local_client
    assert services.bigquery.client.project == "acme-data" and services.bigquery.location == "EU"
    assert services.runner.config.bucket == "acme-extracts"
    assert runtime.runs.project == "acme-data"  # the next runs' job snapshots name it

    # Removing the key goes back to the local stack, still without a restart.
    resp = await client.put("/api/v1/config/bigquery", json={"clear_secrets": ["service_account_json"]})
    assert resp.status == 200, await resp.text()
    await _until(lambda: services.target == "local")
    assert services.bigquery.client.project == "maestro-local"
    assert runtime.runs.project == "maestro-local"


async def test_a_bigquery_section_that_cannot_connect_is_recorded_and_the_old_one_kept(client, runtime, services) -> None:
    broken = json.loads(_service_account("acme-data"))
    broken["private_key"] = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
    resp = await client.put("/api/v1/config/bigquery", json={
        "service_account_json": json.dumps(broken), "project": "acme-data",
    })
    assert resp.status == 200, await resp.text()

    async def recorded() -> list:
        return await runtime.pool.fetch("SELECT data FROM events WHERE type = 'ConfigNotApplied'")

    for _ in range(200):
        if await recorded():
            break
        await asyncio.sleep(0.05)
    rows = await recorded()
    assert len(rows) == 1 and "keeping the previous configuration" in rows[0]["data"]  # before: only logged
    assert services.target == "local"
    assert runtime.health.snapshot()["bigquery"].state == "down"
