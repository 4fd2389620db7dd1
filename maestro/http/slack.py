"""``POST /api/v1/config/slack/test`` (administrators): send Maestro's fixed test message now.

The message is fixed (``maestro.handlers.notify.slack_messages.probe_notice``): the caller may pick
which configured channel to try, never what is said — the original's ``/slacktest?msg=`` let any
logged-in user post any text under Maestro's name. It is sent directly, not through the
per-channel queues (an administrator waits for the answer); it is not a delivery and leaves no
event. The answer names where it landed (``channel``, ``ts``), or Slack's error as a JSON error
(``slack_error`` with ``details.reason``: ``invalid_auth``, ``channel_not_found``, ...).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import ValidationFailed
from maestro.handlers.notify.slack_messages import Route, probe_notice
from maestro.handlers.notify.slack_routing import SlackConnector
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route as HttpRoute
from maestro.http.routing import register, routes
from maestro.http.validation import json_response, parse_body

class SlackTestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str | None = Field(None, description="one of the configured channels (default: the default channel)")


async def slack_test(request: web.Request) -> web.Response:
    body = await parse_body(SlackTestBody, request)
    # Built from the live configuration at each call: what was saved a moment ago is what is tested.
    connection = SlackConnector(request.app[RUNTIME].config).require()
    section = connection.section
    if body.channel is not None:
        if connection.webhook:
            raise ValidationFailed("channel: an incoming webhook posts only to its own channel")
        configured = {section.channel, *section.group_channels.values()} - {""}
        if body.channel not in configured:
            raise ValidationFailed("channel: not one of the configured channels",
                                   problems=[{"field": "channel", "message": f"configured: {', '.join(sorted(configured))}"}])
    channel = body.channel or connection.channel_for(Route())
    notice = probe_notice()
    posted = await connection.poster.post(channel, notice.text, notice.blocks)
    return json_response({"sent": True, "mode": "webhook" if connection.webhook else "bot",
                          "channel": posted.channel or channel, "ts": posted.ts, "text": notice.text})


ROUTES = routes(
    HttpRoute("POST", "/api/v1/config/slack/test", slack_test, "Send the fixed test message to Slack now",
              rule="admin", body=SlackTestBody, tag="config", errors=(502, 503)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
