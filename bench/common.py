"""Shared set-up for benchmarks: a database to measure against, and timing helpers."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg

from maestro.adapters import embedded_pg, postgres


@contextlib.asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    """A fresh migrated database: on MAESTRO_BENCH_DATABASE_URL's server, or an embedded one."""
    external = os.environ.get("MAESTRO_BENCH_DATABASE_URL")
    server = None
    tmp = None
    if external:
        admin_dsn = external
    else:
        tmp = tempfile.TemporaryDirectory(prefix="maestro-bench-")
        server = await embedded_pg.start_embedded(Path(tmp.name) / "pg")
        admin_dsn = server.dsn
    name = f"maestro_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    from urllib.parse import urlsplit, urlunsplit

    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path="/" + name))
    conn = await asyncpg.connect(dsn)
    await postgres.migrate(conn)
    await conn.close()
    try:
        yield dsn
    finally:
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()
        if server is not None:
            server.stop()
        if tmp is not None:
            tmp.cleanup()


async def run_for(seconds: float, workers: int, op: Callable[[int], Awaitable[int]]) -> float:
    """Run ``op(worker)`` in ``workers`` concurrent loops for ``seconds``; return units per second.

    ``op`` returns how many units (events, rows) it did.
    """
    import asyncio

    deadline = time.perf_counter() + seconds
    counts = [0] * workers

    async def loop(w: int) -> None:
        while time.perf_counter() < deadline:
            counts[w] += await op(w)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(workers)))
    return sum(counts) / (time.perf_counter() - t0)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 else values[0]


def row(label: str, value: float, unit: str, extra: str = "") -> None:
    print(f"  {label:<52} {value:>12,.0f} {unit:<10} {extra}")
