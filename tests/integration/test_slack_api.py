"""Slack through the API: configuration, the fixed test message (admin only), errors as JSON."""

from __future__ import annotations

from people import bearer, user_token
from slack_fake import SlackFake


async def test_the_test_route_sends_the_fixed_message_and_names_slacks_errors(client, runtime) -> None:
    async with SlackFake() as slack:
        resp = await client.post("/api/v1/config/slack/test")
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "slack_not_configured"
        resp = await client.put("/api/v1/config/slack", json={
            "bot_token": slack.token, "channel": "#alerts", "api_base_url": slack.api_url,
            "group_channels": {"g-fin": "#finance"}, "url_prefix": "https://maestro.example"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["bot_token"] == {"set": True} and body["configured"] is True
        assert slack.token not in await resp.text()

        resp = await client.post("/api/v1/config/slack/test")
        assert resp.status == 200, await resp.text()
        sent = await resp.json()
        assert sent["channel"] == "C0ALERTS" and sent["ts"] and sent["mode"] == "bot"
        # the caller cannot choose the words: an extra field is refused, and nothing is sent
        resp = await client.post("/api/v1/config/slack/test", json={"text": "buy now <!channel>"})
        assert resp.status == 422
        resp = await client.post("/api/v1/config/slack/test", json={"channel": "#random"})
        assert resp.status == 422
        resp = await client.post("/api/v1/config/slack/test", json={"channel": "#finance"})
        assert resp.status == 200 and (await resp.json())["channel"] == "C0FINANCE"
        assert [m.text for m in slack.messages] == [sent["text"]] * 2
        assert "Slack is connected" in sent["text"]

        slack.fail_next("chat.postMessage", "channel_not_found")
        resp = await client.post("/api/v1/config/slack/test")
        error = (await resp.json())["error"]
        assert resp.status == 502 and error["code"] == "slack_error"
        assert error["details"]["reason"] == "channel_not_found" and "channel_not_found" in error["message"]

        await client.put("/api/v1/config/slack", json={"bot_token": "xoxb-revoked", "channel": "#alerts",
                                                       "api_base_url": slack.api_url})
        resp = await client.post("/api/v1/config/slack/test")  # applied at once, no restart
        assert (await resp.json())["error"]["details"]["reason"] == "invalid_auth"


async def test_webhook_mode_and_admin_only(client, runtime) -> None:
    async with SlackFake() as slack:
        resp = await client.put("/api/v1/config/slack", json={"webhook_url": slack.webhook_url})
        assert resp.status == 200 and (await resp.json())["configured"] is True
        resp = await client.post("/api/v1/config/slack/test")
        assert resp.status == 200 and (await resp.json())["mode"] == "webhook"
        assert [m.via for m in slack.messages] == ["webhook"]
        member = await user_token(runtime, "bo", groups=())
        resp = await client.post("/api/v1/config/slack/test", headers=bearer(member))
        assert resp.status == 403
        assert len(slack.messages) == 1


async def test_slack_settings_are_checked(client) -> None:
    for bad in ({"bot_token": "not-a-token"}, {"channel": "No Spaces"}, {"group_channels": {"g": "#Bad Name"}},
                {"digests": ["hourly"]}, {"api_base_url": "http://example.com/api/"}):
        resp = await client.put("/api/v1/config/slack", json=bad)
        assert resp.status == 422, bad
    resp = await client.get("/api/v1/config/slack")
    assert (await resp.json())["configured"] is False


async def test_a_table_may_name_its_own_channel(client) -> None:
    resp = await client.post("/api/v1/tables", json={"dataset": "d", "name": "t", "query": "SELECT 1 AS x",
                                                      "slack_channel": "#vip-alerts"})
    assert resp.status == 201, await resp.text()
    table = await (await client.get(f"/api/v1/tables/{(await resp.json())['id']}")).json()
    assert table.get("slack_channel", table.get("spec", {}).get("slack_channel")) == "#vip-alerts"
    resp = await client.post("/api/v1/tables", json={"dataset": "d", "name": "u", "query": "SELECT 1 AS x",
                                                      "slack_channel": "not a channel"})
    assert resp.status == 422
