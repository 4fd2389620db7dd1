"""Configuration over HTTP: sections and databases, secrets sealed, changes live without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt

import orjson
import pytest

from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM
from maestro.runtime import open_runtime

ME = Metadata(actor="system:tests")
HOOK = "https://hooks.slack.example/services/T0/B0/hook-plaintext-4242"
PASSWORD = "db-password-plaintext-4242"


async def _log_text(runtime) -> str:
    rows = await runtime.pool.fetch("SELECT data::text AS d, metadata::text AS m FROM events ORDER BY position")
    return "\n".join(r["d"] + r["m"] for r in rows)


async def _count(runtime) -> int:
    return await runtime.pool.fetchval("SELECT count(*) FROM events")


async def test_a_section_keeps_its_secret_sealed_everywhere(client, runtime) -> None:
    resp = await client.put("/api/v1/config/slack", json={"webhook_url": HOOK, "channel": "#data"})
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["webhook_url"] == {"set": True} and body["channel"] == "#data" and body["username"] == "maestro"
    assert body["configured"] and body["version"] == 1 and body["updated_by"] == "user:admin-1"
    assert HOOK not in await resp.text()
    got = await client.get("/api/v1/config/slack")
    assert HOOK not in await got.text() and (await got.json())["webhook_url"] == {"set": True}

    log = await _log_text(runtime)
    assert HOOK not in log and '"webhook_url": "v1.' in log
    stored = await runtime.pool.fetchval("SELECT secrets->>'webhook_url' FROM config_entries WHERE stream_id = 'config-slack'")
    assert stored.startswith(f"v1.{runtime.config.box.key_id}.")
    assert runtime.config.secret("slack", "webhook_url") == HOOK

    # The same PUT again, or with a blank secret, or the GET sent back: nothing to record.
    before = await _count(runtime)
    for same in ({"webhook_url": HOOK, "channel": "#data"}, {"webhook_url": "", "channel": "#data"},
                 {k: v for k, v in (await got.json()).items() if k in ("channel", "username", "url_prefix", "webhook_url")}):
        resp = await client.put("/api/v1/config/slack", json=same)
        assert resp.status == 200 and (await resp.json())["version"] == 1
    assert await _count(runtime) == before

    resp = await client.put("/api/v1/config/slack", json={"channel": "#alerts", "version": 1})
    body = await resp.json()
    assert body["version"] == 2 and body["channel"] == "#alerts" and body["webhook_url"] == {"set": True}
    assert runtime.config.secret("slack", "webhook_url") == HOOK
    changed = await runtime.pool.fetchval("SELECT data->'changed' FROM events WHERE stream_id = 'config-slack' AND version = 2")
    assert orjson.loads(changed) == ["channel"]

    resp = await client.put("/api/v1/config/slack", json={"channel": "#x", "version": 1})
    assert resp.status == 409  # someone changed it since version 1

    resp = await client.put("/api/v1/config/slack", json={"channel": "#alerts", "clear_secrets": ["webhook_url"]})
    body = await resp.json()
    assert body["webhook_url"] == {"set": False} and not body["configured"] and body["version"] == 3
    assert runtime.config.secret("slack", "webhook_url") is None

    listing = await (await client.get("/api/v1/config")).json()
    assert [s["section"] for s in listing["sections"]] == ["bigquery", "slack", "git", "oauth", "pricing"]
    assert not any(s["configured"] for s in listing["sections"]) and listing["databases"] == []


@pytest.mark.parametrize(("section", "body", "field", "hidden"), [
    ("pricing", {"price_per_tib": -1}, "price_per_tib", None),
    ("slack", {"webhook_url": "http://hooks.example/leaky-path-777"}, "webhook_url", "leaky-path-777"),
    ("slack", {"colour": "red"}, "colour", None),
    ("oauth", {"allowed_domains": ["example.com"], "auto_enable_domains": ["other.com"]}, "auto_enable_domains", None),
    ("oauth", {"allowed_domains": ["not a domain"]}, "allowed_domains.0", None),
    ("oauth", {"issuer": "ftp://idp.example"}, "issuer", None),
    ("bigquery", {"service_account_json": "{not json leaky-sa-777"}, "service_account_json", "leaky-sa-777"),
    ("bigquery", {"service_account_json": '{"type": "user", "k": "leaky-sa-778"}'}, "service_account_json", "leaky-sa-778"),
    ("bigquery", {"bucket": "Bad Bucket"}, "bucket", None),
    ("git", {"repo_url": "https://x:leaky-token-777@github.com/a/b"}, "repo_url", "leaky-token-777"),
    ("git", {"token": 12}, "token", None),
])
async def test_bad_input_is_a_422_naming_the_field_and_never_echoing_a_secret(client, runtime, section, body, field, hidden) -> None:
    before = await _count(runtime)
    resp = await client.put(f"/api/v1/config/{section}", json=body)
    assert resp.status == 422, await resp.text()
    error = (await resp.json())["error"]
    assert field in [p["field"] for p in error["details"]["problems"]], error
    if hidden is not None:
        assert hidden not in await resp.text()
    assert await _count(runtime) == before


async def test_unknown_sections_and_bodies(client) -> None:
    assert (await client.get("/api/v1/config/nope")).status == 404
    resp = await client.put("/api/v1/config/databases", json={})
    assert resp.status == 404 and "/api/v1/databases" in (await resp.json())["error"]["message"]
    resp = await client.put("/api/v1/config/slack", data=b'{"webhook_url": "https://h/leaky-999"', headers={"Content-Type": "application/json"})
    assert resp.status == 422 and "leaky-999" not in await resp.text()
    assert (await client.put("/api/v1/config/slack", json=[1])).status == 422
    assert (await client.put("/api/v1/config/slack", json={"version": "2"})).status == 422


async def test_anonymous_callers_get_nothing(anon_client) -> None:
    for method, path in [("GET", "/api/v1/config"), ("GET", "/api/v1/config/slack"), ("PUT", "/api/v1/config/slack"),
                         ("GET", "/api/v1/databases"), ("POST", "/api/v1/databases"), ("DELETE", "/api/v1/databases/x")]:
        assert (await anon_client.request(method, path, json={})).status == 401, path


async def test_databases_lifecycle(client, runtime) -> None:
    crm = {"name": "crm", "driver": "postgres", "dsn": "postgresql://maestro@db.internal:5432/crm",
           "password": PASSWORD, "landing_dataset": "crm_raw"}
    resp = await client.post("/api/v1/databases", json=crm)
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["password"] == {"set": True} and body["export"] is False and body["name"] == "crm"
    assert PASSWORD not in await resp.text()
    assert (await client.post("/api/v1/databases", json=crm)).status == 409

    for bad, field in [({**crm, "name": "two", "dsn": "postgresql://maestro:dsn-leak-555@db/crm"}, "dsn"),
                       ({**crm, "name": "two", "dsn": "host=db user=m password=dsn-leak-555"}, "dsn"),
                       ({**crm, "name": "two", "driver": "mysql"}, "dsn"),
                       ({**crm, "name": "Bad Name"}, "name"),
                       ({**crm, "name": "two", "driver": "oracle"}, "driver"),
                       ({**crm, "name": "two", "landing_dataset": "no-dashes"}, "landing_dataset")]:
        resp = await client.post("/api/v1/databases", json=bad)
        assert resp.status == 422, bad
        assert field in [p["field"] for p in (await resp.json())["error"]["details"]["problems"]]
        assert "dsn-leak-555" not in await resp.text() and PASSWORD not in await resp.text()

    resp = await client.patch("/api/v1/databases/crm", json={"export": True, "password": ""})
    body = await resp.json()
    assert body["export"] is True and body["password"] == {"set": True} and body["version"] == 2
    assert runtime.config.secret("databases", "password", name="crm") == PASSWORD
    assert runtime.config.database("crm").export is True
    assert (await client.patch("/api/v1/databases/crm", json={"name": "renamed"})).status == 422
    assert (await client.patch("/api/v1/databases/nope", json={})).status == 404
    listing = await (await client.get("/api/v1/databases")).json()
    assert [d["name"] for d in listing["databases"]] == ["crm"]

    table = await client.post("/api/v1/tables", json={
        "dataset": "crm_raw", "name": "accounts", "kind": "import",
        "import": {"source_database": "crm", "source_table": "accounts"},
    })
    assert table.status == 201, await table.text()
    resp = await client.delete("/api/v1/databases/crm")
    assert resp.status == 409 and "crm_raw.accounts" in (await resp.json())["error"]["message"]
    await client.delete(f"/api/v1/tables/{(await table.json())['id']}")
    assert (await client.delete("/api/v1/databases/crm")).status == 200
    assert (await client.get("/api/v1/databases/crm")).status == 404
    assert runtime.config.database("crm") is None and runtime.config.secret("databases", "password", name="crm") is None
    assert await runtime.pool.fetchval("SELECT secrets::text FROM config_entries WHERE name = 'crm'") == "{}"

    resp = await client.post("/api/v1/databases", json={**crm, "password": None})  # again, without a password
    assert resp.status == 201 and (await resp.json())["version"] == 4 and (await resp.json())["password"] == {"set": False}


async def test_a_price_change_applies_to_costs_on_the_next_request(client, runtime) -> None:
    stats = JobStatistics(total_bytes_processed=2 * 2**40, total_bytes_billed=2 * 2**40, total_slot_ms=1,
                          ended=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    planned = JobPlanned(job_id="j1", run_id="r1", table_id="t1", config=JobConfig(project="p", query="SELECT 1"))
    await runtime.store.append("job-j1", NO_STREAM, [planned, JobSucceeded(job_id="j1", run_id="r1", table_id="t1", statistics=stats)], ME)
    await runtime.projections.catch_up("costs")

    async def usd() -> tuple[float, float]:
        body = await (await client.get("/api/v1/costs", params={"by": "table"})).json()
        return body["price_per_tib"], body["total"]["usd"]

    assert await usd() == (runtime.settings.price_per_tib, 2 * runtime.settings.price_per_tib)
    assert (await client.put("/api/v1/config/pricing", json={"price_per_tib": 5})).status == 200
    assert await usd() == (5.0, 10.0)
    assert (await client.put("/api/v1/config/pricing", json={"price_per_tib": 0})).status == 200
    assert await usd() == (0.0, 0.0)  # flat-rate: zero is a price, not "unset"
    await client.put("/api/v1/config/pricing", json={})
    assert await usd() == (runtime.settings.price_per_tib, 2 * runtime.settings.price_per_tib)


async def test_a_change_made_by_another_process_applies_live(runtime) -> None:
    """Like `maestro config set` or another replica: a separate runtime on the same database."""
    seen: list[tuple[str, str | None]] = []
    runtime.config.on_change(lambda section, name: seen.append((section, name)))
    other = await open_runtime(runtime.settings, follow=False)
    try:
        await other.config_service.set_section("pricing", {"price_per_tib": 7.5}, ME, partial=True)
        await other.config_service.set_section(
            "oauth", {"client_id": "cid", "client_secret": "oauth-secret-4242", "redirect_uri": "http://localhost:8080/cb",
                      "allowed_domains": ["example.com"], "initial_admins": ["Ana@example.com"]}, ME, partial=True)
    finally:
        await other.close()
    for _ in range(200):
        if runtime.config.price_per_tib == 7.5 and runtime.config.oauth_client() is not None:
            break
        await asyncio.sleep(0.025)
    assert runtime.config.price_per_tib == 7.5
    client = runtime.config.oauth_client()
    assert client is not None and client.client_secret.get_secret_value() == "oauth-secret-4242"
    assert client.allowed_domains == ("example.com",) and client.issuer == "https://accounts.google.com"
    assert client.initial_admins == ("ana@example.com",)
    assert "oauth-secret-4242" not in repr(client)
    assert seen == [("pricing", None), ("oauth", None)]


async def test_the_view_ignores_an_event_it_has_seen(runtime) -> None:
    await runtime.config_service.set_section("pricing", {"price_per_tib": 1}, ME, partial=True)
    await runtime.config_service.set_section("pricing", {"price_per_tib": 2}, ME, partial=True)
    first = (await runtime.store.read("config-pricing"))[0]
    runtime.config.apply(first)  # a late delivery of version 1 through the subscription
    assert runtime.config.price_per_tib == 2
