"""Runner leadership is fenced: a leader whose lock connection dies stops acting at once, and
another replica takes over (issue 8, item 4). Two services on one database, real PostgreSQL."""

from __future__ import annotations

import asyncio
import time

from maestro.events import Metadata
from maestro.events.catalog import TableSpec
from maestro.services import RUNNER_LOCK, start_services

ME = Metadata(actor="user:tests")


async def _until(predicate, timeout: float) -> float:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


async def test_a_leader_that_loses_its_lock_stops_and_the_other_replica_takes_over(runtime, local_stack, tmp_path) -> None:
    from maestro.runtime import open_runtime

    second = await open_runtime(runtime.settings.with_overrides(data_dir=tmp_path / "second"))
    a = await start_services(runtime, stack=local_stack)
    b = None
    sampler = None
    try:
        await _until(lambda: a.is_leader, 10)
        b = await start_services(second, stack=local_stack)
        await asyncio.sleep(0.5)
        assert not b.is_leader
        both: list[float] = []

        async def sample() -> None:
            while True:
                if a.is_leader and b.is_leader:
                    both.append(time.monotonic())
                await asyncio.sleep(0.002)

        sampler = asyncio.ensure_future(sample())
        pid = await runtime.pool.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted", RUNNER_LOCK)
        assert await runtime.pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        stopped = await _until(lambda: not a.is_leader, 5)
        assert stopped < 2 * a.leader.check + 0.5  # fenced within the bound docs/event-store.md names
        assert a.runner._main is None  # it no longer follows the log or runs jobs
        await _until(lambda: b.is_leader and b.runner._main is not None, 10)
        assert not a.is_leader and both == []
        # A, now a standby, is healthy: its reactors (callbacks, deliveries, git, ...) are standby,
        # not down, so a readiness or liveness probe on /healthz keeps it (review finding 2).
        assert a.notify is not None
        await _until(lambda: (c := runtime.health.snapshot().get("runner")) is not None and c.state == "standby", 10)
        snapshot = runtime.health.snapshot()
        reactors = {name: c.state for name, c in snapshot.items() if name.startswith("reactor:")}
        assert "reactor:callbacks" in reactors and set(reactors.values()) == {"standby"}, reactors
        assert runtime.health.degraded() == [], snapshot
        # The new leader runs jobs.
        table = await second.catalog.create_table(TableSpec(dataset="lead", name="t", query="SELECT 1 AS x"), ME)
        run_id = await second.runs.plan_table(table.table_id, descendants=False, actor=ME)
        for _ in range(600):
            status = await runtime.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
            if status != "running":
                break
            await asyncio.sleep(0.05)
        assert status == "succeeded"
        assert both == []
    finally:
        if sampler is not None:
            sampler.cancel()
        if b is not None:
            await b.close()
        await a.close()
        runtime.services = None
        await second.close()

