"""Helpers for database-export tests: extract files in the local Cloud Storage, written as
BigQuery writes them, and the MariaDB / PostgreSQL target databases the tests create."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiomysql
import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from maestro.handlers.transfers.db_export import ExportDatabase
from sources import MYSQL

BUCKET = "maestro-exports-test"


def ensure_bucket(storage: Any) -> None:
    if storage.lookup_bucket(BUCKET) is None:
        storage.create_bucket(BUCKET)


async def put_object(storage: Any, data: bytes, suffix: str) -> str:
    """Upload ``data`` under a fresh name; its gs:// URI."""
    name = f"extracts/{uuid.uuid4().hex}/part-000000000000.{suffix}"

    def upload() -> None:
        ensure_bucket(storage)
        storage.bucket(BUCKET).blob(name).upload_from_string(data)

    await asyncio.to_thread(upload)
    return f"gs://{BUCKET}/{name}"


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str | None]], *, gzipped: bool = False) -> bytes:
    """A CSV as BigQuery extracts write it: header, NULL as an empty unquoted field, strings
    quoted when they need it, the empty string as ``""``."""
    def field(value: str | None) -> str:
        if value is None:
            return ""
        if value == "" or any(ch in value for ch in ',"\n\r'):
            return '"' + value.replace('"', '""') + '"'
        return value

    text = ",".join(header) + "\n" + "".join(",".join(field(v) for v in row) + "\n" for row in rows)
    data = text.encode()
    return gzip.compress(data) if gzipped else data


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@contextlib.asynccontextmanager
async def mysql_database() -> AsyncIterator[ExportDatabase]:
    """A new MariaDB database, registered for export; dropped afterwards."""
    name = f"maestro_x_{uuid.uuid4().hex[:10]}"
    conn = await aiomysql.connect(**MYSQL, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{name}`")
    finally:
        conn.close()
    try:
        yield ExportDatabase("mart", "mysql", f"mysql://root@127.0.0.1:3306/{name}", None, export=True)
    finally:
        conn = await aiomysql.connect(**MYSQL, autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()


async def mysql_fetch(target: ExportDatabase, sql: str) -> list[tuple[Any, ...]]:
    database = target.dsn.rsplit("/", 1)[1]
    conn = await aiomysql.connect(**MYSQL, db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return list(await cur.fetchall())
    finally:
        conn.close()


async def pg_fetch(target: ExportDatabase, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(target.dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def mysql_tables(target: ExportDatabase) -> set[str]:
    return {row[0] for row in await mysql_fetch(target, "SHOW TABLES")}


async def pg_tables(target: ExportDatabase) -> set[str]:
    rows = await pg_fetch(target, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}
