"""Source readers on real databases: types with edge values, snapshots, streaming, bad input.

PostgreSQL: a database of its own on the tests' server (``fresh_database``). MySQL: the MariaDB on
127.0.0.1:3306 (root, no password), a database with a random name per test, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pyarrow as pa
import pytest

from maestro.adapters.sources import mysql as mysql_source
from sources import mysql_execute
from maestro.adapters.sources import postgres as pg_source
from maestro.catalog.import_query import Incremental, parse_import_query
from maestro.errors import (
    ImportQueryRefused,
    SourceColumnError,
    SourceReadFailed,
    SourceTableNotFound,
    SourceUnavailable,
)

UTC = datetime.UTC


async def _read_all(source: Any, query: Any, schema: Any, **options: Any) -> pa.Table:
    batches = [batch async for batch in source.read(query, schema, **options)]
    for batch in batches:
        assert batch.schema == schema.arrow
    return pa.Table.from_batches(batches, schema=schema.arrow)


# -- PostgreSQL ----------------------------------------------------------------------------------

PG_TABLE = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN price AS numeric(10, 2);
CREATE TABLE shop.edge (
    id        bigint PRIMARY KEY,
    i2        smallint, i4 integer, i8 bigint,
    n_small   numeric(12, 2), n_38_9 numeric(38, 9), n_big numeric(50, 20), n_free numeric,
    n_huge    numeric(76, 0), dom price,
    f4 real, f8 double precision,
    b boolean, bit1 bit(1), bits bit(4), vbits bit varying(8),
    t text, vc varchar(5), ch char(3), m mood,
    raw bytea, u uuid, j json, jb jsonb,
    ints integer[], texts text[], stamps timestamptz[], nums numeric(5,2)[],
    d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
    pt point, poly polygon
);
"""

PG_ROWS = """
INSERT INTO shop.edge VALUES
(1, -32768, -2147483648, -9223372036854775808,
 -1234567890.12, 12345678901234567890123456789.123456789, 123456789012345678901234567890.12345678901234567890,
 '3.14159265358979323846264338327950288419716939937510', 10 ^ 75, 99.99,
 '-Infinity', 'NaN', true, B'1', B'1010', B'101',
 'line
 two, "quoted"', 'abcde', 'ab', 'happy',
 '\\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": null}',
 ARRAY[1, 2, 3], ARRAY['x', 'y"z', ''], ARRAY['2024-01-01 10:00:00+02'::timestamptz], ARRAY[1.50, 2.25],
 '0001-01-01', '23:59:59.999999', '10:00:00+02', '2024-02-29 12:34:56.789012',
 '2024-06-30 23:59:59.5+05:30', '1 year 2 months 3 days 04:05:06.5', '(1.5,2)', '((0,0),(1,0),(1,1))'),
(2, 32767, 2147483647, 9223372036854775807,
 0, -0.000000001, 0, '-1e-30', 0, NULL,
 'Infinity', '-0', false, B'0', B'0000', B'',
 '', '', '', 'sad',
 '', '00000000-0000-0000-0000-000000000000', '[]', '"s"',
 '{}', '{}', '{}', '{}',
 '9999-12-31', '00:00:00', '00:00:00-11:30', '0001-01-01 00:00:00', '1970-01-01 00:00:00+00',
 '-1 day', NULL, NULL),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL);
"""


@pytest.fixture
async def pg(fresh_database: tuple[str, str]) -> AsyncIterator[str]:
    dsn, _ = fresh_database
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE SCHEMA shop")
        await conn.execute(PG_TABLE)
        await conn.execute(PG_ROWS)
    finally:
        await conn.close()
    yield dsn


