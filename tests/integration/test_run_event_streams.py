"""Server-Sent Events streams end: at the run's end, after a lifetime, when the caller's standing
fails or the client goes away; and nobody holds more than a few at once.

Before: a Last-Event-ID past the run's end kept a stream open forever, disconnects went unnoticed,
a disabled user's stream kept flowing, and streams per user were unbounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from people import TESTS, bearer, user_token

from maestro.events.catalog import ExtractSettings, TableSpec
from maestro.events.runs import (
    JobConfig,
    JobPlanned,
    JobStatistics,
    JobSucceeded,
    PlannedTable,
    RunFinished,
    RunPlanned,
)
from maestro.events.store import NO_STREAM
from maestro.http.app import create_app
from maestro.http.run_events import STREAM_SLOTS


async def _run(runtime, run_id: str, *, finished: bool) -> int:
    """A run (no BigQuery needed); returns the position of its last event."""
    result = await runtime.store.append(f"run-{run_id}", NO_STREAM, [RunPlanned(run_id=run_id, trigger="manual", tables=[])], TESTS)
    if finished:
        result = await runtime.store.append(f"run-{run_id}", 1, [RunFinished(run_id=run_id, status="succeeded")], TESTS)
    return result.last_position


async def _client(runtime, **settings: object) -> TestClient:
    app = create_app(runtime.settings.model_copy(update=settings), runtime=runtime)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def tokens(runtime) -> dict[str, str]:
    group = await runtime.users.create_group("analysts", TESTS)
    runtime.test_group = group.group_id
    return {
        "admin": await user_token(runtime, "root", admin=True),
        "member": await user_token(runtime, "mia", groups=(group.group_id,)),
        "plain": await user_token(runtime, "paul"),
    }


@pytest.fixture
async def client(runtime, tokens) -> AsyncIterator[TestClient]:
    c = await _client(runtime, sse_max_lifetime=60.0, sse_recheck_interval=0.2, sse_streams_per_user=2)
    try:
        yield c
    finally:
        await c.close()


async def test_resuming_past_the_runs_end_is_204_and_a_stream_stops_at_it(client, runtime, tokens) -> None:
    end = await _run(runtime, "r-done", finished=True)
    headers = bearer(tokens["plain"])
    resp = await asyncio.wait_for(client.get("/api/v1/runs/r-done/events", headers={**headers, "Last-Event-ID": str(end)}), 5)
    assert resp.status == 204  # EventSource stops reconnecting
    resp = await asyncio.wait_for(client.get("/api/v1/runs/r-done/events", headers={**headers, "Last-Event-ID": str(end + 1000)}), 5)
    assert resp.status == 204
    resp = await client.get("/api/v1/runs/r-done/events", headers=headers)
    body = await asyncio.wait_for(resp.text(), 5)
    assert body.startswith("retry: 3000\n\n")
    assert [line for line in body.splitlines() if line.startswith("event: ")] == ["event: RunPlanned", "event: RunFinished"]
    assert f"id: {end}\n" in body


async def test_a_stream_ends_after_its_lifetime_and_resumes(runtime, tokens) -> None:
    last = await _run(runtime, "r-long", finished=False)
    client = await _client(runtime, sse_max_lifetime=0.5, sse_recheck_interval=0.2)
    try:
        resp = await client.get("/api/v1/runs/r-long/events", headers=bearer(tokens["plain"]))
        body = await asyncio.wait_for(resp.text(), 5)  # ends although the run goes on
        assert body.startswith("retry: 3000\n\n") and "event: RunPlanned" in body
        await runtime.store.append("run-r-long", 1, [RunFinished(run_id="r-long", status="failed")], TESTS)
        resp = await client.get("/api/v1/runs/r-long/events", headers={**bearer(tokens["plain"]), "Last-Event-ID": str(last)})
        body = await asyncio.wait_for(resp.text(), 5)
        assert "event: RunPlanned" not in body and "event: RunFinished" in body
    finally:
        await client.close()


async def test_a_disabled_users_stream_ends(client, runtime, tokens) -> None:
    await _run(runtime, "r-open", finished=False)
    resp = await client.get("/api/v1/runs/r-open/events", headers=bearer(tokens["plain"]))
    assert resp.status == 200
    await runtime.users.change("paul", TESTS, enabled=False)
    await asyncio.wait_for(resp.text(), 5)
    rejected = await runtime.audit.query(types=["TokenRejected"])
    assert [(e.data["reason"], e.data["path"]) for e in rejected] == [("user disabled", "/api/v1/runs/r-open/events")]


async def test_streams_per_user_are_capped_and_a_gone_client_frees_its_slot(client, runtime, tokens) -> None:
    await _run(runtime, "r-busy", finished=False)
    slots = client.server.app[STREAM_SLOTS]
    first = await client.get("/api/v1/runs/r-busy/events", headers=bearer(tokens["plain"]))
    second = await client.get("/api/v1/runs/r-busy/events", headers=bearer(tokens["plain"]))
    assert first.status == second.status == 200 and slots.open("paul") == 2
    third = await client.get("/api/v1/runs/r-busy/events", headers=bearer(tokens["plain"]))
    assert third.status == 429 and (await third.json())["error"]["code"] == "too_many_streams"
    other = await client.get("/api/v1/runs/r-busy/events", headers=bearer(tokens["member"]))
    assert other.status == 200  # the cap is per user
    first.close()  # the client goes away without a word; the next keep-alive notices
    for _ in range(50):
        if slots.open("paul") == 1:
            break
        await asyncio.sleep(0.05)
    assert slots.open("paul") == 1
    again = await client.get("/api/v1/runs/r-busy/events", headers=bearer(tokens["plain"]))
    assert again.status == 200
    for resp in (second, other, again):
        resp.close()


async def test_extract_file_names_only_for_whom_the_extract_rule_admits(client, runtime, tokens) -> None:
    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="private", query="SELECT 1 AS x", group_id=runtime.test_group,
                  extract=ExtractSettings()), TESTS,
    )
    await _run(runtime, "r-x", finished=False)
    uri = "gs://maestro-local/extracts/ds/private/r-x/part-*.csv.gz"
    config = JobConfig(kind="extract", project="p", source="p.ds.private", destination_uris=[uri])
    await runtime.store.append("job-x", NO_STREAM, [
        JobPlanned(job_id="x", run_id="r-x", table_id=view.table_id, config=config),
        JobSucceeded(job_id="x", run_id="r-x", table_id=view.table_id, statistics=JobStatistics(), destination_uris=[uri]),
    ], TESTS)
    await runtime.store.append("run-r-x", 1, [RunFinished(run_id="r-x", status="succeeded")], TESTS)
    bodies = {}
    for who in ("plain", "member", "admin"):
        resp = await client.get("/api/v1/runs/r-x/events", headers=bearer(tokens[who]))
        bodies[who] = await asyncio.wait_for(resp.text(), 5)
        assert bodies[who].count("event: JobSucceeded") == 1
    assert "gs://" not in bodies["plain"] and "extracts/" not in bodies["plain"]
    assert bodies["member"].count(uri) == 2 and bodies["admin"].count(uri) == 2  # planned and written


async def test_a_callback_that_was_never_planned_does_not_hold_the_stream_open(client, runtime, tokens) -> None:
    """An extract with a notify_url whose callback no reactor planned (it succeeded before the
    callbacks reactor existed, or on a Maestro running none): due only for a while, then the run's
    stream ends at the run's end like any other."""
    import datetime as dt

    view = await runtime.catalog.create_table(
        TableSpec(dataset="ds", name="called", query="SELECT 1 AS x",
                  extract=ExtractSettings(notify_url="https://hooks.example.com/x")), TESTS)
    uri = "gs://maestro-local/extracts/ds/called/r-old/part-*.csv"
    config = JobConfig(kind="extract", project="p", source="p.ds.called", destination_uris=[uri])
    query = JobConfig(kind="query", project="p", destination="p.ds.called", query="SELECT 1 AS x")
    table = PlannedTable(table_id=view.table_id, name="ds.called", priority=0, parents=[], config=query,
                         extract={"notify_url": "https://hooks.example.com/x"})
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    await runtime.store.append("run-r-old", NO_STREAM, [RunPlanned(run_id="r-old", trigger="manual", tables=[table])],
                               TESTS, occurred_at=long_ago)
    await runtime.store.append("job-old", NO_STREAM, [
        JobPlanned(job_id="old", run_id="r-old", table_id=view.table_id, config=config),
        JobSucceeded(job_id="old", run_id="r-old", table_id=view.table_id, statistics=JobStatistics(),
                     destination_uris=[uri]),
    ], TESTS, occurred_at=long_ago)
    end = (await runtime.store.append("run-r-old", 1, [RunFinished(run_id="r-old", status="succeeded")], TESTS,
                                      occurred_at=long_ago)).last_position
    for _ in range(100):  # the read models follow the log
        if await runtime.pool.fetchval("SELECT count(*) FROM jobs WHERE job_id = 'old' AND state = 'succeeded'"):
            break
        await asyncio.sleep(0.05)
    headers = bearer(tokens["admin"])
    resp = await client.get("/api/v1/runs/r-old/events", headers=headers)
    body = await asyncio.wait_for(resp.text(), 10)  # ends at the run's end
    assert "event: RunFinished" in body
    resp = await asyncio.wait_for(client.get("/api/v1/runs/r-old/events", headers={**headers, "Last-Event-ID": str(end)}), 5)
    assert resp.status == 204
