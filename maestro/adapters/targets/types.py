"""BigQuery columns as target-database columns: one rule per type, for PostgreSQL and MySQL.

Every exported column goes through one *canonical* Arrow type (what the file readers produce,
whatever the extract format) and one column type per target. The table is documented in
docs/db-export.md; the tests round-trip each type's edge values through both targets.

    >>> col = ExportColumn.of({"name": "ts", "type": "TIMESTAMP", "mode": "REQUIRED"})
    >>> col.postgres(), col.mysql()
    ('timestamptz NOT NULL', 'DATETIME(6) NOT NULL')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# BigQuery's legacy and standard names for the same types.
_ALIASES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "STRUCT": "RECORD"}

# Canonical Arrow type of each BigQuery type. Nested values (RECORD, REPEATED) travel as JSON text.
_ARROW: dict[str, pa.DataType] = {
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    # Text: BigQuery's 76.76 digits reach 77 (its maximum has 39 + 38), one more than decimal256.
    "BIGNUMERIC": pa.string(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "JSON": pa.string(),
    "GEOGRAPHY": pa.string(),  # WKT, as BigQuery's CSV and JSON extracts write it
    "INTERVAL": pa.string(),  # BigQuery's canonical text ("Y-M D H:M:S.F")
    "RECORD": pa.string(),
}

_POSTGRES = {
    "INT64": "bigint",
    "FLOAT64": "double precision",  # NaN and ±Infinity are values here
    "NUMERIC": "numeric(38, 9)",
    "BIGNUMERIC": "numeric",  # unconstrained: BigQuery's 76.76 digits with scale 38 fit exactly
    "BOOL": "boolean",
    "STRING": "text",
    "BYTES": "bytea",
    "DATE": "date",
    "TIME": "time",  # microseconds, as BigQuery
    "DATETIME": "timestamp",
    "TIMESTAMP": "timestamptz",
    "JSON": "jsonb",
    "GEOGRAPHY": "text",
    "INTERVAL": "text",
    "RECORD": "jsonb",
}

_MYSQL = {
    "INT64": "BIGINT",
    "FLOAT64": "DOUBLE",  # no NaN or Infinity: such a value fails the export (docs/db-export.md)
    "NUMERIC": "DECIMAL(38,9)",
    # MySQL's DECIMAL stops at 65 digits, 30 after the point: a value that does not fit exactly
    # fails the export instead of being rounded.
    "BIGNUMERIC": "DECIMAL(65,30)",
    "BOOL": "BOOLEAN",
    "STRING": "LONGTEXT",
    "BYTES": "LONGBLOB",
    "DATE": "DATE",
    "TIME": "TIME(6)",
    "DATETIME": "DATETIME(6)",
    "TIMESTAMP": "DATETIME(6)",  # in UTC: MySQL's TIMESTAMP ends in 2038 and converts by session zone
    "JSON": "JSON",
    "GEOGRAPHY": "LONGTEXT",
    "INTERVAL": "VARCHAR(64)",
    "RECORD": "JSON",
}
# A MySQL key must have a bounded length: text and bytes key columns are limited to 255.
_MYSQL_KEY = {"STRING": "VARCHAR(255)", "BYTES": "VARBINARY(255)", "GEOGRAPHY": "VARCHAR(255)"}
MYSQL_BIGNUMERIC = pa.decimal256(65, 30)

POSTGRES_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: longer names are silently truncated
MYSQL_IDENTIFIER_CHARS = 64


class UnsupportedColumn(ValueError):
    """A column the export cannot write (its type, or a name the target cannot hold)."""


@dataclass(frozen=True, slots=True)
class ExportColumn:
    """One column of the exported table: its BigQuery type and mode, and what it becomes."""

    name: str
    bigquery: str  # normalised: INT64, FLOAT64, ..., RECORD
    nullable: bool
    repeated: bool = False
    key: bool = False  # one of the upsert / primary key columns

    @classmethod
    def of(cls, field: Mapping[str, Any] | Any, *, key: bool = False) -> ExportColumn:
        """From a BigQuery field (a dict as the API gives it, a LoadField or a SchemaField)."""
        get = field.get if isinstance(field, Mapping) else lambda k, d=None: getattr(field, k, d)
        name = str(get("name"))
        raw = str(get("type") or get("field_type") or "").upper()
        kind = _ALIASES.get(raw, raw)
        if kind not in _ARROW:
            raise UnsupportedColumn(f"column {name!r}: BigQuery type {raw!r} has no export mapping")
        mode = str(get("mode") or "NULLABLE").upper()
        return cls(name, kind, nullable=mode != "REQUIRED", repeated=mode == "REPEATED", key=key)

    @property
    def nested(self) -> bool:
        """Written as JSON text (a RECORD, or any REPEATED column)."""
        return self.repeated or self.bigquery == "RECORD"

    @property
    def arrow(self) -> pa.DataType:
        """The canonical Arrow type the readers produce for this column."""
        return pa.string() if self.nested else _ARROW[self.bigquery]

    @property
    def json(self) -> bool:
        """Its target column holds JSON (a JSON column, or a nested value)."""
        return self.nested or self.bigquery == "JSON"

    def _null(self) -> str:
        return "" if self.nullable and not self.key else " NOT NULL"

    def postgres(self) -> str:
        return ("jsonb" if self.nested else _POSTGRES[self.bigquery]) + self._null()

    def mysql(self) -> str:
        if self.nested:
            base = "JSON"
        elif self.key and self.bigquery in _MYSQL_KEY:
            base = _MYSQL_KEY[self.bigquery]
        else:
            base = _MYSQL[self.bigquery]
        return base + self._null()


def export_columns(schema: Iterable[Mapping[str, Any] | Any], key_columns: Sequence[str] = ()) -> list[ExportColumn]:
    """The table's columns in order, the key columns marked; unknown keys are refused."""
    keys = {k.lower() for k in key_columns}
    columns = []
    for field in schema:
        column = ExportColumn.of(field)
        columns.append(ExportColumn(column.name, column.bigquery, column.nullable, column.repeated,
                                    key=column.name.lower() in keys))
    if not columns:
        raise UnsupportedColumn("the table has no columns")
    names = {c.name.lower() for c in columns}
    if missing := [k for k in key_columns if k.lower() not in names]:
        raise UnsupportedColumn(f"key column(s) {', '.join(missing)} are not columns of the table")
    for column in columns:
        if column.key and column.nested:
            raise UnsupportedColumn(f"key column {column.name!r} is an array or record: keys must be scalar")
        if column.key and column.bigquery in ("FLOAT64", "JSON"):
            raise UnsupportedColumn(f"key column {column.name!r} is {column.bigquery}: it cannot be a key")
    return columns


