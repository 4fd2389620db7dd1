"""Runs on the local BigQuery: order, failure semantics, retry, cancel, exactly-once recovery."""

from __future__ import annotations

import asyncio
import datetime as dt


from maestro.adapters.bigquery import job_id_for
from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobPlanned
from maestro.events.store import NO_STREAM

ME = Metadata(actor="user:admin-1")


async def _table(client, dataset: str, name: str, query: str, **extra) -> str:
    resp = await client.post("/api/v1/tables", json={"dataset": dataset, "name": name, "query": query, **extra})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _frequency(client, name: str = "daily", **extra) -> str:
    resp = await client.post("/api/v1/frequencies", json={"name": name, "period": 86400, "offset": 14400, **extra})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _finished(client, run_id: str, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get(f"/api/v1/runs/{run_id}")
        run = await resp.json()
        if run["status"] != "running":
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.1)


def _rows(services, table: str) -> int:
    client = services.bigquery.client
    return list(client.query(f"SELECT COUNT(*) AS n FROM `maestro-local.{table}`", job_retry=None).result())[0]["n"]


async def test_a_frequency_run_executes_in_dependency_order(client, services, runtime) -> None:
    await runtime.users.create_group("Analytics", ME, group_id="analytics")  # a table's group must exist
    freq = await _frequency(client)
    a = await _table(client, "runs_a", "src", "SELECT 1 AS id UNION ALL SELECT 2", frequency_id=freq)
    b = await _table(client, "runs_a", "mid", "SELECT id * 10 AS v FROM runs_a.src", frequency_id=freq)
    c = await _table(client, "runs_a", "top", "SELECT SUM(v) AS total FROM runs_a.mid", frequency_id=freq,
                     labels={"team": "growth"}, owner_id="ann", group_id="analytics")
    resp = await client.post("/api/v1/runs", json={"frequency_id": freq})
    assert resp.status == 201
    run_id = (await resp.json())["id"]
    run = await _finished(client, run_id)
    assert run["status"] == "succeeded", [(t["name"], t["state"], t["error"]) for t in run["tables"]]
    states = {t["table_id"]: t for t in run["tables"]}
    assert {t["state"] for t in states.values()} == {"succeeded"}
    assert states[a]["priority"] == 2 and states[c]["priority"] == 0
    assert {(e["parent"], e["child"]) for e in run["graph"]["edges"]} >= {(a, b), (b, c)}

    # Order: each parent finished before its child was planned.
    jobs = {}
    for tid in (a, b, c):
        resp = await client.get(f"/api/v1/tables/{tid}/jobs")
        (job,) = (await resp.json())["jobs"]
        assert job["state"] == "succeeded" and job["run_id"] == run_id
        jobs[tid] = job
    assert jobs[a]["finished_at"] <= jobs[b]["planned_at"] and jobs[b]["finished_at"] <= jobs[c]["planned_at"]

    assert await asyncio.to_thread(_rows, services, "runs_a.top") == 1
    bq_job = await asyncio.to_thread(services.bigquery.client.get_job, jobs[c]["job_id"])
    assert bq_job.labels["team"] == "growth" and bq_job.labels["maestro_owner"] == "ann"
    assert bq_job.labels["maestro_group"] == "analytics" and bq_job.labels["maestro_table"] == c


