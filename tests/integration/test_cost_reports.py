"""Cost reports: items named, CSV, and the digests (compiled once per group and period)."""

from __future__ import annotations

import csv
import datetime as dt
import doctest
import io
import json

from maestro.events import Metadata
from maestro.events.digests import CostDigestCompiled
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM
from maestro.handlers.notify import cost_digest
from maestro.handlers.notify.cost_digest import DigestScheduler, digest_notice
from maestro.handlers.notify.slack_blocks import Links
from maestro.handlers.notify.slack_messages import NoticeContext, Route, slack_notices

ME = Metadata(actor="system:tests")
WEDNESDAY = dt.datetime(2026, 3, 11, 9, tzinfo=dt.timezone.utc)


async def _job(runtime, job_id: str, table_id: str, group: str, billed: int, ended: dt.datetime) -> None:
    stats = JobStatistics(total_bytes_billed=billed, total_bytes_processed=billed, total_slot_ms=10, ended=ended)
    await runtime.store.append(f"job-{job_id}", NO_STREAM, [
        JobPlanned(job_id=job_id, run_id="r1", table_id=table_id, config=JobConfig(project="p", query="SELECT 1"),
                   owner_id="admin-1", group_id=group),
        JobSucceeded(job_id=job_id, run_id="r1", table_id=table_id, statistics=stats)], ME)


async def _tables(client, runtime) -> tuple[str, str, str]:
    ids = []
    for name in ("orders", "items", "big"):
        resp = await client.post("/api/v1/tables", json={"dataset": "sales", "name": name, "query": "SELECT 1 AS x"})
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["id"])
    return ids[0], ids[1], ids[2]


def test_doctests() -> None:
    assert doctest.testmod(cost_digest).failed == 0


async def test_costs_name_their_items_and_come_as_csv(client, runtime) -> None:
    orders, items, _ = await _tables(client, runtime)
    await _job(runtime, "j1", orders, "g1", 3 * 2**40, WEDNESDAY)
    await _job(runtime, "j2", items, "g1", 2**30, WEDNESDAY)
    await runtime.projections.catch_up("costs")
    body = await (await client.get("/api/v1/costs", params={"by": "table"})).json()
    assert [(i["table"], i["name"]) for i in body["items"]] == [(orders, "sales.orders"), (items, "sales.items")]
    users = await (await client.get("/api/v1/costs", params={"by": "user"})).json()
    assert users["items"][0]["name"] == "admin-1"  # a service user's name

    resp = await client.get("/api/v1/costs", params={"by": "table"}, headers={"Accept": "text/csv"})
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert 'filename="costs-by-table.csv"' in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["name"] for r in rows] == ["sales.orders", "sales.items"]
    assert rows[0]["bytes_billed"] == str(3 * 2**40) and float(rows[0]["usd"]) == body["items"][0]["usd"]
    filtered = await (await client.get("/api/v1/costs", params={"by": "table", "group": "nobody"})).json()
    assert filtered["items"] == []


async def test_a_digest_per_group_and_period_exactly_once(client, runtime) -> None:
    orders, items, big = await _tables(client, runtime)
    tuesday = dt.datetime(2026, 3, 10, 12, tzinfo=dt.timezone.utc)
    monday = dt.datetime(2026, 3, 9, 12, tzinfo=dt.timezone.utc)
    await _job(runtime, "j1", orders, "fin", 2 * 2**40, tuesday)
    await _job(runtime, "j2", items, "fin", 2**40, tuesday)
    await _job(runtime, "j3", big, "fin", 2**40, monday)  # the day before: the change
    await _job(runtime, "j4", big, "other", 2**40, tuesday)  # another group's
    await runtime.projections.catch_up("costs")
    await runtime.users.create_group("Finance", ME, group_id="fin")
    resp = await client.put("/api/v1/config/slack", json={
        "webhook_url": "https://hooks.slack.example/services/T/B/x", "group_digests": {"fin": ["daily", "weekly"]},
        "digest_top": 2, "url_prefix": "https://maestro.example"})
    assert resp.status == 200, await resp.text()

    scheduler = DigestScheduler(runtime.store, runtime.config)
    assert await scheduler.tick(dt.datetime(2026, 3, 11, 0, 5, tzinfo=dt.timezone.utc)) == []  # within the grace
    written = await scheduler.tick(WEDNESDAY)
    # the week of 2026-03-02..08 billed nothing to fin (nor the week before): no weekly digest
    assert written == ["digest-fin-daily-2026-03-10"]
    assert await scheduler.tick(WEDNESDAY) == []  # once per period
    assert await DigestScheduler(runtime.store, runtime.config).tick(WEDNESDAY) == []  # another replica too

    [recorded] = await runtime.store.read("digest-fin-daily-2026-03-10")
    digest = recorded.event
    assert isinstance(digest, CostDigestCompiled)
    assert (digest.bytes_billed, digest.previous_bytes_billed, digest.group_name) == (3 * 2**40, 2**40, "Finance")
    assert [t.name for t in digest.top] == ["sales.orders", "sales.items"]

    [notice] = slack_notices(digest, NoticeContext(Links("https://maestro.example")), key=recorded.stream_id)
    assert notice.route == Route(None, "fin") and notice.key == "digest-fin-daily-2026-03-10"
    assert "Daily BigQuery costs of Finance: 2026-03-10" in notice.text
    assert "3.00 TiB billed" in notice.text and "+200% vs the period before" in notice.text
    body = json.dumps(notice.blocks)
    assert "https://maestro.example/costs?group=fin&from=2026-03-10&to=2026-03-10" in body
    assert f"https://maestro.example/tables/{orders}|sales.orders" in body


def test_the_digest_message_without_costs_before() -> None:
    e = CostDigestCompiled(group_id="g", period="weekly", start=dt.date(2026, 3, 2), end=dt.date(2026, 3, 8),
                           bytes_billed=2**30, jobs=1, previous_bytes_billed=0, price_per_tib=6.25)
    n = digest_notice(e, Links(None), key="k")
    assert "Weekly BigQuery costs of g: 2026-03-02 to 2026-03-08" in n.text and "new: nothing billed" in n.text
