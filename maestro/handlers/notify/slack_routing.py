"""Which channel a notice goes to, and which Slack client sends it, from the live configuration.

Routing: a table's own ``slack_channel``, else its group's channel (``group_channels`` of the Slack
settings), else the default ``channel``. An incoming webhook has one channel of its own, so with a
webhook every notice goes there (the channel is ``""``).

The client is rebuilt when the Slack section changes (its version moves): an administrator's
``PUT /api/v1/config/slack`` applies to the next message, with no restart and no hook into
``services.py`` (the original read its Slack settings once at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maestro.adapters.slack import BotPoster, SlackPoster, WebhookPoster
from maestro.errors_outside import SlackError, SlackNotConfigured
from maestro.events.config import SlackSection
from maestro.handlers.notify.slack_messages import Route

WEBHOOK_CHANNEL = ""  # the webhook's own channel


def channel_for(section: SlackSection, route: Route, *, webhook: bool) -> str:
    """The channel for ``route``; raises :class:`SlackError` (``no_channel``) when none is set.

    >>> s = SlackSection(channel="#data", group_channels={"g1": "#finance"})
    >>> channel_for(s, Route("#vip", "g1"), webhook=False), channel_for(s, Route(None, "g1"), webhook=False)
    ('#vip', '#finance')
    >>> channel_for(s, Route(None, "g2"), webhook=False), channel_for(s, Route("#vip", "g1"), webhook=True)
    ('#data', '')
    """
    if webhook:
        return WEBHOOK_CHANNEL
    channel = route.table_channel or (section.group_channels.get(route.group_id) if route.group_id else None)
    channel = channel or section.channel
    if not channel:
        raise SlackError("no_channel", "no channel for this message: set the default channel in the Slack "
                         "settings", retryable=False)
    return channel


@dataclass(frozen=True, slots=True)
class Connection:
    section: SlackSection
    poster: SlackPoster
    webhook: bool
    version: int

    def channel_for(self, route: Route) -> str:
        return channel_for(self.section, route, webhook=self.webhook)


class SlackConnector:
    """The live Slack connection: None while Slack is not configured."""

    def __init__(self, config: Any, *, timeout: int = 10) -> None:
        self._config = config  # maestro.handlers.config.view.ConfigView
        self._timeout = timeout
        self._current: Connection | None = None

    def current(self) -> Connection | None:
        entry = self._config.entry("slack") if self._config is not None else None
        if entry is None:
            return None
        if self._current is not None and self._current.version == entry.version:
            return self._current
        section = entry.model()
        assert isinstance(section, SlackSection)
        token = self._config.secret("slack", "bot_token")
        hook = self._config.secret("slack", "webhook_url") if token is None else None
        if token is not None:
            poster: SlackPoster = BotPoster(token, base_url=section.api_base_url, username=section.username,
                                            timeout=self._timeout)
        elif hook is not None:
            poster = WebhookPoster(hook, timeout=self._timeout)
        else:
            return None
        self._current = Connection(section, poster, token is None, entry.version)
        return self._current

    def require(self) -> Connection:
        connection = self.current()
        if connection is None:
            raise SlackNotConfigured()
        return connection
