"""A git smart-HTTP server for tests: the real ``git http-backend`` behind Basic authentication.

GitHub takes a token as the password of Basic authentication and answers 401 to a wrong one; this
server does the same in front of the CGI program git ships (git-scm.com/docs/git-http-backend), so
Maestro's https path — credentials in a header, a refused token, a server that goes away and comes
back on the same port — runs against real git on both sides.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

from aiohttp import web

from git_repos import ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GitHttpServer:
    def __init__(self, root: Path, *, user: str = "x-access-token", token: str = "s3cret-token-4242") -> None:
        self.root = root  # holds the bare repositories, served as /<name>.git
        self.user, self.token = user, token
        self.port = free_port()
        self.requests = 0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        return request.headers.get("Authorization", "") == f"Basic {expected}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if not self._authorized(request):
            self.refused += 1
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="git"'}, text="Unauthorized")
        body = await request.read()
        env = {
            **ENV, "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": self.user,
            "PATH_INFO": "/" + request.match_info["path"], "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.query_string, "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)), "GATEWAY_INTERFACE": "CGI/1.1",
            "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        }
        proc = await asyncio.create_subprocess_exec(
            "git", "http-backend", env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(body)
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        return web.Response(status=status, body=payload, headers=headers)
