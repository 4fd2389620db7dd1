"""An extract's files in Cloud Storage, read as Arrow batches of the canonical column types.

BigQuery writes a table's extract as one or more objects (CSV or NDJSON, optionally gzipped;
Parquet; Avro). Each object is streamed (``Blob.open("rb")``, 8 MiB ranged reads): CSV and NDJSON
through Arrow's streaming readers with a fixed block size, Parquet one row group at a time, so
memory stays bounded whatever the table's size. Every batch is converted to the canonical types
of :mod:`maestro.adapters.targets.types`, whatever the file carried:

* CSV: NULL is an empty unquoted field and the empty string ``""`` (what BigQuery writes);
  TIMESTAMP text ends in `` UTC`` (Google) or ``+00`` (the local stack); BYTES are base64.
* NDJSON: the same text forms; records and arrays arrive as JSON values.
* Parquet: the file's own types, cast (TIMESTAMP in any unit, decimals rescaled exactly).
* Records and arrays (and JSON values that arrive as objects) become JSON text.

A value that does not convert raises :class:`~maestro.errors.ExportFailed` naming the column
(``bad_value``); nothing is skipped. These functions block: the caller runs them in a thread.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from maestro.adapters.gcs import split_uri, translated
from maestro.adapters.targets.types import ExportColumn
from maestro.errors_outside import ExportFailed

BLOCK_BYTES = 4 * 1024 * 1024  # Arrow's read block: one batch per block
READ_CHUNK = 8 * 1024 * 1024  # Cloud Storage ranged reads (a multiple of 256 KiB)
PARQUET_BATCH_ROWS = 64 * 1024
FORMATS = ("csv", "ndjson", "parquet")
# Types Arrow's CSV reader parses itself; the rest arrive as text and are converted here.
_CSV_NATIVE = {"INT64", "FLOAT64", "NUMERIC", "BOOL", "DATE", "TIME", "DATETIME"}
_ZONE_SUFFIX = r"( UTC|Z|[+-]00(:?00)?)$"  # BigQuery extracts are in UTC; other offsets fail


def object_sizes(storage: Any, uris: Sequence[str]) -> list[int]:
    """The size of each object (bytes as stored): the export's size limit is checked on these."""
    sizes = []
    for uri in uris:
        bucket, name = split_uri(uri)
        with translated(uri):
            blob = storage.bucket(bucket).get_blob(name)
        if blob is None:
            raise ExportFailed("extract_missing", f"the extract file {uri} does not exist (deleted, or "
                               "a lifecycle rule removed it): run the table again", retryable=False)
        sizes.append(int(blob.size or 0))
    return sizes


def read_batches(
    storage: Any, uri: str, fmt: str, compression: str, columns: Sequence[ExportColumn],
    *, block_bytes: int = BLOCK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """The object's rows as canonical batches (columns in ``columns``' order)."""
    if fmt not in FORMATS:
        raise ExportFailed("unsupported_format", f"{fmt} extracts cannot be exported to a database "
                           f"(use {', '.join(FORMATS)})", retryable=False)
    bucket, name = split_uri(uri)
    with translated(uri):
        blob = storage.bucket(bucket).blob(name)
        raw = blob.open("rb", chunk_size=READ_CHUNK)
    with translated(uri), raw:
        gzipped = compression == "gzip" and fmt in ("csv", "ndjson")
        stream: Any = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "gzip") if gzipped else raw
        if fmt == "csv":
            reader: Iterator[pa.RecordBatch] = _csv(stream, columns, block_bytes)
        elif fmt == "ndjson":
            reader = _ndjson(stream, columns, block_bytes)
        else:
            reader = _parquet(raw, columns)
        try:
            for batch in reader:
                yield canonical(batch, columns, uri)
        except pa.ArrowInvalid as exc:
            raise ExportFailed("bad_file", f"{uri}: {exc}", retryable=False) from exc


def _csv(stream: Any, columns: Sequence[ExportColumn], block_bytes: int) -> Iterator[pa.RecordBatch]:
    types = {c.name: (c.arrow if c.bigquery in _CSV_NATIVE and not c.nested else pa.string()) for c in columns}
    reader = pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(block_size=block_bytes),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=False, include_columns=[c.name for c in columns],
        ),
    )
    yield from reader