async def test_failure_skips_descendants_only_and_retry_redoes_only_what_failed(client, services, runtime) -> None:
    freq = await _frequency(client)
    ok = await _table(client, "runs_f", "ok", "SELECT 1 AS x", frequency_id=freq)
    bad = await _table(client, "runs_f", "bad", "SELECT * FROM runs_f.does_not_exist_yet", frequency_id=freq)
    child = await _table(client, "runs_f", "child", "SELECT * FROM runs_f.bad", frequency_id=freq)
    run_id = (await (await client.post("/api/v1/runs", json={"frequency_id": freq})).json())["id"]
    run = await _finished(client, run_id)
    assert run["status"] == "failed"
    states = {t["table_id"]: t for t in run["tables"]}
    assert states[ok]["state"] == "succeeded"
    assert states[bad]["state"] == "failed" and states[bad]["error"]
    assert states[child]["state"] == "skipped" and states[child]["error"].startswith("upstream_failed")

    # Fix the table, then retry from failure: only `bad` and `child` run again.
    resp = await client.patch(f"/api/v1/tables/{bad}", json={"query": "SELECT 7 AS y"})
    assert resp.status == 200
    resp = await client.post(f"/api/v1/runs/{run_id}/retry")
    assert sorted((await resp.json())["retrying"]) == sorted([bad, child])
    run = await _finished(client, run_id)
    # The retry runs the snapshot taken at planning: the old query fails again; what matters
    # here is that nothing that succeeded ran twice.
    resp = await client.get(f"/api/v1/tables/{ok}/jobs")
    assert (await resp.json())["total"] == 1
    resp = await client.get(f"/api/v1/tables/{bad}/jobs")
    assert (await resp.json())["total"] == 2


async def test_run_one_table_with_descendants(client, services) -> None:
    a = await _table(client, "runs_t", "a", "SELECT 1 AS x")
    b = await _table(client, "runs_t", "b", "SELECT x + 1 AS x FROM runs_t.a")
    await _table(client, "runs_t", "unrelated", "SELECT 3 AS x")
    resp = await client.post(f"/api/v1/tables/{a}/run", json={"descendants": True})
    run = await _finished(client, (await resp.json())["id"])
    assert run["status"] == "succeeded"
    assert {t["table_id"] for t in run["tables"]} == {a, b}
    resp = await client.post(f"/api/v1/tables/{a}/run", json={})
    run = await _finished(client, (await resp.json())["id"])
    assert [t["table_id"] for t in run["tables"]] == [a]


async def test_unknown_or_inactive_frequency(client, services) -> None:
    resp = await client.post("/api/v1/runs", json={"frequency_id": "nope"})
    assert resp.status == 404
    freq = await _frequency(client, "paused", active=False)
    resp = await client.post("/api/v1/runs", json={"frequency_id": freq})
    assert resp.status == 409 and "not active" in (await resp.json())["error"]["message"]


async def test_deleted_table_is_skipped_with_a_reason(client, runtime, local_stack) -> None:
    from maestro.services import start_services

    freq = await _frequency(client)
    keep = await _table(client, "runs_d", "keep", "SELECT 1 AS x", frequency_id=freq)
    gone = await _table(client, "runs_d", "gone", "SELECT 2 AS x", frequency_id=freq)
    run_id, _ = await runtime.runs.plan_frequency(freq, slot=None, trigger="manual", actor=ME)
    await client.delete(f"/api/v1/tables/{gone}")
    svc = await start_services(runtime, stack=local_stack)  # the runner starts after the deletion
    try:
        run = await _finished(client, run_id)
    finally:
        await svc.close()
        runtime.services = None
    states = {t["table_id"]: t for t in run["tables"]}
    assert states[keep]["state"] == "succeeded"
    assert states[gone]["state"] == "skipped" and states[gone]["error"].startswith("table_deleted")


