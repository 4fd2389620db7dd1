"""Load jobs through maestro.adapters.bigquery, from files in the local GCS, on local-bigquery.

What local-bigquery 0.4.0 does differently from Google, as found here:
- BYTES with an explicit schema: every load format's BYTES goes through ``from_base64`` (right for
  CSV and JSON, wrong for Parquet's binary: "No function matches 'from_base64(BLOB)'"). BYTES
  from Parquet is tested with the file's own schema instead.
- BIGNUMERIC is DuckDB's DECIMAL(38, 18), and DuckDB reads a Parquet decimal256 as a DOUBLE: a
  BIGNUMERIC beyond 38 digits cannot round-trip. Tested with a decimal128(38, 18) column.
- ``decimal_target_types`` and ``enable_list_inference`` are accepted and ignored (lists always
  load as REPEATED); a REQUIRED mode in the schema is reported back as NULLABLE.
- Load statistics: output rows and input files/bytes are reported, as by Google.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pyarrow as pa
import pytest
from google.cloud import bigquery, storage

from maestro.adapters.bigquery import BigQueryJobs, JobState, job_id_for
from maestro.adapters.localstack import LocalStack, bigquery_client, storage_client
from maestro.adapters.parquet_sink import ParquetSettings, write_parquet
from maestro.events.runs import JobConfig, LoadField

BUCKET = "load-test-bucket"
UTC = dt.UTC
SCHEMA = pa.schema([
    ("id", pa.int64()), ("num", pa.decimal128(38, 9)), ("big", pa.decimal128(38, 18)),
    ("doc", pa.string()), ("tags", pa.list_(pa.string())), ("at", pa.timestamp("us", tz="UTC")),
    ("day", pa.date32()), ("place", pa.string()), ("ratio", pa.float64()), ("ok", pa.bool_()),
])  # fmt: skip
FIELDS = [
    LoadField(name="id", type="INT64", mode="REQUIRED"), LoadField(name="num", type="NUMERIC"),
    LoadField(name="big", type="BIGNUMERIC"), LoadField(name="doc", type="JSON"),
    LoadField(name="tags", type="STRING", mode="REPEATED"), LoadField(name="at", type="TIMESTAMP"),
    LoadField(name="day", type="DATE"), LoadField(name="place", type="GEOGRAPHY"),
    LoadField(name="ratio", type="FLOAT64"), LoadField(name="ok", type="BOOL"),
]  # fmt: skip
ROWS = [
    dict(id=1, num=decimal.Decimal("12345678901234567890123456789.123456789"),
         big=decimal.Decimal("12345678901234567890.123456789012345678"), doc='{"a": [1, 2], "b": null}',
         tags=["x", "y"], at=dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), day=dt.date(1, 1, 1),
         place="POINT(1 2)", ratio=-0.5, ok=True),
    dict(id=2, num=decimal.Decimal("-0.000000001"), big=decimal.Decimal("-1E-18"), doc="[]", tags=[],
         at=dt.datetime(1970, 1, 1, tzinfo=UTC), day=dt.date(9999, 12, 31), place="LINESTRING(0 0, 1 1)",
         ratio=float("inf"), ok=False),
    dict(id=3, num=None, big=None, doc=None, tags=["only"], at=None, day=None, place=None, ratio=None, ok=None),
]  # fmt: skip


@pytest.fixture(scope="module")
def bq(local_stack: LocalStack) -> Iterator[bigquery.Client]:
    client = bigquery_client(local_stack)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gcs(local_stack: LocalStack) -> storage.Client:
    client = storage_client(local_stack)
    client.create_bucket(BUCKET)
    return client


@pytest.fixture(scope="module")
def jobs(bq: bigquery.Client) -> Iterator[BigQueryJobs]:
    adapter = BigQueryJobs(bq, max_workers=4)
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def dataset(bq: bigquery.Client) -> str:
    return f"{bq.project}.{bq.create_dataset('load_test').dataset_id}"


def load(destination: str, uris: list[str], **fields: object) -> JobConfig:
    return JobConfig(kind="load", project="maestro-local", destination=destination, source_uris=uris, **fields)  # type: ignore[arg-type]


def new_job_id(table: str) -> str:
    return job_id_for(f"test-{uuid.uuid4().hex[:8]}", table, 1, kind="load")


async def done(jobs: BigQueryJobs, job_id: str, timeout: float = 60) -> JobState:
    deadline = time.monotonic() + timeout
    while True:
        state = await jobs.get(job_id)
        assert state is not None
        if state.state == "DONE" or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)


async def one(batch: pa.RecordBatch) -> AsyncIterator[pa.RecordBatch]:
    yield batch


async def test_parquet_from_the_sink_loads_with_an_explicit_schema_row_for_row(
    jobs: BigQueryJobs, bq: bigquery.Client, gcs: storage.Client, dataset: str
) -> None:
    uri = f"gs://{BUCKET}/imports/{uuid.uuid4().hex}.parquet"
    uploaded = await write_parquet(gcs, uri, SCHEMA, one(pa.RecordBatch.from_pylist(ROWS, SCHEMA)),
                                   ParquetSettings(row_group_bytes=100))  # fmt: skip
    assert uploaded.row_groups >= 2  # the load reads every row group
    table = f"{dataset}.typed"
    config = load(table, [uri], load_schema=FIELDS, labels={"table": "typed"},
                  decimal_target_types=["NUMERIC", "BIGNUMERIC"])  # fmt: skip
    job_id = new_job_id("typed")

    assert await jobs.submit(job_id, config) is True
    state = await done(jobs, job_id)
    assert state.error is None
    assert state.statistics.output_rows == 3 and state.statistics.input_files == 1
    assert state.statistics.input_file_bytes == uploaded.size

    assert await jobs.submit(job_id, config) is False  # the same id again: adopted, no second load
    assert bq.get_table(table).num_rows == 3
    assert bq.get_job(job_id).labels == {"table": "typed"}
    schema = {f.name: (f.field_type, f.mode) for f in bq.get_table(table).schema}
    assert schema["tags"] == ("STRING", "REPEATED") and schema["doc"][0] == "JSON"
    assert schema["big"][0] == "BIGNUMERIC" and schema["place"][0] == "GEOGRAPHY"

    sql = (f"SELECT * EXCEPT (doc, place), TO_JSON_STRING(doc) AS doc, ST_ASTEXT(place) AS place "
           f"FROM `{table}` ORDER BY id")  # fmt: skip
    got = [dict(row) for row in bq.query(sql).result()]
    want = [dict(row) for row in ROWS]
    want[0]["doc"], want[1]["doc"], want[2]["doc"] = '{"a":[1,2],"b":null}', "[]", "null"
    assert got == want


async def test_parquet_bytes_load_with_the_files_own_schema(
    jobs: BigQueryJobs, bq: bigquery.Client, gcs: storage.Client, dataset: str
) -> None:
    schema = pa.schema([("id", pa.int64()), ("raw", pa.binary())])
    rows = pa.RecordBatch.from_pylist([{"id": 1, "raw": b"\x00\xff\n"}, {"id": 2, "raw": None}], schema)
    uri = f"gs://{BUCKET}/imports/{uuid.uuid4().hex}.parquet"
    await write_parquet(gcs, uri, schema, one(rows))
    job_id = new_job_id("bytes")
    await jobs.submit(job_id, load(f"{dataset}.bytes", [uri]))
    assert (await done(jobs, job_id)).error is None
    got = {row["id"]: row["raw"] for row in bq.query(f"SELECT * FROM `{dataset}.bytes`").result()}
    assert got == {1: b"\x00\xff\n", 2: None}


async def test_truncate_replaces_and_append_adds(
    jobs: BigQueryJobs, bq: bigquery.Client, gcs: storage.Client, dataset: str
) -> None:
    rows = pa.RecordBatch.from_pylist(ROWS, SCHEMA)
    uri = f"gs://{BUCKET}/imports/{uuid.uuid4().hex}.parquet"
    await write_parquet(gcs, uri, SCHEMA, one(rows))
    table = f"{dataset}.dispositions"
    for disposition, expected in (("WRITE_TRUNCATE", 3), ("WRITE_TRUNCATE", 3), ("WRITE_APPEND", 6)):
        job_id = new_job_id(f"dispositions-{disposition}")
        await jobs.submit(job_id, load(table, [uri], load_schema=FIELDS, write_disposition=disposition))
        assert (await done(jobs, job_id)).error is None
        assert bq.get_table(table).num_rows == expected


async def test_csv_and_ndjson_load_with_autodetect(
    jobs: BigQueryJobs, bq: bigquery.Client, gcs: storage.Client, dataset: str
) -> None:
    bucket = gcs.bucket(BUCKET)
    csv_name, json_name = f"external/{uuid.uuid4().hex}.csv", f"external/{uuid.uuid4().hex}.json"
    bucket.blob(csv_name).upload_from_string("id,name,day\n1,alpha,2024-01-01\n2,beta,2024-02-29\n")
    bucket.blob(json_name).upload_from_string('{"id": 1, "name": "alpha"}\n{"id": 2, "name": null}\n')
    csv_job, json_job = new_job_id("csv"), new_job_id("ndjson")
    await jobs.submit(csv_job, load(f"{dataset}.csv", [f"gs://{BUCKET}/{csv_name}"], source_format="CSV",
                                    autodetect=True, skip_leading_rows=1))  # fmt: skip
    await jobs.submit(json_job, load(f"{dataset}.ndjson", [f"gs://{BUCKET}/{json_name}"],
                                     source_format="NEWLINE_DELIMITED_JSON", autodetect=True))  # fmt: skip
    assert (await done(jobs, csv_job)).error is None
    assert (await done(jobs, json_job)).error is None

    got = [tuple(row.values()) for row in bq.query(f"SELECT id, name, day FROM `{dataset}.csv` ORDER BY id").result()]
    assert got == [(1, "alpha", dt.date(2024, 1, 1)), (2, "beta", dt.date(2024, 2, 29))]
    got = [tuple(row.values()) for row in bq.query(f"SELECT id, name FROM `{dataset}.ndjson` ORDER BY id").result()]
    assert got == [(1, "alpha"), (2, None)]


async def test_a_missing_file_fails_the_job_with_a_reason(jobs: BigQueryJobs, dataset: str) -> None:
    job_id = new_job_id("missing")
    await jobs.submit(job_id, load(f"{dataset}.missing", [f"gs://{BUCKET}/nothing-here.parquet"]))
    state = await done(jobs, job_id)
    assert state.error is not None and not state.error.retryable


def test_a_load_names_its_files_and_destination() -> None:
    with pytest.raises(ValueError, match="source_uris and a destination"):
        JobConfig(kind="load", project="p", destination="p.d.t")
    old = JobConfig.model_validate({"kind": "query", "project": "p", "query": "SELECT 1"})
    assert old.source_uris == [] and old.load_schema == []  # events stored before: still valid