def arrow_schema(columns: Sequence[ExportColumn]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow, nullable=c.nullable) for c in columns])


# ---------------------------------------------------------------------------- identifiers
def postgres_name_problem(name: str) -> str | None:
    """Why PostgreSQL cannot hold ``name`` as a (quoted) identifier, or None.

    >>> postgres_name_problem("a" * 64)
    'is 64 bytes long: PostgreSQL names hold at most 63 bytes'
    """
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL character"
    size = len(name.encode())
    if size > POSTGRES_IDENTIFIER_BYTES:
        return f"is {size} bytes long: PostgreSQL names hold at most {POSTGRES_IDENTIFIER_BYTES} bytes"
    return None


def mysql_name_problem(name: str) -> str | None:
    """Why MySQL / MariaDB cannot hold ``name`` as a (quoted) identifier, or None.

    >>> mysql_name_problem("sales ")
    'ends with a space: MySQL names cannot'
    """
    if not name:
        return "is empty"
    if "\x00" in name:
        return "contains a NUL character"
    if len(name) > MYSQL_IDENTIFIER_CHARS:
        return f"is {len(name)} characters long: MySQL names hold at most {MYSQL_IDENTIFIER_CHARS}"
    if name.endswith(" "):
        return "ends with a space: MySQL names cannot"
    if any(ord(ch) > 0xFFFF for ch in name):
        return "contains a character beyond U+FFFF: MySQL names cannot"
    return None


def name_problem(driver: str, name: str) -> str | None:
    return postgres_name_problem(name) if driver == "postgres" else mysql_name_problem(name)


def quote_postgres(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_mysql(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
