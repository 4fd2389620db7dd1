"""The asyncio client: ``AsyncMaestro`` and its ``AsyncTable`` (the same calls, awaited)."""

from __future__ import annotations

import asyncio
import codecs
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from maestro_client import _ops
from maestro_client._base import USER_AGENT, decode, file_name, request_error
from maestro_client._extracts import FileJoiner
from maestro_client._retry import RetryPolicy
from maestro_client.ddl import pg_create_table
from maestro_client.models import Column, Costs, Extract, Load, Run, Status, TableInfo

CHUNK = 64 * 1024


class AsyncMaestro:
    """Like :class:`maestro_client.Maestro`; use ``async with`` or ``await close()``."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, poll: float = 1.0, max_poll: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.poll, self.max_poll = poll, max_poll
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._plain = httpx.AsyncClient(timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT})

    async def __aenter__(self) -> AsyncMaestro:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        await self._plain.aclose()

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if attempt < self.retry.attempts and self.retry.error_retryable(method, exc):
                    await asyncio.sleep(self.retry.pause(attempt))
                    continue
                raise request_error(self.url, exc) from exc
            if response.status_code >= 400 and attempt < self.retry.attempts and \
                    self.retry.status_retryable(method, response.status_code):
                await asyncio.sleep(self.retry.pause(attempt, response.headers.get("Retry-After")))
                continue
            return decode(response)

    async def _drive(self, op: _ops.Op) -> Any:
        value: Any = None
        while True:
            try:
                step = op.send(value)
            except StopIteration as done:
                return done.value
            value = None
            if isinstance(step, _ops.Call):
                value = await self.request(step.method, step.path, params=step.params, json=step.json)
            elif isinstance(step, _ops.Sleep):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, _ops.Put):
                await self._put(step)

    async def _put(self, step: _ops.Put) -> None:
        size = os.stat(step.path).st_size

        async def body() -> AsyncIterator[bytes]:
            with open(step.path, "rb") as f:  # local disk reads: short, so not worth a thread
                while chunk := f.read(CHUNK):
                    yield chunk

        response = await self._plain.put(step.url, content=body(),
                                          headers={"Content-Type": step.content_type, "Content-Length": str(size)})
        decode(response)

    async def _stream(self, url: str) -> AsyncIterator[bytes]:
        async with self._plain.stream("GET", url) as response:
            if response.status_code >= 400:
                await response.aread()
                decode(response)
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk

    async def table(self, ref: str | int) -> AsyncTable:
        return AsyncTable(self, await self._drive(_ops.lookup(ref)))

    async def tables(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._drive(_ops.tables(**filters))

    async def runs(self, status: str | None = None, frequency: str | None = None, limit: int = 50,
                   offset: int = 0) -> list[Run]:
        return await self._drive(_ops.runs(status, frequency, limit, offset))

    async def run_status(self, run_id: str) -> Run:
        return await self._drive(_ops.run_status(run_id))

    async def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        return await self._drive(_ops.wait_run(run_id, timeout, self.poll, self.max_poll))

    async def costs(self, by: str = "table", from_: Any = None, to: Any = None, group: str | None = None) -> Costs:
        return await self._drive(_ops.costs(by, from_, to, group))


class AsyncTable:
    """One table of an :class:`AsyncMaestro`; the methods of :class:`maestro_client.Table`, awaited."""

    def __init__(self, maestro: AsyncMaestro, info: TableInfo) -> None:
        self.maestro, self.info = maestro, info

    def __repr__(self) -> str:
        return f"<AsyncTable {self.info.number} {self.info.qualified_name}>"

    @property
    def id(self) -> str:
        return self.info.id

    async def status(self) -> Status:
        return await self.maestro._drive(_ops.status(self.id))

    async def wait(self, timeout: float | None = None, *, running: bool = False, after: Status | None = None) -> Status:
        return await self.maestro._drive(_ops.wait(self.info, timeout, self.maestro.poll, self.maestro.max_poll, running, after))

    async def run(self, wait: bool = True, timeout: float | None = None, *, descendants: bool = False) -> Run:
        return await self.maestro._drive(_ops.run_table(
            self.info, wait_for=wait, timeout=timeout, descendants=descendants,
            poll=self.maestro.poll, max_poll=self.maestro.max_poll))

    async def extracts(self) -> Extract | None:
        return await self.maestro._drive(_ops.extract(self.info))

    async def download(self, directory: str | os.PathLike[str]) -> list[Path]:
        found: Extract = await self.maestro._drive(_ops.required_extract(self.info))
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in found.files:
            path = target / file_name(f)
            with open(path, "wb") as out:
                async for chunk in self.maestro._stream(f.url):
                    out.write(chunk)
            paths.append(path)
        return paths

    async def reader(self) -> AsyncIterator[str]:
        """Every extract file as one CSV, line by line (lines keep their ``\\n``; a quoted field
        may span lines, as ``csv.reader`` expects)."""
        found: Extract = await self.maestro._drive(_ops.required_extract(self.info))
        decoder = codecs.getincrementaldecoder("utf-8")()
        pending = ""
        for i, f in enumerate(found.files):
            joiner = FileJoiner(keep_header=i == 0)
            async for chunk in self.maestro._stream(f.url):
                pending += decoder.decode(joiner.feed(chunk))
                *lines, pending = pending.split("\n")
                for line in lines:
                    yield line + "\n"
            pending += decoder.decode(joiner.end())
        pending += decoder.decode(b"", final=True)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line + "\n"
        if pending:
            yield pending

    async def upload(self, path: str | os.PathLike[str], timeout: float | None = None) -> Load:
        return await self.maestro._drive(_ops.upload(
            self.info, os.fspath(path), timeout, self.maestro.poll, self.maestro.max_poll))

    async def schema(self) -> list[Column]:
        return await self.maestro._drive(_ops.schema(self.info))

    async def pg_create_table(self, name: str, if_not_exists: bool = False) -> str:
        return pg_create_table(name, await self.schema(), if_not_exists)
