"""Read an import query's rows from MySQL / MariaDB as Arrow record batches.

One connection, one ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY`` at REPEATABLE READ:
the column discovery, the importer's own queries, the rows and the final row count all see one
snapshot. Rows stream through an unbuffered cursor (``SSCursor``) with the driver's value
conversions switched off: each value arrives as its text (or bytes, for binary columns), a batch
of rows is turned into columns at C speed and converted by pyarrow.compute. ``net_write_timeout``
is raised for the session, because a server whose client reads slower than that closes the
connection, and some drivers then see a result that merely looks short: so the row count is also
checked at the end, with ``COUNT(*)`` of the same query in the same snapshot.

    async with open_source(dsn, password) as source:
        schema = await source.discover(query)
        async for batch in source.read(query, schema):
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
from pymysql.converters import conversions

from maestro.adapters.sources.columns import Column, SourceSchema, convert, failed, selected
from maestro.adapters.sources.mysql_types import map_column
from maestro.catalog.import_query import ImportQuery, Incremental
from maestro.errors import SourceReadFailed, SourceTableNotFound, SourceUnavailable

BATCH_ROWS = 50_000
# The driver's encoders (to escape bound values) without its decoders (values stay text).
_ENCODERS_ONLY = {k: v for k, v in conversions.items() if not isinstance(k, int)}
# MySQL's zero dates ('0000-00-00', '2024-00-10', '0000-00-00 00:00:00'): no date, so NULL.
_ZERO_DATE = r"^\d{4}-(00-|\d\d-00)"
_JSON_CHECK = re.compile(r"json_valid\(`((?:[^`]|``)+)`\)", re.IGNORECASE)
_COLUMNS = """
SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION
"""
_CHECKS = """
SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s
"""


@contextlib.asynccontextmanager
async def open_source(
    dsn: str,
    password: str | None = None,
    *,
    connect_timeout: float = 10.0,
    statement_timeout: float = 6 * 3600.0,
    net_write_timeout: int = 3600,
) -> AsyncIterator[MySQLSource]:
    """A read-only consistent snapshot of the source database, closed (rolled back) on exit.

    ``dsn`` is ``mysql://user@host:3306/database`` (no password).
    """
    url = urlsplit(dsn)
    try:
        conn = await aiomysql.connect(
            host=url.hostname or "127.0.0.1", port=url.port or 3306,
            user=unquote(url.username or "root"), password=password or "",
            db=unquote(url.path.lstrip("/")) or None, connect_timeout=connect_timeout,
            charset="utf8mb4", autocommit=True, conv=_ENCODERS_ONLY,
        )
    except (OSError, asyncio.TimeoutError, pymysql.err.MySQLError) as exc:
        raise SourceUnavailable(f"cannot connect to the MySQL source: {type(exc).__name__}: {exc}") from exc
    try:
        async with conn.cursor() as cur:
            # MariaDB limits a statement in seconds, MySQL (SELECTs only) in milliseconds.
            mariadb = "mariadb" in conn.get_server_info().lower()
            limit = (f"max_statement_time = {statement_timeout:.3f}" if mariadb
                     else f"max_execution_time = {int(statement_timeout * 1000)}")
            await cur.execute(
                f"SET SESSION time_zone = '+00:00', net_write_timeout = {int(net_write_timeout)}, {limit}"
            )
            await cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        yield MySQLSource(conn)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ensure_closed(), timeout=5)
        conn.close()


class MySQLSource:
    """An open snapshot: discover the columns, then read the rows."""

    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn
        self.rows_read = 0

    def abort(self) -> None:
        """Drop the connection now (whatever runs on it fails): the import was cancelled."""
        self._conn.close()

    async def fetchval(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """One value (as text) from a query the importer rendered, in this same snapshot."""
        async with self._conn.cursor() as cur:
            await cur.execute(sql, params)
            row = await cur.fetchone()
        return row[0] if row else None

    async def discover(self, query: ImportQuery) -> SourceSchema:
        """The declared columns ``query`` reads, or an error naming the table or the column."""
        async with self._conn.cursor() as cur:
            await cur.execute(_COLUMNS, (query.schema, query.table))
            rows = await cur.fetchall()
            await cur.execute(_CHECKS, (query.schema, query.table))
            checks = [clause for (clause,) in await cur.fetchall()]
        if not rows:
            raise SourceTableNotFound(f"the source has no table {query.quoted_table} (or cannot show it)")
        json_columns = {m.replace("``", "`").lower() for c in checks for m in _JSON_CHECK.findall(c)}
        # MySQL column names are case-insensitive: match them so.
        table = {name.lower(): (name, column_type, data_type) for name, column_type, data_type in rows}
        columns = []
        every = [stored for stored, _, _ in table.values()]
        for name, found, cast, expression in selected(query, table, fold=str.lower, every=every):
            stored, column_type, data_type = found
            is_json = cast is None and (data_type == "json" or stored.lower() in json_columns)
            columns.append(map_column(name, stored, cast or column_type, is_json=is_json, select=expression))
        return SourceSchema(tuple(columns))

    async def read(
        self,
        query: ImportQuery,
        schema: SourceSchema,
        *,
        incremental: Incremental | None = None,
        limit: int | None = None,
        batch_rows: int = BATCH_ROWS,
        verify_count: bool = True,
    ) -> AsyncIterator[pa.RecordBatch]:
        """The rows as batches of ``schema.arrow``; ``rows_read`` counts them."""
        select = [f"{c.select} AS {query.quote(c.name)}" for c in schema.columns]
        rendered = query.render(incremental, limit=limit, select=select)
        rows = 0
        finished = False
        cur = await self._conn.cursor(aiomysql.SSCursor)
        try:
            await cur.execute(rendered.sql, rendered.params)
            while chunk := await cur.fetchmany(batch_rows):
                rows += len(chunk)
                yield _batch(schema, chunk)
            finished = True
        except pymysql.err.OperationalError as exc:
            raise SourceReadFailed(f"the MySQL read failed: {exc}", retryable=True) from exc
        except pymysql.err.MySQLError as exc:
            raise SourceReadFailed(f"MySQL refused the read: {exc}", retryable=False) from exc
        finally:
            if finished:
                await cur.close()
            else:
                # Closing an unbuffered cursor reads the rest of the result first: on a failed
                # or abandoned read, drop the connection instead (the snapshot is over anyway).
                self._conn.close()
        self.rows_read += rows
        if verify_count:
            count = f"SELECT COUNT(*) FROM ({rendered.sql}) AS maestro_rows"
            expected = int(await self.fetchval(count, rendered.params))
            if expected != rows:
                raise SourceReadFailed(
                    f"MySQL sent {rows} rows but the snapshot holds {expected}: the stream was cut",
                    retryable=True,
                )


def _batch(schema: SourceSchema, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    arrays = [_column(col, values) for col, values in zip(schema.columns, zip(*rows), strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema.arrow)


def _column(col: Column, values: tuple[Any, ...]) -> pa.Array:
    if col.kind == "bits":
        return _bits(col, values)
    if col.kind == "bytes":
        return pa.array(values, pa.binary())
    try:
        text = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # bytes from a binary-charset expression
        text = pa.array([v.decode() if isinstance(v, bytes) else v for v in values], pa.string())
    if col.kind in ("date", "datetime", "timestamp"):
        zero = pc.fill_null(pc.match_substring_regex(text, _ZERO_DATE), False)
        text = pc.if_else(zero, pa.scalar(None, pa.string()), text)
    return convert(col, text)


def _bits(col: Column, values: tuple[Any, ...]) -> pa.Array:
    # The driver hands BIT(n) over as big-endian bytes.
    width = int(re.search(r"\d+", col.source_type).group()) if "(" in col.source_type else 1
    try:
        ints = [None if v is None else int.from_bytes(v, "big") for v in values]
    except TypeError as exc:
        raise failed(col, exc) from exc
    if width == 1:
        return pa.array([None if i is None else bool(i) for i in ints], pa.bool_())
    return pa.array([None if i is None else format(i, f"0{width}b") for i in ints], pa.string())
