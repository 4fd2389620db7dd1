"""MySQL / MariaDB types -> Arrow and BigQuery (the table in docs/imports.md).

Keyed on ``information_schema.COLUMNS.COLUMN_TYPE`` ("int(11)", "bigint(20) unsigned",
"decimal(12,2)", "enum('a','b')"), which is also how the import query spells a cast.
"""

from __future__ import annotations

import re

import pyarrow as pa

from maestro.adapters.sources.columns import Column, column, decimal_type
from maestro.errors import SourceColumnError

_KINDS = {
    "tinyint": "int", "smallint": "int", "mediumint": "int", "int": "int", "integer": "int",
    "bigint": "int", "year": "int",
    "float": "float", "double": "float", "real": "float",
    "char": "string", "varchar": "string", "tinytext": "string", "text": "string",
    "mediumtext": "string", "longtext": "string", "enum": "string", "set": "string",
    "uuid": "string", "inet4": "string", "inet6": "string",
    "json": "json",
    "binary": "bytes", "varbinary": "bytes", "tinyblob": "bytes", "blob": "bytes",
    "mediumblob": "bytes", "longblob": "bytes",
    "date": "date", "datetime": "datetime", "timestamp": "timestamp", "time": "time",
}
# Spatial types are selected as WKT text (ST_AsText): see docs/imports.md for why not GEOGRAPHY.
_SPATIAL = frozenset({
    "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
    "multipolygon", "geometrycollection",
})
_TYPE = re.compile(r"(?P<base>[a-z0-9]+)(?:\((?P<args>[^)]*)\))?(?P<unsigned> unsigned)?")
_ADVICE = "cast it in the import query (e.g. CAST(col AS CHAR)) or leave it out of the select list"


def map_column(name: str, source: str, column_type: str, *, is_json: bool, select: str) -> Column:
    """The declared column for one selected MySQL column, or a SourceColumnError naming it."""
    match = _TYPE.match(column_type.lower())
    base = match["base"] if match else column_type
    args = match["args"] if match else None
    if base in ("decimal", "numeric"):
        precision, _, scale = (args or "10,0").partition(",")
        bigquery, arrow = decimal_type(int(precision), int(scale or 0))
        kind = "decimal" if bigquery != "STRING" else "string"
        return Column(name, source, column_type, kind, arrow, bigquery, select=select)
    if base == "bigint" and match and match["unsigned"]:
        # Up to 18446744073709551615: beyond INT64, exact in NUMERIC.
        return Column(name, source, column_type, "decimal", pa.decimal128(20, 0), "NUMERIC", select=select)
    if base == "bit":
        # BIT(1) is a flag; BIT(n) keeps its n binary digits as text (BIT(64) exceeds INT64).
        width = int(args or 1)
        kind = "bits"
        arrow, bigquery = (pa.bool_(), "BOOL") if width == 1 else (pa.string(), "STRING")
        return Column(name, source, column_type, kind, arrow, bigquery, select=select)
    if base in _SPATIAL:
        return column(name, source, column_type, "string", select=f"ST_AsText({select})")
    # MariaDB's JSON is LONGTEXT with a json_valid() check; MySQL 8 reports json itself.
    kind = "json" if is_json else _KINDS.get(base)
    if kind is None:
        raise SourceColumnError(
            f"column {source!r} has type {column_type}, which has no BigQuery mapping: {_ADVICE}",
            column=source, source_type=column_type,
        )
    return column(name, source, column_type, kind, select=select)
