"""Database export: every BigQuery type's edge values round-trip into PostgreSQL and MariaDB.

The extract files are written as BigQuery writes them (CSV with `` UTC`` timestamps and base64
bytes; Parquet with nested columns), uploaded to the local Cloud Storage, and exported through
:func:`export_table` into a real PostgreSQL database and a real MariaDB database.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pyarrow as pa
import pytest

from maestro.adapters.localstack import LocalStack, storage_client
from maestro.errors_outside import ExportFailed
from maestro.events.catalog import TableSpec
from maestro.handlers.transfers.db_export import ExportDatabase, export_table
from db_targets import csv_bytes, mysql_database, mysql_fetch, parquet_bytes, pg_fetch, put_object

D = decimal.Decimal
SCHEMA = [
    {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
    {"name": "i", "type": "INT64"},
    {"name": "f", "type": "FLOAT"},
    {"name": "n", "type": "NUMERIC"},
    {"name": "bn", "type": "BIGNUMERIC"},
    {"name": "b", "type": "BOOLEAN"},
    {"name": "s", "type": "STRING"},
    {"name": "by", "type": "BYTES"},
    {"name": "d", "type": "DATE"},
    {"name": "t", "type": "TIME"},
    {"name": "dt", "type": "DATETIME"},
    {"name": "ts", "type": "TIMESTAMP"},
    {"name": "j", "type": "JSON"},
    {"name": "g", "type": "GEOGRAPHY"},
]
NASTY = 'a,"b"\nc\td\\N\\e\r 日本語 😀'
RAW = b"\x00\xff\\\t\n"
ROWS = [
    ["1", "-9223372036854775808", "5e-324", "-99999999999999999999999999999.999999999",
     "-0.00000000000000000000000000000000000001", "false", NASTY, base64.b64encode(RAW).decode(),
     "0001-01-01", "00:00:00", "0001-01-01T00:00:00", "0001-01-01 00:00:00 UTC", '{"a":[1,2,{"b":null}]}',
     "POINT(1 2)"],
    ["2", "9223372036854775807", "1.7976931348623157e+308", "99999999999999999999999999999.999999999",
     "578960446186580977117854925043439539266.34992332820282019728792003956564819967", "true", "", "",
     "9999-12-31", "23:59:59.999999", "9999-12-31 23:59:59.999999", "9999-12-31 23:59:59.999999 UTC",
     '"text"', "LINESTRING(0 0, 1 1)"],
    ["3"] + [None] * 13,
    ["4", "0", "-0.5", "0.000000001", "1.5", "true", "\\N", base64.b64encode(b"x").decode(), "2024-02-29",
     "12:34:56.5", "2024-01-01 01:02:03.456789", "2024-06-01 12:00:00.5+00", "[]", "POINT(0 0)"],
]


def spec(**export: Any) -> TableSpec:
    return TableSpec.model_validate({
        "dataset": "mart", "name": "everything", "query": "SELECT 1",
        "extract": {"format": "csv", "compression": "gzip"},
        "db_export": {"database": "mart", **export},
    })


@pytest.fixture(scope="module")
def storage(local_stack: LocalStack) -> Iterator[Any]:
    client = storage_client(local_stack)
    yield client
    client.close()


@pytest.fixture
async def pg(fresh_database: tuple[str, str]) -> ExportDatabase:
    return ExportDatabase("mart", "postgres", fresh_database[0], None, export=True)


@pytest.fixture
async def my() -> AsyncIterator[ExportDatabase]:
    async with mysql_database() as target:
        yield target


async def test_every_type_round_trips_into_postgres(storage: Any, pg: ExportDatabase) -> None:
    uri = await put_object(storage, csv_bytes([f["name"] for f in SCHEMA], ROWS, gzipped=True), "csv.gz")
    result = await export_table(pg, spec(), SCHEMA, [uri], storage, export_id="run-1/t1")
    assert (result.rows, result.already_done, result.table) == (4, False, "everything")
    rows = {r["id"]: r for r in await pg_fetch(pg, "SELECT *, f::text AS ftext FROM everything")}
    low, high, empty, plain = rows[1], rows[2], rows[3], rows[4]
    assert (low["i"], high["i"]) == (-2**63, 2**63 - 1)
    assert (low["f"], high["f"]) == (5e-324, 1.7976931348623157e308)
    assert (low["n"], high["n"]) == (D("-99999999999999999999999999999.999999999"), D("99999999999999999999999999999.999999999"))
    assert low["bn"] == D("-0.00000000000000000000000000000000000001")
    assert high["bn"] == D("578960446186580977117854925043439539266.34992332820282019728792003956564819967")
    assert (low["b"], high["b"]) == (False, True)
    assert (low["s"], high["s"], plain["s"]) == (NASTY, "", "\\N")
    assert (low["by"], high["by"], plain["by"]) == (RAW, b"", b"x")
    assert (low["d"], high["d"]) == (dt.date(1, 1, 1), dt.date(9999, 12, 31))
    assert (low["t"], high["t"], plain["t"]) == (dt.time(0), dt.time(23, 59, 59, 999999), dt.time(12, 34, 56, 500000))
    assert (low["dt"], high["dt"]) == (dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999))
    utc = dt.timezone.utc
    assert low["ts"] == dt.datetime(1, 1, 1, tzinfo=utc)
    assert high["ts"] == dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc)
    assert plain["ts"] == dt.datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=utc)
    assert json.loads(low["j"]) == {"a": [1, 2, {"b": None}]} and json.loads(high["j"]) == "text"
    assert (low["g"], high["g"]) == ("POINT(1 2)", "LINESTRING(0 0, 1 1)")
    assert all(empty[f["name"]] is None for f in SCHEMA[1:])
    types = {r["column_name"]: (r["data_type"], r["is_nullable"]) for r in await pg_fetch(
        pg, "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 'everything'")}
    assert types["id"] == ("bigint", "NO") and types["i"] == ("bigint", "YES")
    assert types["ts"][0] == "timestamp with time zone" and types["j"][0] == "jsonb"
    assert types["n"][0] == "numeric" and types["by"][0] == "bytea"


async def test_float_specials_round_trip_into_postgres(storage: Any, pg: ExportDatabase) -> None:
    schema = [{"name": "f", "type": "FLOAT64"}]
    uri = await put_object(storage, csv_bytes(["f"], [["NaN"], ["Infinity"], ["-Infinity"], ["inf"], ["-0"]]), "csv")
    await export_table(pg, spec(), schema, [uri], storage, export_id="run-1/specials", compression="none")
    values = [r["f"] for r in await pg_fetch(pg, "SELECT f::text AS f FROM everything")]
    assert values == ["NaN", "Infinity", "-Infinity", "Infinity", "-0"]


async def test_every_type_round_trips_into_mariadb(storage: Any, my: ExportDatabase) -> None:
    # MariaDB's DECIMAL(65,30) holds BIGNUMERIC values with at most 35 + 30 digits (the others fail
    # the export: test below); everything else is the same rows as PostgreSQL's.
    rows = [list(r) for r in ROWS]
    rows[0][4] = "-12345678901234567890123456789012345.123456789012345678901234567890"
    rows[1][4] = "0.000000000000000000000000000001"
    uri = await put_object(storage, csv_bytes([f["name"] for f in SCHEMA], rows, gzipped=True), "csv.gz")
    result = await export_table(my, spec(), SCHEMA, [uri], storage, export_id="run-1/t1")
    assert (result.rows, result.already_done) == (4, False)
    names = [f["name"] for f in SCHEMA]
    fetched = await mysql_fetch(my, f"SELECT {', '.join('`' + n + '`' for n in names)} FROM everything ORDER BY id")
    got = {r[0]: dict(zip(names, r, strict=True)) for r in fetched}
    low, high, empty, plain = got[1], got[2], got[3], got[4]
    assert (low["i"], high["i"]) == (-2**63, 2**63 - 1)
    assert (low["f"], high["f"]) == (5e-324, 1.7976931348623157e308)
    assert (low["n"], high["n"]) == (D("-99999999999999999999999999999.999999999"), D("99999999999999999999999999999.999999999"))
    assert low["bn"] == D("-12345678901234567890123456789012345.123456789012345678901234567890")
    assert high["bn"] == D("0.000000000000000000000000000001")
    assert (low["b"], high["b"]) == (0, 1)
    assert (low["s"], high["s"], plain["s"]) == (NASTY, "", "\\N")
    assert (low["by"], high["by"], plain["by"]) == (RAW, b"", b"x")
    assert (low["d"], high["d"]) == (dt.date(1, 1, 1), dt.date(9999, 12, 31))
    assert (low["t"], high["t"]) == (dt.timedelta(0), dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))
    assert (low["dt"], high["dt"]) == (dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999))
    assert (low["ts"], plain["ts"]) == (dt.datetime(1, 1, 1), dt.datetime(2024, 6, 1, 12, 0, 0, 500000))  # UTC
    assert json.loads(low["j"]) == {"a": [1, 2, {"b": None}]} and json.loads(high["j"]) == "text"
    assert low["g"] == "POINT(1 2)"
    assert all(empty[n] is None for n in names[1:])
    columns = {r[0]: (r[1], r[2]) for r in await mysql_fetch(
        my, "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'everything'")}
    assert columns["id"] == ("bigint(20)", "NO") and columns["ts"] == ("datetime(6)", "YES")
    assert columns["bn"][0] == "decimal(65,30)" and columns["by"][0] == "longblob"


@pytest.mark.parametrize(("value", "needle"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "Infinity")])
async def test_mariadb_refuses_float_specials_naming_the_column(
    storage: Any, my: ExportDatabase, value: str, needle: str
) -> None:
    uri = await put_object(storage, csv_bytes(["id", "f"], [["1", "1.5"], ["2", value]]), "csv")
    schema = [{"name": "id", "type": "INT64"}, {"name": "f", "type": "FLOAT64"}]
    with pytest.raises(ExportFailed) as caught:
        await export_table(my, spec(), schema, [uri], storage, export_id="run-1/nan", compression="none")
    assert caught.value.reason == "bad_value" and caught.value.column == "f" and not caught.value.retryable
    assert needle in caught.value.message and "MySQL" in caught.value.message
    assert "everything" not in await _mysql_tables(my)


async def test_mariadb_refuses_a_bignumeric_it_cannot_hold_exactly(storage: Any, my: ExportDatabase) -> None:
    uri = await put_object(storage, csv_bytes(["bn"], [["1.12345678901234567890123456789012345678"]]), "csv")
    with pytest.raises(ExportFailed) as caught:
        await export_table(my, spec(), [{"name": "bn", "type": "BIGNUMERIC"}], [uri], storage,
                           export_id="run-1/bn", compression="none")
    assert caught.value.reason == "bad_value" and "DECIMAL(65,30)" in caught.value.message


NESTED = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "tags": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
    "point": pa.array([{"x": 1, "y": "p"}, None, {"x": None, "y": "q"}], pa.struct([("x", pa.int64()), ("y", pa.string())])),
    "ts": pa.array([dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc), None, None], pa.timestamp("us", tz="UTC")),
    "n": pa.array([D("1.5"), None, D("-2")], pa.decimal128(38, 9)),
    "j": pa.array(['{"k": 1}', None, "[1]"], pa.string()),
})
NESTED_SCHEMA = [
    {"name": "id", "type": "INT64", "mode": "REQUIRED"},
    {"name": "tags", "type": "STRING", "mode": "REPEATED"},
    {"name": "point", "type": "RECORD", "fields": [{"name": "x", "type": "INT64"}, {"name": "y", "type": "STRING"}]},
    {"name": "ts", "type": "TIMESTAMP"},
    {"name": "n", "type": "NUMERIC"},
    {"name": "j", "type": "JSON"},
]


async def test_arrays_and_records_from_parquet_become_json(storage: Any, pg: ExportDatabase, my: ExportDatabase) -> None:
    uri = await put_object(storage, parquet_bytes(NESTED), "parquet")
    for target in (pg, my):
        result = await export_table(target, spec(), NESTED_SCHEMA, [uri], storage, export_id="run-2/t1",
                                    file_format="parquet", compression="snappy")
        assert result.rows == 3
    pg_rows = [(r["tags"], r["point"], r["j"]) for r in await pg_fetch(pg, "SELECT * FROM everything ORDER BY id")]
    my_rows = await mysql_fetch(my, "SELECT tags, point, j FROM everything ORDER BY id")
    for rows in (pg_rows, my_rows):
        decoded = [tuple(None if v is None else json.loads(v) for v in row) for row in rows]
        assert decoded == [
            (["a", "b"], {"x": 1, "y": "p"}, {"k": 1}),
            ([], None, None),
            (None, {"x": None, "y": "q"}, [1]),
        ]
    assert (await pg_fetch(pg, "SELECT ts FROM everything WHERE id = 1"))[0]["ts"] == dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)


async def test_ndjson_extract(storage: Any, pg: ExportDatabase) -> None:
    lines = [
        {"id": 1, "s": "x", "ts": "2024-01-01 00:00:00 UTC", "by": base64.b64encode(RAW).decode(), "n": "1.25",
         "tags": ["a"], "rec": {"k": [1, 2]}},
        {"id": 2, "s": None, "ts": None, "by": None, "n": None, "tags": [], "rec": None},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uri = await put_object(storage, data, "json")
    schema = [{"name": "id", "type": "INT64"}, {"name": "s", "type": "STRING"}, {"name": "ts", "type": "TIMESTAMP"},
              {"name": "by", "type": "BYTES"}, {"name": "n", "type": "NUMERIC"},
              {"name": "tags", "type": "STRING", "mode": "REPEATED"},
              {"name": "rec", "type": "RECORD", "fields": [{"name": "k", "type": "INT64", "mode": "REPEATED"}]}]
    await export_table(pg, spec(), schema, [uri], storage, export_id="run-3/t1", file_format="ndjson", compression="none")
    rows = await pg_fetch(pg, "SELECT * FROM everything ORDER BY id")
    assert rows[0]["by"] == RAW and rows[0]["n"] == D("1.25") and json.loads(rows[0]["rec"]) == {"k": [1, 2]}
    assert rows[0]["ts"] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert rows[1]["s"] is None and json.loads(rows[1]["tags"]) == []


async def _mysql_tables(target: ExportDatabase) -> set[str]:
    return {row[0] for row in await mysql_fetch(target, "SHOW TABLES")}