async def test_postgres_types_with_edge_values(pg: str) -> None:
    query = parse_import_query("SELECT * FROM shop.edge", "postgres")
    async with pg_source.open_source(pg) as source:
        schema = await source.discover(query)
        table = await _read_all(source, query, schema)
    types = {f["name"]: (f["type"], f["mode"]) for f in schema.bigquery()}
    assert types == {
        "id": ("INT64", "NULLABLE"), "i2": ("INT64", "NULLABLE"), "i4": ("INT64", "NULLABLE"),
        "i8": ("INT64", "NULLABLE"), "n_small": ("NUMERIC", "NULLABLE"),
        "n_38_9": ("NUMERIC", "NULLABLE"), "n_big": ("BIGNUMERIC", "NULLABLE"),
        "n_free": ("STRING", "NULLABLE"), "n_huge": ("STRING", "NULLABLE"), "dom": ("NUMERIC", "NULLABLE"),
        "f4": ("FLOAT64", "NULLABLE"), "f8": ("FLOAT64", "NULLABLE"), "b": ("BOOL", "NULLABLE"),
        "bit1": ("BOOL", "NULLABLE"), "bits": ("STRING", "NULLABLE"), "vbits": ("STRING", "NULLABLE"),
        "t": ("STRING", "NULLABLE"), "vc": ("STRING", "NULLABLE"), "ch": ("STRING", "NULLABLE"),
        "m": ("STRING", "NULLABLE"), "raw": ("BYTES", "NULLABLE"), "u": ("STRING", "NULLABLE"),
        "j": ("JSON", "NULLABLE"), "jb": ("JSON", "NULLABLE"), "ints": ("INT64", "REPEATED"),
        "texts": ("STRING", "REPEATED"), "stamps": ("TIMESTAMP", "REPEATED"),
        "nums": ("NUMERIC", "REPEATED"), "d": ("DATE", "NULLABLE"), "tm": ("TIME", "NULLABLE"),
        "ttz": ("STRING", "NULLABLE"), "ts": ("DATETIME", "NULLABLE"), "tstz": ("TIMESTAMP", "NULLABLE"),
        "iv": ("STRING", "NULLABLE"), "pt": ("STRING", "NULLABLE"), "poly": ("STRING", "NULLABLE"),
    }
    rows = {row["id"]: row for row in table.to_pylist()}
    one, two, nulls = rows[1], rows[2], rows[3]
    assert (one["i2"], one["i4"], one["i8"]) == (-32768, -2147483648, -9223372036854775808)
    assert two["i8"] == 9223372036854775807
    assert one["n_small"] == decimal.Decimal("-1234567890.12")
    assert one["n_38_9"] == decimal.Decimal("12345678901234567890123456789.123456789")
    assert one["n_big"] == decimal.Decimal("123456789012345678901234567890.12345678901234567890")
    assert one["n_free"] == "3.14159265358979323846264338327950288419716939937510"  # every digit
    assert one["n_huge"] == "1" + "0" * 75
    assert two["n_38_9"] == decimal.Decimal("-0.000000001")
    assert one["f4"] == -math.inf and math.isnan(one["f8"]) and two["f4"] == math.inf
    assert math.copysign(1, two["f8"]) == -1  # -0 keeps its sign
    assert (one["b"], two["b"], one["bit1"], two["bit1"]) == (True, False, True, False)
    assert (one["bits"], one["vbits"], two["vbits"]) == ("1010", "101", "")
    assert one["t"] == 'line\n two, "quoted"' and two["t"] == "" and nulls["t"] is None
    assert (one["vc"], one["ch"], one["m"]) == ("abcde", "ab ", "happy")
    assert one["raw"] == b"\x00\xff\x10" and two["raw"] == b""
    assert one["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert one["j"] == '{"a": [1, 2]}' and one["jb"] == '{"b": null}' and two["jb"] == '"s"'
    assert one["ints"] == [1, 2, 3] and one["texts"] == ["x", 'y"z', ""]
    assert one["stamps"] == [datetime.datetime(2024, 1, 1, 8, 0, tzinfo=UTC)]
    assert one["nums"] == [decimal.Decimal("1.50"), decimal.Decimal("2.25")]
    assert two["ints"] == [] and nulls["ints"] == []  # BigQuery has no NULL array
    assert one["d"] == datetime.date(1, 1, 1) and two["d"] == datetime.date(9999, 12, 31)
    assert one["tm"] == datetime.time(23, 59, 59, 999999)
    assert one["ttz"] == "10:00:00+02" and two["ttz"] == "00:00:00-11:30"  # the offset is kept
    assert one["ts"] == datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)  # civil time, no zone
    assert one["tstz"] == datetime.datetime(2024, 6, 30, 18, 29, 59, 500000, tzinfo=UTC)
    assert one["iv"] == "P1Y2M3DT4H5M6.5S" and two["iv"] == "P-1D"
    assert one["pt"] == "(1.5,2)"
    assert all(value in (None, []) for key, value in nulls.items() if key != "id")
    assert source.rows_read == 3


