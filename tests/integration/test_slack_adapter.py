"""The Slack adapter: the real slack-sdk against the local Slack fake (tests/slack_fake.py)."""

from __future__ import annotations

import pytest

from maestro.adapters.slack import BotPoster, WebhookPoster
from maestro.errors_outside import SlackError
from slack_fake import SlackFake

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]


async def test_bot_posts_and_updates_the_same_message() -> None:
    async with SlackFake() as slack:
        bot = BotPoster(slack.token, base_url=slack.api_url, username="maestro")
        posted = await bot.post("#alerts", "hello", BLOCKS)
        assert posted.channel == "C0ALERTS" and posted.ts
        again = await bot.update(posted.channel, posted.ts, "hello again", BLOCKS)
        assert again.ts == posted.ts
        [message] = slack.messages
        assert (message.text, message.edits, message.username) == ("hello again", 1, "maestro")
        assert message.blocks == BLOCKS


@pytest.mark.parametrize(("token", "reason"), [("xoxb-wrong", "invalid_auth"), ("", "not_authed")])
async def test_a_bad_token_is_a_slack_error_that_will_not_pass_by_retrying(token: str, reason: str) -> None:
    async with SlackFake() as slack:
        with pytest.raises(SlackError) as caught:
            await BotPoster(token, base_url=slack.api_url).post("alerts", "hi", BLOCKS)
        assert caught.value.reason == reason and caught.value.retryable is False
        assert caught.value.to_dict()["code"] == "slack_error"
        assert not slack.messages


async def test_unknown_channel_and_rate_limit() -> None:
    async with SlackFake() as slack:
        bot = BotPoster(slack.token, base_url=slack.api_url)
        with pytest.raises(SlackError) as caught:
            await bot.post("#nowhere", "hi", BLOCKS)
        assert (caught.value.reason, caught.value.retryable) == ("channel_not_found", False)
        await bot.post("alerts", "one", BLOCKS)
        with pytest.raises(SlackError) as caught:  # a second message in the same second
            await bot.post("alerts", "two", BLOCKS)
        assert caught.value.reason == "ratelimited" and caught.value.retryable
        assert caught.value.retry_after == 1.0
        # slack-sdk did not retry behind our back: exactly one refused call
        assert [c for c in slack.calls if c[1] == 429] == [("chat.postMessage", 429, "ratelimited")]


async def test_server_errors_are_retryable() -> None:
    async with SlackFake() as slack:
        slack.fail_next("chat.postMessage", "service_unavailable", status=503)
        with pytest.raises(SlackError) as caught:
            await BotPoster(slack.token, base_url=slack.api_url).post("alerts", "hi", BLOCKS)
        assert caught.value.retryable


async def test_unreachable_slack_is_retryable() -> None:
    with pytest.raises(SlackError) as caught:
        await BotPoster("xoxb-x", base_url="http://127.0.0.1:9/api/").post("alerts", "hi", BLOCKS)
    assert (caught.value.reason, caught.value.retryable) == ("connection_error", True)


async def test_webhook_posts_to_its_own_channel_and_translates_errors() -> None:
    async with SlackFake() as slack:
        hook = WebhookPoster(slack.webhook_url)
        assert hook.can_update is False
        posted = await hook.post("#general", "via webhook", BLOCKS)
        assert posted.ts is None
        [message] = slack.messages
        assert (message.channel, message.via) == ("C0ALERTS", "webhook")
        slack.archived = True
        with pytest.raises(SlackError) as caught:
            await hook.post("", "again", BLOCKS)
        assert (caught.value.reason, caught.value.retryable) == ("channel_is_archived", False)
        with pytest.raises(SlackError) as caught:
            await WebhookPoster(slack.webhook_url + "x").post("", "hi", BLOCKS)
        assert caught.value.reason == "no_service"
        slack.archived = False
        slack.fail_next("webhook", "rate_limited", status=429, retry_after=3)
        with pytest.raises(SlackError) as caught:
            await hook.post("", "again", BLOCKS)
        assert caught.value.retryable and caught.value.retry_after == 3.0
