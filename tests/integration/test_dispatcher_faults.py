"""The delivery dispatcher when something other than the database fails (review finding 1): a
receiver's absurd ``Retry-After``, an attempt whose outcome cannot be recorded, a stream that cannot
be read. Real PostgreSQL, the real dispatcher and reactor host; the sender is a plain
implementation of the Sender protocol standing for a receiver that answers as told."""

from __future__ import annotations

import asyncio
import datetime as dt

from maestro.events.deliveries import DeliveryFailed, DeliveryPlanned, RetrySchedule, delivery_stream
from maestro.events.model import Metadata, now
from maestro.events.store import NO_STREAM
from maestro.handlers.notify.delivery import DeliveryState, Outcome
from maestro.handlers.notify.dispatcher import COMPONENT, Dispatcher
from maestro.handlers.notify.reactor import ReactorHost
from maestro.health import Health
from maestro.projections.deliveries import DeliveriesProjection

ME = Metadata(actor="system:tests")


class Answering:
    """A sender whose every attempt ends with ``outcome``; counts the attempts (the wire)."""

    kind = "callback"

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.sent = 0

    async def send(self, delivery: DeliveryState) -> Outcome:
        self.sent += 1
        return self.outcome


async def _plan(store, delivery_id: str) -> None:
    if not store.inline_projections:
        store.add_inline_projection(DeliveriesProjection())  # what the dispatcher resumes from
    schedule = RetrySchedule(initial=0.05, max_delay=0.1, deadline=now() + dt.timedelta(hours=1), timeout=1)
    await store.append(delivery_stream(delivery_id), NO_STREAM, [DeliveryPlanned(
        delivery_id=delivery_id, kind="callback", table_id="t1", target="http://receiver.invalid/hook",
        schedule=schedule, caused_by="test@1")], ME)


async def _failed(store, delivery_id: str, timeout: float = 20.0) -> DeliveryFailed:
    for _ in range(int(timeout / 0.05)):
        for r in await store.read(delivery_stream(delivery_id)):
            if isinstance(r.event, DeliveryFailed):
                return r.event
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery {delivery_id} never failed")


async def _running(store, sender, health: Health | None = None) -> tuple[ReactorHost, Dispatcher]:
    health = health or Health()
    dispatcher = Dispatcher(store, {"callback": sender}, db_retry=0.05, health=health)
    host = ReactorHost(store, health, [dispatcher], retry_delay=0.05)
    host.start()
    return host, dispatcher


async def test_a_huge_retry_after_ends_the_schedule_instead_of_resending_every_second(store) -> None:
    await _plan(store, "d-huge")
    sender = Answering(Outcome(status_code=503, error="HTTP 503", retryable=True, retry_after=999999999999.0))
    host, _ = await _running(store, sender)
    try:
        failed = await _failed(store, "d-huge")
    finally:
        await host.stop()
    assert failed.reason == "exhausted" and failed.exhausted
    assert sender.sent == 1


async def test_an_attempt_that_cannot_be_recorded_ends_the_delivery_once(store) -> None:
    await _plan(store, "d-bad")
    # What the receiver answered cannot be stored as JSON: recording the success raises (not an outage).
    sender = Answering(Outcome(ok=True, status_code=200, response={"what": object()}))
    host, _ = await _running(store, sender)
    try:
        failed = await _failed(store, "d-bad")
    finally:
        await host.stop()
    assert failed.reason == "invalid" and "could not be recorded" in failed.message
    assert sender.sent == 1


async def test_a_stream_that_cannot_be_read_backs_off_and_shows_in_healthz(store, pool) -> None:
    await _plan(store, "d-corrupt")
    # A payload no upcaster can read (a log written by a newer Maestro, say): folding fails every time.
    async with pool.acquire() as conn:
        await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only_rows")
        await conn.execute("UPDATE events SET schema_version = 0 WHERE stream_id = $1", delivery_stream("d-corrupt"))
        await conn.execute("ALTER TABLE events ENABLE TRIGGER events_append_only_rows")
    health = Health()
    sender = Answering(Outcome(ok=True, status_code=200))
    host, dispatcher = await _running(store, sender, health)
    try:
        for _ in range(400):
            if COMPONENT in health.degraded() and dispatcher._failures.get("d-corrupt", 0) >= 3:
                break
            await asyncio.sleep(0.05)
        assert COMPONENT in health.degraded(), health.snapshot()
        assert "d-corrupt" in health.snapshot()[COMPONENT].detail
    finally:
        await host.stop()
    assert sender.sent == 0
    assert COMPONENT not in health.snapshot()  # a standby does not carry the leader's trouble
