"""A fault-injecting reverse proxy in front of local-bigquery: the real client inside, faults at
the HTTP boundary, answered as BigQuery documents its errors
(https://cloud.google.com/bigquery/docs/error-messages)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson
from aiohttp import web

# (method, path, parsed JSON body or None) -> (status, reason, message) to answer, or None to pass.
Rule = Callable[[str, str, object], "tuple[int, str, str] | None"]


class FaultProxy:
    def __init__(self, upstream: str, rule: Rule = lambda *_: None) -> None:
        self.upstream = upstream
        self.rule = rule
        self.answered: list[tuple[str, str, int]] = []  # faults sent: (method, path, status)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        fault = self.rule(request.method, request.path, body)
        if fault is not None:
            status, reason, message = fault
            self.answered.append((request.method, request.path, status))
            error = {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}
            return web.json_response({"error": error}, status=status)
        return await self.forward(request, raw)

    async def forward(self, request: web.Request, raw: bytes) -> web.Response:
        async with aiohttp.ClientSession() as session:
            async with session.request(
                request.method, self.upstream + request.path_qs, data=raw,
                headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
            ) as upstream:
                data = await upstream.read()
                return web.Response(status=upstream.status, body=data, content_type=upstream.content_type)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def destination_of(body: object) -> str:
    """The destination table id of a jobs.insert body ('' for other requests)."""
    if not isinstance(body, dict):
        return ""
    query = body.get("configuration", {}).get("query", {})
    return str(query.get("destinationTable", {}).get("tableId", ""))
