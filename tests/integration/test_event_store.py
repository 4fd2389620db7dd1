"""The event store against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest
from sample_events import AccountOpened, Deposited, LimitSet, Withdrawn

from maestro.errors import ConcurrencyConflict, InvalidEvent, MaestroError, UnknownEventType
from maestro.events import Metadata, validate_event
from maestro.events.store import ANY_VERSION, NO_STREAM, EventStore

ME = Metadata(actor="user:1")


async def test_append_and_read_back_with_metadata(store: EventStore) -> None:
    meta = Metadata(actor="user:7", correlation_id="corr-1", causation_id="cmd-1")
    result = await store.append("account-1", NO_STREAM, [AccountOpened(owner="ann"), Deposited(amount=5)], meta)
    assert result.version == 2
    assert result.last_position == result.first_position + 1

    events = await store.read("account-1")
    assert [e.event for e in events] == [AccountOpened(owner="ann"), Deposited(amount=5)]
    assert [e.version for e in events] == [1, 2]
    assert events[0].metadata.actor == "user:7"
    assert events[0].metadata.correlation_id == "corr-1"
    assert events[0].metadata.causation_id == "cmd-1"
    assert events[0].occurred_at.tzinfo is not None
    assert await store.stream_version("account-1") == 2
    assert await store.stream_version("account-404") is None

    later = await store.read("account-1", after_version=1)
    assert [e.version for e in later] == [2]


async def test_expected_version_rules(store: EventStore) -> None:
    await store.append("account-2", NO_STREAM, [AccountOpened(owner="bo")], ME)

    with pytest.raises(ConcurrencyConflict) as info:
        await store.append("account-2", NO_STREAM, [Deposited(amount=1)], ME)
    assert info.value.actual == 1 and info.value.expected == "no stream"

    with pytest.raises(ConcurrencyConflict) as info:
        await store.append("account-2", 5, [Deposited(amount=1)], ME)
    assert info.value.actual == 1 and info.value.expected == 5

    await store.append("account-2", 1, [Deposited(amount=1)], ME)
    await store.append("account-2", ANY_VERSION, [Deposited(amount=2)], ME)
    assert await store.stream_version("account-2") == 3
    # Nothing from the refused appends reached the log.
    assert [e.type for e in await store.read("account-2")] == ["AccountOpened", "Deposited", "Deposited"]


async def test_two_writers_same_expected_version_exactly_one_wins(store: EventStore) -> None:
    for round_ in range(20):
        stream = f"account-race{round_}"
        await store.append(stream, NO_STREAM, [AccountOpened(owner="x")], ME)
        results = await asyncio.gather(
            store.append(stream, 1, [Deposited(amount=1)], ME),
            store.append(stream, 1, [Withdrawn(amount=1)], ME),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, ConcurrencyConflict)]
        assert len(wins) == 1 and len(losses) == 1, results
        assert losses[0].actual == 2
        assert await store.stream_version(stream) == 2


async def test_events_table_refuses_update_delete_truncate(store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("account-3", NO_STREAM, [AccountOpened(owner="cy")], ME)
    for statement in (
        "UPDATE events SET data = '{}'::jsonb",
        "DELETE FROM events",
        "TRUNCATE events",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await pool.execute(statement)
    assert len(await store.read("account-3")) == 1


def test_invalid_payload_is_rejected_naming_the_field() -> None:
    with pytest.raises(InvalidEvent, match="amount"):
        validate_event(Deposited, {"amount": "lots"})
    with pytest.raises(InvalidEvent, match="colour"):
        validate_event(AccountOpened, {"owner": "a", "colour": "red"})


async def test_unknown_event_type_is_reported_not_dropped(store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("account-4", NO_STREAM, [AccountOpened(owner="di")], ME)
    # A newer Maestro wrote a type this one does not know.
    await pool.execute(
        "SELECT * FROM events_append('future-1', -1, ARRAY['QuantumEntangled'], ARRAY[1]::smallint[], "
        "ARRAY['{}'::jsonb], ARRAY['{\"actor\":\"system:future\"}'::jsonb], now())"
    )
    with pytest.raises(UnknownEventType) as info:
        await store.read_all(0)
    assert info.value.type_name == "QuantumEntangled"
    assert info.value.position is not None
    raw = await store.read_all_raw(0)
    assert [e.type for e in raw] == ["AccountOpened", "QuantumEntangled"]


async def test_old_payloads_are_upcast_on_read(store: EventStore, pool: asyncpg.Pool) -> None:
    await pool.execute(
        "SELECT * FROM events_append('account-5', -1, ARRAY['LimitSet'], ARRAY[1]::smallint[], "
        "ARRAY['{\"max\": 50}'::jsonb], ARRAY['{\"actor\":\"user:1\"}'::jsonb], now())"
    )
    await store.append("account-5", 1, [LimitSet(limit=70, currency="EUR")], ME)
    events = await store.read("account-5")
    assert [e.event for e in events] == [LimitSet(limit=50, currency="USD"), LimitSet(limit=70, currency="EUR")]
    # The stored payload is never rewritten.
    raw = await store.read_all_raw(0)
    assert raw[0].data == {"max": 50} and raw[0].schema_version == 1


async def test_reader_never_passes_an_open_transaction(store: EventStore, pool: asyncpg.Pool) -> None:
    """A transaction that allocated a lower position but commits later holds readers back."""
    slow = await pool.acquire()
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(
            "SELECT * FROM events_append('account-slow', -1, ARRAY['AccountOpened'], ARRAY[1]::smallint[], "
            "ARRAY['{\"owner\":\"slow\"}'::jsonb], ARRAY['{\"actor\":\"user:1\"}'::jsonb], now())"
        )
        fast = await store.append("account-fast", NO_STREAM, [AccountOpened(owner="fast")], ME)

        # The fast event is committed, but a lower position is still in flight.
        assert await store.read_all(0) == []
        committed = await pool.fetchval("SELECT count(*) FROM events")
        assert committed == 1

        await tx.commit()
        seen = await store.read_all(0)
        assert [e.stream_id for e in seen] == ["account-slow", "account-fast"]
        assert seen[1].position == fast.first_position
        assert seen[0].position < seen[1].position
    finally:
        await pool.release(slow)


async def test_subscribe_catches_up_then_follows_live(store: EventStore) -> None:
    for i in range(5):
        await store.append(f"account-s{i}", NO_STREAM, [AccountOpened(owner=str(i))], ME)
    received: list[int] = []
    done = asyncio.Event()

    async def follow() -> None:
        async for e in store.subscribe(0, batch_size=2):
            received.append(e.position)
            if len(received) == 8:
                done.set()
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    for i in range(3):
        await store.append(f"account-live{i}", NO_STREAM, [AccountOpened(owner="l")], ME)
    await asyncio.wait_for(done.wait(), timeout=10)
    await task
    assert received == sorted(received) and len(set(received)) == 8


async def test_subscriber_in_another_process_is_woken_by_notify(dsn: str, store: EventStore) -> None:
    """With a 60 s polling fallback, only NOTIFY can deliver within the 10 s we wait."""
    other_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    follower = EventStore(other_pool, listen_dsn=dsn, poll_interval=60)
    try:
        got = asyncio.Event()

        async def follow() -> None:
            async for _ in follower.subscribe(0):
                got.set()
                return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)  # the follower has read the empty log and waits
        await store.append("account-n", NO_STREAM, [AccountOpened(owner="n")], ME)
        await asyncio.wait_for(got.wait(), timeout=10)
        await task
    finally:
        await follower.close()
        await other_pool.close()


async def test_polling_fallback_delivers_without_notifications(dsn: str, store: EventStore) -> None:
    other_pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    follower = EventStore(other_pool, listen_dsn=None, poll_interval=0.1)
    try:
        received = []

        async def follow() -> None:
            async for e in follower.subscribe(0):
                received.append(e)
                return

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        await store.append("account-p", NO_STREAM, [AccountOpened(owner="p")], ME)
        await asyncio.wait_for(task, timeout=10)
        assert received[0].stream_id == "account-p"
    finally:
        await follower.close()
        await other_pool.close()


async def test_read_all_filters_by_type(store: EventStore) -> None:
    await store.append("account-t", NO_STREAM, [AccountOpened(owner="t"), Deposited(amount=3), Withdrawn(amount=1)], ME)
    deposits = await store.read_all(0, types=["Deposited", "Withdrawn"])
    assert [e.type for e in deposits] == ["Deposited", "Withdrawn"]


async def test_metadata_is_stored_as_json(store: EventStore, pool: asyncpg.Pool) -> None:
    await store.append("account-m", NO_STREAM, [AccountOpened(owner="m")], Metadata(actor="token:9", extra={"ip": "10.0.0.1"}))
    raw = await pool.fetchval("SELECT metadata::text FROM events")
    body = orjson.loads(raw)
    assert body["actor"] == "token:9" and body["extra"] == {"ip": "10.0.0.1"}
    assert "correlation_id" in body


async def test_append_rejects_empty_batches(store: EventStore) -> None:
    with pytest.raises(ValueError):
        await store.append("account-e", NO_STREAM, [], ME)
    assert not isinstance(ValueError(), MaestroError)
