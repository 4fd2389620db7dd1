"""A callback receiver for the tests: a real HTTP server (aiohttp) that checks every request's
Standard Webhooks signature and answers as it is told.

It verifies each request twice: with the specification's own library (``standardwebhooks``,
which also enforces the 5-minute timestamp tolerance) and by recomputing the HMAC from the
specification's text, so a signer and a verifier that shared a mistake would still be caught.
``plan`` is a list of answers used in order (then ``default``): a status code, ``(status,
{headers})``, ``("sleep", seconds)`` to hold the request past the sender's timeout, then 200, or
``("endless", status)`` to answer that status with a body that never ends (until the sender hangs up).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    webhook_id: str
    timestamp: int
    body: dict[str, Any]
    at: float  # time.time() when it arrived
    verified: bool
    answered: int | None = None


@dataclass
class Receiver:
    secret: str | None = None
    plan: list[Any] = field(default_factory=list)
    default: Any = 200
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verify(self, raw: bytes, headers: dict[str, str]) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError:
            return False
        # The spec, by hand: HMAC-SHA256 over "{id}.{timestamp}.{body}" with the base64-decoded key.
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + raw
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split(" "))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        entry = Received(headers.get("webhook-id", ""), int(headers.get("webhook-timestamp", "0")),
                         orjson.loads(raw), time.time(), self.verify(raw, headers))
        self.received.append(entry)
        self.arrived.set()
        answer = self.plan.pop(0) if self.plan else self.default
        extra: dict[str, str] = {}
        if isinstance(answer, tuple) and answer[0] == "endless":
            entry.answered = answer[1]
            response = web.StreamResponse(status=answer[1])
            await response.prepare(request)
            chunk = b"x" * 65536
            try:
                while True:  # a receiver that streams gigabytes: the sender must stop reading
                    await response.write(chunk)
            except (ConnectionError, RuntimeError):
                return response
        if isinstance(answer, tuple) and answer[0] == "sleep":
            await asyncio.sleep(answer[1])
            answer = 200
        elif isinstance(answer, tuple):
            answer, extra = answer
        entry.answered = answer
        return web.json_response({"ok": 200 <= answer < 300}, status=answer, headers=extra)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got {len(self.received)} requests, not {count}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=0.5)
            except TimeoutError:
                pass
        return self.received
