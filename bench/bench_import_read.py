"""Source readers against their bare drivers: rows/s and peak memory, in one process.

* PostgreSQL: ``postgres.read`` (COPY CSV -> Arrow batches of the declared types) against a bare
  ``COPY (...) TO STDOUT`` drained by asyncpg into a no-op callback. Target >= 0.5x.
* MySQL: ``mysql.read`` (unbuffered cursor -> Arrow batches, row count checked) against a bare
  unbuffered fetch (aiomysql ``SSCursor.fetchmany`` with the driver's default conversions).
  Target >= 0.7x.

The same generated table of mixed types (bigint, text, numeric(12,2), double, timestamptz /
datetime, date, boolean) on both. Each measure is run twice, interleaved, best of two. Peak RSS
is read from the process after each reader (Arrow's allocator too: ``pa.total_allocated_bytes``).

    .venv/bin/python -m bench.bench_import_read [--rows 1000000] [--mysql-rows 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
import uuid
from collections.abc import AsyncIterator

import aiomysql
import asyncpg
import pyarrow as pa

from bench.common import bench_database, row
from maestro.adapters.sources import mysql as mysql_source
from maestro.adapters.sources import postgres as pg_source
from maestro.catalog.import_query import parse_import_query

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


START_RSS = 0.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def bench_postgres(rows: int) -> None:
    async with bench_database() as dsn:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE mixed AS SELECT g::bigint AS id, md5(g::text) AS name, "
            "(g % 100000) / 100.0::numeric(12,2) AS amount, g * 0.5::float8 AS score, "
            "now() - g * interval '1 second' AS at, current_date - (g % 1000) AS day, g % 2 = 0 AS flag "
            f"FROM generate_series(1, {rows}) g"
        )
        await conn.execute("ALTER TABLE mixed ALTER amount TYPE numeric(12,2)")
        await conn.execute("VACUUM ANALYZE mixed")
        query = parse_import_query("SELECT * FROM mixed", "postgres")

        async def bare() -> float:
            async def drain(chunk: bytes) -> None:
                pass

            t0 = time.perf_counter()
            await conn.copy_from_query("SELECT * FROM mixed", output=drain)
            return rows / (time.perf_counter() - t0)

        async def ours() -> float:
            t0 = time.perf_counter()
            count = 0
            async with pg_source.open_source(dsn) as source:
                schema = await source.discover(query)
                async for batch in source.read(query, schema):
                    count += batch.num_rows
            assert count == rows
            return rows / (time.perf_counter() - t0)

        results = {"bare": [], "ours": []}
        for _ in range(2):
            results["bare"].append(await bare())
            results["ours"].append(await ours())
        await conn.close()
    report("PostgreSQL", rows, max(results["ours"]), max(results["bare"]), "bare COPY TO STDOUT", 0.5)


@contextlib.asynccontextmanager
async def mysql_database() -> AsyncIterator[str]:
    name = f"maestro_bench_{uuid.uuid4().hex[:8]}"
    conn = await aiomysql.connect(**MYSQL, autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE `{name}`")
        conn.close()


async def bench_mysql(rows: int) -> None:
    async with mysql_database() as name:
        conn = await aiomysql.connect(**MYSQL, db=name, autocommit=True)
        async with conn.cursor() as cur:
            await cur.execute(
                "CREATE TABLE mixed (id bigint PRIMARY KEY, name char(32), amount decimal(12,2), "
                "score double, at datetime(6), day date, flag tinyint(1))"
            )
            await cur.execute(
                "INSERT INTO mixed SELECT seq, MD5(seq), (seq % 100000) / 100, seq * 0.5, "
                f"NOW(6) - INTERVAL seq SECOND, CURDATE() - INTERVAL (seq % 1000) DAY, seq % 2 "
                f"FROM seq_1_to_{rows}"
            )
        query = parse_import_query("SELECT * FROM mixed", "mysql")

        async def bare() -> float:
            t0 = time.perf_counter()
            count = 0
            cur = await conn.cursor(aiomysql.SSCursor)
            await cur.execute("SELECT * FROM mixed")
            while chunk := await cur.fetchmany(mysql_source.BATCH_ROWS):
                count += len(chunk)
            await cur.close()
            assert count == rows
            return rows / (time.perf_counter() - t0)

        async def ours() -> float:
            t0 = time.perf_counter()
            count = 0
            async with mysql_source.open_source(f"mysql://root@127.0.0.1:3306/{name}") as source:
                schema = await source.discover(query)
                async for batch in source.read(query, schema):
                    count += batch.num_rows
            assert count == rows
            return rows / (time.perf_counter() - t0)

        results = {"bare": [], "ours": []}
        for _ in range(2):
            results["bare"].append(await bare())
            results["ours"].append(await ours())
        conn.close()
    report("MySQL", rows, max(results["ours"]), max(results["bare"]), "bare unbuffered fetch", 0.7)


def report(source: str, rows: int, ours: float, bare: float, baseline: str, target: float) -> None:
    ratio = ours / bare
    verdict = "ok" if ratio >= target else "BELOW TARGET"
    print(f"{source}, {rows:,} rows of mixed types")
    row("reader -> Arrow batches", ours, "rows/s", f"{ratio:.2f}x of {baseline} (target >= {target}x: {verdict})")
    row(baseline, bare, "rows/s")
    row("peak RSS growth of this process so far", _rss_mb() - START_RSS, "MB",
        f"(peak {_rss_mb():.0f} MB; Arrow allocated now {pa.total_allocated_bytes() >> 20} MB)")


async def main(rows: int, mysql_rows: int) -> None:
    global START_RSS
    START_RSS = _rss_mb()  # after the imports: what reading adds
    if rows:
        await bench_postgres(rows)
    if mysql_rows:
        await bench_mysql(mysql_rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mysql-rows", type=int, default=300_000)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.mysql_rows))