async def test_restart_reattaches_planned_and_submitted_jobs_without_resubmitting(client, runtime, local_stack) -> None:
    """Two crash windows: after JobPlanned but before the submit, and after the submit but before
    JobSubmitted was recorded. Either way the next start ends with one BigQuery job per id."""
    from maestro.adapters.bigquery import BigQueryJobs
    from maestro.adapters.localstack import bigquery_client
    from maestro.services import start_services

    t1 = await _table(client, "runs_r", "one", "SELECT 1 AS x")
    t2 = await _table(client, "runs_r", "two", "SELECT 2 AS x")
    config = lambda name, q: JobConfig(project="maestro-local", query=q, destination=f"maestro-local.runs_r.{name}")  # noqa: E731
    j1 = job_id_for("crash", t1, 1)
    j2 = job_id_for("crash", t2, 1)
    for job_id, tid, cfg in ((j1, t1, config("one", "SELECT 1 AS x")), (j2, t2, config("two", "SELECT 2 AS x"))):
        await runtime.store.append(f"job-{job_id}", NO_STREAM, [JobPlanned(job_id=job_id, run_id=None, table_id=tid, config=cfg)], ME)
    # j2 reached BigQuery before the crash; j1 did not.
    bq = bigquery_client(local_stack)
    await asyncio.to_thread(bq.create_dataset, "maestro-local.runs_r", exists_ok=True)
    jobs = BigQueryJobs(bq)
    assert await jobs.submit(j2, config("two", "SELECT 2 AS x")) is True
    jobs.close()

    svc = await start_services(runtime, stack=local_stack)
    try:
        for _ in range(300):
            states = dict(await runtime.pool.fetch("SELECT job_id, state FROM jobs WHERE job_id = ANY($1)", [j1, j2]))
            if set(states.values()) == {"succeeded"}:
                break
            await asyncio.sleep(0.05)
        assert states == {j1: "succeeded", j2: "succeeded"}
        adopted = dict(await runtime.pool.fetch("SELECT job_id, adopted FROM jobs WHERE job_id = ANY($1)", [j1, j2]))
        assert adopted == {j1: False, j2: True}
        ids = await svc.bigquery.list_job_ids()
        assert ids.count(j1) == 1 and ids.count(j2) == 1
    finally:
        await svc.close()
        runtime.services = None


async def test_two_schedulers_start_one_run_per_slot(client, runtime, services) -> None:
    from maestro.handlers.runs.scheduler import Scheduler

    freq = await _frequency(client, "every-minute", period=60, offset=0)
    await _table(client, "runs_s", "t", "SELECT 1 AS x", frequency_id=freq)
    created = await runtime.pool.fetchval(
        "SELECT min(occurred_at) FROM events WHERE stream_id = $1", f"frequency-{freq}"
    )
    # Half-way through the first slot after the frequency was made (created + 61 s could land a
    # second before the next minute, and "the same slot again" a second later was a new slot).
    now = created.replace(second=0, microsecond=0) + dt.timedelta(seconds=90)
    schedulers = [Scheduler(runtime.runs) for _ in range(3)]
    started = await asyncio.gather(*(s.tick(now) for s in schedulers))
    assert sum(len(s) for s in started) == 1
    assert await runtime.pool.fetchval("SELECT count(*) FROM runs WHERE frequency_id = $1", freq) == 1
    # The same slot again: nothing new. The next slot: exactly one more.
    assert await schedulers[0].tick(now + dt.timedelta(seconds=1)) == []
    assert len(await schedulers[1].tick(now + dt.timedelta(seconds=60))) == 1


async def test_run_events_stream_as_server_sent_events(client, services) -> None:
    a = await _table(client, "runs_e", "a", "SELECT 1 AS x")
    run_id = (await (await client.post(f"/api/v1/tables/{a}/run", json={})).json())["id"]
    resp = await client.get(f"/api/v1/runs/{run_id}/events")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    body = await asyncio.wait_for(resp.text(), timeout=60)
    kinds = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "RunPlanned" and kinds[-1] == "RunFinished"
    assert {"JobPlanned", "JobSubmitted", "JobSucceeded"} <= set(kinds)


async def test_dry_run_and_frequency_plan(client, services) -> None:
    freq = await _frequency(client)
    a = await _table(client, "runs_p", "a", "SELECT 1 AS x", frequency_id=freq)
    b = await _table(client, "runs_p", "b", "SELECT x FROM runs_p.a", frequency_id=freq)
    resp = await client.post(f"/api/v1/tables/{a}/dry-run")
    body = await resp.json()
    assert body["valid"] is True and body["bytes_processed"] >= 0 and body["usd"] >= 0
    resp = await client.get(f"/api/v1/frequencies/{freq}/plan")
    plan = await resp.json()
    assert [t["table_id"] for t in plan["tables"]] == [a, b]
    assert plan["slot"].endswith("04:00:00+00:00")
    assert "total" in plan


