"""The Slack sender: queues per channel, Retry-After, edits, failures — real slack-sdk, local Slack fake."""

from __future__ import annotations

from maestro.adapters.slack import BotPoster, WebhookPoster
from maestro.events.config import SlackSection
from maestro.handlers.notify.slack_messages import Notice, Route
from maestro.handlers.notify.slack_routing import Connection
from maestro.handlers.notify.slack_sender import Outgoing, SlackSender
from slack_deliveries import MemoryDeliveries
from slack_fake import SlackFake


def _notice(n: int, key: str = "", edit: bool = False, text: str = "") -> Notice:
    body = text or f"message {n}"
    return Notice("test", key or f"k{n}", body, [{"type": "section", "text": {"type": "mrkdwn", "text": body}}],
                  Route(), edit)


def _bot(slack: SlackFake, token: str | None = None) -> Connection:
    return Connection(SlackSection(channel="#alerts"), BotPoster(token or slack.token, base_url=slack.api_url), False, 1)


async def test_429_is_waited_out_nothing_dropped_order_kept_per_channel() -> None:
    async with SlackFake() as slack:
        log = MemoryDeliveries()
        # The sender pushes faster than Slack allows (0.1 s between messages of a channel): the
        # fake answers 429 with Retry-After, and the sender must wait it out and keep order.
        sender = SlackSender(lambda: _bot(slack), log, interval=0.1)
        try:
            for n in range(4):
                assert await sender.send(Outgoing(f"d{n}", _notice(n), "alerts"))
                assert await sender.send(Outgoing(f"g{n}", _notice(10 + n), "general"))
            await sender.idle()
        finally:
            await sender.close()
        assert [m.text for m in slack.in_channel("alerts")] == [f"message {n}" for n in range(4)]
        assert [m.text for m in slack.in_channel("general")] == [f"message {10 + n}" for n in range(4)]
        throttled = log.of("attempted")
        assert throttled and {r[2][1] for r in throttled} == {"ratelimited"}
        assert all(r[2][2] >= 1 for r in throttled)  # Retry-After honoured (whole seconds)
        assert len(log.of("succeeded")) == 8 and not log.of("failed")


async def test_a_run_message_is_posted_once_then_edited() -> None:
    async with SlackFake() as slack:
        log = MemoryDeliveries()
        sender = SlackSender(lambda: _bot(slack), log, interval=1.0)
        try:
            await sender.send(Outgoing("d1", _notice(1, key="run-r1", edit=True, text="one failed"), "alerts"))
            await sender.send(Outgoing("d2", _notice(2, key="run-r1", edit=True, text="two failed"), "alerts"))
            await sender.idle()
            # the same content again: nothing to send
            assert not await sender.send(Outgoing("d3", _notice(3, key="run-r1", edit=True, text="two failed"), "alerts"))
            # a replayed event: its delivery was planned already
            assert not await sender.send(Outgoing("d1", _notice(1, key="run-r1", edit=True, text="x"), "alerts"))
        finally:
            await sender.close()
        [message] = slack.messages
        assert (message.text, message.edits) == ("two failed", 1)
        assert [r[2][2] for r in log.of("succeeded")] == [False, True]


async def test_an_invalid_token_fails_the_delivery_with_slacks_reason() -> None:
    async with SlackFake() as slack:
        log = MemoryDeliveries()
        sender = SlackSender(lambda: _bot(slack, "xoxb-revoked"), log)
        try:
            await sender.send(Outgoing("d1", _notice(1), "alerts"))
            await sender.idle()
        finally:
            await sender.close()
        assert [r[2] for r in log.of("failed")] == [(1, "invalid_auth", False)]
        assert not slack.messages


async def test_server_errors_are_retried_with_backoff_and_then_given_up() -> None:
    async with SlackFake() as slack:
        slack.fail_next("chat.postMessage", "internal_error", status=500, count=2)
        log = MemoryDeliveries()
        sender = SlackSender(lambda: _bot(slack), log, interval=0.01, backoff=0.05)
        try:
            await sender.send(Outgoing("d1", _notice(1), "alerts"))
            await sender.idle()
            slack.fail_next("chat.postMessage", "internal_error", status=500, count=100)
            sender.give_up_after = 0.3
            await sender.send(Outgoing("d2", _notice(2), "alerts"))
            await sender.idle()
        finally:
            await sender.close()
        assert [r[1] for r in log.of("succeeded")] == ["d1"]
        assert [r[2][0] for r in log.of("attempted") if r[1] == "d1"] == [1, 2]
        [(_, _, (attempts, reason, exhausted))] = log.of("failed")
        assert reason == "internal_error" and exhausted and attempts >= 2


async def test_a_database_outage_delays_recording_but_loses_nothing() -> None:
    async with SlackFake() as slack:
        log = MemoryDeliveries(down=3)
        sender = SlackSender(lambda: _bot(slack), log)
        try:
            assert await sender.send(Outgoing("d1", _notice(1), "alerts"))
            await sender.idle()
        finally:
            await sender.close()
        assert [r[0] for r in log.records] == ["planned", "succeeded"] and len(slack.messages) == 1


async def test_webhook_mode_posts_anew_instead_of_editing() -> None:
    async with SlackFake(interval=0.0) as slack:
        log = MemoryDeliveries()
        hook = Connection(SlackSection(), WebhookPoster(slack.webhook_url), True, 1)
        sender = SlackSender(lambda: hook, log, interval=0.0)
        try:
            await sender.send(Outgoing("d1", _notice(1, key="run-r1", edit=True, text="one"), ""))
            await sender.send(Outgoing("d2", _notice(2, key="run-r1", edit=True, text="two"), ""))
            await sender.idle()
        finally:
            await sender.close()
        assert [(m.text, m.via, m.channel) for m in slack.messages] == [("one", "webhook", "C0ALERTS"),
                                                                         ("two", "webhook", "C0ALERTS")]
