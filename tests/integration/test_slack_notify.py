"""Slack notifications end to end: the running service (reactor, dispatcher, Slack sender on the
leader), real runs on the local BigQuery, the real slack-sdk against the local Slack fake."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from maestro.events import Metadata
from maestro.events.auth import LoginDenied
from maestro.events.deliveries import DeliveryAttempted, DeliverySucceeded
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import NO_STREAM
from slack_fake import Message, SlackFake

ME = Metadata(actor="system:tests")


async def until(predicate: Callable[[], Awaitable[Any] | Any], timeout: float = 60.0, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def slack(client, services) -> AsyncIterator[SlackFake]:
    async with SlackFake() as fake:
        resp = await client.put("/api/v1/config/slack", json={
            "bot_token": fake.token, "channel": "#alerts", "api_base_url": fake.api_url,
            "group_channels": {"fin": "#finance"}, "url_prefix": "https://maestro.example"})
        assert resp.status == 200, await resp.text()
        # Configuring Slack is itself news for the default channel (credentials changed).
        await until(lambda: any("Configuration changed" in m.text or "changed" in m.text for m in fake.messages),
                    what="the configuration notice")
        yield fake


def run_messages(fake: SlackFake, channel: str, run_id: str) -> list[Message]:
    return [m for m in fake.in_channel(channel) if m.text.startswith(f"Run {run_id}")]


async def slack_deliveries(runtime) -> list[dict]:
    rows = await runtime.pool.fetch(
        "SELECT delivery_id, target, state, attempts, reason, last_error FROM deliveries WHERE kind = 'slack' "
        "ORDER BY planned_at")
    return [dict(r) for r in rows]


async def create_source(services, table: str) -> None:
    """A BigQuery table the failing tables read, made outside Maestro (the fix someone makes)."""
    client = services.bigquery.client
    dataset = table.split(".")[0]

    def make() -> None:
        client.create_dataset(dataset, exists_ok=True)
        client.query(f"CREATE OR REPLACE TABLE {table} AS SELECT 1 AS x").result()

    await asyncio.to_thread(make)


async def table(client, dataset: str, name: str, query: str, **extra) -> str:
    resp = await client.post("/api/v1/tables", json={"dataset": dataset, "name": name, "query": query, **extra})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def finished(client, run_id: str) -> dict:
    async def done():
        run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
        return run if run["status"] not in ("running", "queued") else None

    return await until(done, timeout=120, what=f"run {run_id} to end")


async def test_a_failing_run_posts_one_message_edited_as_it_fails_more_and_when_retried(client, services, slack) -> None:
    freq = (await (await client.post("/api/v1/frequencies", json={"name": "slackrun", "period": 86400})).json())["id"]
    await table(client, "w1run", "first", "SELECT x FROM w1src.missing", frequency_id=freq)
    await table(client, "w1run", "second", "SELECT x + 1 AS y FROM w1src.missing", frequency_id=freq)
    await table(client, "w1run", "fine", "SELECT 1 AS x", frequency_id=freq)
    run_id = (await (await client.post("/api/v1/runs", json={"frequency_id": freq})).json())["id"]
    assert (await finished(client, run_id))["status"] == "failed"

    async def says_both_failed():
        [m] = run_messages(slack, "#alerts", run_id) or [None]
        return m if m is not None and "failed:" in m.text and "w1run.first" in m.text and "w1run.second" in m.text \
            and "w1run.fine" not in m.text else None

    message = await until(says_both_failed, what="the run's message naming both failed tables")
    # Posted with the first failure, then edited as the second and the end came (or, when the
    # reactor got to the first event after all of them, posted once as the run is now).
    assert "First error" in message.text and "w1src" in message.text
    assert "https://maestro.example/runs/" in str(message.blocks)

    await create_source(services, "w1src.missing")
    assert (await client.post(f"/api/v1/runs/{run_id}/retry")).status == 200
    assert (await finished(client, run_id))["status"] == "succeeded"
    await until(lambda: "recovered after a retry" in message.text, what="the edit saying the run recovered")
    assert len(run_messages(slack, "#alerts", run_id)) == 1  # one message for the run, all along
    assert message.edits >= 1
    # Every edit is a delivery of its own, succeeded, with the message's ts in its response.
    rows = [r for r in await slack_deliveries(services.runtime) if r["target"] == "#alerts"]
    assert rows and all(r["state"] == "succeeded" for r in rows)
    # A Slack message is about the run, not a step of a table.
    view = await (await client.get(f"/api/v1/runs/{run_id}")).json()
    assert all(t["steps"] == [] for t in view["tables"])


async def test_routing_to_the_group_and_table_channels_and_a_table_recovering(client, services, slack, runtime) -> None:
    await runtime.users.create_group("Finance", ME, group_id="fin")
    grouped = await table(client, "w1route", "grouped", "SELECT x FROM w1src2.gone", group_id="fin")
    own = await table(client, "w1route", "own", "SELECT x FROM w1src2.gone", group_id="fin",
                      slack_channel="#data-eng")
    first = {}
    for t in (grouped, own):
        first[t] = (await (await client.post(f"/api/v1/tables/{t}/run", json={})).json())["id"]
        assert (await finished(client, first[t]))["status"] == "failed"
    await until(lambda: run_messages(slack, "#finance", first[grouped]), what="the group's channel")
    await until(lambda: run_messages(slack, "#data-eng", first[own]), what="the table's own channel")
    assert not run_messages(slack, "#alerts", first[grouped]) and not run_messages(slack, "#alerts", first[own])

    await create_source(services, "w1src2.gone")
    again = (await (await client.post(f"/api/v1/tables/{own}/run", json={})).json())["id"]
    assert (await finished(client, again))["status"] == "succeeded"
    recovered = await until(lambda: [m for m in slack.in_channel("#data-eng") if "recovered" in m.text],
                            what="the table's recovery")
    assert recovered[0].text == "w1route.own recovered: it succeeded again after failing."


async def test_people_and_credentials_reach_the_default_channel(client, services, slack, runtime) -> None:
    await runtime.audit.record(LoginDenied(reason="not a member of the allowed domain", email="eve@evil.example",
                                           address="203.0.113.9"))
    await runtime.users.sign_in("https://idp.example", "sub-1", "new@example.com", "New Person", enable_new=False)
    await runtime.tokens.create("admin-1", "nightly export", ME)

    def texts() -> list[str]:
        return [m.text for m in slack.in_channel("#alerts")]

    await until(lambda: len([t for t in texts() if "eve@" in t or "waits" in t or "API token" in t]) == 3,
                what="the three notices")
    said = texts()
    assert any("A login by eve@evil.example was refused: not a member" in t for t in said)
    assert any("New Person (new@example.com) waits for approval." in t for t in said)
    assert any("API token nightly export" in t and "created for admin-1" in t for t in said)
    assert [m for m in slack.messages if "nightly export" in m.text][0].channel == "C0ALERTS"


async def test_429_with_retry_after_drops_nothing_and_keeps_order(client, services, slack, runtime) -> None:
    slack.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=1, count=2)
    for n in range(4):
        await runtime.tokens.create("admin-1", f"ordered-{n}", ME)
    await until(lambda: len([m for m in slack.messages if "ordered-" in m.text]) == 4, what="the four messages")
    assert [m.text.split(" ")[2] for m in slack.messages if "ordered-" in m.text] == [
        f"ordered-{n}" for n in range(4)]
    attempts = []
    for d in await slack_deliveries(runtime):
        for r in await runtime.store.read(f"delivery-{d['delivery_id']}"):
            if isinstance(r.event, DeliveryAttempted) and r.event.error:
                attempts.append((r.occurred_at, r.event))
    assert len(attempts) == 2 and all(a.status_code == 429 and "ratelimited" in (a.error or "") for _, a in attempts)
    # Retry-After honoured: the next attempt was due at least a second after each 429.
    assert all((a.next_attempt_at - at).total_seconds() >= 1.0 for at, a in attempts)
    assert all(d["state"] == "succeeded" for d in await slack_deliveries(runtime))


async def test_a_cost_digest_goes_to_the_groups_channel(client, services, slack, runtime) -> None:
    await runtime.users.create_group("Finance", ME, group_id="fin")
    orders = await table(client, "w1cost", "orders", "SELECT 1 AS x", group_id="fin")
    stats = JobStatistics(total_bytes_billed=2**40, total_bytes_processed=2**40, total_slot_ms=1,
                          ended=dt.datetime(2026, 3, 10, 12, tzinfo=dt.timezone.utc))
    await runtime.store.append("job-w1cost", NO_STREAM, [
        JobPlanned(job_id="w1cost", run_id="r-cost", table_id=orders, config=JobConfig(project="p", query="SELECT 1"),
                   owner_id="admin-1", group_id="fin"),
        JobSucceeded(job_id="w1cost", run_id="r-cost", table_id=orders, statistics=stats)], ME)
    await runtime.projections.catch_up("costs")
    resp = await client.put("/api/v1/config/slack", json={
        "channel": "#alerts", "api_base_url": slack.api_url, "group_channels": {"fin": "#finance"},
        "group_digests": {"fin": ["daily"]}})  # a PUT replaces the section; the token is kept
    assert resp.status == 200, await resp.text()
    assert services.notify is not None and services.notify.digests is not None
    assert await services.notify.digests.tick(dt.datetime(2026, 3, 11, 9, tzinfo=dt.timezone.utc)) == [
        "digest-fin-daily-2026-03-10"]
    [digest] = await until(lambda: [m for m in slack.in_channel("#finance") if "BigQuery costs" in m.text],
                           what="the digest in the group's channel")
    assert "Daily BigQuery costs of Finance: 2026-03-10" in digest.text and "1.00 TiB billed" in digest.text


async def test_slack_not_configured_plans_nothing_and_sends_no_backlog(client, services, runtime) -> None:
    await runtime.tokens.create("admin-1", "before-slack", ME)
    host = services.notify.host
    await until(lambda: runtime.pool.fetchval(
        "SELECT position >= (SELECT max(position) FROM events WHERE type = 'ApiTokenCreated') "
        "FROM reactor_checkpoints WHERE name = 'slack'"), what="the reactor past the token")
    assert await slack_deliveries(runtime) == [] and "slack" in host.reactors
    async with SlackFake() as fake:
        resp = await client.put("/api/v1/config/slack", json={"webhook_url": fake.webhook_url})
        assert resp.status == 200
        await runtime.tokens.create("admin-1", "after-slack", ME)
        await until(lambda: any("after-slack" in m.text for m in fake.messages), what="the new token's notice")
        assert not any("before-slack" in m.text for m in fake.messages)  # no backlog
        assert all(m.via == "webhook" for m in fake.messages)
        # Slack removed after a message was planned: that delivery fails, saying why.
        fake.fail_next("webhook", "rate_limited", status=429, retry_after=2)
        await runtime.tokens.create("admin-1", "during-removal", ME)
        await until(lambda: runtime.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE kind = 'slack' AND state = 'retrying'"), what="a retry due")
        resp = await client.put("/api/v1/config/slack", json={"clear_secrets": ["webhook_url"]})
        assert resp.status == 200 and (await resp.json())["configured"] is False
        failed = await until(lambda: runtime.pool.fetchrow(
            "SELECT reason, last_error FROM deliveries WHERE kind = 'slack' AND state = 'failed'"),
            what="the delivery failed")
        assert failed["reason"] == "invalid" and "not configured" in failed["last_error"]


async def test_the_run_message_ts_is_kept_in_the_delivery(client, services, slack, runtime) -> None:
    await runtime.tokens.create("admin-1", "kept", ME)
    message = await until(lambda: [m for m in slack.messages if "kept" in m.text], what="the notice")
    [row] = [d for d in await slack_deliveries(runtime) if d["state"] == "succeeded"][-1:]
    [succeeded] = [r.event for r in await runtime.store.read(f"delivery-{row['delivery_id']}")
                   if isinstance(r.event, DeliverySucceeded)]
    assert succeeded.response == {"channel": "C0ALERTS", "ts": message[0].ts, "edited": False}


async def test_a_callback_that_gave_up_is_said_in_the_tables_channel(client, services, slack, runtime) -> None:
    from maestro.events.deliveries import DeliveryFailed, DeliveryPlanned, RetrySchedule

    t = await table(client, "w1cb", "hooked", "SELECT 1 AS x", slack_channel="#data-eng")
    schedule = RetrySchedule(initial=1, max_delay=1, deadline=dt.datetime.now(dt.timezone.utc), timeout=1)
    # What the dispatcher records when a callback's retries run out.
    await runtime.store.append("delivery-dlv_w1gaveup", NO_STREAM, [
        DeliveryPlanned(delivery_id="dlv_w1gaveup", kind="callback", table_id=t, run_id="r-w1", target="https://x.example/h",
                        schedule=schedule, caused_by="job-x@2"),
        DeliveryFailed(delivery_id="dlv_w1gaveup", table_id=t, run_id="r-w1", reason="exhausted", exhausted=True,
                       message="12 attempts failed until the deadline; the last: HTTP 503")], ME)
    [m] = await until(lambda: [m for m in slack.in_channel("#data-eng") if "callback" in m.text], what="the notice")
    assert m.text.startswith("The completion callback of w1cb.hooked failed after every retry: 12 attempts")
