"""Read an import query's rows from PostgreSQL as Arrow record batches.

One connection, one ``REPEATABLE READ READ ONLY`` transaction: the column discovery, whatever the
importer asks in between (its watermark, ``snapshot_xmin``) and the rows all see one snapshot.
Rows travel as ``COPY (…) TO STDOUT (FORMAT csv)``, parsed by Arrow's C++ CSV reader in a worker
thread while the next block arrives. CSV rather than binary COPY: binary is smaller on the wire,
but decoding it would be Python per value, several times slower than Arrow's parser; the text
format escapes newlines with backslashes that Arrow's CSV reader does not undo.

Memory is bounded by ``block_bytes``: the copy callback fills one block, a queue of two blocks
applies back-pressure to the server (asyncpg stops reading the socket while the callback waits),
and each block becomes one RecordBatch. The importer consumes a batch before the next is parsed.

    async with open_source(dsn, password) as source:
        schema = await source.discover(query)
        async for batch in source.read(query, schema):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import asyncpg
import pyarrow as pa
import pyarrow.csv as pa_csv

from maestro.adapters.sources.columns import SourceSchema, convert, failed, selected
from maestro.adapters.sources.postgres_types import csv_type, map_column
from maestro.catalog.import_query import ImportQuery, Incremental
from maestro.errors import SourceReadFailed, SourceTableNotFound, SourceUnavailable

BLOCK_BYTES = 8 * 1024 * 1024
# The rows' inserting transaction, when asked for: named with a prefix BigQuery reserves, so no
# column of an import table can carry the name.
XMIN = "_PARTITION_maestro_xmin"
# The session settings every value conversion relies on (see postgres_types).
_SESSION = {
    "TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "iso_8601",
    "extra_float_digits": "3", "application_name": "maestro-import",
}
_COLUMNS = """
SELECT a.attname AS name,
       format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid),
                   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END) AS type,
       COALESCE(b.typtype, t.typtype) = 'e' AS is_enum
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type b ON b.oid = NULLIF(t.typbasetype, 0)
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@contextlib.asynccontextmanager
async def open_source(
    dsn: str,
    password: str | None = None,
    *,
    connect_timeout: float = 10.0,
    statement_timeout: float = 6 * 3600.0,
) -> AsyncIterator[PostgresSource]:
    """A read-only snapshot of the source database, closed (rolled back) on exit.

    ``dsn`` is a postgres:// URL or libpq ``key=value`` pairs, without the password.
    """
    settings = dict(_SESSION, statement_timeout=str(int(statement_timeout * 1000)))
    try:
        conn = await asyncpg.connect(
            **_connect_args(dsn), password=password, timeout=connect_timeout, server_settings=settings,
        )
    except (OSError, ValueError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise SourceUnavailable(f"cannot connect to the PostgreSQL source: {type(exc).__name__}: {exc}") from exc
    try:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield PostgresSource(conn)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout=5)
        if not conn.is_closed():
            conn.terminate()


def _connect_args(dsn: str) -> dict[str, Any]:
    if "://" in dsn:
        return {"dsn": dsn}
    # asyncpg takes URLs only; the database section also allows libpq's key=value form.
    names = {"host": "host", "port": "port", "user": "user", "dbname": "database", "sslmode": "ssl"}
    args: dict[str, Any] = {}
    for pair in dsn.split():
        key, _, value = pair.partition("=")
        if key in names:
            args[names[key]] = int(value) if key == "port" else unquote(value.strip("'"))
    return args