async def test_postgres_selected_columns_casts_and_window(pg: str) -> None:
    query = parse_import_query(
        "SELECT id, t AS label, CAST(n_free AS numeric(70, 38)) AS exact, tm::text AS tm "
        "FROM shop.edge AS e WHERE e.id < 3 AND t LIKE '%'",
        "postgres",
    )
    async with pg_source.open_source(pg) as source:
        schema = await source.discover(query)
        assert [(f["name"], f["type"]) for f in schema.bigquery()] == [
            ("id", "INT64"), ("label", "STRING"), ("exact", "BIGNUMERIC"), ("tm", "STRING"),
        ]
        window = Incremental("id", after=1, up_to=5, column_type="bigint")
        table = await _read_all(source, query, schema, incremental=window)
    assert table.to_pylist() == [{"id": 2, "label": "", "exact": decimal.Decimal("-1e-30"), "tm": "00:00:00"}]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("d", "'infinity'", "infinity"),
        ("d", "'0044-03-15 BC'", "BC"),
        ("d", "'10000-01-01'", "10000"),
        ("tstz", "'infinity'", "infinity"),
        ("tm", "'24:00:00'", "24:00:00"),
        ("n_small", "'NaN'", "NaN"),
    ],
)
async def test_postgres_values_out_of_range_fail_naming_the_column(
    pg: str, column: str, value: str, message: str
) -> None:
    conn = await asyncpg.connect(pg)
    await conn.execute(f"INSERT INTO shop.edge (id, {column}) VALUES (10, {value})")
    await conn.close()
    query = parse_import_query(f"SELECT id, {column} FROM shop.edge", "postgres")
    async with pg_source.open_source(pg) as source:
        schema = await source.discover(query)
        with pytest.raises(SourceReadFailed) as raised:
            await _read_all(source, query, schema)
    assert raised.value.column == column and message in raised.value.message
    assert raised.value.retryable is False


