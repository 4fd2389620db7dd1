"""Arrow record batches -> one Parquet object in Cloud Storage, streamed (issue 9, the sink).

An import reads its source as pyarrow RecordBatches of a declared schema. :func:`write_parquet`
turns them into Parquet row groups and sends the bytes through a resumable upload as they are
encoded, so memory holds about two row groups and one upload chunk, whatever the table's size:

- **Row groups are capped by bytes**, not rows: Parquet buffers a whole row group before it is
  flushed, so a cap in rows would let wide rows grow memory without bound. Batches are gathered
  (and split when needed) until their uncompressed Arrow size reaches ``row_group_bytes``.
- **One row group is encoded while the next is gathered** (a thread of its own, which pyarrow
  and the upload release the GIL in), so reading the source and writing overlap.
- **zstd** by default: it makes files markedly smaller than snappy at about the same encoding
  speed (``bench/bench_import_sink.py`` measures both), and bytes are what an upload from a
  database host pays for; BigQuery reads both.
- **Never overwrite, never finalize a partial file.** The upload is created with
  ``if_generation_match=0``: an existing object is refused (:class:`ObjectExists`), so a retry
  after a crash finds the object or starts over under a new name. A failure anywhere (the
  source raised, the task was cancelled, an upload chunk failed) cancels the upload session
  instead of finalizing it: Cloud Storage makes no object of it, and nobody can load half a
  table. The object is checked after the upload (size and CRC32C of what we sent).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import google_crc32c
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.cloud import storage
from google.cloud.storage.fileio import BlobReader, BlobWriter
from google.cloud.storage.retry import DEFAULT_RETRY_IF_GENERATION_SPECIFIED

from maestro.adapters.gcs import split_uri, stat_object, translated
from maestro.errors import MaestroError, StorageError

__all__ = ["ParquetSettings", "UploadedObject", "find_parquet", "write_parquet"]

log = logging.getLogger(__name__)
MiB = 1024 * 1024
_UPLOAD_MULTIPLE = 256 * 1024  # resumable upload chunks are multiples of 256 KiB
CONTENT_TYPE = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class ParquetSettings:
    row_group_bytes: int = 8 * MiB  # uncompressed (Arrow) bytes per row group, at most
    compression: Literal["zstd", "snappy"] = "zstd"
    compression_level: int | None = None  # zstd: pyarrow's default (1)
    chunk_size: int = 8 * MiB  # bytes per upload request; a multiple of 256 KiB
    request_timeout: float = 120.0
    # Dictionary encoding only for the columns whose first row group repeats values (distinct
    # values at most this share of its rows): on unique values (ids, hashes, free text) a
    # dictionary is built, overflows and is dropped, costing time and bytes for nothing.
    dictionary_ratio: float = 0.5
    # Column statistics are for readers that skip row groups; these files are loaded, then deleted.
    write_statistics: bool = False

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.chunk_size % _UPLOAD_MULTIPLE:
            raise ValueError(f"chunk_size must be a positive multiple of {_UPLOAD_MULTIPLE}")
        if self.row_group_bytes <= 0:
            raise ValueError("row_group_bytes must be positive")


@dataclass(frozen=True)
class UploadedObject:
    uri: str
    generation: int  # what a load reads and what the clean-up deletes, exactly
    size: int  # bytes of the Parquet file
    rows: int
    row_groups: int
    crc32c: str  # base64, as Cloud Storage reports it


async def write_parquet(
    client: storage.Client,
    uri: str,
    schema: pa.Schema,
    batches: AsyncIterable[pa.RecordBatch],
    settings: ParquetSettings | None = None,
) -> UploadedObject:
    """Write every batch of ``batches`` (each of exactly ``schema``) to a new object at ``uri``.

    Raises :class:`ObjectExists` when ``uri`` exists (nothing is written over),
    :class:`StorageError` when Cloud Storage fails, :class:`MaestroError` for a batch that does
    not match ``schema``, and whatever ``batches`` raises. In every failure no object is made.
    """
    settings = settings or ParquetSettings()
    bucket, name = split_uri(uri)
    # One thread per file: encoding, finalizing and cancelling run in order, never at once; the
    # chunks are sent from another (_Checksummed), overlapping the encoding.
    thread = ThreadPoolExecutor(1, thread_name_prefix="parquet-sink")
    loop = asyncio.get_running_loop()

    async def run(fn: Any, *args: Any) -> Any:
        with translated(uri):
            return await loop.run_in_executor(thread, fn, *args)

    blob = client.bucket(bucket).blob(name)
    upload = _Upload(
        blob, chunk_size=settings.chunk_size, ignore_flush=True,
        retry=DEFAULT_RETRY_IF_GENERATION_SPECIFIED, if_generation_match=0,
        content_type=CONTENT_TYPE, timeout=settings.request_timeout,
    )  # fmt: skip
    sink = _Checksummed(upload, settings.chunk_size)
    writer: pq.ParquetWriter | None = None  # made with the first row group (its dictionary choice)

    def open_writer(first: pa.Table | None) -> pq.ParquetWriter:
        return pq.ParquetWriter(
            sink, schema, compression=settings.compression,
            compression_level=settings.compression_level,
            use_dictionary=_dictionary_columns(first, settings.dictionary_ratio),
            write_statistics=settings.write_statistics,
            # BigQuery keeps microseconds; refuse to drop finer digits silently.
            coerce_timestamps="us", allow_truncated_timestamps=False,
        )  # fmt: skip

    rows = groups = 0
    pending: asyncio.Future[Any] | None = None
    try:
        async for group in _row_groups(batches, schema, settings.row_group_bytes):
            if pending is not None:
                await pending
            table = pa.Table.from_batches(group, schema)
            rows, groups = rows + table.num_rows, groups + 1
            if writer is None:
                writer = await run(open_writer, table)
            pending = asyncio.ensure_future(run(_write_group, writer, table))
        if pending is not None:
            await pending
        if writer is None:  # no rows: a valid file with the schema and no row group
            writer = await run(open_writer, None)
        await run(writer.close)  # the footer
        await run(sink.drain)
        upload.finalize = True
        await run(upload.close)  # the last chunk: only now does the object exist
    except BaseException:
        sink.discard = True  # the footer that closing the writer writes goes nowhere
        upload.finalize = False
        if pending is not None:
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: the error raised is the first one
        await asyncio.shield(loop.run_in_executor(thread, _abandon, writer, upload, sink))
        raise
    finally:
        thread.shutdown(wait=False)
    stat = await stat_object(client, uri)
    if stat is None or stat.size != sink.size or stat.crc32c != sink.crc32c():
        raise StorageError(
            "mismatch", f"{uri} is not what was uploaded ({stat}, sent {sink.size} bytes)",
            retryable=True, uri=uri,
        )  # fmt: skip
    return UploadedObject(uri, stat.generation, stat.size, rows, groups, stat.crc32c)


async def find_parquet(client: storage.Client, uri: str) -> UploadedObject | None:
    """What an earlier attempt uploaded to ``uri`` (rows counted from the Parquet footer), or
    None. A retry after a crash that lost the upload's outcome adopts the object this way."""
    stat = await stat_object(client, uri)
    if stat is None:
        return None
    bucket, name = split_uri(uri)

    def footer() -> pq.FileMetaData:
        # Reads only the tail of the file, at the generation just seen (never a newer one).
        blob = client.bucket(bucket).blob(name, generation=stat.generation)
        with BlobReader(blob, chunk_size=_UPLOAD_MULTIPLE) as reader:
            return pq.ParquetFile(reader).metadata

    with translated(uri):
        meta = await asyncio.to_thread(footer)
    return UploadedObject(uri, stat.generation, stat.size, meta.num_rows, meta.num_row_groups, stat.crc32c)


