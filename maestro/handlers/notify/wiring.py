"""The reactors ``maestro serve`` runs on its leader, put together in one place.

``Notify`` holds the reactor host, the delivery dispatcher (with one sender per delivery kind) and
the callback endpoints. Another delivery kind plugs in with two lines (docs/reactors.md)::

    notify.host.add(SlackNotifier(...))            # plans deliveries of kind "slack"
    notify.dispatcher.add_sender(SlackSender(...))  # makes their attempts
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from maestro.adapters.secrets import SecretBox
from maestro.adapters.webhooks import WebhookClient, parse_networks
from maestro.events.store import EventStore
from maestro.health import Health
from maestro.handlers.notify.callbacks import CallbackPolicy, CallbackReactor, CallbackSender
from maestro.handlers.notify.cost_digest import DigestScheduler
from maestro.handlers.notify.dispatcher import Dispatcher
from maestro.handlers.notify.endpoints import Endpoints
from maestro.handlers.notify.export_setup import add_exports
from maestro.handlers.notify.exports import ExportContext
from maestro.handlers.notify.reactor import ReactorHost
from maestro.handlers.notify.slack_reactor import SlackNotifier
from maestro.handlers.notify.slack_routing import SlackConnector
from maestro.handlers.notify.slack_sender import SlackSender
from maestro.settings import Settings


def callback_policy(settings: Settings) -> CallbackPolicy:
    return CallbackPolicy(
        timeout=settings.callback_timeout, initial=settings.callback_retry_initial,
        max_delay=settings.callback_retry_max_delay, window=settings.callback_retry_window,
        url_lifetime=dt.timedelta(seconds=settings.signed_url_lifetime),
    )


@dataclass
class Notify:
    host: ReactorHost
    dispatcher: Dispatcher
    endpoints: Endpoints
    client: WebhookClient
    digests: DigestScheduler | None = None  # cost digests, compiled on the leader (docs/slack.md)

    def start(self) -> None:
        self.host.start()
        if self.digests is not None:
            self.digests.start()

    async def stop(self, why: str | None = None) -> None:
        if self.digests is not None:
            await self.digests.stop()
        await self.host.stop(why)

    async def close(self) -> None:
        await self.stop()
        await self.client.close()


def build_notify(
    store: EventStore, health: Health, box: SecretBox, settings: Settings, *,
    storage: Callable[[], tuple[Any, Any]], schema: Callable[[str], Awaitable[list[dict[str, Any]]]],
    exports: ExportContext | None = None,
    config: Any = None,
) -> Notify:
    """``storage``: () -> (Cloud Storage client, URL signer) as configured now; ``schema``: a
    BigQuery table's schema by name; ``exports``: what Sheets and database exports use;
    ``config``: the live configuration (Slack, digests)."""
    policy = callback_policy(settings)
    endpoints = Endpoints(store, box)
    client = WebhookClient(parse_networks(settings.callback_allowed_networks))
    dispatcher = Dispatcher(store, health=health)
    dispatcher.add_sender(CallbackSender(endpoints, client, policy, storage, schema))
    host = ReactorHost(store, health, [dispatcher, CallbackReactor(store, endpoints, policy)])
    if exports is not None:
        add_exports(host, dispatcher, store, exports)
    slack = SlackConnector(config).current
    dispatcher.add_sender(SlackSender(store.pool, slack))
    host.add(SlackNotifier(store, slack))
    digests = DigestScheduler(store, config, health=health) if config is not None else None
    return Notify(host, dispatcher, endpoints, client, digests)