class PostgresSource:
    """An open snapshot: discover the columns, then read the rows."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.rows_read = 0

    def abort(self) -> None:
        """Drop the connection now (whatever runs on it fails): the import was cancelled."""
        self._conn.terminate()

    async def snapshot_xmin(self) -> int:
        """The oldest transaction still running when this snapshot was taken (the importer's
        horizon: rows of transactions from there on may still appear below the watermark)."""
        return int(await self._conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))

    async def fetchval(self, sql: str, *params: Any) -> Any:
        """One value from a query the importer rendered (its MAX in this same snapshot)."""
        return await self._conn.fetchval(sql, *params)

    async def discover(self, query: ImportQuery) -> SourceSchema:
        """The declared columns ``query`` reads, or an error naming the table or the column."""
        rows = await self._conn.fetch(_COLUMNS, query.quoted_table)
        if not rows:
            raise SourceTableNotFound(f"the source has no table {query.quoted_table} (or cannot show it)")
        table = {row["name"]: row for row in rows}
        columns = []
        for name, row, cast, expression in selected(query, table):
            columns.append(map_column(
                name, row["name"], cast or row["type"], is_enum=cast is None and row["is_enum"],
                select=expression,
            ))
        return SourceSchema(tuple(columns))

    async def read(
        self,
        query: ImportQuery,
        schema: SourceSchema,
        *,
        incremental: Incremental | None = None,
        limit: int | None = None,
        block_bytes: int = BLOCK_BYTES,
        xmin: bool = False,
    ) -> AsyncIterator[pa.RecordBatch]:
        """The rows as batches of ``schema.arrow``; ``rows_read`` counts them. With ``xmin``, each
        batch ends with one more column, :data:`XMIN` (int64): the 32-bit id of the transaction
        that inserted the row.

        The row count PostgreSQL reports at the end of the COPY is checked against the rows parsed.
        """
        select = [f"{c.select} AS {query.quote(c.name)}" for c in schema.columns]
        if xmin:
            select.append(f"xmin AS {query.quote(XMIN)}")  # COPY writes an xid as its number
        rendered = query.render(incremental, limit=limit, copy=True, select=select)
        for name, value in rendered.settings:
            await self._conn.execute("SELECT set_config($1, $2, true)", name, value)
        blocks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
        copy = asyncio.create_task(self._copy(rendered.sql, blocks, block_bytes))
        parse = _Parser(schema, xmin=xmin)
        carry = b""
        try:
            while (block := await _next_block(blocks, copy)) is not None:
                data = carry + block
                end = _records_end(data)
                carry = data[end:]
                if end:
                    yield await asyncio.to_thread(parse, memoryview(data)[:end])  # no copy
            status = await copy  # re-raises what failed the COPY
            if carry:
                yield await asyncio.to_thread(parse, carry)
        finally:
            if not copy.done():
                # The consumer stopped early (or a batch failed): drop the connection first, so
                # the COPY ends at once instead of streaming the rest of the table to nobody.
                self._conn.terminate()
                copy.cancel()
                with contextlib.suppress(BaseException):
                    await copy
        self.rows_read += parse.rows
        reported = int(status.split()[-1])
        if reported != parse.rows:
            raise SourceReadFailed(
                f"PostgreSQL sent {reported} rows but {parse.rows} were parsed", retryable=True
            )

    async def _copy(self, sql: str, blocks: asyncio.Queue[bytes], block_bytes: int) -> str:
        """Run the COPY, handing full blocks to ``blocks``; waits (back-pressure) while it is full."""
        buffer = bytearray()

        async def sink(chunk: bytes) -> None:
            nonlocal buffer
            buffer += chunk
            if len(buffer) >= block_bytes:
                full, buffer = buffer, bytearray()
                await blocks.put(full)  # handed over whole: no copy

        try:
            status = await self._conn.copy_from_query(sql, output=sink, format="csv")
        except asyncpg.PostgresError as exc:
            raise SourceReadFailed(f"PostgreSQL refused the read: {exc}", retryable=False) from exc
        except (OSError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
            raise SourceReadFailed(f"the PostgreSQL connection failed: {exc}", retryable=True) from exc
        if buffer:
            await blocks.put(buffer)
        return status


async def _next_block(blocks: asyncio.Queue[bytes], copy: asyncio.Task[str]) -> bytes | None:
    """The next block, or None once the COPY has ended (well or not) and every block is taken."""
    if not blocks.empty():
        return blocks.get_nowait()
    if copy.done():
        return None
    get = asyncio.ensure_future(blocks.get())
    done, _ = await asyncio.wait({get, copy}, return_when=asyncio.FIRST_COMPLETED)
    if get in done:
        return get.result()
    get.cancel()
    return blocks.get_nowait() if not blocks.empty() else None


class _Parser:
    """CSV text of whole records -> one RecordBatch of the declared schema (runs in a thread)."""

    def __init__(self, schema: SourceSchema, *, xmin: bool = False) -> None:
        self.schema = schema
        self.rows = 0
        names = [c.name for c in schema.columns]
        types = {c.name: csv_type(c) for c in schema.columns}
        self._arrow = schema.arrow
        if xmin:  # a name no declared column has (each is one of the query's own output names)
            names.append(XMIN)
            types[XMIN] = pa.int64()
            self._arrow = self._arrow.append(pa.field(XMIN, pa.int64()))
        self._read = pa_csv.ReadOptions(column_names=names, block_size=BLOCK_BYTES * 2, use_threads=False)
        self._parse = pa_csv.ParseOptions(newlines_in_values=True)
        self._convert = pa_csv.ConvertOptions(
            column_types=types,
            true_values=["t", "1"], false_values=["f", "0"],  # booleans, and bit(1)
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
        )

    def __call__(self, data: bytes | memoryview) -> pa.RecordBatch:
        try:
            table = pa_csv.read_csv(pa.BufferReader(pa.py_buffer(data)), self._read, self._parse, self._convert)
        except pa.ArrowInvalid as exc:
            raise self._failed(exc) from exc
        arrays = [convert(col, table.column(i).combine_chunks()) for i, col in enumerate(self.schema.columns)]
        if len(self._arrow) > len(arrays):
            arrays.append(table.column(len(arrays)).combine_chunks())
        self.rows += table.num_rows
        return pa.RecordBatch.from_arrays(arrays, schema=self._arrow)

    def _failed(self, exc: pa.ArrowInvalid) -> SourceReadFailed:
        # "In CSV column #3: CSV conversion error to date32[day]: invalid value 'infinity'"
        text = str(exc)
        if text.startswith("In CSV column #"):
            index = int(text.removeprefix("In CSV column #").split(":", 1)[0])
            return failed(self.schema.columns[index], exc)
        return SourceReadFailed(f"the COPY output does not parse: {text[:300]}", retryable=False)


def _records_end(data: bytes) -> int:
    """Offset just past the last complete CSV record in ``data`` (0 if none is complete).

    A newline ends a record unless it is inside a quoted value, which is when an odd number of
    quote characters precede it (an escaped quote is two, so it does not change the parity).
    """
    total = data.count(b'"')
    after = 0
    end = len(data)
    while (newline := data.rfind(b"\n", 0, end)) >= 0:
        after += data.count(b'"', newline, end)
        if (total - after) % 2 == 0:
            return newline + 1
        end = newline
    return 0
