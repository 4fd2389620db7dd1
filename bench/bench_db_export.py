"""Database export: Maestro's export of an extract vs the target's own bulk load of the same file.

    python -m bench.bench_db_export [rows]        (default 1,000,000; the RSS check also runs 100 k)

One CSV file as a BigQuery extract writes it (header; id, name, amount NUMERIC, at DATETIME,
flag BOOL, note STRING with NULLs) is made once. The baselines load that file from local disk
with the target's own bulk path — PostgreSQL ``COPY … FROM STDIN (FORMAT csv, HEADER)``, MariaDB
``LOAD DATA LOCAL INFILE`` by its own ``mysql`` client (FIELDS ',' OPTIONALLY ENCLOSED BY '"', IGNORE 1 LINES) — into a new
table. Maestro exports the same file from the local Cloud Storage into a staging table and swaps
it in. Each measure runs twice, interleaved with its baseline; the best of two counts. Peak RSS
growth of the process (sampled every 10 ms) is compared between 100 k and 1 M rows. A last
figure compares MariaDB's LOAD DATA with batched multi-row INSERTs, the other way to load.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiomysql
import asyncpg
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from bench.common import bench_database, row
from maestro.adapters.localstack import start_local_stack, storage_client
from maestro.events.catalog import TableSpec
from maestro.handlers.transfers.db_export import ExportDatabase, export_table

MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
BUCKET = "maestro-bench-exports"
SCHEMA = [
    {"name": "id", "type": "INT64", "mode": "REQUIRED"}, {"name": "name", "type": "STRING"},
    {"name": "amount", "type": "NUMERIC"}, {"name": "at", "type": "DATETIME"}, {"name": "flag", "type": "BOOL"},
    {"name": "note", "type": "STRING"},
]
PG_TABLE = "(id bigint NOT NULL, name text, amount numeric(38, 9), at timestamp, flag boolean, note text)"
MY_TABLE = ("(id BIGINT NOT NULL, name LONGTEXT, amount DECIMAL(38,9), at DATETIME(6), flag BOOLEAN, note LONGTEXT) "
            "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")
SPEC = TableSpec.model_validate({"dataset": "mart", "name": "sales", "query": "SELECT 1",
                                 "extract": {"format": "csv", "compression": "none"}, "db_export": {"database": "t"}})


def make_csv(rows: int, path: Path) -> int:
    ids = pa.array(range(rows), pa.int64())
    base = pa.scalar(1_700_000_000_000_000, pa.timestamp("us"))
    table = pa.table({
        "id": ids,
        "name": pc.binary_join_element_wise("customer-", ids.cast(pa.string()), ""),
        "amount": pc.multiply(ids, 37).cast(pa.decimal128(30, 0)).cast(pa.decimal128(38, 9)),
        "at": pc.add(pa.array([base.value] * rows, pa.int64()), pc.multiply(ids, 1_000_003)).cast(pa.timestamp("us")),
        "flag": pc.equal(pc.bit_wise_and(ids, 1), 0),
        "note": pa.array([None if i % 5 == 0 else f"note {i} with, a comma" for i in range(rows)]),
    })
    with open(path, "wb") as out:
        pa_csv.write_csv(table, out, pa_csv.WriteOptions(quoting_style="needed"))
    return path.stat().st_size


class PeakRss:
    """The process's peak RSS growth while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRss:
        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 1e6


async def pg_baseline(dsn: str, path: Path) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS baseline")
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute(f"CREATE TABLE baseline {PG_TABLE}")
            await conn.copy_to_table("baseline", source=path, format="csv", header=True)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def my_baseline(database: str, path: Path) -> float:
    """The server's own bulk load of the file by MariaDB's C client (aiomysql cannot send a local
    file over 16 MiB to a server with the default max_allowed_packet; the export spools in
    packet-sized files for that reason)."""
    statement = (
        "DROP TABLE IF EXISTS baseline; "
        f"CREATE TABLE baseline {MY_TABLE}; "
        f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE baseline CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' "
        "OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES "
        "(id, name, amount, at, @flag, @note) SET flag = (@flag = 'true'), note = NULLIF(@note, '');"
    )
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "mysql", "--local-infile=1", "-h", MYSQL["host"], "-P", str(MYSQL["port"]), "-u", MYSQL["user"], database,
        "-e", statement, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"mysql client failed: {err.decode()}")
    return time.perf_counter() - started


