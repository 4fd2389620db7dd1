"""Slack, through slack-sdk: a bot token (``chat.postMessage`` / ``chat.update``) or an incoming webhook.

The only module that imports ``slack_sdk``. Both clients are built with ``retry_handlers=[]``:
slack-sdk's async default retries a connection error once, and its ``RateLimitErrorRetryHandler``
would sleep through a 429 inside the call. Either would hide an attempt from our delivery log and
hold a channel's queue without saying so; instead every answer comes back here, and a refusal
becomes a :class:`SlackError` whose ``retryable`` and ``retry_after`` tell the sender
(``maestro.handlers.notify.slack_sender``) whether and when to try again.

A webhook posts only to the channel it was created for, cannot change its username and cannot
update a message (Slack's incoming-webhook documentation): :attr:`SlackPoster.can_update` says so,
and the sender posts a new message where a bot would edit the old one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from maestro.errors_outside import SlackError

__all__ = ["METADATA_EVENT", "BotPoster", "Posted", "SlackPoster", "WebhookPoster"]

# Slack's errors that a later attempt of the very same call may get past (docs.slack.dev/reference
# /methods/chat.postMessage "Errors"); everything else (invalid_auth, channel_not_found,
# not_in_channel, msg_too_long, ...) will fail again the same way until someone fixes the setup.
_RETRYABLE = {"ratelimited", "rate_limited", "service_unavailable", "internal_error", "fatal_error",
              "request_timeout", "team_added_to_org", "rollup_error"}
_HTTP_RETRYABLE = {408, 429, 500, 502, 503, 504}
BlockList = list[dict[str, Any]]
METADATA_EVENT = "maestro_delivery"  # the event_type of the metadata Maestro puts on its messages


@dataclass(frozen=True, slots=True)
class Posted:
    """Where a message landed: the channel id Slack answered (a webhook: ``""``) and its ``ts``,
    which names the message for a later ``chat.update`` (a webhook: None, it cannot be edited)."""

    channel: str
    ts: str | None


class SlackPoster(Protocol):
    can_update: bool

    async def post(self, channel: str, text: str, blocks: BlockList, *, delivery_id: str | None = None) -> Posted: ...

    async def update(self, channel: str, ts: str, text: str, blocks: BlockList) -> Posted: ...


def _retry_after(headers: Any) -> float | None:
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _refusal(status: int, reason: str, headers: Any, what: str) -> SlackError:
    retryable = status in _HTTP_RETRYABLE or reason in _RETRYABLE
    after = _retry_after(headers)
    if status == 429 and after is None:
        after = 1.0  # Slack always sends Retry-After; if a proxy dropped it, Slack's own 1 msg/s
    http = f" with HTTP {status}" if status != 200 else ""  # Web API refusals come as 200 + ok: false
    return SlackError(reason, f"{what} was refused{http}", retryable=retryable, retry_after=after)


def _unreachable(exc: BaseException, what: str) -> SlackError:
    kind = "timeout" if isinstance(exc, asyncio.TimeoutError | TimeoutError) else "connection_error"
    return SlackError(kind, f"{what}: Slack could not be reached ({type(exc).__name__})", retryable=True)


class BotPoster:
    """A bot token (``xoxb-``): posts to any channel the bot is in, and edits what it posted."""

    can_update = True

    def __init__(self, token: str, *, base_url: str | None = None, username: str | None = None,
                 timeout: int = 10) -> None:
        kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
        self._client = AsyncWebClient(token=token, timeout=timeout, retry_handlers=[], **kwargs)
        self._username = username or None

    async def _call(self, what: str, method: str, **params: Any) -> Posted:
        try:
            response = await self._client.api_call(method, json=params)
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            raise _refusal(exc.response.status_code, str(data.get("error") or "unknown_error"),
                           exc.response.headers, what) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _unreachable(exc, what) from exc
        except SlackClientError as exc:  # a malformed answer (not JSON, say)
            raise SlackError("bad_response", f"{what}: Slack's answer could not be read", retryable=True) from exc
        data = response.data if isinstance(response.data, dict) else {}
        return Posted(str(data.get("channel") or params.get("channel") or ""), data.get("ts"))

    async def post(self, channel: str, text: str, blocks: BlockList, *, delivery_id: str | None = None) -> Posted:
        extra: dict[str, Any] = {"username": self._username} if self._username else {}
        if delivery_id:
            # Message metadata names the delivery, so a message posted just before a crash can be
            # found again (find_posted) instead of being posted a second time.
            extra["metadata"] = {"event_type": METADATA_EVENT, "event_payload": {"delivery_id": delivery_id}}
        return await self._call("chat.postMessage", "chat.postMessage", channel=channel, text=text,
                                blocks=blocks, unfurl_links=False, **extra)

    async def find_posted(self, channel: str, oldest: float, delivery_id: str) -> Posted | None:
        """The message ``delivery_id`` was posted as in ``channel`` (an id) since ``oldest``, if
        any: ``conversations.history`` with the messages' metadata (scope ``channels:history``,
        ``groups:history`` for private channels). Raises :class:`SlackError` when Slack refuses."""
        cursor = None
        for _ in range(10):  # 10 pages of 200: far more than a channel gets in a crash's time
            try:
                response = await self._client.conversations_history(
                    channel=channel, oldest=f"{oldest:.6f}", limit=200, include_all_metadata=True, cursor=cursor)
            except SlackApiError as exc:
                data = exc.response.data if isinstance(exc.response.data, dict) else {}
                raise _refusal(exc.response.status_code, str(data.get("error") or "unknown_error"),
                               exc.response.headers, "conversations.history") from exc
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise _unreachable(exc, "conversations.history") from exc
            data = response.data if isinstance(response.data, dict) else {}
            for m in data.get("messages") or []:
                meta = m.get("metadata") or {}
                if meta.get("event_type") == METADATA_EVENT and (meta.get("event_payload") or {}).get(
                        "delivery_id") == delivery_id:
                    return Posted(channel, m.get("ts"))
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not data.get("has_more") or not cursor:
                return None
        return None

    async def update(self, channel: str, ts: str, text: str, blocks: BlockList) -> Posted:
        return await self._call("chat.update", "chat.update", channel=channel, ts=ts, text=text, blocks=blocks)


class WebhookPoster:
    """An incoming webhook: one fixed channel, no edits (``update`` posts anew)."""

    can_update = False

    def __init__(self, url: str, *, timeout: int = 10) -> None:
        self._client = AsyncWebhookClient(url, timeout=timeout, retry_handlers=[])

    async def post(self, channel: str, text: str, blocks: BlockList, *, delivery_id: str | None = None) -> Posted:
        try:
            # The channel is the webhook's own: Slack ignores one named in the payload.
            response = await self._client.send(text=text, blocks=blocks, unfurl_links=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _unreachable(exc, "the incoming webhook") from exc
        if response.status_code != 200:
            # The body is Slack's error string (invalid_payload, no_service, channel_is_archived, ...).
            reason = (response.body or "").strip()[:100] or "unknown_error"
            raise _refusal(response.status_code, reason, response.headers, "the incoming webhook")
        return Posted("", None)

    async def update(self, channel: str, ts: str, text: str, blocks: BlockList) -> Posted:
        return await self.post(channel, text, blocks)
