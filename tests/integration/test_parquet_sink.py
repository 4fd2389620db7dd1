"""maestro.adapters.parquet_sink and maestro.adapters.gcs against the local GCS (fake-gcs-server).

fake-gcs-server ignores ``ifGenerationMatch`` on resumable uploads and on deletes (it replaces
and deletes whatever is there), so the tests of those preconditions go through
``tests/gcs_preconditions.py``, a proxy that answers 412 as Google does; everything else talks to
fake-gcs-server directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import gc
import io
import uuid
from collections.abc import AsyncIterator, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gcs_preconditions import precondition_proxy
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from maestro.adapters.gcs import delete_generation, stat_object
from maestro.adapters.localstack import LocalStack, storage_client
from maestro.adapters.parquet_sink import (
    ParquetSettings,
    UploadedObject,
    _Upload,
    find_parquet,
    write_parquet,
)
from maestro.errors import MaestroError, ObjectExists

BUCKET = "sink-test-bucket"
SCHEMA = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(38, 9)),
    ("tags", pa.list_(pa.string())), ("at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
SMALL = ParquetSettings(row_group_bytes=256 * 1024, chunk_size=256 * 1024)


@pytest.fixture(scope="module")
def gcs(local_stack: LocalStack) -> storage.Client:
    client = storage_client(local_stack)
    client.create_bucket(BUCKET)
    return client


@pytest.fixture(scope="module")
def guarded(local_stack: LocalStack, gcs: storage.Client) -> Iterator[tuple[storage.Client, object]]:
    """A client that reaches fake-gcs-server through the precondition proxy."""
    with precondition_proxy(local_stack.gcs_endpoint) as (endpoint, proxy):
        client = storage.Client(
            project=local_stack.project, credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=endpoint),
        )  # fmt: skip
        yield client, proxy


def new_uri() -> str:
    return f"gs://{BUCKET}/imports/{uuid.uuid4().hex}.parquet"


def batch(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch(
        [
            pa.array(ids, pa.int64()),
            pa.array([f"name-{i}" for i in ids]),
            pa.array([decimal.Decimal(i) / 1000 for i in ids], pa.decimal128(38, 9)),
            pa.array([[str(i), "x"] if i % 3 else [] for i in ids], pa.list_(pa.string())),
            pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in ids],
                     pa.timestamp("us", tz="UTC")),
        ],
        schema=SCHEMA,
    )  # fmt: skip


async def source(batches: list[pa.RecordBatch], fail_after: int | None = None) -> AsyncIterator[pa.RecordBatch]:
    for index, item in enumerate(batches):
        if index == fail_after:
            raise RuntimeError("the source database went away")
        await asyncio.sleep(0)
        yield item


def download(gcs: storage.Client, uploaded: UploadedObject) -> pq.ParquetFile:
    _, name = uploaded.uri.removeprefix("gs://").split("/", 1)
    data = gcs.bucket(BUCKET).blob(name, generation=uploaded.generation).download_as_bytes()
    return pq.ParquetFile(io.BytesIO(data))


async def test_rows_round_trip_in_row_groups_capped_by_bytes(gcs: storage.Client) -> None:
    batches = [batch(i * 1000, 1000) for i in range(40)]  # ~3 MB of Arrow data
    uploaded = await write_parquet(gcs, new_uri(), SCHEMA, source(batches), SMALL)

    assert uploaded.rows == 40_000
    file = download(gcs, uploaded)
    assert uploaded.size == len(gcs.bucket(BUCKET).blob(uploaded.uri.split("/", 3)[3]).download_as_bytes())
    assert file.read().equals(pa.Table.from_batches(batches, SCHEMA))
    assert file.metadata.num_row_groups == uploaded.row_groups > 5
    # The cap holds for every row group, and groups are filled. (Read back, Arrow allocates
    # validity bitmaps the generated batches do not have: a little over the cap.)
    for index in range(file.metadata.num_row_groups - 1):
        assert 0.9 < file.read_row_group(index).nbytes / SMALL.row_group_bytes < 1.02
    assert file.metadata.row_group(0).column(0).compression == "ZSTD"
    assert file.schema_arrow.field("at").type == pa.timestamp("us", tz="UTC")  # TIMESTAMP, UTC


async def test_a_batch_larger_than_the_cap_is_split(gcs: storage.Client) -> None:
    big = batch(0, 30_000)
    assert big.nbytes > 3 * SMALL.row_group_bytes
    uploaded = await write_parquet(gcs, new_uri(), SCHEMA, source([big]), SMALL)
    file = download(gcs, uploaded)
    assert file.metadata.num_row_groups >= 3
    assert file.read().to_batches()[0].slice(0, 5).equals(big.slice(0, 5))
    assert uploaded.rows == 30_000


async def test_an_empty_source_is_a_valid_file_of_no_rows(gcs: storage.Client) -> None:
    uploaded = await write_parquet(gcs, new_uri(), SCHEMA, source([]), SMALL)
    assert (uploaded.rows, uploaded.row_groups) == (0, 0)
    assert download(gcs, uploaded).schema_arrow.equals(SCHEMA)


async def test_a_failing_source_leaves_no_object(gcs: storage.Client) -> None:
    """Chunks were already sent when the source fails: the upload is cancelled, never
    finalized into a shorter, valid-looking file."""
    uri = new_uri()
    batches = [batch(i * 1000, 1000) for i in range(20)]
    with pytest.raises(RuntimeError, match="went away"):
        await write_parquet(gcs, uri, SCHEMA, source(batches, fail_after=15), SMALL)
    assert await stat_object(gcs, uri) is None


async def test_a_chunk_that_fails_to_send_fails_the_write(gcs: storage.Client) -> None:
    """Chunks go out from a thread of their own: its failure (here the bucket does not exist, so
    the first chunk's session is refused) ends the write with the storage error, not a hang."""
    from maestro.errors import StorageError

    uri = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/f.parquet"
    batches = [batch(i * 1000, 1000) for i in range(20)]
    with pytest.raises(StorageError):
        await asyncio.wait_for(write_parquet(gcs, uri, SCHEMA, source(batches), SMALL), 60)


async def test_a_cancelled_write_leaves_no_object(gcs: storage.Client) -> None:
    uri = new_uri()
    started = asyncio.Event()

    async def endless() -> AsyncIterator[pa.RecordBatch]:
        start = 0
        while True:
            yield batch(start, 1000)
            start += 1000
            if start > 20_000:
                started.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(write_parquet(gcs, uri, SCHEMA, endless(), SMALL))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await stat_object(gcs, uri) is None


def test_an_upload_dropped_without_closing_is_not_finalized(gcs: storage.Client) -> None:
    """io.IOBase closes a file when it is collected, and BlobWriter's close finalizes: a crashed
    writer would leave a truncated object. Ours cancels instead."""
    name = f"imports/{uuid.uuid4().hex}.parquet"
    upload = _Upload(gcs.bucket(BUCKET).blob(name), chunk_size=256 * 1024, if_generation_match=0)
    upload.write(b"x" * 300 * 1024)  # one chunk sent: the session exists
    del upload
    gc.collect()
    assert gcs.bucket(BUCKET).get_blob(name) is None


async def test_a_batch_of_another_schema_is_refused(gcs: storage.Client) -> None:
    uri = new_uri()
    other = pa.record_batch([pa.array([1.5])], names=["id"])
    with pytest.raises(MaestroError, match="column 'id' is double, declared int64"):
        await write_parquet(gcs, uri, pa.schema([SCHEMA.field("id")]), source([other]), SMALL)
    assert await stat_object(gcs, uri) is None


async def test_nanoseconds_are_refused_not_truncated(gcs: storage.Client) -> None:
    schema = pa.schema([("at", pa.timestamp("ns", tz="UTC"))])
    rows = pa.record_batch([pa.array([1_700_000_000_000_000_001], pa.timestamp("ns", tz="UTC"))], schema=schema)
    uri = new_uri()
    with pytest.raises(pa.ArrowInvalid, match="would lose data"):
        await write_parquet(gcs, uri, schema, source([rows]), SMALL)
    assert await stat_object(gcs, uri) is None


async def test_an_existing_object_is_never_overwritten(guarded: tuple[storage.Client, object]) -> None:
    client, proxy = guarded
    uri = new_uri()
    first = await write_parquet(client, uri, SCHEMA, source([batch(0, 10)]), SMALL)
    with pytest.raises(ObjectExists):
        await write_parquet(client, uri, SCHEMA, source([batch(100, 10)]), SMALL)
    assert f"POST {uri.split('/', 3)[3]}" in proxy.refused  # type: ignore[attr-defined]
    assert await find_parquet(client, uri) == first  # still the first file, rows from its footer


async def test_find_parquet_adopts_what_an_attempt_uploaded(gcs: storage.Client) -> None:
    uri = new_uri()
    assert await find_parquet(gcs, uri) is None
    uploaded = await write_parquet(gcs, uri, SCHEMA, source([batch(0, 5000), batch(5000, 7)]), SMALL)
    assert await find_parquet(gcs, uri) == uploaded


async def test_delete_exactly_the_loaded_generation(guarded: tuple[storage.Client, object]) -> None:
    client, _ = guarded
    uri = new_uri()
    uploaded = await write_parquet(client, uri, SCHEMA, source([batch(0, 10)]), SMALL)
    with pytest.raises(ObjectExists, match="no longer generation"):
        await delete_generation(client, uri, uploaded.generation + 1)
    assert await stat_object(client, uri) is not None  # another generation: left in place
    assert await delete_generation(client, uri, uploaded.generation) is True
    assert await stat_object(client, uri) is None
    assert await delete_generation(client, uri, uploaded.generation) is False  # again: a no-op


def test_chunk_size_must_be_a_multiple_of_256_kib() -> None:
    with pytest.raises(ValueError, match="multiple of 262144"):
        ParquetSettings(chunk_size=1000)


async def test_dictionaries_only_for_columns_that_repeat(gcs: storage.Client) -> None:
    """Unique values (ids, names) are written plain; a column of few values gets a dictionary."""
    rows = 5000
    repeat_schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("status", pa.string())])
    table = pa.record_batch([
        pa.array(range(rows), pa.int64()), pa.array([f"name-{i}" for i in range(rows)]),
        pa.array(["open" if i % 3 else "closed" for i in range(rows)]),
    ], schema=repeat_schema)
    uploaded = await write_parquet(gcs, new_uri(), repeat_schema, source([table]), SMALL)
    meta = download(gcs, uploaded).metadata
    encodings = {meta.schema.column(i).name: meta.row_group(0).column(i).encodings for i in range(3)}
    assert not any("DICTIONARY" in e for e in encodings["id"] + encodings["name"]), encodings
    assert any("DICTIONARY" in e for e in encodings["status"]), encodings
    assert not meta.row_group(0).column(0).is_stats_set  # loaded then deleted: no statistics
    assert download(gcs, uploaded).read().to_batches()[0].equals(table)


async def test_dictionaries_are_decided_for_extension_types_too(gcs: storage.Client) -> None:
    """JSON (an Arrow extension type) has no distinct-count kernel of its own: its storage is counted."""
    json_type = pa.json_(pa.string())
    schema = pa.schema([("doc", json_type), ("tags", pa.list_(pa.string()))])
    docs = pa.ExtensionArray.from_storage(json_type, pa.array(['{"a": 1}', '{"a": 1}', '{"b": 2}', None]))
    rows = pa.record_batch([docs, pa.array([["x"], [], None, ["y", "z"]])], schema=schema)
    uploaded = await write_parquet(gcs, new_uri(), schema, source([rows]), SMALL)
    assert uploaded.rows == 4 and download(gcs, uploaded).read().num_rows == 4