async def my_inserts(database: str, rows: int) -> float:
    """Batched multi-row INSERTs of ``rows`` rows (aiomysql's executemany), for comparison."""
    values = [(i, f"customer-{i}", f"{i / 7:.9f}", "2024-01-01 00:00:00.000001", i % 2 == 0, f"note {i}")
              for i in range(rows)]
    conn = await aiomysql.connect(**MYSQL, db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("DROP TABLE IF EXISTS inserted")
            await cur.execute(f"CREATE TABLE inserted {MY_TABLE}")
            started = time.perf_counter()
            for at in range(0, rows, 5000):
                await cur.executemany("INSERT INTO inserted VALUES (%s, %s, %s, %s, %s, %s)", values[at:at + 5000])
            return time.perf_counter() - started
    finally:
        conn.close()


async def export(target: ExportDatabase, storage: Any, uri: str) -> tuple[float, float]:
    with PeakRss() as rss:
        result = await export_table(target, SPEC, SCHEMA, [uri], storage, export_id=f"bench/{uuid.uuid4().hex}")
    return result.seconds, rss.growth_mb


async def main(rows: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="maestro-bench-export-"))
    print(f"database export — {rows:,} rows, CSV from the local Cloud Storage")
    async with bench_database() as dsn:
        stack = await start_local_stack(tmp / "stack")
        storage = storage_client(stack)
        my_db = f"maestro_bench_{uuid.uuid4().hex[:8]}"
        admin = await aiomysql.connect(**MYSQL, autocommit=True)
        async with admin.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{my_db}`")
        try:
            storage.create_bucket(BUCKET)
            uris: dict[int, tuple[Path, str, int]] = {}
            for count in sorted({100_000, rows}):
                path = tmp / f"sales-{count}.csv"
                size = make_csv(count, path)
                name = f"extracts/sales/{count}/part-000000000000.csv"
                await asyncio.to_thread(storage.bucket(BUCKET).blob(name).upload_from_filename, str(path))
                uris[count] = (path, f"gs://{BUCKET}/{name}", size)
            pg = ExportDatabase("t", "postgres", dsn, None, export=True)
            my = ExportDatabase("t", "mysql", f"mysql://root@127.0.0.1:3306/{my_db}", None, export=True)
            path, uri, size = uris[rows]
            print(f"  file: {size / 1e6:,.1f} MB")
            for label, target, baseline, base_name in (
                ("PostgreSQL", pg, lambda: pg_baseline(dsn, path), "COPY FROM (csv)"),
                ("MariaDB", my, lambda: my_baseline(my_db, path), "LOAD DATA (csv)"),
            ):
                ours, theirs, growth = [], [], {}
                for _ in range(2):
                    theirs.append(await baseline())
                    seconds, _ = await export(target, storage, uri)
                    ours.append(seconds)
                for count in sorted(uris):
                    growth[count] = (await export(target, storage, uris[count][1]))[1]
                best, base = min(ours), min(theirs)
                row(f"{label}: Maestro export", rows / best, "rows/s", f"{best:.2f} s")
                row(f"{label}: {base_name} of the same file", rows / base, "rows/s", f"{base:.2f} s")
                print(f"  {label}: ratio {base / best:.2f} (target >= 0.5); peak RSS growth "
                      + ", ".join(f"{count:,} rows {mb:.0f} MB" for count, mb in sorted(growth.items())))
            sample = min(rows, 100_000)
            small = uris[100_000][0]
            load = await my_baseline(my_db, small)
            inserts = await my_inserts(my_db, sample)
            row("MariaDB: LOAD DATA, 100k rows", sample / load, "rows/s", f"{load:.2f} s")
            row("MariaDB: batched INSERTs (5,000 rows each), 100k rows", sample / inserts, "rows/s",
                f"{inserts:.2f} s, LOAD DATA {inserts / load:.1f}x faster")
        finally:
            async with admin.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{my_db}`")
            admin.close()
            storage.close()
            await stack.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
