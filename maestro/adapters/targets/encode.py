"""Canonical Arrow batches as the text bulk-load format both targets read.

PostgreSQL's ``COPY … FROM STDIN`` text format and MySQL's default ``LOAD DATA`` format are the
same: tab between fields, newline after each row, ``\\N`` for NULL, and backslash escapes for
backslash, tab, newline and carriage return. One encoder writes both, vectorised in Arrow
compute (no Python per value): each column becomes text, the rows are joined, and the joined
array's value buffer *is* the chunk to send.

What differs per target (docs/db-export.md):

* BOOL: ``true``/``false`` for PostgreSQL, ``1``/``0`` for MySQL.
* TIMESTAMP: UTC with ``+00`` for PostgreSQL's timestamptz; UTC wall time for MySQL DATETIME(6).
* BYTES: hex. PostgreSQL reads ``\\x…`` as bytea; MySQL's load statement applies ``UNHEX``.
* FLOAT64 NaN / ±Infinity: values in PostgreSQL; MySQL has none, so the export fails naming the
  column (nothing is silently replaced by NULL).
* BIGNUMERIC in MySQL: cast exactly to DECIMAL(65,30), or the export fails naming the column.

    >>> batch = pa.record_batch({"a": [1, None], "s": ["x\\ty", "\\\\N"]})
    >>> from maestro.adapters.targets.types import ExportColumn
    >>> cols = [ExportColumn("a", "INT64", True), ExportColumn("s", "STRING", True)]
    >>> bytes(encode(batch, cols, "postgres"))
    b'1\\tx\\\\ty\\n\\\\N\\t\\\\\\\\N\\n'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from maestro.adapters.targets.types import MYSQL_BIGNUMERIC, ExportColumn
from maestro.errors_outside import ExportFailed

Dialect = Literal["postgres", "mysql"]
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_NEEDS_ESCAPE = r"[\\\t\n\r]"


def encode(batch: pa.RecordBatch, columns: Sequence[ExportColumn], dialect: Dialect) -> pa.Buffer:
    """The rows of ``batch`` (canonical types, in ``columns``' order) as load-format bytes."""
    if batch.num_rows == 0:
        return pa.py_buffer(b"")
    texts = []
    for index, column in enumerate(columns):
        try:
            text = _text(batch.column(index), column, dialect)
        except (pa.ArrowInvalid, ValueError) as exc:
            raise ExportFailed("bad_value", f"column {column.name!r} ({column.bigquery}): {exc}",
                               retryable=False, column=column.name) from exc
        texts.append(pc.fill_null(text, "\\N"))
    rows = pc.binary_join_element_wise(*texts, "\t") if len(texts) > 1 else texts[0]
    lines = pc.binary_join_element_wise(rows, "", "\n")
    if isinstance(lines, pa.ChunkedArray):
        lines = pa.concat_arrays(lines.chunks)
    _, data = value_buffers(lines)
    return data


def _text(array: pa.Array, column: ExportColumn, dialect: Dialect) -> pa.Array:
    """One column's values as text (NULL stays null), escaped for the load format."""
    kind = column.bigquery
    if column.json or kind in ("STRING", "GEOGRAPHY", "INTERVAL"):
        return _escaped(array)
    if kind == "BYTES":
        hexed = hex_text(array)
        return pc.binary_join_element_wise("\\\\x", hexed, "") if dialect == "postgres" else hexed
    if kind == "BOOL":
        return array.cast(pa.int8()).cast(pa.string()) if dialect == "mysql" else array.cast(pa.string())
    if kind == "TIMESTAMP":
        wall = array.cast(pa.timestamp("us")).cast(pa.string())  # UTC wall time, microseconds
        return pc.binary_join_element_wise(wall, "+00", "") if dialect == "postgres" else wall
    if kind == "FLOAT64" and dialect == "mysql":
        bad = pc.or_(pc.is_nan(array), pc.is_inf(array))
        if pc.any(bad).as_py():
            first = pc.filter(array, bad)[0].as_py()
            raise ValueError(f"{first} cannot be stored: MySQL's DOUBLE has no NaN or Infinity "
                             "(replace it in the query, e.g. IF(IS_NAN(x) OR IS_INF(x), NULL, x))")
    if kind == "BIGNUMERIC":  # text (types.py); PostgreSQL's numeric parses it exactly
        if dialect == "postgres":
            return _escaped(array)
        try:
            array = array.cast(MYSQL_BIGNUMERIC)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"a value does not fit MySQL's DECIMAL(65,30) exactly ({exc})") from None
    return array.cast(pa.string())


def _escaped(array: pa.Array) -> pa.Array:
    array = array.cast(pa.string())
    if not pc.any(pc.match_substring_regex(array, _NEEDS_ESCAPE)).as_py():
        return array  # the common case: one scan, no copies
    for raw, escaped in _ESCAPES:  # backslash first, so the escapes added are not escaped again
        array = pc.replace_substring(array, raw, escaped)
    return array


def hex_text(array: pa.Array) -> pa.Array:
    """Bytes as hex text, for the whole array in one call.

    >>> hex_text(pa.array([b"\\x00\\xff", None, b""], pa.binary())).to_pylist()
    ['00FF', None, '']
    """
    filled = pc.fill_null(array, b"")
    offsets, data = value_buffers(filled)
    doubled = pc.multiply(offsets, 2).cast(pa.int32())
    text = pa.StringArray.from_buffers(len(filled), doubled.buffers()[1], pa.py_buffer(data.hex()))
    return pc.if_else(pc.is_null(array), pa.scalar(None, pa.string()), text)


def value_buffers(array: pa.Array) -> tuple[pa.Int32Array, pa.Buffer]:
    """A string or binary array's offsets (rebased to start at 0) and its values' bytes, end to
    end: the concatenation of every value, without a copy."""
    offsets = pa.Array.from_buffers(pa.int32(), len(array) + 1, [None, array.buffers()[1]], offset=array.offset)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    data = array.buffers()[2]
    values = pa.py_buffer(b"") if data is None else data[start:end]
    return (pc.subtract(offsets, start) if start else offsets), values