def _ndjson(stream: Any, columns: Sequence[ExportColumn], block_bytes: int) -> Iterator[pa.RecordBatch]:
    # Scalars are declared (text for what needs converting here); records, arrays and JSON are
    # left to inference: they become JSON text whatever shape they arrive in.
    declared = [
        pa.field(c.name, c.arrow if c.bigquery in _CSV_NATIVE - {"NUMERIC"} else pa.string())
        for c in columns if not c.json
    ]
    reader = pa_json.open_json(
        stream,
        read_options=pa_json.ReadOptions(block_size=block_bytes),
        parse_options=pa_json.ParseOptions(explicit_schema=pa.schema(declared), unexpected_field_behavior="infer"),
    )
    yield from reader


def _parquet(raw: Any, columns: Sequence[ExportColumn]) -> Iterator[pa.RecordBatch]:
    file = pq.ParquetFile(raw)
    present = set(file.schema_arrow.names)
    if missing := [c.name for c in columns if c.name not in present]:
        raise ExportFailed("bad_file", f"the Parquet file has no column {', '.join(missing)}", retryable=False)
    yield from file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[c.name for c in columns])


# ---------------------------------------------------------------------------- conversion
def canonical(batch: pa.RecordBatch, columns: Sequence[ExportColumn], where: str = "") -> pa.RecordBatch:
    """``batch`` with every column (by name) converted to its canonical type."""
    arrays = []
    for column in columns:
        index = batch.schema.get_field_index(column.name)
        if index < 0:
            if not column.nullable:
                raise ExportFailed("bad_file", f"{where}: column {column.name!r} is missing", retryable=False)
            arrays.append(pa.nulls(batch.num_rows, column.arrow))  # NDJSON omits columns all NULL
            continue
        try:
            arrays.append(_convert(batch.column(index), column))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError) as exc:
            raise ExportFailed(
                "bad_value", f"{where}: column {column.name!r} ({column.bigquery}): {exc}",
                retryable=False, column=column.name,
            ) from exc
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema([pa.field(c.name, c.arrow) for c in columns]))


def _convert(array: pa.Array, column: ExportColumn) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        array = pa.concat_arrays(array.chunks) if array.num_chunks != 1 else array.chunk(0)
    if isinstance(array.type, pa.ExtensionType):  # arrow.json (Parquet JSON columns)
        array = array.storage
    kind = array.type
    if column.json:
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return array.cast(pa.string())
        return _as_json(array)
    if pa.types.is_null(kind):
        return pa.nulls(len(array), column.arrow)
    textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    if column.bigquery == "BYTES" and textual:
        return base64_decoded(array.cast(pa.string()))
    if column.bigquery == "GEOGRAPHY" and pa.types.is_binary(kind):
        raise ValueError("the file holds GEOGRAPHY as WKB (binary): extract CSV or NDJSON, or select "
                         "ST_ASTEXT(...) in the query, to export it as text")
    if column.bigquery == "TIMESTAMP" and textual:
        naive = pc.replace_substring_regex(array, _ZONE_SUFFIX, "").cast(pa.timestamp("us"))
        return naive.cast(column.arrow)
    if column.bigquery == "TIME" and textual:  # Arrow casts text to TIME through a timestamp
        dated = pc.binary_join_element_wise("1970-01-01 ", array, "")
        return dated.cast(pa.timestamp("us")).cast(pa.time64("us"))
    if pa.types.is_timestamp(kind) and column.bigquery == "TIMESTAMP" and kind.tz is None:
        array = array.cast(pa.timestamp(kind.unit, tz="UTC"))  # Parquet without the UTC flag
    return array.cast(column.arrow)  # safe: overflow, truncation and lost digits fail


def base64_decoded(array: pa.StringArray) -> pa.BinaryArray:
    """Standard base64 text as bytes (per value: BYTES columns are rare, and padding in the middle
    of concatenated values stops a whole-array decode).

    >>> base64_decoded(pa.array(["AP8=", None, "", "aGk="])).to_pylist()
    [b'\\x00\\xff', None, b'', b'hi']
    """
    try:
        return pa.array([None if v is None else binascii.a2b_base64(v, strict_mode=True)
                         for v in array.to_pylist()], pa.binary())
    except binascii.Error as exc:
        raise ValueError(f"not base64 text ({exc})") from None


def _as_json(array: pa.Array) -> pa.Array:
    """Nested values as JSON text (per value in Python: records and arrays are the rare columns).
    BYTES inside become base64 and NUMERIC text, as BigQuery's own JSON does."""
    out = [None if v is None else orjson.dumps(v, default=_json_default).decode() for v in array.to_pylist()]
    return pa.array(out, pa.string())


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.timedelta):
        return str(value)
    if isinstance(value, dict | list):  # pyarrow maps arrive as lists of pairs
        return value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
