"""BigQuery refuses: 400 at jobs.insert, 403 at dataset creation. The real client against
local-bigquery behind a fault proxy; every refusal ends as JobFailed, the table failed, its
descendants upstream_failed, the slot given back and the run finished (issue 8, item 2)."""

from __future__ import annotations

import asyncio
import dataclasses

from bq_proxy import FaultProxy, destination_of


def _refuse(method: str, path: str, body: object):
    if method == "POST" and path.endswith("/jobs") and destination_of(body) == "refused":
        return 400, "invalid", "Invalid table configuration for refused"
    if method == "POST" and path.endswith("/datasets") and isinstance(body, dict) \
            and body.get("datasetReference", {}).get("datasetId") == "forbidden":
        return 403, "accessDenied", "Access Denied: Project maestro-local: User does not have bigquery.datasets.create"
    return None


async def test_refusals_at_insert_and_dataset_creation_fail_tables_and_finish_the_run(client, runtime, local_stack) -> None:
    from maestro.services import start_services

    freq = (await (await client.post("/api/v1/frequencies", json={"name": "refusals", "period": 86400})).json())["id"]
    tables = {
        ("hard", "ok"): "SELECT 1 AS x",
        ("hard", "refused"): "SELECT 2 AS x",
        ("hard", "child"): "SELECT x FROM hard.refused",
        ("forbidden", "t"): "SELECT 3 AS x",
    }
    ids = {}
    for (dataset, name), query in tables.items():
        resp = await client.post("/api/v1/tables", json={
            "dataset": dataset, "name": name, "query": query, "frequency_id": freq})
        assert resp.status == 201, await resp.text()
        ids[name] = (await resp.json())["id"]
    proxy = FaultProxy(local_stack.bigquery_endpoint, _refuse)
    await proxy.start()
    svc = await start_services(runtime, stack=dataclasses.replace(local_stack, bigquery_endpoint=proxy.url))
    try:
        resp = await client.post("/api/v1/runs", json={"frequency_id": freq})
        assert resp.status in (200, 201, 202), await resp.text()
        run_id = (await resp.json())["id"]
        for _ in range(600):
            run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
            if run["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert run["status"] == "failed", run
        states = {t["table_id"]: t["state"] for t in run["tables"]}
        assert states == {ids["ok"]: "succeeded", ids["refused"]: "failed", ids["child"]: "skipped", ids["t"]: "failed"}
        assert svc.runner.in_flight == 0 and not svc.runner.runs
        failed = {r["table_id"]: dict(r) for r in await runtime.pool.fetch(
            "SELECT data->>'table_id' AS table_id, data->>'reason' AS reason, data->>'message' AS message, "
            "(data->>'retryable')::boolean AS retryable FROM events WHERE type = 'JobFailed'")}
        assert failed[ids["refused"]]["reason"] == "invalid" and not failed[ids["refused"]]["retryable"]
        assert "Invalid table configuration" in failed[ids["refused"]]["message"]
        assert failed[ids["t"]]["reason"] == "accessDenied" and not failed[ids["t"]]["retryable"]
        assert {status for _, _, status in proxy.answered} == {400, 403}
        assert await runtime.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'RunFinished' AND stream_id = $1", f"run-{run_id}") == 1
    finally:
        await svc.close()
        runtime.services = None
        await proxy.stop()
