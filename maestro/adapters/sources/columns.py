"""What both source readers share: declared columns, the decimal rule, and value conversions.

A source column maps to a *kind* (how its text or bytes become Arrow values), an Arrow type and a
BigQuery type. Conversions are vectorised (pyarrow.compute) except for the few kinds whose values
need Python (bytea hex, PostgreSQL arrays, MySQL BIT). A value that does not fit its declared
type (a PostgreSQL ``infinity`` date, a year 0, a NUMERIC ``NaN``, a TIME of 24:00 or more) fails
the read with :class:`~maestro.errors.SourceReadFailed` naming the column: nothing is loaded
half-converted, and nothing is silently replaced (MySQL zero dates are the one documented
exception: they become NULL, because MySQL itself uses them to mean "no date").
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from maestro.errors import SourceColumnError, SourceReadFailed

# BigQuery's DATE / DATETIME / TIMESTAMP start at year 1; parsing already refuses years > 9999.
_MIN_DAYS = (datetime.date(1, 1, 1) - datetime.date(1970, 1, 1)).days


@dataclass(frozen=True, slots=True)
class Column:
    """One column as imported: where it comes from and what it becomes."""

    name: str  # the output name (BigQuery column)
    source: str  # the source table's column
    source_type: str  # as the source catalog spells it ("numeric(12,2)", "bigint(20) unsigned")
    kind: str  # how values convert: see CONVERTERS (and "array" with an element kind)
    arrow: pa.DataType
    bigquery: str  # INT64, FLOAT64, NUMERIC, BIGNUMERIC, BOOL, STRING, BYTES, JSON, DATE, ...
    repeated: bool = False
    element: str | None = None  # an array's element kind
    select: str = ""  # the expression the reader selects (quoted, wrapped when the source must help)


@dataclass(frozen=True, slots=True)
class SourceSchema:
    """The columns of one import, in order: the Arrow schema of every batch and the BigQuery one."""

    columns: tuple[Column, ...]

    @property
    def arrow(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow) for c in self.columns])

    def bigquery(self) -> list[dict[str, str]]:
        """Fields for a load job's explicit schema (``SchemaField.from_api_repr`` takes each)."""
        return [
            {"name": c.name, "type": c.bigquery, "mode": "REPEATED" if c.repeated else "NULLABLE"}
            for c in self.columns
        ]


def selected(
    query: Any, catalog: dict[str, Any], *, fold: Callable[[str], str] = str, every: list[str] | None = None,
) -> Iterator[tuple[str, Any, str | None, str]]:
    """(output name, the catalog's entry for its source column, cast, select expression) for each
    column ``query`` reads — ``*``: every column, named as ``every`` spells them (default: the
    catalog's keys) — looking each up as ``fold(name)``; a column the table lacks is refused by
    name. Both readers' discovery starts here."""
    wanted = (
        [(name, name, None, query.quote(name)) for name in (every if every is not None else catalog)]
        if query.columns is None
        else [(c.name, c.source, c.cast, c.expression) for c in query.columns]
    )
    for name, source, cast, expression in wanted:
        found = catalog.get(fold(source))
        if found is None:
            raise SourceColumnError(f"the source table {query.quoted_table} has no column {source!r}", column=source)
        yield name, found, cast, expression


def decimal_type(precision: int | None, scale: int | None) -> tuple[str, pa.DataType]:
    """The BigQuery type and Arrow type of a DECIMAL(precision, scale).

    NUMERIC holds 29 integer digits and 9 decimals, BIGNUMERIC 38 and 38; what fits neither, or
    has no declared precision (PostgreSQL's bare ``numeric``, which holds anything), is STRING:
    exact digits kept, arithmetic left to a CAST in BigQuery.

    >>> decimal_type(12, 2)[0], decimal_type(38, 9)[0], decimal_type(38, 0)[0], decimal_type(65, 30)[0]
    ('NUMERIC', 'NUMERIC', 'BIGNUMERIC', 'BIGNUMERIC')
    >>> decimal_type(None, None)[0], decimal_type(76, 0)[0], decimal_type(60, 40)[0]
    ('STRING', 'STRING', 'STRING')
    """
    if precision is None or scale is None or scale < 0 or scale > precision:
        return "STRING", pa.string()
    arrow = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if scale <= 9 and precision - scale <= 29:
        return "NUMERIC", arrow
    if scale <= 38 and precision - scale <= 38:
        return "BIGNUMERIC", arrow
    return "STRING", pa.string()


# Kind -> (Arrow type, BigQuery type) for the kinds whose types do not depend on the column.
SIMPLE: dict[str, tuple[pa.DataType, str]] = {
    "int": (pa.int64(), "INT64"),
    "float": (pa.float64(), "FLOAT64"),
    "bool": (pa.bool_(), "BOOL"),
    "string": (pa.string(), "STRING"),
    "bytes": (pa.binary(), "BYTES"),
    "hex": (pa.binary(), "BYTES"),  # PostgreSQL bytea in its \x… text form
    "json": (pa.json_(pa.string()), "JSON"),
    "date": (pa.date32(), "DATE"),
    "datetime": (pa.timestamp("us"), "DATETIME"),
    "timestamp": (pa.timestamp("us", "UTC"), "TIMESTAMP"),
    "time": (pa.time64("us"), "TIME"),
}


