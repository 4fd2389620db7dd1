"""``kill -9`` of ``maestro serve`` while a callback is on the wire, then a restart: the delivery
ends with exactly one successful chain in the log, and every request the receiver got carried the
same ``webhook-id`` (its idempotency key), each one signed.

The receiver holds the first request open; the test kills the process as soon as the request
arrives, so the attempt was made but never recorded. The restarted leader re-reads the open
delivery from its events and makes the attempt again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from test_crash import Serve, _stop_local_stack
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow


async def _delivery_events(dsn: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT stream_id, type FROM events WHERE stream_id LIKE 'delivery-%' ORDER BY position")
        return [(r["stream_id"], r["type"]) for r in rows]
    finally:
        await conn.close()


async def _until(predicate, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


async def test_kill_9_mid_delivery_then_restart_delivers_once(dsn: str, tmp_path: Path) -> None:
    receiver = await Receiver(plan=[("sleep", 60.0)]).start()
    data_dir = tmp_path / "data"
    serve = Serve(data_dir, dsn, tmp_path / "serve.log")
    serve.env.update(MAESTRO_CALLBACK_ALLOWED_NETWORKS="127.0.0.1", MAESTRO_CALLBACK_RETRY_INITIAL="0.5",
                     MAESTRO_CALLBACK_RETRY_MAX_DELAY="2", MAESTRO_CALLBACK_TIMEOUT="30")
    try:
        serve.start()
        await asyncio.to_thread(serve.wait_healthy)
        table = await asyncio.to_thread(serve.call, "POST", "/api/v1/tables", {
            "dataset": "crashcb", "name": "t", "query": "SELECT 1 AS x",
            "extract": {"format": "csv", "compression": "none", "notify_url": receiver.url},
        })
        receiver.secret = table["callback"]["secret"]
        run = await asyncio.to_thread(serve.call, "POST", f"/api/v1/tables/{table['id']}/run", {})
        await receiver.wait_for(1, timeout=120)
        await asyncio.to_thread(serve.kill)  # the first attempt is on the wire, not in the log
        assert [t for _, t in await _delivery_events(dsn)] == ["DeliveryPlanned"]

        serve.start()
        await asyncio.to_thread(serve.wait_healthy)

        async def delivered() -> bool:
            return any(t == "DeliverySucceeded" for _, t in await _delivery_events(dsn))

        await _until(delivered, timeout=120)
        await asyncio.sleep(1.0)  # anything that would come twice would come now
        events = await _delivery_events(dsn)
        streams = {s for s, _ in events}
        assert len(streams) == 1, events
        types = [t for _, t in events]
        assert types.count("DeliveryPlanned") == 1 and types.count("DeliverySucceeded") == 1, types
        assert "DeliveryFailed" not in types
        assert len(receiver.received) >= 2
        assert {r.webhook_id for r in receiver.received} == {streams.pop().removeprefix("delivery-")}
        assert all(r.verified for r in receiver.received)
        view = await asyncio.to_thread(serve.call, "GET", f"/api/v1/runs/{run['id']}")
        assert [s["state"] for s in view["tables"][0]["steps"]] == ["succeeded"]
    finally:
        serve.stop()
        await asyncio.to_thread(_stop_local_stack, data_dir)
        await receiver.stop()
