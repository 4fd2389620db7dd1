"""``kill -9`` of ``maestro serve`` after Slack posted a message and before Maestro learned it, then
a restart: still one message in Slack, and one succeeded delivery in the log.

The fake posts the message and holds its answer; the test kills the process meanwhile, so the
message is in the channel but the delivery has only its plan. The restarted leader resumes the
delivery, finds the message by the metadata naming the delivery (``conversations.history``) and
records it as delivered instead of posting it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from slack_fake import SlackFake
from test_callback_crash import _delivery_events, _until
from test_crash import Serve, _stop_local_stack

pytestmark = pytest.mark.slow
CHANNEL = "C0CRASH0001"


async def test_kill_9_after_slack_posted_then_restart_leaves_one_message(dsn: str, tmp_path: Path) -> None:
    async with SlackFake() as slack:
        slack.channels["crash"] = CHANNEL
        slack.hold_answer("chat.postMessage", 60.0)
        data_dir = tmp_path / "data"
        serve = Serve(data_dir, dsn, tmp_path / "serve.log")
        try:
            serve.start()
            await asyncio.to_thread(serve.wait_healthy)
            # Configuring Slack is news for the default channel: that message is the one in flight.
            await asyncio.to_thread(serve.call, "PUT", "/api/v1/config/slack", {
                "bot_token": slack.token, "channel": CHANNEL, "api_base_url": slack.api_url})
            await asyncio.wait_for(slack.arrived.wait(), timeout=60)
            await asyncio.to_thread(serve.kill)
            assert [t for _, t in await _delivery_events(dsn)] == ["DeliveryPlanned"]
            assert len(slack.messages) == 1

            serve.start()
            await asyncio.to_thread(serve.wait_healthy)

            async def delivered() -> bool:
                return any(t == "DeliverySucceeded" for _, t in await _delivery_events(dsn))

            await _until(delivered, timeout=60)
            await asyncio.sleep(1.5)  # anything that would come twice would come now
            assert len(slack.messages) == 1, [m.text for m in slack.messages]
            types = [t for _, t in await _delivery_events(dsn)]
            assert types == ["DeliveryPlanned", "DeliveryAttempted", "DeliverySucceeded"], types
            assert ("conversations.history", 200, "ok") in slack.calls
            listed = await asyncio.to_thread(serve.call, "GET", "/api/v1/deliveries?kind=slack")
            [delivery] = listed["deliveries"]
            assert delivery["status"] == "succeeded" and delivery["target"] == CHANNEL
        finally:
            serve.stop()
            await asyncio.to_thread(_stop_local_stack, data_dir)
