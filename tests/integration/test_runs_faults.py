"""Faults around runs: BigQuery unreachable for a while, slots missed while the service was down."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from aiohttp import web

from bq_proxy import FaultProxy



class FlakyProxy(FaultProxy):
    """A reverse proxy in front of local-bigquery that fails the first ``failures`` requests with
    503 or a dropped connection: BigQuery unreachable, at the HTTP boundary, real client inside."""

    def __init__(self, upstream: str, failures: int) -> None:
        super().__init__(upstream)
        self.failures = failures
        self.seen = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                return web.Response(status=503, text="backend unavailable")
            request.transport.close()  # a dropped connection
            return web.Response(status=503)
        return await self.forward(request, await request.read())


async def test_bigquery_unreachable_for_a_while_nothing_fails_nothing_duplicates(client, runtime, local_stack) -> None:
    from maestro.services import start_services

    resp = await client.post("/api/v1/tables", json={"dataset": "flaky", "name": "t", "query": "SELECT 1 AS x"})
    table_id = (await resp.json())["id"]
    proxy = FlakyProxy(local_stack.bigquery_endpoint, failures=3)
    await proxy.start()
    svc = await start_services(runtime, stack=dataclasses.replace(local_stack, bigquery_endpoint=proxy.url))
    try:
        run_id = (await (await client.post(f"/api/v1/tables/{table_id}/run", json={})).json())["id"]
        for _ in range(600):
            run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
            if run["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert run["status"] == "succeeded", run["tables"]
        assert proxy.failures == 0 and proxy.seen > 3
        types = [r["type"] for r in await runtime.pool.fetch("SELECT type FROM events WHERE type LIKE 'Job%'")]
        assert "JobFailed" not in types
        job_id = run["tables"][0]["job_id"]
        ids = await svc.bigquery.list_job_ids()
        assert ids.count(job_id) == 1
    finally:
        await svc.close()
        runtime.services = None
        await proxy.stop()


async def test_slots_missed_while_down_run_once_with_latest_and_never_with_skip(client, runtime) -> None:
    from maestro.handlers.runs.scheduler import Scheduler

    resp = await client.post("/api/v1/frequencies", json={"name": "hourly", "period": 3600})
    latest = (await resp.json())["id"]
    resp = await client.post("/api/v1/frequencies", json={"name": "hourly-skip", "period": 3600, "missed": "skip"})
    skip = (await resp.json())["id"]
    scheduler = Scheduler(runtime.runs)
    # The service comes back hours after the frequencies were created, ten minutes into an hour
    # (not "now + 5 h 10 min": run at 13:50 that lands on a slot, which "skip" rightly runs).
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=5)).replace(minute=10, second=0, microsecond=0)
    started = await scheduler.tick(later)
    assert len(started) == 1 and started[0].startswith(latest)
    slot = await runtime.pool.fetchval("SELECT slot FROM runs WHERE frequency_id = $1", latest)
    assert slot == later.replace(minute=0, second=0, microsecond=0)
    assert await scheduler.tick(later + dt.timedelta(minutes=1)) == []
    # Exactly on the next slot, both run.
    on_slot = slot + dt.timedelta(hours=1, seconds=5)
    assert sorted(r.split("-")[0] for r in await scheduler.tick(on_slot)) == sorted([latest, skip])


async def test_a_frequency_that_cannot_be_scheduled_does_not_stop_the_others(client, runtime) -> None:
    """Found by the API fuzzer: an offset of -10^14 s made slot arithmetic overflow, and the whole
    tick failed, for every frequency. Such values are refused now (ten years at most); one stored
    before (a projection row edited here to stand for it) is reported and skipped."""
    from maestro.handlers.runs.scheduler import Scheduler

    resp = await client.post("/api/v1/frequencies", json={"name": "huge", "period": 3600, "offset": -10**14})
    assert resp.status == 422
    bad = (await (await client.post("/api/v1/frequencies", json={"name": "bad", "period": 3600})).json())["id"]
    good = (await (await client.post("/api/v1/frequencies", json={"name": "good", "period": 3600})).json())["id"]
    await runtime.pool.execute(
        "UPDATE catalog_frequencies SET spec = jsonb_set(spec, '{offset}', '-100000000000000') WHERE frequency_id = $1", bad)
    scheduler = Scheduler(runtime.runs)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    started = await scheduler.tick(later)
    assert [r.split("-")[0] for r in started] == [good]
    assert scheduler.unschedulable == [bad]
    await scheduler.tick(later + dt.timedelta(seconds=1))  # recorded once, not at every tick
    rows = await runtime.pool.fetch("SELECT data FROM events WHERE type = 'FrequencyUnschedulable'")
    assert len(rows) == 1 and bad in rows[0]["data"] and "offset" in rows[0]["data"]
