"""A local Slack for tests: the Web API methods Maestro calls and an incoming webhook (aiohttp).

It answers as Slack documents (docs.slack.dev/reference/methods/chat.postMessage, chat.update,
docs.slack.dev/messaging/sending-messages-using-incoming-webhooks):

- Web API: ``POST /api/<method>`` with ``Authorization: Bearer <token>`` and a JSON or form body;
  HTTP 200 with ``{"ok": false, "error": ...}`` for ``not_authed`` (no token), ``invalid_auth``
  (an unknown one), ``channel_not_found``, ``no_text``, ``message_not_found``; success returns the
  channel's id and the message's ``ts``.
- Rate limit: more than one message per ``interval`` seconds (Slack: 1 s) in a channel is HTTP 429
  with ``Retry-After`` (whole seconds) and ``{"ok": false, "error": "ratelimited"}``. Slack allows
  short bursts; this fake allows none, so a client that does not pace itself is caught.
- Incoming webhook: ``POST /services/<T>/<B>/<secret>`` with a JSON body; ``ok`` as text, or the
  error as text with 400 (``invalid_payload``, ``no_text``), 404 (``no_service``), 410
  (``channel_is_archived``) or 429 (with ``Retry-After``).
- ``conversations.history`` (GET or POST): the channel's messages newest first, since ``oldest``,
  with their ``metadata`` when ``include_all_metadata`` is true; ``missing_scope`` when the token
  lacks ``channels:history`` (``history_scope=False``).
- ``fail_next(method, error, status)`` makes the next calls of a method fail (switchable failures);
  ``hold_answer(method, seconds)`` does the next call and then holds its answer (a client killed
  meanwhile never learns that the message was posted).

    async with SlackFake(token="xoxb-test") as slack:
        slack.api_url      # http://127.0.0.1:<port>/api/
        slack.webhook_url  # http://127.0.0.1:<port>/services/T0/B0/<secret>
        slack.messages     # what was posted, in order, with edits applied
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass
class Message:
    channel: str  # the channel id
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    username: str | None = None
    via: str = "api"  # "api" or "webhook"
    edits: int = 0
    metadata: dict[str, Any] | None = None  # message metadata (event_type, event_payload)


@dataclass
class _Failure:
    error: str
    status: int
    count: int
    retry_after: int | None = None


@dataclass
class SlackFake:
    token: str = "xoxb-test-token"
    channels: dict[str, str] = field(default_factory=lambda: {
        "general": "C0GENERAL", "alerts": "C0ALERTS", "finance": "C0FINANCE", "data-eng": "C0DATAENG",
    })
    webhook_channel: str = "alerts"
    interval: float = 1.0  # seconds between two messages of one channel
    messages: list[Message] = field(default_factory=list)
    calls: list[tuple[str, int, str]] = field(default_factory=list)  # (method, status, error or "ok")
    archived: bool = False  # the webhook's channel was archived: 410
    history_scope: bool = True  # the token has channels:history (conversations.history)
    received: list[float] = field(default_factory=list)  # monotonic arrival of each message call

    def __post_init__(self) -> None:
        self._secret = secrets.token_hex(12)
        self._failures: dict[str, list[_Failure]] = {}
        self._last: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._holds: dict[str, list[float]] = {}
        self.arrived = asyncio.Event()  # set when a held call has been done (its answer waits)
        self._runner: web.AppRunner | None = None
        self.base = ""

    # ------------------------------------------------------------------ knobs
    def fail_next(self, method: str, error: str, *, status: int = 200, count: int = 1,
                  retry_after: int | None = None) -> None:
        """The next ``count`` calls of ``method`` ("chat.postMessage", "webhook", ...) fail so."""
        self._failures.setdefault(method, []).append(_Failure(error, status, count, retry_after))

    def hold_answer(self, method: str, seconds: float) -> None:
        """The next call of ``method`` is done (the message posted), then answered ``seconds`` later."""
        self._holds.setdefault(method, []).append(seconds)

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.base}/services/T0/B0/{self._secret}"

    def in_channel(self, name: str) -> list[Message]:
        cid = self.channels.get(name.lstrip("#"), name)
        return [m for m in self.messages if m.channel == cid]

    # ------------------------------------------------------------------ server
    async def __aenter__(self) -> SlackFake:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/services/{team}/{bot}/{secret}", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ helpers
    def _answer(self, method: str, body: dict[str, Any], *, status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
        self.calls.append((method, status, "ok" if body.get("ok") else str(body.get("error"))))
        return web.json_response(body, status=status, headers=headers)

    def _injected(self, method: str) -> _Failure | None:
        queue = self._failures.get(method) or []
        if not queue:
            return None
        failure = queue[0]
        failure.count -= 1
        if failure.count <= 0:
            queue.pop(0)
        return failure

    def _throttled(self, channel: str) -> int | None:
        """Seconds to wait (Retry-After) if this channel had a message too recently, else None."""
        now = time.monotonic()
        last = self._last.get(channel)
        if last is not None and now - last < self.interval:
            return max(1, math.ceil(self.interval - (now - last)))
        self._last[channel] = now
        return None

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    @staticmethod
    async def _params(request: web.Request) -> dict[str, Any]:
        if request.method == "GET":
            return dict(request.query)
        raw = await request.text()
        if request.content_type == "application/json":
            try:
                value = json.loads(raw or "{}")
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
        params: dict[str, Any] = dict(parse_qsl(raw))
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
        return params

    # ------------------------------------------------------------------ Web API
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else params.get("token")
        if not token:
            return self._answer(method, {"ok": False, "error": "not_authed"})
        if token != self.token:
            return self._answer(method, {"ok": False, "error": "invalid_auth"})
        if (failure := self._injected(method)) is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
            return self._answer(method, {"ok": False, "error": failure.error}, status=failure.status, headers=headers)
        if method == "auth.test":
            return self._answer(method, {"ok": True, "team": "Test", "user": "maestro", "bot_id": "B0"})
        if method == "conversations.history":
            return self._history(params)
        if method not in ("chat.postMessage", "chat.update"):
            return self._answer(method, {"ok": False, "error": "unknown_method"}, status=404)
        name = str(params.get("channel") or "").lstrip("#")
        channel = self.channels.get(name, name if name in self.channels.values() else None)
        if channel is None:
            return self._answer(method, {"ok": False, "error": "channel_not_found"})
        text, blocks = str(params.get("text") or ""), params.get("blocks") or []
        if not text and not blocks:
            return self._answer(method, {"ok": False, "error": "no_text"})
        if method == "chat.update":
            found = next((m for m in self.messages if m.channel == channel and m.ts == params.get("ts")), None)
            if found is None:
                return self._answer(method, {"ok": False, "error": "message_not_found"})
            found.text, found.blocks, found.edits = text, blocks, found.edits + 1
            return self._answer(method, {"ok": True, "channel": channel, "ts": found.ts, "text": text})
        if (wait := self._throttled(channel)) is not None:
            return self._answer(method, {"ok": False, "error": "ratelimited"}, status=429,
                                headers={"Retry-After": str(wait)})
        metadata = params.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        message = Message(channel, self._new_ts(), text, blocks, params.get("username"), metadata=metadata)
        self.messages.append(message)
        self.received.append(time.monotonic())
        if self._holds.get(method):
            self.arrived.set()
            await asyncio.sleep(self._holds[method].pop(0))
        return self._answer(method, {"ok": True, "channel": channel, "ts": message.ts,
                                     "message": {"text": text, "ts": message.ts}})

    def _history(self, params: dict[str, Any]) -> web.Response:
        method = "conversations.history"
        if not self.history_scope:
            return self._answer(method, {"ok": False, "error": "missing_scope", "needed": "channels:history"})
        channel = str(params.get("channel") or "")
        if channel not in self.channels.values():
            return self._answer(method, {"ok": False, "error": "channel_not_found"})
        oldest = float(params.get("oldest") or 0)
        with_meta = str(params.get("include_all_metadata")).lower() in ("true", "1")
        found = [m for m in reversed(self.messages) if m.channel == channel and float(m.ts) >= oldest]
        limit = int(params.get("limit") or 100)
        out = [{"type": "message", "ts": m.ts, "text": m.text,
                **({"metadata": m.metadata} if with_meta and m.metadata else {})} for m in found[:limit]]
        return self._answer(method, {"ok": True, "messages": out, "has_more": len(found) > limit})

    # ------------------------------------------------------------------ incoming webhook
    def _hook_answer(self, status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
        self.calls.append(("webhook", status, text))
        return web.Response(status=status, text=text, headers=headers)

    async def _webhook(self, request: web.Request) -> web.Response:
        if request.match_info["secret"] != self._secret:
            return self._hook_answer(404, "no_service")
        if (failure := self._injected("webhook")) is not None:
            headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else None
            return self._hook_answer(failure.status, failure.error, headers)
        if self.archived:
            return self._hook_answer(410, "channel_is_archived")
        try:
            payload = json.loads(await request.text())
        except ValueError:
            return self._hook_answer(400, "invalid_payload")
        if not isinstance(payload, dict):
            return self._hook_answer(400, "invalid_payload")
        if not payload.get("text") and not payload.get("blocks"):
            return self._hook_answer(400, "no_text")
        channel = self.channels[self.webhook_channel]
        if (wait := self._throttled(channel)) is not None:
            return self._hook_answer(429, "rate_limited", {"Retry-After": str(wait)})
        # The webhook's channel, whatever the payload says: a webhook cannot post elsewhere.
        self.received.append(time.monotonic())
        self.messages.append(Message(channel, self._new_ts(), str(payload.get("text") or ""),
                                     payload.get("blocks") or [], via="webhook"))
        return self._hook_answer(200, "ok")
