"""Overlapping runs: a frequency's slot that comes while its previous run still runs (``overlap``).

The scheduler is driven with ``tick(now=...)``. Without a runner a planned run stays running, which
is the overlap; a blocker is finished by appending the ``RunFinished`` the runner would append. The
last test runs the real runner and scheduler on the local BigQuery.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from maestro.events import Metadata
from maestro.events.runs import RunFinished
from maestro.handlers.runs.scheduler import Scheduler
from maestro.scheduling import run_id_for

RUNNER = Metadata(actor="system:runner")


async def _frequency(client, name: str, **extra) -> str:
    resp = await client.post("/api/v1/frequencies", json={"name": name, "period": 60, **extra})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _table(client, name: str, frequency_id: str) -> str:
    resp = await client.post(
        "/api/v1/tables", json={"dataset": "ovl", "name": name, "query": "SELECT 1 AS x", "frequency_id": frequency_id}
    )
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _first_slot(runtime, frequency_id: str) -> dt.datetime:
    """The first slot a new minutely frequency owes (the minute after it was created)."""
    created = await runtime.pool.fetchval(
        "SELECT min(occurred_at) FROM events WHERE stream_id = $1", f"frequency-{frequency_id}"
    )
    return created.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


async def _stream(runtime, run_id: str) -> list:
    return await runtime.store.read(f"run-{run_id}")


async def _rebuilds_identically(runtime) -> None:
    query = "SELECT to_jsonb(r) FROM runs r ORDER BY run_id"
    before = [r[0] for r in await runtime.pool.fetch(query)]
    await runtime.projections.rebuild("runs")
    assert [r[0] for r in await runtime.pool.fetch(query)] == before


async def _finish(runtime, run_id: str) -> None:
    version = await runtime.store.stream_version(f"run-{run_id}")
    await runtime.store.append(f"run-{run_id}", version, [RunFinished(run_id=run_id, status="succeeded")], RUNNER)


async def test_skip_records_an_overlapping_slot_once_with_its_blocker(client, runtime) -> None:
    freq = await _frequency(client, "ovl-skip")  # overlap defaults to skip
    await _table(client, "s", freq)
    slot1 = await _first_slot(runtime, freq)
    first = run_id_for(freq, slot1)
    assert await Scheduler(runtime.runs).tick(slot1 + dt.timedelta(seconds=1)) == [first]

    # The next slot comes while the first run still runs: three schedulers, one decision.
    slot2 = slot1 + dt.timedelta(minutes=1)
    second = run_id_for(freq, slot2)
    schedulers = [Scheduler(runtime.runs) for _ in range(3)]
    decided = await asyncio.gather(*(s.tick(slot2 + dt.timedelta(seconds=1)) for s in schedulers))
    assert sorted(sum(decided, [])) == [second]
    events = await _stream(runtime, second)
    assert [e.type for e in events] == ["RunSkipped"]
    skipped = events[0].event
    assert (skipped.reason, skipped.blocking_run_id, skipped.slot) == ("overlap", first, slot2)
    assert events[0].metadata.actor == "system:scheduler"
    run = await (await client.get(f"/api/v1/runs/{second}")).json()
    assert (run["status"], run["blocked_by"], run["trigger"]) == ("skipped", first, "schedule")
    assert "still running" in run["reason"] and run["tables"] == []
    # Decided: a later tick in the same slot does nothing, and the skipped run cannot be retried.
    assert await schedulers[0].tick(slot2 + dt.timedelta(seconds=30)) == []
    assert (await client.post(f"/api/v1/runs/{second}/retry")).status == 409
    listed = await (await client.get("/api/v1/runs", params={"status": "skipped"})).json()
    assert [r["id"] for r in listed["runs"]] == [second]

    # Manual runs are never held, even while the scheduled run runs.
    resp = await client.post("/api/v1/runs", json={"frequency_id": freq})
    assert resp.status == 201
    manual = (await resp.json())["id"]
    assert [e.type for e in await _stream(runtime, manual)] == ["RunPlanned"]

    # Once nothing of the frequency runs, the next slot runs again.
    await _finish(runtime, first)
    await _finish(runtime, manual)
    slot3 = slot2 + dt.timedelta(minutes=1)
    assert await schedulers[1].tick(slot3 + dt.timedelta(seconds=1)) == [run_id_for(freq, slot3)]
    assert [e.type for e in await _stream(runtime, run_id_for(freq, slot3))] == ["RunPlanned"]


async def test_a_running_manual_run_also_blocks_a_slot(client, runtime) -> None:
    freq = await _frequency(client, "ovl-manual")
    slot1 = await _first_slot(runtime, freq)
    manual = (await (await client.post("/api/v1/runs", json={"frequency_id": freq})).json())["id"]
    await Scheduler(runtime.runs).tick(slot1 + dt.timedelta(seconds=1))
    skipped = (await _stream(runtime, run_id_for(freq, slot1)))[0].event
    assert skipped.type_name() == "RunSkipped" and skipped.blocking_run_id == manual


async def test_allow_plans_the_slot_alongside_the_running_run(client, runtime) -> None:
    freq = await _frequency(client, "ovl-allow", overlap="allow")
    await _table(client, "a", freq)
    slot1 = await _first_slot(runtime, freq)
    scheduler = Scheduler(runtime.runs)
    await scheduler.tick(slot1 + dt.timedelta(seconds=1))
    slot2 = slot1 + dt.timedelta(minutes=1)
    assert await scheduler.tick(slot2 + dt.timedelta(seconds=1)) == [run_id_for(freq, slot2)]
    statuses = await runtime.pool.fetch("SELECT status FROM runs WHERE frequency_id = $1", freq)
    assert [r["status"] for r in statuses] == ["running", "running"]


async def test_queue_holds_the_slot_until_the_blocker_finishes(client, runtime) -> None:
    freq = await _frequency(client, "ovl-queue", overlap="queue")
    table = await _table(client, "q", freq)
    slot1 = await _first_slot(runtime, freq)
    first, second, third = (run_id_for(freq, slot1 + dt.timedelta(minutes=i)) for i in range(3))
    schedulers = [Scheduler(runtime.runs) for _ in range(3)]
    await schedulers[0].tick(slot1 + dt.timedelta(seconds=1))

    # Slot 2 while run 1 runs: queued behind it, decided once; nothing is planned yet.
    at2 = slot1 + dt.timedelta(minutes=1, seconds=1)
    assert sorted(sum(await asyncio.gather(*(s.tick(at2) for s in schedulers)), [])) == [second]
    events = await _stream(runtime, second)
    assert [e.type for e in events] == ["RunQueued"] and events[0].event.blocking_run_id == first
    run = await (await client.get(f"/api/v1/runs/{second}")).json()
    assert (run["status"], run["blocked_by"], run["tables"]) == ("queued", first, [])
    assert (await client.post(f"/api/v1/runs/{second}/retry")).status == 409

    # Slot 3 while run 2 waits: at most one waits, so it is skipped behind the queued run.
    await schedulers[1].tick(slot1 + dt.timedelta(minutes=2, seconds=1))
    skipped = (await _stream(runtime, third))[0].event
    assert (skipped.type_name(), skipped.reason, skipped.blocking_run_id) == ("RunSkipped", "overlap", second)
    # Still running: ticks release nothing.
    assert await schedulers[2].tick(slot1 + dt.timedelta(minutes=2, seconds=20)) == []

    # Run 1 finishes: the next ticks (three schedulers at once) release run 2 exactly once.
    await _finish(runtime, first)
    later = slot1 + dt.timedelta(minutes=2, seconds=30)
    assert sorted(sum(await asyncio.gather(*(s.tick(later) for s in schedulers)), [])) == [second]
    events = await _stream(runtime, second)
    assert [e.type for e in events] == ["RunQueued", "RunPlanned"]
    planned = events[1]
    assert planned.event.slot == slot1 + dt.timedelta(minutes=1) and planned.event.trigger == "schedule"
    assert [t.table_id for t in planned.event.tables] == [table]
    # One causal chain from the queueing to the plan (the runner's job events join it).
    assert planned.metadata.correlation_id == events[0].metadata.correlation_id
    assert planned.metadata.causation_id == f"run-{second}@1"
    run = await (await client.get(f"/api/v1/runs/{second}")).json()
    assert (run["status"], run["blocked_by"]) == ("running", first)
    assert [t["state"] for t in run["tables"]] == ["pending"]
    assert await schedulers[0].tick(later + dt.timedelta(seconds=5)) == []
    await _rebuilds_identically(runtime)


async def test_a_queued_run_can_be_cancelled_and_is_never_released(client, runtime) -> None:
    freq = await _frequency(client, "ovl-cancel", overlap="queue")
    slot1 = await _first_slot(runtime, freq)
    first, second = run_id_for(freq, slot1), run_id_for(freq, slot1 + dt.timedelta(minutes=1))
    scheduler = Scheduler(runtime.runs)
    await scheduler.tick(slot1 + dt.timedelta(seconds=1))
    await scheduler.tick(slot1 + dt.timedelta(minutes=1, seconds=1))
    assert (await client.post(f"/api/v1/runs/{second}/cancel")).status == 202
    run = await (await client.get(f"/api/v1/runs/{second}")).json()
    assert run["status"] == "cancelled" and run["finished_at"] is not None
    assert run["reason"] == "cancelled: cancelled while queued"
    assert (await client.post(f"/api/v1/runs/{second}/cancel")).status == 409
    await _finish(runtime, first)
    assert await scheduler.tick(slot1 + dt.timedelta(minutes=1, seconds=30)) == []
    events = await _stream(runtime, second)
    assert [e.type for e in events] == ["RunQueued", "RunSkipped"] and events[1].event.reason == "cancelled"
    assert events[1].metadata.actor == "user:admin-1"
    await _rebuilds_identically(runtime)


async def test_a_queued_run_of_a_deactivated_frequency_is_skipped_with_a_reason(client, runtime) -> None:
    freq = await _frequency(client, "ovl-inactive", overlap="queue")
    slot1 = await _first_slot(runtime, freq)
    first, second = run_id_for(freq, slot1), run_id_for(freq, slot1 + dt.timedelta(minutes=1))
    scheduler = Scheduler(runtime.runs)
    await scheduler.tick(slot1 + dt.timedelta(seconds=1))
    await scheduler.tick(slot1 + dt.timedelta(minutes=1, seconds=1))
    assert (await client.patch(f"/api/v1/frequencies/{freq}", json={"active": False})).status == 200
    await _finish(runtime, first)
    assert await scheduler.tick(slot1 + dt.timedelta(minutes=1, seconds=30)) == [second]
    events = await _stream(runtime, second)
    assert [e.type for e in events] == ["RunQueued", "RunSkipped"]
    assert events[1].event.reason == "inactive"
    run = await (await client.get(f"/api/v1/runs/{second}")).json()
    assert run["status"] == "skipped" and run["reason"].startswith("inactive")


async def test_overlap_is_part_of_the_frequency_api(client, runtime) -> None:
    freq = await _frequency(client, "ovl-api")
    body = await (await client.get(f"/api/v1/frequencies/{freq}")).json()
    assert body["overlap"] == "skip"
    resp = await client.patch(f"/api/v1/frequencies/{freq}", json={"overlap": "queue"})
    assert resp.status == 200 and (await resp.json())["overlap"] == "queue"
    for bad in ({"overlap": "sometimes"},):
        resp = await client.patch(f"/api/v1/frequencies/{freq}", json=bad)
        assert resp.status == 422 and (await resp.json())["error"]["code"] == "validation_failed"
    resp = await client.post("/api/v1/frequencies", json={"name": "ovl-bad", "period": 60, "overlap": "never"})
    assert resp.status == 422
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["components"]["schemas"]["FrequencySpec"]["properties"]["overlap"]["enum"] == ["skip", "queue", "allow"]
    assert "overlap" in doc["components"]["schemas"]["FrequencyPatch"]["properties"]
    # The plan says what the next slot would do if the current run were still going then.
    slot1 = await _first_slot(runtime, freq)
    await Scheduler(runtime.runs).tick(slot1 + dt.timedelta(seconds=1))
    preview = await runtime.runs.preview(freq)
    assert (preview["overlap"], preview["blocking_run_id"]) == ("queue", run_id_for(freq, slot1))


async def test_the_runner_starts_a_released_run(client, runtime, local_stack) -> None:
    """End to end: the real runner finishes the blocker, the real scheduler loop releases the
    queued slot, and the runner runs it on the local BigQuery."""
    from maestro.services import start_services

    freq = await _frequency(client, "ovl-e2e", overlap="queue")
    await _table(client, "e2e", freq)
    slot1 = await _first_slot(runtime, freq)
    first, second = run_id_for(freq, slot1), run_id_for(freq, slot1 + dt.timedelta(minutes=1))
    scheduler = Scheduler(runtime.runs)
    await scheduler.tick(slot1 + dt.timedelta(seconds=1))
    await scheduler.tick(slot1 + dt.timedelta(minutes=1, seconds=1))
    assert [e.type for e in await _stream(runtime, second)] == ["RunQueued"]

    svc = await start_services(runtime, stack=local_stack)  # the runner recovers run 1
    try:
        plan = await (await client.get(f"/api/v1/frequencies/{freq}/plan")).json()
        assert plan["overlap"] == "queue"
        statuses: dict[str, str] = {}
        for _ in range(600):
            rows = await runtime.pool.fetch("SELECT run_id, status FROM runs WHERE frequency_id = $1", freq)
            statuses = {r["run_id"]: r["status"] for r in rows}
            if statuses.get(second) not in ("queued", "running"):
                break
            await asyncio.sleep(0.1)
        assert statuses == {first: "succeeded", second: "succeeded"}
        types = [e.type for e in await _stream(runtime, second)]
        assert types == ["RunQueued", "RunPlanned", "RunFinished"]
        first_end = await runtime.pool.fetchval("SELECT finished_at FROM runs WHERE run_id = $1", first)
        second_start = await runtime.pool.fetchval("SELECT planned_at FROM runs WHERE run_id = $1", second)
        assert second_start >= first_end
    finally:
        await svc.close()
        runtime.services = None


async def test_the_event_stream_of_a_skipped_slot_ends(client, runtime) -> None:
    freq = await _frequency(client, "ovl-sse")
    await _table(client, "e", freq)
    slot1 = await _first_slot(runtime, freq)
    assert await Scheduler(runtime.runs).tick(slot1 + dt.timedelta(seconds=1))
    slot2 = slot1 + dt.timedelta(minutes=1)
    second = run_id_for(freq, slot2)
    assert await Scheduler(runtime.runs).tick(slot2 + dt.timedelta(seconds=1)) == [second]
    resp = await asyncio.wait_for(client.get(f"/api/v1/runs/{second}/events"), timeout=10)
    body = await asyncio.wait_for(resp.text(), timeout=10)  # before: the stream never ended
    assert "event: RunSkipped" in body
    position = (await _stream(runtime, second))[-1].position
    resumed = await client.get(f"/api/v1/runs/{second}/events", headers={"Last-Event-ID": str(position)})
    assert resumed.status == 204
