"""Extracts to GCS with signed URLs, and cost attribution."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import urllib.request

from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobFailed, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM

ME = Metadata(actor="system:tests")


async def _finished(client, run_id: str) -> dict:
    for _ in range(600):
        run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
        if run["status"] != "running":
            return run
        await asyncio.sleep(0.1)
    raise AssertionError(run)


async def test_extract_after_success_with_signed_urls_and_children_wait(client, services) -> None:
    resp = await client.post("/api/v1/tables", json={
        "dataset": "ext", "name": "report", "query": "SELECT 1 AS id, 'a' AS v UNION ALL SELECT 2, 'b'",
        "extract": {"format": "csv", "compression": "gzip"},
    })
    report = (await resp.json())["id"]
    resp = await client.post("/api/v1/tables", json={"dataset": "ext", "name": "after", "query": "SELECT COUNT(*) AS n FROM ext.report"})
    after = (await resp.json())["id"]

    resp = await client.get(f"/api/v1/tables/{report}/extracts")
    assert (await resp.json())["extract"] is None

    run_id = (await (await client.post(f"/api/v1/tables/{report}/run", json={"descendants": True})).json())["id"]
    run = await _finished(client, run_id)
    assert run["status"] == "succeeded", run["tables"]

    jobs = (await (await client.get(f"/api/v1/tables/{report}/jobs")).json())["jobs"]
    kinds = {j["kind"]: j for j in jobs}
    assert set(kinds) == {"query", "extract"}
    child = (await (await client.get(f"/api/v1/tables/{after}/jobs")).json())["jobs"][0]
    assert kinds["extract"]["finished_at"] <= child["planned_at"], "the child did not wait for the extract"

    body = await (await client.get(f"/api/v1/tables/{report}/extracts")).json()
    files = body["extract"]["files"]
    assert files and all(f["uri"].startswith("gs://maestro-local/extracts/ext/report/") for f in files)
    assert all(f["uri"].endswith(".csv.gz") for f in files)
    url = files[0]["url"]
    assert "X-Goog-Signature=" in url and "X-Goog-Expires=14400" in url
    content = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    lines = gzip.decompress(content).decode().splitlines()
    assert lines[0] == "id,v" and sorted(lines[1:]) == ["1,a", "2,b"]


async def test_costs_attribute_every_billed_byte(client, runtime) -> None:
    """Real-looking statistics (the emulator bills 0 bytes): totals equal the sum over events."""
    day1 = dt.datetime(2026, 11, 27, 10, tzinfo=dt.timezone.utc)
    day2 = dt.datetime(2026, 11, 28, 23, 59, tzinfo=dt.timezone.utc)
    jobs = [
        # job, table, run, owner, group, bytes billed, slot ms, ended, succeeded
        ("j1", "t1", "r1", "ann", "growth", 10 * 2**40, 3_600_000, day1, True),
        ("j2", "t2", "r1", "bob", "growth", 3 * 2**30 + 17, 120_000, day1, True),
        ("j3", "t3", "r2", "ann", "finance", 5 * 2**40 + 123_456_789, 7_200_000, day2, True),
        ("j4", "t3", "r2", "ann", "finance", 2**20, 1_000, day2, False),  # failed queries bill too
    ]
    for job_id, table, run, owner, group, billed, slot_ms, ended, ok in jobs:
        stats = JobStatistics(total_bytes_processed=billed * 2, total_bytes_billed=billed, total_slot_ms=slot_ms, ended=ended)
        planned = JobPlanned(job_id=job_id, run_id=run, table_id=table, config=JobConfig(project="p", query="SELECT 1"),
                             owner_id=owner, group_id=group)
        outcome = (JobSucceeded(job_id=job_id, run_id=run, table_id=table, statistics=stats) if ok else
                   JobFailed(job_id=job_id, run_id=run, table_id=table, reason="invalidQuery", message="x",
                             retryable=False, statistics=stats))
        await runtime.store.append(f"job-{job_id}", NO_STREAM, [planned, outcome], ME)
    await runtime.projections.catch_up("costs")

    price = runtime.settings.price_per_tib
    total_billed = sum(j[5] for j in jobs)
    for by, expected in {
        "user": {"ann": 10 * 2**40 + 5 * 2**40 + 123_456_789 + 2**20, "bob": 3 * 2**30 + 17},
        "group": {"growth": 10 * 2**40 + 3 * 2**30 + 17, "finance": 5 * 2**40 + 123_456_789 + 2**20},
        "table": {"t1": 10 * 2**40, "t2": 3 * 2**30 + 17, "t3": 5 * 2**40 + 123_456_789 + 2**20},
        "run": {"r1": 10 * 2**40 + 3 * 2**30 + 17, "r2": 5 * 2**40 + 123_456_789 + 2**20},
        "day": {"2026-11-27": 10 * 2**40 + 3 * 2**30 + 17, "2026-11-28": 5 * 2**40 + 123_456_789 + 2**20},
    }.items():
        body = await (await client.get("/api/v1/costs", params={"by": by})).json()
        assert {i[by]: i["bytes_billed"] for i in body["items"]} == expected
        assert body["total"]["bytes_billed"] == total_billed
        assert body["total"]["slot_ms"] == sum(j[6] for j in jobs)
        assert abs(body["total"]["usd"] - total_billed / 2**40 * price) < 1e-6
    ann = next(i for i in (await (await client.get("/api/v1/costs?by=user")).json())["items"] if i["user"] == "ann")
    assert ann["usd"] == round(ann["bytes_billed"] / 2**40 * price, 6)

    body = await (await client.get("/api/v1/costs", params={"by": "table", "from": "2026-11-28", "to": "2026-11-28"})).json()
    assert {i["table"] for i in body["items"]} == {"t3"}
    resp = await client.get("/api/v1/costs", params={"by": "nope"})
    assert resp.status == 422
    resp = await client.get("/api/v1/costs", params={"from": "2026-11-29", "to": "2026-11-01"})
    assert resp.status == 422

    # Rebuilding the projection gives the same totals.
    await runtime.projections.rebuild("costs")
    body = await (await client.get("/api/v1/costs", params={"by": "run"})).json()
    assert body["total"]["bytes_billed"] == total_billed