async def test_cancel_a_run(client, services, runtime) -> None:
    freq = await _frequency(client)
    ids = [await _table(client, "runs_c", f"t{i}", f"SELECT {i} AS x", frequency_id=freq) for i in range(12)]
    resp = await client.post("/api/v1/runs", json={"frequency_id": freq, "workers": 1})
    run_id = (await resp.json())["id"]
    resp = await client.post(f"/api/v1/runs/{run_id}/cancel")
    assert resp.status in (202, 409)
    run = await _finished(client, run_id)
    assert resp.status == 202, "the run finished before the cancel: make it longer"
    assert run["status"] == "cancelled", run["tables"]
    states = [t["state"] for t in run["tables"]]
    assert "cancelled" in states and len(states) == len(ids)
    assert set(states) <= {"succeeded", "cancelled"}
    resp = await client.post(f"/api/v1/runs/{run_id}/cancel")
    assert resp.status == 409  # not running any more


async def test_workers_bound_jobs_in_flight_and_priority_goes_first(client, services, runtime) -> None:
    """With one worker, the roots start in order of how many tables depend on them."""
    freq = await _frequency(client, "prio")
    low = await _table(client, "runs_w", "low", "SELECT 1 AS x", frequency_id=freq)  # no dependents
    high = await _table(client, "runs_w", "high", "SELECT 1 AS x", frequency_id=freq)
    mid = await _table(client, "runs_w", "mid", "SELECT 1 AS x", frequency_id=freq)
    for i in range(3):
        await _table(client, "runs_w", f"h{i}", f"SELECT x + {i} AS x FROM runs_w.high", frequency_id=freq)
    await _table(client, "runs_w", "m0", "SELECT x FROM runs_w.mid", frequency_id=freq)
    run_id = (await (await client.post("/api/v1/runs", json={"frequency_id": freq, "workers": 1})).json())["id"]
    run = await _finished(client, run_id)
    assert run["status"] == "succeeded"
    jobs = await runtime.pool.fetch(
        "SELECT table_id, planned_at, finished_at FROM jobs WHERE run_id = $1 ORDER BY planned_at", run_id
    )
    order = [j["table_id"] for j in jobs]
    assert order.index(high) < order.index(mid) < order.index(low)
    # One worker: every job was planned only after the previous one finished.
    for before, after in zip(jobs, jobs[1:]):
        assert before["finished_at"] <= after["planned_at"]


async def test_a_runs_events_share_its_correlation_and_name_their_cause(client, services, runtime) -> None:
    """Audit: everything a run did is one correlation id; each job event says what caused it."""
    a = await _table(client, "runs_m", "a", "SELECT 1 AS x")
    await _table(client, "runs_m", "b", "SELECT x FROM runs_m.a")
    runs = []
    for _ in range(2):
        run_id = (await (await client.post(f"/api/v1/tables/{a}/run", json={"descendants": True})).json())["id"]
        assert (await _finished(client, run_id))["status"] == "succeeded"
        runs.append(run_id)
    correlations = []
    for run_id in runs:
        rows = await runtime.pool.fetch(
            "SELECT stream_id, version, type, metadata->>'correlation_id' AS corr, "
            "metadata->>'causation_id' AS cause, metadata->>'actor' AS actor FROM events "
            "WHERE stream_id = $1 OR data->>'run_id' = $2 ORDER BY position",
            f"run-{run_id}", run_id,
        )
        planned = rows[0]
        assert planned["type"] == "RunPlanned" and planned["actor"] == "user:admin-1"
        assert {r["corr"] for r in rows} == {planned["corr"]}
        for r in rows[1:]:
            assert r["actor"] == "system:runner"
            if r["type"] == "JobPlanned" or r["type"] == "RunFinished":
                assert r["cause"] == f"run-{run_id}@1"
            else:
                assert r["cause"] == f"{r['stream_id']}@1"
        correlations.append(planned["corr"])
    assert correlations[0] != correlations[1]
