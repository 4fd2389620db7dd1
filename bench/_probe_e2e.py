"""Imports end to end, through a run: source query -> Parquet in GCS -> load job succeeded.

A table of mixed types (the one bench_import_read generates) on PostgreSQL and on MariaDB, imported
by a table run on the local stack (local-bigquery + fake-gcs-server), as the service does it. The
figures: rows/s and MB/s (Parquet bytes) from the import's plan to its end, and how that time splits
into the read + upload and the load; the baseline, measured in the same process just before, is the
bare driver read of the same rows (a COPY TO STDOUT drained by asyncpg; an unbuffered aiomysql fetch).
On this machine the local BigQuery is the slow part of the load: real BigQuery loads Parquet at
hundreds of MB/s.

    .venv/bin/python -m bench.bench_import_e2e [--rows 1000000] [--mysql-rows 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg

from bench.bench_import_read import MYSQL, mysql_database
from bench.common import bench_database, row
from maestro.adapters.localstack import start_local_stack
from maestro.events import Metadata
from maestro.events.catalog import TableSpec
from maestro.runtime import open_runtime
from maestro.settings import Settings

ME = Metadata(actor="user:bench")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _pg_source(dsn: str, rows: int) -> float:
    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "CREATE TABLE mixed AS SELECT g::bigint AS id, md5(g::text) AS name, "
        "((g % 100000) / 100.0)::numeric(12,2) AS amount, g * 0.5::float8 AS score, "
        "now() - g * interval '1 second' AS at, current_date - (g % 1000) AS day, g % 2 = 0 AS flag "
        f"FROM generate_series(1, {rows}) g")
    await conn.execute("VACUUM ANALYZE mixed")

    async def drain(chunk: bytes) -> None:
        pass

    t0 = time.perf_counter()
    await conn.copy_from_query("SELECT * FROM mixed", output=drain)
    bare = rows / (time.perf_counter() - t0)
    await conn.close()
    return bare


async def _my_source(name: str, rows: int) -> float:
    conn = await aiomysql.connect(**MYSQL, db=name, autocommit=True)
    async with conn.cursor() as cur:
        await cur.execute("CREATE TABLE mixed (id bigint PRIMARY KEY, name char(32), amount decimal(12,2), "
                          "score double, at datetime(6), day date, flag tinyint(1))")
        await cur.execute("INSERT INTO mixed SELECT seq, MD5(seq), (seq % 100000) / 100, seq * 0.5, "
                          "NOW(6) - INTERVAL seq SECOND, CURDATE() - INTERVAL (seq % 1000) DAY, seq % 2 "
                          f"FROM seq_1_to_{rows}")
    t0 = time.perf_counter()
    cur = await conn.cursor(aiomysql.SSCursor)
    await cur.execute("SELECT * FROM mixed")
    while await cur.fetchmany(50_000):
        pass
    await cur.close()
    bare = rows / (time.perf_counter() - t0)
    conn.close()
    return bare


async def _import(rt: Any, name: str, database: str, rows: int, incremental: bool = False) -> dict[str, float]:
    settings = {"source_database": database, "source_table": "mixed"}
    if incremental:  # the first import of an incremental table: every row, with its xmin (PostgreSQL)
        settings["id_column"] = "id"
    table = await rt.catalog.create_table(TableSpec.model_validate({
        "dataset": "bench_imports", "name": name, "kind": "import", "import": settings}), ME)
    table_id = table if isinstance(table, str) else table.table_id
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    import pyarrow as _pa
    samples = []
    async def _sample():
        while True:
            with open("/proc/self/smaps_rollup") as f:
                vals = {l.split()[0]: int(l.split()[1]) for l in f if l.split()[0] in ("Rss:", "Anonymous:", "Private_Clean:", "Shared_Clean:")}
            cur = (round(vals["Rss:"]/1e3), round(vals["Anonymous:"]/1e3), round(vals["Private_Clean:"]/1e3 + vals["Shared_Clean:"]/1e3))
            samples.append((round(time.perf_counter() - t0, 1), cur, round(_pa.total_allocated_bytes() / 1e6), len(__import__("gc").get_objects())))
            await asyncio.sleep(0.05)
    sampler = asyncio.create_task(_sample())
    run_id = await rt.runs.plan_table(table_id, descendants=False, actor=ME)
    while await rt.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id) == "running":
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - t0
    sampler.cancel()
    by_sec = {}
    for t, cur, arrow, _ in samples:
        k = int(t)
        by_sec[k] = max(by_sec.get(k, ((0,), 0)), (cur, arrow))
    print("SAMPLES", sorted(by_sec.items()))
    status = await rt.pool.fetchval("SELECT status FROM runs WHERE run_id = $1", run_id)
    jobs = {r["kind"]: r for r in await rt.pool.fetch(
        "SELECT kind, planned_at, finished_at, statistics, progress FROM jobs WHERE run_id = $1", run_id)}
    assert status == "succeeded", (status, dict(jobs.get("import") or {}))
    import orjson

    progress = orjson.loads(jobs["import"]["progress"])
    stats = orjson.loads(jobs["load"]["statistics"])
    assert stats["output_rows"] == rows, stats
    total = (jobs["import"]["finished_at"] - jobs["import"]["planned_at"]).total_seconds()
    load = (jobs["load"]["finished_at"] - jobs["load"]["planned_at"]).total_seconds()
    size = stats.get("input_file_bytes") or progress.get("bytes", 0)
    return {"total": total, "wall": wall, "load": load, "read": progress.get("read_seconds", total - load),
            "bytes": float(size), "rss_growth": _rss_mb() - rss0}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mysql-rows", type=int, default=300_000)
    parser.add_argument("--incremental", action="store_true",
                        help="import incrementally by id (the first import: every row, and its transaction)")
    parser.add_argument("--only", choices=["postgres", "mysql"], default=None,
                        help="one source (RSS growth is the process's: measure one import per process)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("imports end to end (a table run on the local stack)")
    with tempfile.TemporaryDirectory(prefix="maestro-bench-e2e-") as tmp:
        stack = await start_local_stack(Path(tmp) / "localstack")
        try:
            async with bench_database() as dsn, bench_database() as source_dsn, mysql_database() as my_name:
                bare_pg = await _pg_source(source_dsn, args.rows) if args.only != "mysql" else 0.0
                bare_my = await _my_source(my_name, args.mysql_rows) if args.only != "postgres" else 0.0
                settings = Settings(database_url=dsn, data_dir=Path(tmp) / "data", poll_interval=0.2,
                                    scheduler_tick=3600, log_level="WARNING")
                rt = await open_runtime(settings)
                try:
                    from urllib.parse import urlsplit

                    parts = urlsplit(source_dsn)
                    pg_values = {"driver": "postgres", "dsn": source_dsn.replace(f":{parts.password}@", "@", 1)
                                 if parts.password is not None else source_dsn, "landing_dataset": "landing"}
                    if parts.password:
                        pg_values["password"] = parts.password
                    await rt.config_service.add_database("pgsrc", pg_values, ME)
                    await rt.config_service.add_database("mysrc", {
                        "driver": "mysql", "dsn": f"mysql://root@127.0.0.1:3306/{my_name}",
                        "landing_dataset": "landing"}, ME)
                    from maestro.services import start_services

                    svc = await start_services(rt, stack=stack)
                    try:
                        for _ in range(500):
                            if svc.is_leader:
                                break
                            await asyncio.sleep(0.02)
                        for label, database, rows, bare, base in (
                            ("PostgreSQL", "pgsrc", args.rows, bare_pg, "bare COPY TO STDOUT"),
                            ("MySQL", "mysrc", args.mysql_rows, bare_my, "bare unbuffered fetch"),
                        ):
                            if args.only and args.only != {"pgsrc": "postgres", "mysrc": "mysql"}[database]:
                                continue
                            r = await _import(rt, f"e2e_{database}", database, rows, args.incremental)
                            label += " (incremental by id)" if args.incremental else ""
                            row(f"{label}: {rows:,} rows, plan -> load succeeded", rows / r["total"], "rows/s",
                                f"{r['bytes'] / r['total'] / 1e6:.1f} MB/s of Parquet; {r['total']:.1f} s")
                            row(f"{label}:   read + upload", rows / r["read"], "rows/s",
                                f"{r['read']:.1f} s; baseline {base} {bare:,.0f} rows/s, "
                                f"ratio {rows / r['read'] / bare:.2f}")
                            row(f"{label}:   load job (local BigQuery)", r["load"] * 1000, "ms",
                                f"{r['bytes'] / 1e6:.1f} MB Parquet; RSS growth {r['rss_growth']:.0f} MB")
                    finally:
                        await svc.close()
                        rt.services = None
                finally:
                    await rt.close()
        finally:
            with contextlib.suppress(Exception):
                await stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
