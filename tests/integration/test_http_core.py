"""The service shell and the history API over HTTP."""

from __future__ import annotations

import asyncio

from sample_events import AccountOpened, Deposited

from maestro.events import Metadata
from maestro.events.store import NO_STREAM

ME = Metadata(actor="user:1")


async def test_healthz(client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["components"]["database"]["state"] == "ok"


async def test_healthz_is_degraded_naming_the_component_that_is_down(client, runtime) -> None:
    runtime.health.down("scheduler", ConnectionRefusedError("PostgreSQL refused"))
    resp = await client.get("/healthz")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded" and body["down"] == ["scheduler"]
    detail = body["components"]["scheduler"]["detail"]
    assert "ConnectionRefusedError" in detail and "PostgreSQL refused" not in detail  # public: no driver text
    metrics = await (await client.get("/metrics")).text()
    assert 'maestro_component_state{component="scheduler",state="down"} 1.0' in metrics
    runtime.health.ok("scheduler")
    assert (await client.get("/healthz")).status == 200


async def test_events_are_listed_with_metadata_and_paginated(client, runtime) -> None:
    store = runtime.store
    for i in range(5):
        await store.append(f"account-{i}", NO_STREAM, [AccountOpened(owner=str(i)), Deposited(amount=i)], ME)

    ours = "AccountOpened,Deposited"  # the client's own token creation is in the log too
    resp = await client.get("/api/v1/events", params={"limit": "4", "type": ours})
    assert resp.status == 200
    page = await resp.json()
    assert len(page["events"]) == 4
    first = page["events"][0]
    assert first["type"] == "AccountOpened" and first["data"] == {"owner": "0"}
    assert first["metadata"]["actor"] == "user:1" and "correlation_id" in first["metadata"]
    assert first["stream_id"] == "account-0" and first["version"] == 1

    positions = [e["position"] for e in page["events"]]
    after = page["next_after"]
    while after is not None:
        resp = await client.get("/api/v1/events", params={"limit": "4", "after": str(after), "type": ours})
        page = await resp.json()
        positions += [e["position"] for e in page["events"]]
        after = page["next_after"]
    assert len(positions) == 10 and positions == sorted(positions)

    resp = await client.get("/api/v1/events?type=Deposited")
    assert {e["type"] for e in (await resp.json())["events"]} == {"Deposited"}
    resp = await client.get("/api/v1/events?type=Deposited,AccountOpened&type=Nope")
    assert len((await resp.json())["events"]) == 10


async def test_stream_endpoint(client, runtime) -> None:
    await runtime.store.append("account-x", NO_STREAM, [AccountOpened(owner="x"), Deposited(amount=1), Deposited(amount=2)], ME)
    resp = await client.get("/api/v1/streams/account-x", params={"limit": "2"})
    body = await resp.json()
    assert body["version"] == 3 and [e["version"] for e in body["events"]] == [1, 2]
    assert body["next_after_version"] == 2
    resp = await client.get("/api/v1/streams/account-x", params={"after_version": "2"})
    assert [e["version"] for e in (await resp.json())["events"]] == [3]

    resp = await client.get("/api/v1/streams/account-none")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_streams_listing_follows_the_async_projection(client, runtime) -> None:
    await runtime.store.append("account-y", NO_STREAM, [AccountOpened(owner="y")], ME)
    for _ in range(100):
        resp = await client.get("/api/v1/streams", params={"category": "account"})
        streams = (await resp.json())["streams"]
        if streams:
            break
        await asyncio.sleep(0.05)
    assert streams[0]["stream_id"] == "account-y" and streams[0]["version"] == 1


async def test_bad_parameters_are_json_errors(client) -> None:
    resp = await client.get("/api/v1/events", params={"limit": "lots"})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_failed" and "limit" in error["message"]

    resp = await client.get("/api/v1/events", params={"limit": "100000"})
    assert resp.status == 422

    resp = await client.get("/api/v1/events", params={"bogus": "1"})
    assert resp.status == 422 and "bogus" in (await resp.json())["error"]["message"]

    resp = await client.get("/api/v1/nothing-here")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"

    resp = await client.post("/api/v1/events")
    assert resp.status == 405 and (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_metrics_in_prometheus_format(client, runtime) -> None:
    await runtime.store.append("account-m", NO_STREAM, [AccountOpened(owner="m"), Deposited(amount=1)], ME)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'maestro_events_appended_total{category="account"} 2.0' in text
    assert 'maestro_projection_lag_events{mode="async",projection="streams"}' in text
    assert "maestro_log_head_position" in text


async def test_projection_status_endpoint(client) -> None:
    resp = await client.get("/api/v1/projections")
    names = {p["name"] for p in (await resp.json())["projections"]}
    assert "streams" in names


async def test_api_needs_a_token(anon_client) -> None:
    resp = await anon_client.get("/api/v1/events")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthenticated"
    for headers in ({"Authorization": "Bearer mae_nope_nope"}, {"X-Api-Token": "garbage"}, {"Authorization": "Basic abc"}):
        resp = await anon_client.get("/api/v1/events", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"]["message"] == "invalid or expired API token"
    resp = await anon_client.get("/healthz")
    assert resp.status == 200
    resp = await anon_client.get("/api/v1/openapi.json")
    assert resp.status == 200


async def test_x_api_token_header_is_accepted(anon_client, runtime) -> None:
    from people import TESTS, user_token

    token = await user_token(runtime, "u-1")
    resp = await anon_client.get("/api/v1/tables", headers={"X-Api-Token": token})
    assert resp.status == 200
    await runtime.tokens.revoke(token.split("_")[1], TESTS)
    resp = await anon_client.get("/api/v1/tables", headers={"X-Api-Token": token})
    assert resp.status == 401


async def test_paging_by_position_never_skips_a_late_commit(client, runtime) -> None:
    """A page read while an append with a lower position is still open must stop below it: a
    client that continues after the last position it saw would otherwise never see that event."""
    for path in ("/api/v1/events", "/api/v1/audit"):
        owner = path.rsplit("/", 1)[1]
        slow = await runtime.pool.acquire()
        try:
            tx = slow.transaction()
            await tx.start()
            await slow.execute(
                "SELECT * FROM events_append($1, -1, ARRAY['AccountOpened'], ARRAY[1]::smallint[], "
                "ARRAY[$2::jsonb], ARRAY['{\"actor\":\"user:1\"}'::jsonb], now())",
                f"account-slow-{owner}", f'{{"owner": "slow-{owner}"}}',
            )
            await runtime.store.append(f"account-fast-{owner}", NO_STREAM, [AccountOpened(owner=f"fast-{owner}")], ME)
            # The fast event has committed with a higher position; the slow one is in flight.
            resp = await client.get(path, params={"type": "AccountOpened"})
            assert resp.status == 200
            seen = [e for e in (await resp.json())["events"] if e["data"]["owner"].endswith(owner)]
            await tx.commit()
        finally:
            await runtime.pool.release(slow)
        after = max((e["position"] for e in seen), default=0)
        resp = await client.get(path, params={"type": "AccountOpened", "after": str(after)})
        seen += [e for e in (await resp.json())["events"] if e["data"]["owner"].endswith(owner)]
        assert sorted(e["data"]["owner"] for e in seen) == [f"fast-{owner}", f"slow-{owner}"], path
