"""Database export, pure parts: the type mapping, names the targets cannot hold, the save check,
the load-format encoder and the canonical conversions (no database needed)."""

from __future__ import annotations

import datetime as dt
import decimal
from types import SimpleNamespace

import pyarrow as pa
import pytest

from maestro.adapters.targets.encode import encode
from maestro.adapters.targets.files import canonical
from maestro.adapters.targets.types import ExportColumn, UnsupportedColumn, export_columns, name_problem
from maestro.errors_outside import ExportFailed
from maestro.events.catalog import DatabaseExport, TableSpec
from maestro.handlers.transfers.db_export import ExportLimits, export_id_for
from maestro.handlers.transfers.db_export_check import check_db_export, needs_db_export_check
from maestro.settings import Settings

PG = SimpleNamespace(driver="postgres", export=True)
MY = SimpleNamespace(driver="mysql", export=True)


@pytest.mark.parametrize(("field", "pg", "my"), [
    ({"name": "a", "type": "INTEGER", "mode": "REQUIRED"}, "bigint NOT NULL", "BIGINT NOT NULL"),
    ({"name": "a", "type": "FLOAT"}, "double precision", "DOUBLE"),
    ({"name": "a", "type": "NUMERIC"}, "numeric(38, 9)", "DECIMAL(38,9)"),
    ({"name": "a", "type": "BIGNUMERIC"}, "numeric", "DECIMAL(65,30)"),
    ({"name": "a", "type": "BOOLEAN"}, "boolean", "BOOLEAN"),
    ({"name": "a", "type": "STRING"}, "text", "LONGTEXT"),
    ({"name": "a", "type": "BYTES"}, "bytea", "LONGBLOB"),
    ({"name": "a", "type": "DATE"}, "date", "DATE"),
    ({"name": "a", "type": "TIME"}, "time", "TIME(6)"),
    ({"name": "a", "type": "DATETIME"}, "timestamp", "DATETIME(6)"),
    ({"name": "a", "type": "TIMESTAMP"}, "timestamptz", "DATETIME(6)"),
    ({"name": "a", "type": "JSON"}, "jsonb", "JSON"),
    ({"name": "a", "type": "INT64", "mode": "REPEATED"}, "jsonb", "JSON"),
    ({"name": "a", "type": "RECORD", "fields": [{"name": "b", "type": "INT64"}]}, "jsonb", "JSON"),
    ({"name": "a", "type": "GEOGRAPHY"}, "text", "LONGTEXT"),
])
def test_each_bigquery_type_has_one_column_type_per_target(field: dict, pg: str, my: str) -> None:
    column = ExportColumn.of(field)
    assert (column.postgres(), column.mysql()) == (pg, my)


def test_key_columns_are_bounded_not_null_and_scalar() -> None:
    columns = export_columns([{"name": "k", "type": "STRING"}, {"name": "v", "type": "INT64"}], ["K"])
    assert columns[0].key and columns[0].mysql() == "VARCHAR(255) NOT NULL" and columns[0].postgres() == "text NOT NULL"
    with pytest.raises(UnsupportedColumn, match="not columns of the table"):
        export_columns([{"name": "k", "type": "STRING"}], ["missing"])
    with pytest.raises(UnsupportedColumn, match="array or record"):
        export_columns([{"name": "k", "type": "STRING", "mode": "REPEATED"}], ["k"])
    with pytest.raises(UnsupportedColumn, match="no export mapping"):
        ExportColumn.of({"name": "r", "type": "RANGE"})


@pytest.mark.parametrize(("driver", "name", "problem"), [
    ("postgres", "a" * 63, None), ("postgres", "é" * 32, "64 bytes"), ("postgres", "a\x00", "NUL"),
    ("mysql", "é" * 64, None), ("mysql", "a" * 65, "65 characters"), ("mysql", "x ", "ends with a space"),
    ("mysql", "emoji😀", "beyond U+FFFF"), ("postgres", "emoji😀 and spaces", None),
])
def test_names_each_target_cannot_hold(driver: str, name: str, problem: str | None) -> None:
    found = name_problem(driver, name)
    assert (found is None) if problem is None else (problem in (found or ""))


def spec(**export: object) -> TableSpec:
    extract = export.pop("extract", None)
    return TableSpec.model_validate({"dataset": "d", "name": export.pop("name", "t"), "query": "SELECT 1",
                                     "extract": extract, "db_export": {"database": "w", **export}})


