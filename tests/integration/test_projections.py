"""Projections: incremental equals rebuilt, checkpoints, inline read-your-writes, status."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from dsns import with_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_events import BALANCES_DDL, AccountOpened, BalancesProjection, Deposited, Withdrawn

from maestro.adapters import postgres
from maestro.events import Metadata
from maestro.events.store import ANY_VERSION, NO_STREAM, EventStore
from maestro.projections import ProjectionRunner
from maestro.projections.streams import StreamsProjection

ME = Metadata(actor="user:1")

event_st = st.one_of(
    st.builds(AccountOpened, owner=st.sampled_from(["ann", "bo", "cy"])),
    st.builds(Deposited, amount=st.integers(1, 1000)),
    st.builds(Withdrawn, amount=st.integers(1, 1000)),
)
# A history: appends of 1-4 events to one of a few streams, applied in chunks.
history_st = st.lists(
    st.tuples(st.sampled_from(["account-a", "account-b", "account-c", "other-x"]), st.lists(event_st, min_size=1, max_size=4)),
    min_size=1,
    max_size=25,
)
chunks_st = st.lists(st.integers(1, 6), min_size=1, max_size=10)


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list]:
    return {
        "balances": [tuple(r) for r in await pool.fetch("SELECT * FROM test_balances ORDER BY account")],
        "streams": [tuple(r) for r in await pool.fetch("SELECT * FROM proj_streams ORDER BY stream_id")],
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=history_st, chunks=chunks_st)
def test_incremental_equals_rebuild(pg_admin_dsn: str, pg_template: str, history, chunks) -> None:
    async def scenario() -> None:
        name = f"maestro_p_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        await admin.close()
        dsn = with_database(pg_admin_dsn, name)
        pool = await postgres.create_pool(dsn, min_size=1, max_size=3)
        try:
            await pool.execute(BALANCES_DDL)
            store = EventStore(pool)
            runner = ProjectionRunner(store, [StreamsProjection(), BalancesProjection()])
            await runner.prepare()
            steps = iter(chunks * 30)
            pending = 0
            for stream, events in history:
                await store.append(stream, ANY_VERSION, events, ME)
                pending += 1
                if pending >= next(steps):
                    # Fed incrementally, in batches of arbitrary sizes.
                    await runner.catch_up("streams", batch_size=3)
                    await runner.catch_up("test_balances", batch_size=2)
                    pending = 0
            await runner.catch_up("streams", batch_size=3)
            await runner.catch_up("test_balances", batch_size=2)
            incremental = await _snapshot(pool)
            await runner.rebuild("streams")
            await runner.rebuild("test_balances")
            rebuilt = await _snapshot(pool)
            assert incremental == rebuilt
            assert len(incremental["streams"]) == len({s for s, _ in history})
            await store.close()
        finally:
            await pool.close()
            admin = await asyncpg.connect(pg_admin_dsn)
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()

    asyncio.run(scenario())


async def test_async_projection_follows_the_log(store: EventStore, pool: asyncpg.Pool) -> None:
    runner = ProjectionRunner(store, [StreamsProjection()])
    await runner.prepare()
    runner.start()
    try:
        await store.append("table-1", NO_STREAM, [AccountOpened(owner="a")], ME)
        await store.append("table-1", 1, [Deposited(amount=1)], ME)
        for _ in range(200):
            row = await pool.fetchrow("SELECT * FROM proj_streams WHERE stream_id = 'table-1'")
            if row is not None and row["version"] == 2:
                break
            await asyncio.sleep(0.02)
        assert row is not None and row["version"] == 2 and row["category"] == "table"
        assert row["last_type"] == "Deposited"
        status = {s.name: s for s in await runner.status()}
        assert status["streams"].lag == 0
        assert status["streams"].position == await store.last_position()
    finally:
        await runner.stop()


async def test_checkpoint_and_tables_move_together(store: EventStore, pool: asyncpg.Pool) -> None:
    """A failing batch leaves both the tables and the checkpoint where they were."""

    class Exploding(StreamsProjection):
        name = "exploding"

        async def apply(self, conn, events):  # type: ignore[override]
            await super().apply(conn, events)
            if any(e.type == "Withdrawn" for e in events):
                raise RuntimeError("boom")

    runner = ProjectionRunner(store, [Exploding()])
    await runner.prepare()
    await store.append("account-1", NO_STREAM, [AccountOpened(owner="a")], ME)
    assert await runner.catch_up("exploding") == 1
    await store.append("account-1", 1, [Withdrawn(amount=1)], ME)
    with pytest.raises(RuntimeError):
        await runner.catch_up("exploding")
    assert await pool.fetchval("SELECT version FROM proj_streams") == 1
    status = {s.name: s for s in await runner.status()}
    assert status["exploding"].position == 1 and status["exploding"].lag == 1


async def test_lag_counts_only_handled_types(store: EventStore, pool: asyncpg.Pool) -> None:
    await pool.execute(BALANCES_DDL)
    runner = ProjectionRunner(store, [BalancesProjection()])
    await runner.prepare()
    await store.append("account-1", NO_STREAM, [AccountOpened(owner="a"), Deposited(amount=2)], ME)
    status = {s.name: s for s in await runner.status()}
    assert status["test_balances"].lag == 2
    await runner.catch_up("test_balances")
    status = {s.name: s for s in await runner.status()}
    assert status["test_balances"].lag == 0


async def test_inline_projection_reads_its_writes_and_rebuilds(store: EventStore, pool: asyncpg.Pool) -> None:
    await pool.execute(BALANCES_DDL)

    class InlineBalances(BalancesProjection):
        name = "inline_balances"
        mode = "inline"

    await store.append("account-9", NO_STREAM, [AccountOpened(owner="early")], ME)
    runner = ProjectionRunner(store, [InlineBalances()])
    # A new inline projection catches up with the existing log before use.
    await runner.prepare()
    assert await pool.fetchval("SELECT owner FROM test_balances WHERE account = 'account-9'") == "early"

    await store.append("account-9", 1, [Deposited(amount=40)], ME)
    # Visible as soon as append returns: same transaction.
    assert await pool.fetchval("SELECT balance FROM test_balances WHERE account = 'account-9'") == 40
    before = [tuple(r) for r in await pool.fetch("SELECT * FROM test_balances")]
    assert await runner.rebuild("inline_balances") == 2
    assert [tuple(r) for r in await pool.fetch("SELECT * FROM test_balances")] == before


async def test_rebuild_of_inline_projection_waits_for_appends(store: EventStore, pool: asyncpg.Pool) -> None:
    """Appends running during a rebuild are neither lost nor applied twice."""
    await pool.execute(BALANCES_DDL)

    class InlineBalances(BalancesProjection):
        name = "inline_balances"
        mode = "inline"

    runner = ProjectionRunner(store, [InlineBalances()])
    await runner.prepare()
    await store.append("account-r", NO_STREAM, [AccountOpened(owner="r")], ME)

    async def deposits() -> None:
        for _ in range(40):
            await store.append("account-r", ANY_VERSION, [Deposited(amount=1)], ME)

    await asyncio.gather(deposits(), runner.rebuild("inline_balances"), runner.rebuild("inline_balances"))
    assert await pool.fetchval("SELECT balance FROM test_balances WHERE account = 'account-r'") == 40
    assert await pool.fetchval("SELECT events FROM test_balances WHERE account = 'account-r'") == 41


async def test_replicas_never_apply_an_event_twice(store: EventStore, pool: asyncpg.Pool) -> None:
    await pool.execute(BALANCES_DDL)
    runners = [ProjectionRunner(store, [BalancesProjection()]) for _ in range(3)]
    for r in runners:
        await r.prepare()
    await store.append("account-z", NO_STREAM, [AccountOpened(owner="z")], ME)
    for _ in range(30):
        await store.append("account-z", ANY_VERSION, [Deposited(amount=1)], ME)
    await asyncio.gather(*(r.catch_up("test_balances", batch_size=4) for r in runners))
    assert await pool.fetchval("SELECT events FROM test_balances") == 31
    assert await pool.fetchval("SELECT balance FROM test_balances") == 30
