"""The blocking client: ``Maestro`` and its ``Table``."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
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


class Maestro:
    """A Maestro server. ``token``: an API token (``maestro token create``, or the web UI).

    >>> m = Maestro("http://127.0.0.1:8080", token="mae_...")  # doctest: +SKIP
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, poll: float = 1.0, max_poll: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.poll, self.max_poll = poll, max_poll
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        # Signed URLs carry their own authority: never send them our token.
        self._plain = httpx.Client(timeout=timeout, transport=transport, headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> Maestro:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    # ------------------------------------------------------------------ plumbing
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        """One API call with retries; the decoded JSON (None for 204). Errors raise ApiError."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if attempt < self.retry.attempts and self.retry.error_retryable(method, exc):
                    time.sleep(self.retry.pause(attempt))
                    continue
                raise request_error(self.url, exc) from exc
            if response.status_code >= 400 and attempt < self.retry.attempts and \
                    self.retry.status_retryable(method, response.status_code):
                time.sleep(self.retry.pause(attempt, response.headers.get("Retry-After")))
                continue
            return decode(response)

    def _drive(self, op: _ops.Op) -> Any:
        value: Any = None
        while True:
            try:
                step = op.send(value)
            except StopIteration as done:
                return done.value
            value = None
            if isinstance(step, _ops.Call):
                value = self.request(step.method, step.path, params=step.params, json=step.json)
            elif isinstance(step, _ops.Sleep):
                time.sleep(step.seconds)
            elif isinstance(step, _ops.Put):
                self._put(step)

    def _put(self, step: _ops.Put) -> None:
        with open(step.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            response = self._plain.put(step.url, content=iter(lambda: f.read(CHUNK), b""),
                                       headers={"Content-Type": step.content_type, "Content-Length": str(size)})
        decode(response)

    def _stream(self, url: str) -> Iterator[bytes]:
        with self._plain.stream("GET", url) as response:
            if response.status_code >= 400:
                response.read()
                decode(response)
            yield from response.iter_bytes(CHUNK)

    # ------------------------------------------------------------------ API
    def table(self, ref: str | int) -> Table:
        """A table by number (``42``), id, or ``"dataset.name"``."""
        return Table(self, self._drive(_ops.lookup(ref)))

    def tables(self, **filters: Any) -> list[dict[str, Any]]:
        """Tables as the API lists them (filters: kind, dataset, group, frequency, q)."""
        return self._drive(_ops.tables(**filters))

    def runs(self, status: str | None = None, frequency: str | None = None, limit: int = 50, offset: int = 0) -> list[Run]:
        return self._drive(_ops.runs(status, frequency, limit, offset))

    def run_status(self, run_id: str) -> Run:
        """A run with each table's state, error and progress."""
        return self._drive(_ops.run_status(run_id))

    def wait_run(self, run_id: str, timeout: float | None = None) -> Run:
        return self._drive(_ops.wait_run(run_id, timeout, self.poll, self.max_poll))

    def costs(self, by: str = "table", from_: Any = None, to: Any = None, group: str | None = None) -> Costs:
        """Bytes billed and USD by user, group, table, run or day; ``from_``/``to``: dates."""
        return self._drive(_ops.costs(by, from_, to, group))


class Table:
    """One table of a :class:`Maestro`."""

    def __init__(self, maestro: Maestro, info: TableInfo) -> None:
        self.maestro, self.info = maestro, info

    def __repr__(self) -> str:
        return f"<Table {self.info.number} {self.info.qualified_name}>"

    @property
    def id(self) -> str:
        return self.info.id

    def _drive(self, op: _ops.Op) -> Any:
        return self.maestro._drive(op)

    def status(self) -> Status:
        return self._drive(_ops.status(self.id))

    def wait(self, timeout: float | None = None, *, running: bool = False, after: Status | None = None) -> Status:
        """Until the table's next successful run; :class:`RunFailed` (with BigQuery's error, and its
        line and column) if it fails meanwhile, :class:`WaitTimeout` after ``timeout`` seconds.
        ``running=True``: until it runs instead (an external table whose run awaits its upload).
        ``after``: a :meth:`status` read before starting something, so its end is not missed."""
        return self._drive(_ops.wait(self.info, timeout, self.maestro.poll, self.maestro.max_poll, running, after))

    def run(self, wait: bool = True, timeout: float | None = None, *, descendants: bool = False) -> Run:
        """Run the table now; with ``wait``, until the run ends (raising :class:`RunFailed`)."""
        return self._drive(_ops.run_table(self.info, wait_for=wait, timeout=timeout, descendants=descendants,
                                          poll=self.maestro.poll, max_poll=self.maestro.max_poll))

    def extracts(self) -> Extract | None:
        """The latest extract's files with signed URLs; None before the first extract."""
        return self._drive(_ops.extract(self.info))

    def download(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Download every file of the latest extract into ``directory`` (created if needed)."""
        found: Extract = self._drive(_ops.required_extract(self.info))
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        paths = []
        for f in found.files:
            path = target / file_name(f)
            with open(path, "wb") as out:
                for chunk in self.maestro._stream(f.url):
                    out.write(chunk)
            paths.append(path)
        return paths

    def reader(self) -> io.TextIOWrapper:
        """Every extract file as one CSV text stream (one header, gzip undone), read lazily: use
        it with ``csv.reader``, ``readline`` or ``pandas.read_csv``."""
        found: Extract = self._drive(_ops.required_extract(self.info))

        def chunks() -> Iterator[bytes]:
            for i, f in enumerate(found.files):
                joiner = FileJoiner(keep_header=i == 0)
                for chunk in self.maestro._stream(f.url):
                    if out := joiner.feed(chunk):
                        yield out
                if out := joiner.end():
                    yield out

        return io.TextIOWrapper(io.BufferedReader(_ChunkStream(chunks())), encoding="utf-8", newline="")

    def upload(self, path: str | os.PathLike[str], timeout: float | None = None) -> Load:
        """Upload a file to this external table and wait for its load (:class:`RunFailed` if it fails)."""
        return self._drive(_ops.upload(self.info, os.fspath(path), timeout, self.maestro.poll, self.maestro.max_poll))

    def schema(self) -> list[Column]:
        """The BigQuery columns of the table."""
        return self._drive(_ops.schema(self.info))

    def pg_create_table(self, name: str, if_not_exists: bool = False) -> str:
        """A PostgreSQL ``CREATE TABLE name (...)`` matching the table's BigQuery schema."""
        return pg_create_table(name, self.schema(), if_not_exists)


class _ChunkStream(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n