def test_check_db_export_names_each_problem() -> None:
    assert check_db_export(spec(), {"w": PG}) == []
    assert check_db_export(spec(), {"w": SimpleNamespace(driver="postgres", export=False)})[0]["field"] == "db_export.database"
    problems = check_db_export(spec(table="x" * 70, schema="s", extract={"format": "avro", "compression": "none"}), {"w": MY})
    assert [p["field"] for p in problems] == ["db_export.table", "db_export.schema", "extract.format"]
    assert check_db_export(spec(name="a" * 64), {"w": PG})[0]["field"] == "name"
    assert check_db_export(TableSpec(dataset="d", name="t", query="SELECT 1"), {}) == []


def test_the_check_runs_only_when_what_it_depends_on_changes() -> None:
    before = spec()
    assert needs_db_export_check(before, None)
    assert not needs_db_export_check(before, before.to_payload())
    assert not needs_db_export_check(spec(), {**before.to_payload(), "description": "x"})
    assert needs_db_export_check(spec(table="other"), before.to_payload())
    old_shape = {**before.to_payload(), "db_export": {"database": "w", "table": None}}  # stored before mode/keys
    assert not needs_db_export_check(spec(), old_shape)


def test_export_settings_validate() -> None:
    with pytest.raises(ValueError, match="needs key_columns"):
        DatabaseExport(database="w", mode="upsert")
    with pytest.raises(ValueError, match="listed twice"):
        DatabaseExport(database="w", mode="upsert", key_columns=["a", "A"])
    assert DatabaseExport.model_validate({"database": "w", "schema": "s"}).schema_name == "s"


def test_export_ids_and_limits() -> None:
    assert export_id_for("run-1", "t1") == export_id_for("run-1", "t1") != export_id_for("run-2", "t1")
    limits = ExportLimits.from_settings(Settings(export_max_rows=5, export_max_bytes=7))
    assert (limits.max_rows, limits.max_bytes) == (5, 7)


def test_encoding_differs_per_target_where_the_targets_differ() -> None:
    columns = [ExportColumn("b", "BOOL", True), ExportColumn("ts", "TIMESTAMP", True), ExportColumn("by", "BYTES", True)]
    batch = pa.record_batch({
        "b": pa.array([True, None]),
        "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc), None], pa.timestamp("us", "UTC")),
        "by": pa.array([b"\x00\xff", None], pa.binary()),
    })
    assert bytes(encode(batch, columns, "postgres")) == b"true\t2024-01-02 03:04:05.000006+00\t\\\\x00FF\n\\N\t\\N\t\\N\n"
    assert bytes(encode(batch, columns, "mysql")) == b"1\t2024-01-02 03:04:05.000006\t00FF\n\\N\t\\N\t\\N\n"


def test_mysql_refuses_what_it_cannot_store_and_postgres_keeps_it() -> None:
    floats = pa.record_batch({"f": pa.array([1.0, float("nan")])})
    assert bytes(encode(floats, [ExportColumn("f", "FLOAT64", True)], "postgres")) == b"1\nnan\n"
    with pytest.raises(ExportFailed, match="NaN or Infinity") as caught:
        encode(floats, [ExportColumn("f", "FLOAT64", True)], "mysql")
    assert caught.value.column == "f"
    big = pa.record_batch({"n": pa.array(["1." + "1" * 31])})
    with pytest.raises(ExportFailed, match="DECIMAL"):
        encode(big, [ExportColumn("n", "BIGNUMERIC", True)], "mysql")


def test_canonical_conversions_from_text_and_parquet_types() -> None:
    columns = [ExportColumn("ts", "TIMESTAMP", True), ExportColumn("t", "TIME", True), ExportColumn("n", "BIGNUMERIC", True)]
    text = pa.record_batch({"ts": ["2024-01-01 00:00:00.5 UTC", "2024-01-01 00:00:00+00"], "t": ["23:59:59.999999", None],
                            "n": [decimal.Decimal("1.5"), None]}, schema=pa.schema(
        [("ts", pa.string()), ("t", pa.string()), ("n", pa.decimal128(38, 9))]))
    out = canonical(text, columns)
    assert out.column(0).to_pylist()[0] == dt.datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=dt.timezone.utc)
    assert out.column(1).to_pylist() == [dt.time(23, 59, 59, 999999), None]
    assert out.column(2).to_pylist() == ["1.500000000", None]
    with pytest.raises(ExportFailed, match="'ts'") as caught:
        canonical(pa.record_batch({"ts": ["2024-01-01 00:00:00+02"], "t": [None], "n": [None]}), columns)
    assert caught.value.reason == "bad_value"
