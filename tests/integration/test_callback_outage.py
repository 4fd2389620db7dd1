"""PostgreSQL stops while a callback is being retried: the reactors report down, nothing is lost,
and once the database is back the delivery ends with one success and every attempt recorded once."""

from __future__ import annotations

import asyncio
import time

import pytest

from maestro.adapters import embedded_pg, postgres
from maestro.events import Metadata
from maestro.events.catalog import TableSpec
from maestro.events.deliveries import DeliveryAttempted
from webhook_receiver import Receiver

ME = Metadata(actor="user:tests")
pytestmark = pytest.mark.slow


async def test_a_database_outage_loses_no_delivery(tmp_path, local_stack) -> None:
    from maestro.runtime import open_runtime
    from maestro.services import start_services
    from maestro.settings import Settings

    server = await embedded_pg.start_embedded(tmp_path / "pg")
    await postgres.ensure_database(server.dsn, "maestro")
    settings = Settings(
        database_url=server.database_dsn("maestro"), data_dir=tmp_path / "data", poll_interval=0.2,
        scheduler_tick=0.2, callback_allowed_networks=["127.0.0.1"], callback_retry_initial=0.5,
        callback_retry_max_delay=1.0,
    )
    receiver = await Receiver(default=500).start()
    runtime = await open_runtime(settings)
    services = None
    try:
        services = await start_services(runtime, stack=local_stack)
        table = await runtime.catalog.create_table(TableSpec(
            dataset="outage_cb", name="t", query="SELECT 1 AS x",
            extract={"format": "csv", "compression": "none", "notify_url": receiver.url}), ME)
        await runtime.runs.plan_table(table.table_id, descendants=False, actor=ME)
        await receiver.wait_for(2, timeout=90)  # retrying

        await asyncio.to_thread(server.stop)
        seen_down: set[str] = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and not {"reactor:deliveries", "reactor:callbacks"} <= seen_down:
            seen_down |= {c for c in runtime.health.degraded() if c.startswith("reactor:")}
            await asyncio.sleep(0.05)
        receiver.default = 200  # the receiver recovers while the database is still down
        await asyncio.sleep(2)
        sent_while_down = len(receiver.received)

        restarted = await embedded_pg.start_embedded(tmp_path / "pg")
        assert restarted.dsn == server.dsn
        server = restarted
        t0 = time.monotonic()
        row = None
        while time.monotonic() - t0 < 60:
            try:
                row = await runtime.pool.fetchrow("SELECT delivery_id, state FROM deliveries")
            except Exception:
                row = None
            if row is not None and row["state"] == "succeeded":
                break
            await asyncio.sleep(0.2)
        assert row is not None and row["state"] == "succeeded", row
        await asyncio.sleep(1.0)
        events = await runtime.store.read(f"delivery-{row['delivery_id']}")
        types = [e.type for e in events]
        assert types.count("DeliverySucceeded") == 1 and "DeliveryFailed" not in types, types
        attempts = [e.event.attempt for e in events if isinstance(e.event, DeliveryAttempted)]
        assert attempts == list(range(1, len(attempts) + 1)), attempts  # each attempt recorded once, in order
        assert {"reactor:deliveries", "reactor:callbacks"} <= seen_down, seen_down
        assert {r.webhook_id for r in receiver.received} == {row["delivery_id"]}
        # An attempt made but not recordable while the database was down is made again: the
        # receiver may see more requests than the log has attempts, never fewer.
        # Two failures and a success reached the receiver; the log has at least the first failure
        # and the success (the second failure's answer may have come while the database was down).
        assert len(receiver.received) >= 3 and len(receiver.received) >= len(attempts) >= 2
        print(f"requests while down: {sent_while_down}, in all: {len(receiver.received)}, recorded: {len(attempts)}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and any(c.startswith("reactor:") for c in runtime.health.degraded()):
            await asyncio.sleep(0.1)
        assert not [c for c in runtime.health.degraded() if c.startswith("reactor:")]
    finally:
        if services is not None:
            await services.close()
        await runtime.close()
        await receiver.stop()
        server.stop()