async def test_postgres_bad_input_is_named(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    await conn.execute("CREATE TABLE shop.odd (id int, cash money, tags mood[])")
    await conn.close()
    async with pg_source.open_source(pg) as source:
        with pytest.raises(SourceTableNotFound):
            await source.discover(parse_import_query("", "postgres", table="shop.missing"))
        with pytest.raises(SourceColumnError) as raised:
            await source.discover(parse_import_query("SELECT id, nope FROM shop.edge", "postgres"))
        assert raised.value.column == "nope"
        with pytest.raises(SourceColumnError) as raised:
            await source.discover(parse_import_query("SELECT * FROM shop.odd", "postgres"))
        assert (raised.value.column, raised.value.source_type) == ("cash", "money")
        with pytest.raises(SourceColumnError) as raised:
            await source.discover(parse_import_query("SELECT id, tags FROM shop.odd", "postgres"))
        assert raised.value.column == "tags"
        schema = await source.discover(parse_import_query("SELECT id, cash::numeric(12,2) FROM shop.odd", "postgres"))
        assert schema.bigquery()[1] == {"name": "cash", "type": "NUMERIC", "mode": "NULLABLE"}
    with pytest.raises(SourceUnavailable):
        async with pg_source.open_source("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2):
            pass


async def test_postgres_reads_in_one_read_only_snapshot(pg: str) -> None:
    query = parse_import_query("SELECT id FROM shop.edge", "postgres")
    writer = await asyncpg.connect(pg)
    try:
        async with pg_source.open_source(pg) as source:
            schema = await source.discover(query)
            horizon = await source.snapshot_xmin()
            await writer.execute("INSERT INTO shop.edge (id) VALUES (100)")  # commits after the snapshot
            table = await _read_all(source, query, schema)
            assert sorted(table.column("id").to_pylist()) == [1, 2, 3]
            assert await source.fetchval("SELECT max(id) FROM shop.edge") == 3
            assert horizon > 0
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
                await source.fetchval("INSERT INTO shop.edge (id) VALUES (101) RETURNING id")
    finally:
        await writer.close()


async def test_postgres_statement_timeout_fails_the_read(pg: str) -> None:
    # A WHERE cannot call pg_sleep (refused), so the slow statement comes from a cross-join-free
    # generate_series over a view: the timeout is the server's, and it ends as a failed read.
    conn = await asyncpg.connect(pg)
    await conn.execute("CREATE VIEW shop.slow AS SELECT g AS id FROM generate_series(1, 100000000) g")
    await conn.close()
    query = parse_import_query("SELECT id FROM shop.slow", "postgres")
    async with pg_source.open_source(pg, statement_timeout=0.3) as source:
        schema = await source.discover(query)
        with pytest.raises(SourceReadFailed) as raised:
            await _read_all(source, query, schema)
    assert "statement timeout" in raised.value.message


async def test_postgres_streams_in_bounded_batches(pg: str) -> None:
    conn = await asyncpg.connect(pg)
    await conn.execute(
        "CREATE TABLE shop.big AS SELECT g AS id, md5(g::text) AS h, now() AS at, g * 1.5 AS x "
        "FROM generate_series(1, 300000) g"
    )
    await conn.close()
    query = parse_import_query("SELECT * FROM shop.big", "postgres")
    peak = 0
    rows = 0
    async with pg_source.open_source(pg) as source:
        schema = await source.discover(query)
        async for batch in source.read(query, schema, block_bytes=1 << 20):
            rows += batch.num_rows
            assert batch.num_rows < 30000
            peak = max(peak, pa.total_allocated_bytes())
            del batch
    assert rows == 300000 == source.rows_read
    assert peak < 24 << 20  # the table is ~25 MB in Arrow; a few 1 MiB blocks are in memory at once


# -- MySQL / MariaDB -----------------------------------------------------------------------------


MYSQL_TABLE = """
CREATE TABLE edge (
    id bigint PRIMARY KEY,
    ti tinyint, t1 tinyint(1), si smallint, mi mediumint, i int, bi bigint,
    ubi bigint unsigned, ui int unsigned, y year,
    d_small decimal(12,2), d_big decimal(65,30), d_38 decimal(38,0),
    f float, db double,
    bit1 bit(1), bits bit(10), b64 bit(64),
    c char(3), vc varchar(10), tx text, e enum('a','b'), st set('x','y'),
    bl blob, vb varbinary(4), j json,
    dt date, dtm datetime(6), tsm timestamp(6) NULL DEFAULT NULL, tm time(6),
    g geometry, pt point
)
"""

MYSQL_ROWS = """
INSERT INTO edge VALUES
(1, -128, 127, -32768, -8388608, -2147483648, -9223372036854775808,
 18446744073709551615, 4294967295, 2155,
 -1234567890.12, '12345678901234567890123456789012345.123456789012345678901234567890',
 '99999999999999999999999999999999999999',
 1.5, 1e308,
 b'1', b'1000000001', b'1111111111111111111111111111111111111111111111111111111111111111',
 'ab', 'abcdefghij', 'line\\n"quoted" it''s', 'b', 'x,y',
 X'00FF10', '', '{"a": [1, 2]}',
 '1000-01-01', '2024-02-29 12:34:56.789012', '2024-06-30 23:59:59.5', '23:59:59.999999',
 ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), POINT(1.5, 2)),
(2, 0, 0, 0, 0, 0, 0, 0, 0, 1901, 0, 0, 0, -0.0, -1.5e-300,
 b'0', b'0', b'0', '', '', '', 'a', '', '', '', '[]',
 '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', '00:00:00', NULL, NULL),
(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 '2024-00-10', NULL, NULL, NULL, NULL, NULL)
"""


@pytest.fixture
async def my() -> AsyncIterator[str]:
    name = f"maestro_t_{uuid.uuid4().hex[:12]}"
    await mysql_execute(None, f"CREATE DATABASE `{name}`")
    try:
        # Zero dates need a permissive sql_mode; the TIMESTAMP is written in +05:30 to prove the
        # reader shifts it to UTC explicitly, not by the server's or the client's zone.
        await mysql_execute(name, "SET SESSION sql_mode = ''", "SET SESSION time_zone = '+05:30'",
                             MYSQL_TABLE, MYSQL_ROWS)
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        await mysql_execute(None, f"DROP DATABASE IF EXISTS `{name}`")


async def test_mysql_types_with_edge_values(my: str) -> None:
    query = parse_import_query("SELECT * FROM edge", "mysql")
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        table = await _read_all(source, query, schema, batch_rows=2)
    types = {f["name"]: f["type"] for f in schema.bigquery()}
    assert types == {
        "id": "INT64", "ti": "INT64", "t1": "INT64", "si": "INT64", "mi": "INT64", "i": "INT64",
        "bi": "INT64", "ubi": "NUMERIC", "ui": "INT64", "y": "INT64", "d_small": "NUMERIC",
        "d_big": "BIGNUMERIC", "d_38": "BIGNUMERIC", "f": "FLOAT64", "db": "FLOAT64",
        "bit1": "BOOL", "bits": "STRING", "b64": "STRING", "c": "STRING", "vc": "STRING",
        "tx": "STRING", "e": "STRING", "st": "STRING", "bl": "BYTES", "vb": "BYTES", "j": "JSON",
        "dt": "DATE", "dtm": "DATETIME", "tsm": "TIMESTAMP", "tm": "TIME", "g": "STRING", "pt": "STRING",
    }
    rows = {row["id"]: row for row in table.to_pylist()}
    one, two, three = rows[1], rows[2], rows[3]
    assert (one["ti"], one["t1"], one["si"], one["mi"]) == (-128, 127, -32768, -8388608)  # tinyint(1) is not a bool
    assert (one["i"], one["bi"], one["ui"], one["y"]) == (-2147483648, -9223372036854775808, 4294967295, 2155)
    assert one["ubi"] == decimal.Decimal("18446744073709551615")  # beyond INT64, exact
    assert one["d_small"] == decimal.Decimal("-1234567890.12")
    assert one["d_big"] == decimal.Decimal("12345678901234567890123456789012345.123456789012345678901234567890")
    assert one["d_38"] == decimal.Decimal("9" * 38)
    assert (one["f"], one["db"], two["db"]) == (1.5, 1e308, -1.5e-300)
    assert (one["bit1"], two["bit1"], one["bits"], two["bits"]) == (True, False, "1000000001", "0000000000")
    assert one["b64"] == "1" * 64
    assert (one["c"], one["vc"], one["tx"]) == ("ab", "abcdefghij", "line\n\"quoted\" it's")
    assert (one["e"], one["st"], two["st"]) == ("b", "x,y", "")
    assert (one["bl"], one["vb"], two["bl"]) == (b"\x00\xff\x10", b"", b"")
    assert one["j"] is not None and two["j"] == "[]"
    assert one["dt"] == datetime.date(1000, 1, 1)
    assert one["dtm"] == datetime.datetime(2024, 2, 29, 12, 34, 56, 789012)
    assert one["tsm"] == datetime.datetime(2024, 6, 30, 18, 29, 59, 500000, tzinfo=UTC)
    assert one["tm"] == datetime.time(23, 59, 59, 999999)
    assert one["g"] == "POLYGON((0 0,1 0,1 1,0 0))" and one["pt"] == "POINT(1.5 2)"
    assert (two["dt"], two["dtm"], two["tsm"], three["dt"]) == (None, None, None, None)  # zero dates
    assert all(value is None for key, value in three.items() if key != "id")
    assert source.rows_read == 3


async def test_mysql_selected_columns_casts_and_window(my: str) -> None:
    query = parse_import_query(
        "SELECT id, vc AS label, CAST(ubi AS CHAR) AS big, CAST(tm AS CHAR) AS tm FROM edge "
        "WHERE vc LIKE '%' AND id <= 3",
        "mysql",
    )
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        assert [(f["name"], f["type"]) for f in schema.bigquery()] == [
            ("id", "INT64"), ("label", "STRING"), ("big", "STRING"), ("tm", "STRING"),
        ]
        window = Incremental("id", after=1, inclusive=True, up_to=2)
        table = await _read_all(source, query, schema, incremental=window)
    assert table.to_pylist() == [
        {"id": 1, "label": "abcdefghij", "big": "18446744073709551615", "tm": "23:59:59.999999"},
        {"id": 2, "label": "", "big": "0", "tm": "00:00:00.000000"},
    ]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [("tm", "'838:59:59'", "838:59:59"), ("tm", "'-01:00:00'", "-01:00:00"), ("dt", "'0000-01-01'", "year 1")],
)
async def test_mysql_values_out_of_range_fail_naming_the_column(
    my: str, column: str, value: str, message: str
) -> None:
    database = my.rsplit("/", 1)[1]
    await mysql_execute(database, "SET SESSION sql_mode = ''", f"INSERT INTO edge (id, {column}) VALUES (10, {value})")
    query = parse_import_query(f"SELECT id, {column} FROM edge", "mysql")
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        with pytest.raises(SourceReadFailed) as raised:
            await _read_all(source, query, schema)
    assert raised.value.column == column and message in raised.value.message


async def test_mysql_bad_input_is_named(my: str) -> None:
    async with mysql_source.open_source(my) as source:
        with pytest.raises(SourceTableNotFound):
            await source.discover(parse_import_query("", "mysql", table="missing"))
        with pytest.raises(SourceColumnError) as raised:
            await source.discover(parse_import_query("SELECT id, nope FROM edge", "mysql"))
        assert raised.value.column == "nope"
        # Column names are case-insensitive in MySQL, as the reader matches them.
        schema = await source.discover(parse_import_query("SELECT ID, Vc FROM edge", "mysql"))
        assert [c.source for c in schema.columns] == ["id", "vc"]
    with pytest.raises(SourceUnavailable):
        async with mysql_source.open_source("mysql://root@127.0.0.1:1/none", connect_timeout=2):
            pass
    with pytest.raises(SourceUnavailable):
        async with mysql_source.open_source("mysql://root@127.0.0.1:3306/maestro_no_such_db"):
            pass


async def test_mysql_reads_in_one_read_only_snapshot(my: str) -> None:
    database = my.rsplit("/", 1)[1]
    query = parse_import_query("SELECT id FROM edge", "mysql")
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        await mysql_execute(database, "INSERT INTO edge (id) VALUES (100)")  # after the snapshot
        table = await _read_all(source, query, schema)
        assert sorted(table.column("id").to_pylist()) == [1, 2, 3]
        assert int(await source.fetchval("SELECT MAX(id) FROM edge")) == 3
        with pytest.raises(Exception, match="READ ONLY"):
            await source.fetchval("INSERT INTO edge (id) VALUES (101)")


async def test_mysql_streams_in_bounded_batches(my: str) -> None:
    database = my.rsplit("/", 1)[1]
    await mysql_execute(
        database,
        "CREATE TABLE big (id bigint PRIMARY KEY, h char(32), at datetime, x double)",
        "INSERT INTO big SELECT seq, MD5(seq), NOW(), seq * 1.5 FROM seq_1_to_200000",
    )
    query = parse_import_query("SELECT * FROM big", "mysql")
    rows = 0
    peak = 0
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        async for batch in source.read(query, schema, batch_rows=10_000):
            rows += batch.num_rows
            assert batch.num_rows <= 10_000
            peak = max(peak, pa.total_allocated_bytes())
            del batch
    assert rows == 200_000 == source.rows_read
    assert peak < 8 << 20  # the table is ~12 MB in Arrow; one batch is ~0.6 MB


async def test_mysql_session_limits_and_statement_timeout(my: str) -> None:
    database = my.rsplit("/", 1)[1]
    await mysql_execute(database, "CREATE VIEW slow AS SELECT seq AS id FROM seq_1_to_100000000000 WHERE seq % 7 = 8")
    query = parse_import_query("SELECT id FROM slow", "mysql")
    async with mysql_source.open_source(my, statement_timeout=0.5, net_write_timeout=900) as source:
        assert int(await source.fetchval("SELECT @@SESSION.net_write_timeout")) == 900
        assert await source.fetchval("SELECT @@SESSION.time_zone") == "+00:00"
        schema = await source.discover(query)
        with pytest.raises(SourceReadFailed) as raised:
            await _read_all(source, query, schema)
    assert "max_statement_time" in raised.value.message or "interrupted" in raised.value.message


# Every function and operator on the allow-list (maestro/catalog/import_rules.py), rendered back
# by sqlglot and run by the real database: each predicate is true for row 1 only, so a rendering
# that changed meaning (or does not run) shows.
PG_ALLOWED = """
SELECT id FROM shop.edge AS e
WHERE e.id IN (1, 5) AND id BETWEEN 0 AND 1 AND vc LIKE 'abc%' AND vc ILIKE 'ABC%' AND vc ~ '^a'
  AND vc || 'x' = 'abcdex' AND lower(vc) = 'abcde' AND upper(vc) = 'ABCDE' AND length(vc) = 5
  AND trim('  a ') = 'a' AND coalesce(i2, 0) = -32768 AND nullif(i4, 0) IS NOT NULL
  AND abs(i2::integer) = 32768 AND round(1.4) = 1 AND floor(1.5) = 1 AND ceil(1.5) = 2
  AND greatest(1, id) = 1 AND least(2, id) = 1 AND d < current_date AND tstz < now()
  AND ts < localtimestamp AND tstz > current_timestamp - interval '100 years'
  AND extract(year from ts) = 2024 AND date_trunc('day', ts) = '2024-02-29'
  AND left(vc, 2) = 'ab' AND right(vc, 2) = 'de' AND replace(vc, 'a', 'z') = 'zbcde'
  AND id = ANY(ARRAY[1, 7]) AND NOT (id = 2) AND (id * 2 + 1 - 1) / 2 % 5 = 1 AND -id = -1
  AND CAST(i2 AS text) = '-32768' AND i8::numeric(20,0) < 0 AND vc NOT LIKE 'x!%' ESCAPE '!'
LIMIT 5
"""

MYSQL_ALLOWED = """
SELECT id FROM edge AS e
WHERE e.id IN (1, 5) AND id BETWEEN 0 AND 1 AND vc LIKE 'abc%' AND lower(vc) = 'abcdefghij'
  AND upper(c) = 'AB' AND length(c) = 2 AND trim('  a ') = 'a' AND coalesce(ti, 0) = -128
  AND nullif(i, 0) IS NOT NULL AND abs(ti) = 128 AND round(1.4) = 1 AND floor(1.5) = 1
  AND ceil(1.5) = 2 AND greatest(1, id) = 1 AND least(2, id) = 1 AND dt < current_date
  AND dtm < now() AND dtm < current_timestamp AND dtm > now() - INTERVAL 100 YEAR
  AND extract(year from dtm) = 2024 AND left(vc, 2) = 'ab' AND right(vc, 2) = 'ij'
  AND replace(vc, 'a', 'z') = 'zbcdefghij' AND tx <=> tx AND 7 DIV 2 = 3 AND 7 % 2 = 1
  AND DATE_ADD(dt, INTERVAL 1 DAY) = '1000-01-02' AND DATE_SUB(dt, INTERVAL 1 DAY) = '0999-12-31'
  AND NOT (id = 2) AND -id = -1 AND CAST(ti AS SIGNED) = -128 AND CAST(d_small AS DECIMAL(14,2)) < 0
LIMIT 5
"""


async def test_every_allowed_function_runs_on_postgres(pg: str) -> None:
    query = parse_import_query(PG_ALLOWED, "postgres")
    async with pg_source.open_source(pg) as source:
        schema = await source.discover(query)
        table = await _read_all(source, query, schema)
    assert table.column("id").to_pylist() == [1]


async def test_every_allowed_function_runs_on_mysql(my: str) -> None:
    query = parse_import_query(MYSQL_ALLOWED, "mysql")
    async with mysql_source.open_source(my) as source:
        schema = await source.discover(query)
        table = await _read_all(source, query, schema)
    assert table.column("id").to_pylist() == [1]


async def test_abandoning_a_read_releases_the_source_at_once(pg: str, my: str) -> None:
    # A consumer that stops early (a failed upload) must not wait for the rest of a big table.
    pg_conn = await asyncpg.connect(pg)
    await pg_conn.execute("CREATE TABLE shop.many AS SELECT g AS id FROM generate_series(1, 2000000) g")
    await pg_conn.close()
    await mysql_execute(my.rsplit("/", 1)[1], "CREATE TABLE many (id bigint PRIMARY KEY)",
                         "INSERT INTO many SELECT seq FROM seq_1_to_300000")
    for module, dsn, table in ((pg_source, pg, "shop.many"), (mysql_source, my, "many")):
        query = parse_import_query("", "postgres" if module is pg_source else "mysql", table=table)
        t0 = asyncio.get_running_loop().time()
        async with module.open_source(dsn) as source:
            schema = await source.discover(query)
            reader = source.read(query, schema, **({"block_bytes": 1 << 16} if module is pg_source else {"batch_rows": 100}))
            first = await anext(reader)
            assert first.num_rows > 0
            await reader.aclose()
        assert asyncio.get_running_loop().time() - t0 < 1.5, module.__name__