async def _row_groups(
    batches: AsyncIterable[pa.RecordBatch], schema: pa.Schema, cap: int
) -> AsyncIterable[list[pa.RecordBatch]]:
    """Batches gathered into groups of at most ``cap`` uncompressed bytes (at least one row)."""
    group: list[pa.RecordBatch] = []
    size = 0
    async for batch in batches:
        if not batch.schema.equals(schema):
            raise MaestroError(f"a batch does not match the declared schema: {_difference(batch.schema, schema)}")
        while batch.num_rows:
            room = cap - size
            per_row = max(1.0, batch.nbytes / batch.num_rows)  # nbytes counts a slice's part only
            take = min(batch.num_rows, max(int(room // per_row), 0 if group else 1))
            part = batch.slice(0, take)
            while take > 1 and part.nbytes > room:  # these rows are wider than the average
                take = max(1, int(take * room / part.nbytes))
                part = batch.slice(0, take)
            if take and (part.nbytes <= room or not group):  # a group holds at least one row
                group.append(part)
                size += part.nbytes
                batch = batch.slice(take)
            if batch.num_rows or size >= cap:
                yield group
                group, size = [], 0
    if group:
        yield group


def _difference(got: pa.Schema, want: pa.Schema) -> str:
    for field in want:
        index = got.get_field_index(field.name)
        if index < 0:
            return f"column {field.name!r} is missing"
        if not got.field(index).equals(field):
            return f"column {field.name!r} is {got.field(index).type}, declared {field.type}"
    return f"columns {got.names}, declared {want.names}"


def _write_group(writer: pq.ParquetWriter, table: pa.Table) -> None:
    writer.write_table(table, row_group_size=max(table.num_rows, 1))  # exactly one row group


def _dictionary_columns(first: pa.Table | None, ratio: float) -> list[str]:
    """The columns of ``first`` (the first row group) worth a dictionary: few distinct values."""
    if first is None or not first.num_rows:
        return []
    chosen = []
    for field, column in zip(first.schema, first.columns, strict=True):
        if isinstance(field.type, pa.ExtensionType):  # JSON, UUID: count their stored values
            column = pa.chunked_array([chunk.storage for chunk in column.chunks], field.type.storage_type)
        if pa.types.is_nested(column.type):
            continue
        try:
            distinct = pc.count_distinct(column).as_py()
        except pa.ArrowNotImplementedError:  # a type with no such kernel: leave it plain
            continue
        if distinct <= ratio * first.num_rows:
            chosen.append(field.name)
    return chosen


def _abandon(writer: pq.ParquetWriter | None, upload: _Upload, sink: _Checksummed) -> None:
    with contextlib.suppress(Exception):
        if writer is not None:
            writer.close()
    sink.stop()
    upload.close()  # finalize is False: cancels the session


class _Upload(BlobWriter):
    """A resumable upload that is finalized only on purpose.

    ``io.IOBase`` closes a file when it is garbage-collected, and ``BlobWriter.close`` finalizes
    the upload with whatever was written: a failed import would leave a truncated file that
    looks finished. Here closing without ``finalize`` cancels the session instead.
    """

    finalize = False
    _cancelled = False

    def close(self) -> None:
        if self.finalize:
            super().close()
            return
        if self._cancelled:
            return
        self._cancelled = True
        try:
            self.terminate()
        except Exception as exc:  # an unreachable session expires on its own (a week at Google)
            log.warning("could not cancel an upload session", extra={"error": repr(exc)})


class _Checksummed:
    """The file pyarrow writes to: counts and checksums the bytes, and sends them in chunks from
    a thread of its own, so encoding the next row group overlaps sending the last one. One chunk
    waits in the queue at most (back-pressure: memory stays a few chunks, whatever the file)."""

    def __init__(self, upload: _Upload, chunk_size: int) -> None:
        self._upload = upload
        self._chunk_size = chunk_size
        self._crc = google_crc32c.Checksum()
        self.size = 0
        self.discard = False
        self.closed = False
        self._pending = bytearray()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._send, name="parquet-upload", daemon=True)
        self._thread.start()

    def write(self, data: Any) -> int:
        if self.discard:
            return len(data)
        self._raise()
        data = bytes(data)  # pyarrow hands bytes already (no copy); the checksum needs them
        self._crc.update(data)
        self._pending += data
        self.size += len(data)
        if len(self._pending) >= self._chunk_size:
            self._put(bytes(self._pending))
            self._pending = bytearray()
        return len(data)

    def drain(self) -> None:
        """Send what is left and wait until the thread has handed it all to the upload (before
        the upload is finalized); re-raises what failed the sending."""
        if self._pending:
            self._put(bytes(self._pending))
            self._pending = bytearray()
        self._put(None)
        self._thread.join()
        self._raise()

    def stop(self) -> None:
        """After a failure: send nothing more, and wait for the chunk being sent to end (the
        session is cancelled next, never while a chunk is on its way)."""
        self.discard = self._stopped = True
        if self._thread.is_alive():
            self._queue.put(None)  # the thread skips what is queued: a slot frees at once
            self._thread.join()

    def _put(self, item: bytes | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self._raise()  # the thread stopped on an error: do not wait for it forever

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stopped:
                try:
                    self._upload.write(item)  # a full chunk: BlobWriter sends it at once
                except BaseException as exc:  # raised in the encoding thread at its next write
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None and not self._stopped:
            raise self._error

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True  # the upload is finished apart, on purpose (see _Upload)

    def crc32c(self) -> str:
        return base64.b64encode(self._crc.digest()).decode()
