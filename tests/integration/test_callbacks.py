"""Completion callbacks (issue 10, item 1) end to end: a real run on the local BigQuery + GCS, the
callback reactor and dispatcher on the leader, and a real HTTP receiver (tests/webhook_receiver.py)
that verifies every signature and fails on demand."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from maestro.events.deliveries import DeliveryAttempted, RetrySchedule
from maestro.handlers.notify.schedule import delay_bounds
from people import bearer, user_token
from webhook_receiver import Receiver


@dataclass
class World:
    runtime: Any
    services: Any
    client: TestClient
    receiver: Receiver


def _settings(dsn: str, tmp_path, **extra):
    from maestro.settings import Settings

    return Settings(
        database_url=dsn, data_dir=tmp_path / "data", poll_interval=0.2, scheduler_tick=0.2,
        callback_allowed_networks=["127.0.0.1"], callback_retry_initial=0.4, callback_retry_max_delay=1.0,
        callback_timeout=1.0, **extra,
    )


@pytest.fixture
async def world(dsn, tmp_path, local_stack) -> AsyncIterator[World]:
    from maestro.http.app import create_app
    from maestro.runtime import open_runtime
    from maestro.services import start_services

    runtime = await open_runtime(_settings(dsn, tmp_path))
    services = await start_services(runtime, stack=local_stack)
    receiver = await Receiver().start()
    try:
        for _ in range(300):
            if services.is_leader:
                break
            await asyncio.sleep(0.01)
        token = await user_token(runtime, "admin-1", admin=True)
        async with TestClient(TestServer(create_app(runtime.settings, runtime=runtime)), headers=bearer(token)) as c:
            yield World(runtime, services, c, receiver)
    finally:
        await receiver.stop()
        await services.close()
        runtime.services = None
        await runtime.close()


async def _table(w: World, name: str, url: str | None = None) -> tuple[str, str | None]:
    resp = await w.client.post("/api/v1/tables", json={
        "dataset": "cb", "name": name, "query": "SELECT 1 AS id, 'a' AS v",
        "extract": {"format": "csv", "compression": "none", "notify_url": url or w.receiver.url},
    })
    body = await resp.json()
    assert resp.status == 201, body
    secret = (body.get("callback") or {}).get("secret")
    return body["id"], secret


async def _run(w: World, table_id: str) -> dict:
    run_id = (await (await w.client.post(f"/api/v1/tables/{table_id}/run", json={})).json())["id"]
    for _ in range(600):
        run = await (await w.client.get(f"/api/v1/runs/{run_id}")).json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(run)


async def _delivery(w: World, run_id: str, *, until=("succeeded", "failed"), timeout: float = 60) -> dict:
    for _ in range(int(timeout * 10)):
        items = (await (await w.client.get("/api/v1/deliveries", params={"run": run_id})).json())["deliveries"]
        if items and items[0]["status"] in until:
            return (await (await w.client.get(f"/api/v1/deliveries/{items[0]['id']}")).json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"no delivery of run {run_id} reached {until}: {items}")


async def _attempts(w: World, delivery_id: str) -> list:
    return [r for r in await w.runtime.store.read(f"delivery-{delivery_id}") if isinstance(r.event, DeliveryAttempted)]


async def test_a_signed_callback_after_the_extract_with_the_original_fields(world: World) -> None:
    table_id, secret = await _table(world, "signed")
    assert secret is not None and secret.startswith("whsec_")
    world.receiver.secret = secret
    # The secret is shown once: the endpoint's view never has it.
    endpoint = await (await world.client.get(f"/api/v1/tables/{table_id}/callback")).json()
    assert secret not in str(endpoint) and "whsec_" not in str(endpoint) and endpoint["endpoint"]["enabled"] is True

    run = await _run(world, table_id)
    assert run["status"] == "succeeded", run
    delivery = await _delivery(world, run["id"])
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 1, delivery
    [got] = world.receiver.received
    assert got.verified, "the signature did not verify"
    assert got.webhook_id == delivery["id"]
    body = got.body
    extract_job = next(j for j in (await (await world.client.get(f"/api/v1/tables/{table_id}/jobs")).json())["jobs"]
                       if j["kind"] == "extract")
    assert body["dataset"] == "cb" and body["name"] == "signed"
    assert body["table_id"] == table_id and body["run_id"] == run["id"] and body["job_id"] == extract_job["job_id"]
    assert [f["name"] for f in body["schema"]] == ["id", "v"]
    assert body["extractUrls"] and body["extractUrl"] == body["extractUrls"][0]
    content = await asyncio.to_thread(lambda: urllib.request.urlopen(body["extractUrl"], timeout=10).read())
    assert content.decode().splitlines() == ["id,v", "1,a"]

    # The run shows the callback as the table's step, after its job.
    run = await (await world.client.get(f"/api/v1/runs/{run['id']}")).json()
    [table] = run["tables"]
    assert [(s["kind"], s["state"]) for s in table["steps"]] == [("callback", "succeeded")]


async def test_retries_follow_the_schedule_and_honour_retry_after(world: World) -> None:
    table_id, secret = await _table(world, "retried")
    world.receiver.secret = secret
    world.receiver.plan = [500, 503, (429, {"Retry-After": "2"}), 200]
    run = await _run(world, table_id)
    delivery = await _delivery(world, run["id"], timeout=90)
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 4, delivery
    attempts = await _attempts(world, delivery["id"])
    assert [a.event.status_code for a in attempts] == [500, 503, 429, 200]
    assert [a.event.attempt for a in attempts] == [1, 2, 3, 4]
    schedule = RetrySchedule(initial=0.4, max_delay=1.0, deadline=dt.datetime.max.replace(tzinfo=dt.timezone.utc),
                             timeout=1.0)
    for a in attempts[:2]:  # each next attempt was drawn within the backoff's bounds
        low, high = delay_bounds(schedule, a.event.attempt)
        delay = (a.event.next_attempt_at - a.occurred_at).total_seconds()
        assert low - 0.01 <= delay <= high + 0.01, (a.event.attempt, delay)
    assert (attempts[2].event.next_attempt_at - attempts[2].occurred_at).total_seconds() >= 2.0  # Retry-After
    # Every attempt carried the same webhook-id (the receiver's idempotency key), each one signed.
    assert {r.webhook_id for r in world.receiver.received} == {delivery["id"]}
    assert all(r.verified for r in world.receiver.received)
    assert [h["event"] for h in delivery["history"]] == ["attempted"] * 4 + ["succeeded"]


async def test_a_timeout_is_retried(world: World) -> None:
    table_id, secret = await _table(world, "slow")
    world.receiver.secret = secret
    world.receiver.plan = [("sleep", 3.0), 200]
    run = await _run(world, table_id)
    await world.receiver.wait_for(1)
    # Under way (the first attempt is waiting for its answer): a redelivery is refused.
    [under_way] = (await (await world.client.get("/api/v1/deliveries", params={"run": run["id"]})).json())["deliveries"]
    resp = await world.client.post(f"/api/v1/deliveries/{under_way['id']}/redeliver")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "conflict"
    delivery = await _delivery(world, run["id"], timeout=60)
    assert delivery["status"] == "succeeded", delivery
    first, second = await _attempts(world, delivery["id"])
    assert first.event.status_code is None and "no answer within 1 s" in first.event.error
    assert second.event.status_code == 200


async def test_a_retry_after_past_the_deadline_ends_the_delivery_after_one_attempt(world: World) -> None:
    table_id, secret = await _table(world, "far-future")
    world.receiver.secret = secret
    world.receiver.plan = [(503, {"Retry-After": "999999999999"})]
    run = await _run(world, table_id)
    delivery = await _delivery(world, run["id"])
    assert delivery["status"] == "failed" and delivery["reason"] == "exhausted", delivery
    assert delivery["attempts"] == 1 and len(world.receiver.received) == 1


async def test_gone_disables_the_endpoint_until_enabled_and_redelivered(world: World) -> None:
    table_id, secret = await _table(world, "gone")
    world.receiver.secret = secret
    world.receiver.plan = [410]
    run = await _run(world, table_id)
    assert run["status"] == "succeeded"
    delivery = await _delivery(world, run["id"])
    assert delivery["status"] == "failed" and delivery["reason"] == "endpoint_gone", delivery
    endpoint = (await (await world.client.get(f"/api/v1/tables/{table_id}/callback")).json())["endpoint"]
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    # The run's table shows the failed step; its job and the run stay succeeded.
    view = await (await world.client.get(f"/api/v1/runs/{run['id']}")).json()
    assert view["status"] == "succeeded" and view["tables"][0]["state"] == "succeeded"
    assert [(s["state"], s["reason"]) for s in view["tables"][0]["steps"]] == [("failed", "endpoint_gone")]

    # While disabled, the next extract's callback is not sent at all.
    second = await _run(world, table_id)
    skipped = await _delivery(world, second["id"])
    assert skipped["status"] == "failed" and skipped["reason"] == "endpoint_disabled" and skipped["attempts"] == 0
    assert len(world.receiver.received) == 1

    # Enabled again, a redelivery is a new chain of attempts with the actor recorded.
    assert (await world.client.post(f"/api/v1/tables/{table_id}/callback/enable")).status == 200
    resp = await world.client.post(f"/api/v1/deliveries/{skipped['id']}/redeliver")
    assert resp.status == 202, await resp.text()
    again = await _delivery(world, second["id"], until=("succeeded",))
    assert again["chain"] == 2 and again["attempts"] == 1
    redelivery = [h for h in again["history"] if h["event"] == "redelivery_requested"]
    assert redelivery and redelivery[0]["by"] == "user:admin-1"
    assert world.receiver.received[-1].verified
    # One that ended can be redelivered again.
    resp = await world.client.post(f"/api/v1/deliveries/{again['id']}/redeliver")
    assert resp.status == 202


async def test_a_410_to_a_request_signed_before_a_rotation_does_not_disable_the_endpoint(world: World) -> None:
    from maestro.events.model import Metadata

    table_id, _ = await _table(world, "rotated-in-flight")
    endpoints = world.services.notify.endpoints
    signed_with = (await endpoints.get(table_id)).version  # a request is signed and in flight ...
    rotate = await world.client.post(f"/api/v1/tables/{table_id}/callback/rotate")  # ... the user rotates ...
    assert rotate.status == 200, await rotate.text()
    # ... and the old request's 410 arrives: it answered the old endpoint.
    disabled = await endpoints.disable(table_id, world.receiver.url, 410, "d-old", Metadata(actor="system:tests"),
                                       expected_version=signed_with)
    assert disabled is False
    assert (await endpoints.get(table_id)).enabled is True
    # A 410 to the endpoint as it is now disables it.
    current = (await endpoints.get(table_id)).version
    assert await endpoints.disable(table_id, world.receiver.url, 410, "d-new", Metadata(actor="system:tests"),
                                   expected_version=current) is True
    assert (await endpoints.get(table_id)).enabled is False


async def test_retries_end_at_the_deadline_as_exhausted(dsn, tmp_path, local_stack) -> None:
    from maestro.http.app import create_app
    from maestro.runtime import open_runtime
    from maestro.services import start_services

    runtime = await open_runtime(_settings(dsn, tmp_path, callback_retry_window=2.5))
    services = await start_services(runtime, stack=local_stack)
    receiver = await Receiver(default=502).start()
    try:
        token = await user_token(runtime, "admin-1", admin=True)
        async with TestClient(TestServer(create_app(runtime.settings, runtime=runtime)), headers=bearer(token)) as c:
            w = World(runtime, services, c, receiver)
            table_id, receiver.secret = await _table(w, "exhausted")
            run = await _run(w, table_id)
            delivery = await _delivery(w, run["id"], timeout=60)
            assert delivery["status"] == "failed" and delivery["reason"] == "exhausted", delivery
            assert delivery["attempts"] >= 2 and "502" in delivery["error"]
            failed = delivery["history"][-1]
            assert failed["event"] == "failed" and failed["exhausted"] is True
            attempts = await _attempts(w, delivery["id"])
            assert attempts[-1].event.next_attempt_at is None
            assert all(a.event.next_attempt_at <= dt.datetime.fromisoformat(delivery["deadline"]) for a in attempts[:-1])
    finally:
        await receiver.stop()
        await services.close()
        runtime.services = None
        await runtime.close()


async def test_deliveries_list_filters_and_pages(world: World) -> None:
    table_id, world.receiver.secret = await _table(world, "listed")
    world.receiver.plan = [400]  # rejected: not retried
    run = await _run(world, table_id)
    failed = await _delivery(world, run["id"])
    assert failed["status"] == "failed" and failed["reason"] == "rejected" and failed["attempts"] == 1
    second = await _run(world, table_id)
    await _delivery(world, second["id"])
    everything = await (await world.client.get("/api/v1/deliveries", params={"table": table_id})).json()
    assert everything["total"] == 2
    only_failed = await (await world.client.get("/api/v1/deliveries", params={"status": "failed"})).json()
    assert [d["id"] for d in only_failed["deliveries"]] == [failed["id"]]
    page = await (await world.client.get("/api/v1/deliveries", params={"kind": "callback", "limit": 1, "offset": 1})).json()
    assert page["total"] == 2 and len(page["deliveries"]) == 1
    bad = await world.client.get("/api/v1/deliveries", params={"status": "lost"})
    assert bad.status == 422 and (await bad.json())["error"]["code"] == "validation_failed"
    assert (await world.client.get("/api/v1/deliveries/dlv_nope")).status == 404


async def test_rotating_the_secret_signs_with_the_new_one(world: World) -> None:
    table_id, first = await _table(world, "rotated")
    resp = await world.client.post(f"/api/v1/tables/{table_id}/callback/rotate")
    second = (await resp.json())["secret"]
    assert second != first and second.startswith("whsec_")
    world.receiver.secret = first
    run = await _run(world, table_id)
    await _delivery(world, run["id"])
    assert world.receiver.received[-1].verified is False  # the old secret no longer verifies
    world.receiver.secret = second
    world.receiver.received.clear()
    again = await _run(world, table_id)
    await _delivery(world, again["id"])
    assert world.receiver.received[-1].verified


async def test_a_destination_refused_at_send_time_fails_the_step_unsent(world: World) -> None:
    """A URL saved before the rule (or whose name moved since): the send-time check refuses it."""
    from maestro.events import Metadata
    from maestro.events.catalog import TableSpec

    spec = TableSpec(dataset="cb", name="moved", query="SELECT 1 AS x", extract={
        "format": "csv", "compression": "none", "notify_url": "http://10.255.255.1/hook"})
    view = await world.runtime.catalog.create_table(spec, Metadata(actor="user:tests"))  # no HTTP save check
    run = await _run(world, view.table_id)
    delivery = await _delivery(world, run["id"])
    assert delivery["status"] == "failed" and delivery["reason"] == "refused" and delivery["attempts"] == 0
    assert "10.255.255.1" in delivery["error"] and "private" in delivery["error"]


async def test_the_run_event_stream_carries_the_step_and_outlives_the_run_until_it_ends(world: World) -> None:
    table_id, world.receiver.secret = await _table(world, "streamed")
    world.receiver.plan = [503]  # the step goes on after the run's end
    run_id = (await (await world.client.post(f"/api/v1/tables/{table_id}/run", json={})).json())["id"]
    resp = await world.client.get(f"/api/v1/runs/{run_id}/events")
    assert resp.status == 200
    text = (await asyncio.wait_for(resp.text(), timeout=60)).splitlines()
    types = [line.removeprefix("event: ") for line in text if line.startswith("event: ")]
    assert "RunFinished" in types and types[-1] == "DeliverySucceeded", types
    after_end = types[types.index("RunFinished"):]
    assert "DeliveryAttempted" in after_end or "DeliveryPlanned" in after_end, types
    # Reconnecting after everything was seen: 204, the client stops.
    last_id = [line.removeprefix("id: ") for line in text if line.startswith("id: ")][-1]
    again = await world.client.get(f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": last_id})
    assert again.status == 204