def column(name: str, source: str, source_type: str, kind: str, *, select: str, **extra: Any) -> Column:
    """A Column of a simple kind (its types from SIMPLE)."""
    arrow, bigquery = SIMPLE[kind]
    return Column(name, source, source_type, kind, arrow, bigquery, select=select, **extra)


def convert(col: Column, values: pa.Array) -> pa.Array:
    """``values`` (as parsed, or text/bytes) in ``col``'s declared Arrow type; SourceReadFailed if not."""
    try:
        if col.repeated:
            result = _array(col, values)
        elif values.type == col.arrow:
            result = values
        else:
            result = CONVERTERS.get(col.kind, _cast)(col, values)
        _check_range(col, result)
        return result
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError, OverflowError) as exc:
        raise failed(col, exc) from exc


def failed(col: Column, exc: BaseException) -> SourceReadFailed:
    reason = str(exc).splitlines()[0][:300]
    return SourceReadFailed(
        f"column {col.source!r} ({col.source_type}) has a value that does not fit {col.bigquery}: "
        f"{reason}. Filter it out in the WHERE, or cast the column to text in the import query",
        retryable=False, column=col.name,
    )


def _cast(col: Column, values: pa.Array) -> pa.Array:
    return pc.cast(values, col.arrow)


def _time(col: Column, values: pa.Array) -> pa.Array:
    # Arrow has no string -> time cast: read "HH:MM:SS[.ffffff]" as a time on 1970-01-01. Values
    # of 24:00 or more (PostgreSQL's 24:00:00, MySQL durations) fail there: BigQuery's TIME stops
    # at 23:59:59.999999.
    on_epoch = pc.cast(pc.binary_join_element_wise("1970-01-01 ", values, ""), pa.timestamp("us"))
    return pc.cast(on_epoch, pa.time64("us"))


def _json(col: Column, values: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(col.arrow, pc.cast(values, pa.string()))


def _hex(col: Column, values: pa.Array) -> pa.Array:
    return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in values.to_pylist()], pa.binary())


def _timestamp(col: Column, values: pa.Array) -> pa.Array:
    # Text without an offset that the session wrote in UTC: parse it naive, then label it UTC
    # (an Arrow cast from naive to zoned keeps the instant's digits, it does not shift them).
    if pa.types.is_string(values.type):
        values = pc.cast(values, pa.timestamp("us"))
    return pc.cast(values, col.arrow)


CONVERTERS: dict[str, Callable[[Column, pa.Array], pa.Array]] = {
    "time": _time, "json": _json, "hex": _hex, "timestamp": _timestamp,
}


def _check_range(col: Column, values: pa.Array) -> None:
    # Compared as numbers: Python's date cannot even hold a year-0 value to report it.
    if col.kind in ("date", "datetime", "timestamp") and not col.repeated and values.null_count < len(values):
        if pa.types.is_date32(values.type):
            low = pc.min(values.cast(pa.int32())).as_py()
            too_early = low < _MIN_DAYS
        else:
            low = pc.min(values.cast(pa.int64())).as_py()
            too_early = low < _MIN_DAYS * 86_400_000_000
        if too_early:
            raise ValueError("a value before year 1 (BigQuery's dates start at 0001-01-01)")


# -- PostgreSQL arrays, selected as array_to_json(col)::text -------------------------------------


def _array(col: Column, values: pa.Array) -> pa.Array:
    convert_element = _ELEMENTS[col.element or "string"]
    rows: list[list[Any]] = []
    for text in values.to_pylist():
        if text is None:
            rows.append([])  # BigQuery has no NULL array: a REPEATED field is empty instead
            continue
        items = json.loads(text, parse_float=decimal.Decimal)
        if any(isinstance(item, list) for item in items):
            raise ValueError("a multi-dimensional array (BigQuery arrays have one dimension)")
        if any(item is None for item in items):
            raise ValueError("an array with a NULL element (BigQuery arrays cannot hold NULL)")
        rows.append([convert_element(item) for item in items])
    return pa.array(rows, col.arrow)


def _float(item: Any) -> float:
    return float(item)  # also 'NaN', 'Infinity', '-Infinity', which JSON has no numbers for


def _timestamp_item(item: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(item)


_ELEMENTS: dict[str, Callable[[Any], Any]] = {
    "int": int, "float": _float, "bool": bool, "string": str, "decimal": decimal.Decimal,
    "date": datetime.date.fromisoformat, "datetime": _timestamp_item, "timestamp": _timestamp_item,
}
