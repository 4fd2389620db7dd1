"""PostgreSQL types -> Arrow and BigQuery (the table in docs/imports.md).

Keyed on ``format_type()``'s spelling, which is also how the import query spells a cast, so a
cast column maps exactly like a stored column of that type.
"""

from __future__ import annotations

import re

import pyarrow as pa

from maestro.adapters.sources.columns import SIMPLE, Column, column, decimal_type
from maestro.errors import SourceColumnError

# format_type base name -> kind. The session runs with TimeZone=UTC, DateStyle=ISO and
# IntervalStyle=iso_8601, so the text of each kind is the one its conversion expects.
_KINDS = {
    "smallint": "int", "integer": "int", "bigint": "int", "oid": "int",
    "real": "float", "double precision": "float",
    "boolean": "bool",
    "text": "string", "character varying": "string", "character": "string", '"char"': "string",
    "name": "string", "citext": "string", "uuid": "string", "xml": "string",
    "inet": "string", "cidr": "string", "macaddr": "string", "macaddr8": "string",
    "bit varying": "string", "interval": "string", "time with time zone": "string",
    # The built-in geometric types, in PostgreSQL's own text form (see docs/imports.md).
    "point": "string", "line": "string", "lseg": "string", "box": "string", "path": "string",
    "polygon": "string", "circle": "string",
    "bytea": "hex",
    "json": "json", "jsonb": "json",
    "date": "date",
    "time without time zone": "time",
    "timestamp without time zone": "datetime",
    "timestamp with time zone": "timestamp",
}
# Array elements BigQuery can hold (REPEATED of a scalar).
_ELEMENT_KINDS = {"int", "float", "bool", "string", "date", "datetime", "timestamp", "decimal"}
_PRECISION = re.compile(r"\((\d+)(?:,(-?\d+))?\)")
_ADVICE = "cast it in the import query (e.g. CAST(col AS text)) or leave it out of the select list"


def base_name(format_type: str) -> str:
    """``format_type`` without its modifiers: 'timestamp(3) with time zone' -> 'timestamp with time zone'.

    >>> base_name("character varying(20)"), base_name("numeric(12,2)[]"), base_name("time(3) without time zone")
    ('character varying', 'numeric', 'time without time zone')
    """
    return _PRECISION.sub("", format_type).removesuffix("[]").removesuffix("[]").strip()


def map_column(name: str, source: str, format_type: str, *, is_enum: bool, select: str) -> Column:
    """The declared column for one selected PostgreSQL column, or a SourceColumnError naming it."""
    if format_type.endswith("[]"):
        return _array_column(name, source, format_type, select)
    kind = "string" if is_enum else _KINDS.get(base_name(format_type))
    if base_name(format_type) == "numeric":
        bigquery, arrow = decimal_type(*_precision(format_type))
        return Column(name, source, format_type, "decimal" if bigquery != "STRING" else "string",
                      arrow, bigquery, select=select)
    if base_name(format_type) == "bit":
        # bit(1) is a flag (its text '0'/'1' parses as a bool); bit(n) keeps its digits as text.
        length = _precision(format_type)[0] or 1
        return column(name, source, format_type, "bool" if length == 1 else "string", select=select)
    if kind is None:
        raise SourceColumnError(
            f"column {source!r} has type {format_type}, which has no BigQuery mapping: {_ADVICE}",
            column=source, source_type=format_type,
        )
    return column(name, source, format_type, kind, select=select)


def _array_column(name: str, source: str, format_type: str, select: str) -> Column:
    element_type = format_type.removesuffix("[]")
    try:
        element = map_column(name, source, element_type, is_enum=False, select=select)
    except SourceColumnError:
        element = None
    if element is None or element.kind not in _ELEMENT_KINDS:
        raise SourceColumnError(
            f"column {source!r} has type {format_type}: arrays of {element_type} have no BigQuery "
            f"mapping: {_ADVICE}",
            column=source, source_type=format_type,
        )
    # PostgreSQL writes an array as JSON for us (array_to_json), which is unambiguous to parse.
    return Column(
        name, source, format_type, "array", pa.list_(element.arrow), element.bigquery,
        repeated=True, element=element.kind, select=f"array_to_json({select})::text",
    )


def _precision(format_type: str) -> tuple[int | None, int | None]:
    match = _PRECISION.search(format_type)
    if match is None:
        return None, None
    return int(match[1]), int(match[2]) if match[2] is not None else 0


def csv_type(col: Column) -> pa.DataType:
    """What Arrow's CSV reader parses the column's COPY text to (text, for kinds converted later)."""
    # Arrow's CSV reader parses decimal128 but not decimal256: those go through a cast.
    if col.repeated or col.kind in ("hex", "json", "time") or pa.types.is_decimal256(col.arrow):
        return pa.string()
    return col.arrow if col.kind in SIMPLE or col.kind == "decimal" else pa.string()
