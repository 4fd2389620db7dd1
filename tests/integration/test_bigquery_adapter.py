"""maestro.adapters.bigquery against the local stack, through the real Google clients.

What local-bigquery 0.4.0 does differently from Google, as asserted below:
- jobs.insert holds the answer until the job finishes or 1 s passes: a small query is usually
  DONE at its first ``get``; a long one is RUNNING (PENDING was never seen).
- bytes processed/billed are 0, slot-ms absent (-> 0), cache_hit False, also for dry runs.
- legacy SQL: ``useLegacySql`` and ``allowLargeResults`` are stored, but the SQL is parsed as
  GoogleSQL, so legacy syntax (``[project:dataset.table]``) fails with invalidQuery.
- cancel ends a running job DONE with reason "stopped"; cancelling a DONE job changes nothing.
- an extract to a wildcard URI writes exactly one file (``*`` -> 000000000000).
Error reasons (invalidQuery, notFound, duplicate on 409) are Google's.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage
from google.oauth2 import service_account

from maestro.adapters.bigquery import (
    BigQueryJobs,
    JobError,
    JobState,
    classify,
    expand_extract_uris,
    job_id_for,
    signed_url,
)
from maestro.adapters.localstack import LocalStack, bigquery_client, storage_client
from maestro.errors import BigQueryError, ConfigurationError
from maestro.events.runs import JobConfig

# Keeps DuckDB busy for many seconds (10^10 joined rows): a job we can catch RUNNING.
SLOW_QUERY = (
    "SELECT COUNT(*) AS n FROM UNNEST(GENERATE_ARRAY(1, 100000)) AS a "
    "CROSS JOIN UNNEST(GENERATE_ARRAY(1, 100000)) AS b WHERE MOD(a + b, 7) = 3"
)
ROWS_SQL = (
    "SELECT x AS id, CONCAT('name-', CAST(x AS STRING)) AS name, "
    "DATE_ADD(DATE '2024-01-01', INTERVAL x DAY) AS day, "
    "TIMESTAMP_ADD(TIMESTAMP '2024-01-01', INTERVAL x HOUR) AS ts "
    "FROM UNNEST(GENERATE_ARRAY(1, {n})) AS x"
)


@pytest.fixture(scope="module")
def stack(local_stack: LocalStack) -> LocalStack:
    """The session's local stack (tests/conftest.py)."""
    return local_stack


@pytest.fixture(scope="module")
def bq(stack: LocalStack) -> Iterator[bigquery.Client]:
    client = bigquery_client(stack)
    yield client
    client.close()


@pytest.fixture(scope="module")
def gcs(stack: LocalStack) -> storage.Client:
    return storage_client(stack)


@pytest.fixture(scope="module")
def jobs(bq: bigquery.Client) -> Iterator[BigQueryJobs]:
    adapter = BigQueryJobs(bq, max_workers=4)
    yield adapter
    adapter.close()


@pytest.fixture(scope="module")
def dataset(bq: bigquery.Client) -> str:
    return f"{bq.project}.{bq.create_dataset('adapter_test').dataset_id}"


@pytest.fixture(scope="module")
def bucket(gcs: storage.Client) -> storage.Bucket:
    return gcs.create_bucket("adapter-test-bucket")


@pytest.fixture(scope="module")
def source_table(bq: bigquery.Client, dataset: str) -> str:
    table = f"{dataset}.source"
    config = bigquery.QueryJobConfig(destination=table, write_disposition="WRITE_TRUNCATE")
    bq.query(ROWS_SQL.format(n=25), job_config=config).result()
    return table


def new_id(prefix: str) -> str:
    return job_id_for(f"test-{uuid.uuid4().hex[:8]}", prefix, 1)


def query(sql: str, **fields: object) -> JobConfig:
    return JobConfig(kind="query", project="maestro-local", query=sql, **fields)  # type: ignore[arg-type]


async def wait_done(jobs: BigQueryJobs, job_id: str, timeout: float = 60) -> JobState:
    deadline = time.monotonic() + timeout
    while True:
        state = await jobs.get(job_id)
        assert state is not None
        if state.state == "DONE" or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)


# --- query jobs -------------------------------------------------------------------------------


async def test_truncate_then_append(jobs: BigQueryJobs, bq: bigquery.Client, dataset: str) -> None:
    table = f"{dataset}.events"
    first = new_id("events")
    assert await jobs.submit(first, query(ROWS_SQL.format(n=10), destination=table)) is True
    state = await wait_done(jobs, first)
    assert state.state == "DONE" and state.error is None and state.job_id == first
    assert bq.get_table(table).num_rows == 10
    stats = state.statistics
    assert (stats.total_bytes_processed, stats.total_bytes_billed, stats.total_slot_ms) == (0, 0, 0)
    assert stats.cache_hit is False and state.destination_uris == []
    assert stats.created and stats.started and stats.ended and stats.created <= stats.ended

    second = new_id("events")
    append = query(ROWS_SQL.format(n=10), destination=table, write_disposition="WRITE_APPEND")
    assert await jobs.submit(second, append) is True
    assert (await wait_done(jobs, second)).error is None
    assert bq.get_table(table).num_rows == 20
    rows = bq.query(f"SELECT COUNT(DISTINCT id) AS n FROM `{table}`").result()
    assert [r.n for r in rows] == [10]


@pytest.mark.parametrize(
    ("partitioning", "field", "type_"),
    [
        ({"type": "day", "column": None, "granularity": "DAY"}, None, "DAY"),  # ingestion time
        ({"type": "column", "column": "day", "granularity": "DAY"}, "day", "DAY"),
        ({"type": "column", "column": "ts", "granularity": "HOUR"}, "ts", "HOUR"),
        ({"type": "column", "column": "day", "granularity": "MONTH"}, "day", "MONTH"),
    ],
    ids=["ingestion-day", "column-day", "column-hour", "column-month"],
)
async def test_partitioning_clustering_labels(
    jobs: BigQueryJobs,
    bq: bigquery.Client,
    dataset: str,
    partitioning: dict[str, object],
    field: str | None,
    type_: str,
) -> None:
    table = f"{dataset}.part_{type_.lower()}_{field or 'ingestion'}"
    labels = {"maestro_table": "t42", "maestro_run": "run-1", "team": "data"}
    config = query(
        ROWS_SQL.format(n=5),
        destination=table,
        partitioning=partitioning,
        clustering=["name", "id"],
        labels=labels,
        maximum_bytes_billed=10**9,
    )
    job_id = new_id("part")
    assert await jobs.submit(job_id, config)
    assert (await wait_done(jobs, job_id)).error is None

    created = bq.get_table(table)
    assert created.num_rows == 5
    assert created.time_partitioning.type_ == type_
    assert created.time_partitioning.field == field
    assert created.clustering_fields == ["name", "id"]
    job = bq.get_job(job_id)
    assert isinstance(job, bigquery.QueryJob)
    assert job.labels == labels
    assert job.maximum_bytes_billed == 10**9
    assert job.create_disposition == "CREATE_IF_NEEDED"
    assert job.use_legacy_sql is False


async def test_legacy_sql_flags_are_sent(
    jobs: BigQueryJobs, bq: bigquery.Client, dataset: str
) -> None:
    job_id = new_id("legacy")
    config = query("SELECT 1 AS a", legacy_sql=True, destination=f"{dataset}.legacy")
    assert await jobs.submit(job_id, config)
    assert (await wait_done(jobs, job_id)).error is None
    job = bq.get_job(job_id)
    assert isinstance(job, bigquery.QueryJob)
    assert job.use_legacy_sql is True and job.allow_large_results is True
    # local-bigquery parses legacy SQL as GoogleSQL: legacy-only syntax fails there (not on Google).
    bracketed = new_id("legacy")
    await jobs.submit(
        bracketed, query(f"SELECT a FROM [{dataset.replace('.', ':', 1)}.legacy]", legacy_sql=True)
    )
    assert (await wait_done(jobs, bracketed)).error.reason == "invalidQuery"  # type: ignore[union-attr]


async def test_same_job_id_twice_is_adopted(
    jobs: BigQueryJobs, bq: bigquery.Client, dataset: str
) -> None:
    table = f"{dataset}.adopted"
    job_id = new_id("adopt")
    assert await jobs.submit(job_id, query(ROWS_SQL.format(n=3), destination=table)) is True
    # A second submit, even of another query, must re-attach and never run anything.
    assert await jobs.submit(job_id, query(ROWS_SQL.format(n=7), destination=table)) is False
    await wait_done(jobs, job_id)
    assert bq.get_table(table).num_rows == 3
    assert (await jobs.list_job_ids()).count(job_id) == 1
    assert job_id in await jobs.list_job_ids(state_filter="done")
    assert job_id not in await jobs.list_job_ids(state_filter="running")


async def test_get_unknown_job_is_none(jobs: BigQueryJobs) -> None:
    assert await jobs.get(new_id("never-submitted")) is None


@pytest.mark.parametrize(
    ("sql", "reason"),
    [("SELEC 1", "invalidQuery"), ("SELECT * FROM adapter_test.missing", "notFound")],
    ids=["syntax", "missing-table"],
)
async def test_failed_query_is_done_with_a_permanent_error(
    jobs: BigQueryJobs, sql: str, reason: str
) -> None:
    job_id = new_id("bad")
    assert await jobs.submit(job_id, query(sql)) is True  # accepted; it fails as a job (as Google)
    state = await wait_done(jobs, job_id)
    assert state.state == "DONE"
    assert state.error is not None
    assert (state.error.reason, state.error.retryable) == (reason, False)
    assert state.error.message


async def test_submit_returns_without_waiting_and_cancel_stops_the_job(jobs: BigQueryJobs) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    job_id = new_id("slow")
    started = time.monotonic()
    try:
        assert await jobs.submit(job_id, query(SLOW_QUERY)) is True
    finally:
        running.cancel()
    submit_seconds = time.monotonic() - started
    assert submit_seconds < 10  # local-bigquery holds the insert for <= 1 s, the job runs longer
    assert ticks >= submit_seconds / 0.01 / 4  # the event loop kept running meanwhile

    assert (await jobs.get(job_id)).state == "RUNNING"  # type: ignore[union-attr]
    await jobs.cancel(job_id)
    state = await wait_done(jobs, job_id)
    assert state.state == "DONE"
    assert state.error == JobError("stopped", state.error.message, retryable=False)  # type: ignore[union-attr]

    await jobs.cancel(job_id)  # cancelling a finished job changes nothing
    assert await jobs.get(job_id) == state
    await jobs.cancel(new_id("never-submitted"))  # nothing to cancel: not an error


async def test_dry_run(jobs: BigQueryJobs, source_table: str) -> None:
    valid = await jobs.dry_run(f"SELECT id FROM `{source_table}`")
    assert valid.valid and valid.error is None
    assert valid.bytes_processed == 0  # local-bigquery; Google reports the bytes it would scan

    syntax = await jobs.dry_run("SELEC id")
    assert not syntax.valid and syntax.error is not None
    assert (syntax.error.reason, syntax.error.retryable) == ("invalidQuery", False)
    assert "Syntax error" in syntax.error.message

    missing = await jobs.dry_run("SELECT * FROM adapter_test.nowhere")
    assert not missing.valid and missing.error.reason == "notFound"  # type: ignore[union-attr]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_bigquery_is_a_retryable_error() -> None:
    client = bigquery.Client(
        project="maestro-local",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{_free_port()}"),
    )
    unreachable = BigQueryJobs(client, api_retry_seconds=None, request_timeout=5)
    try:
        with pytest.raises(BigQueryError) as submitted:
            await unreachable.submit("maestro_query_x_1", query("SELECT 1"))
        assert submitted.value.retryable and submitted.value.reason == "network"
        with pytest.raises(BigQueryError) as got:
            await unreachable.get("maestro_query_x_1")
        assert got.value.retryable
        with pytest.raises(BigQueryError) as dry:  # no answer is no verdict on the query
            await unreachable.dry_run("SELECT 1")
        assert dry.value.retryable
    finally:
        unreachable.close()
        client.close()


# --- extract jobs, GCS ------------------------------------------------------------------------


def _service_account() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "maestro-local",
            "private_key_id": "local-test-key",
            "private_key": pem,
            "client_email": "maestro@maestro-local.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "http://127.0.0.1:9/token",  # never called: signing is local
        }
    )


def _http_get(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        assert response.status == 200
        return bytes(response.read())


@pytest.mark.parametrize(
    ("fmt", "compression", "ext", "check"),
    [
        (
            "csv",
            "gzip",
            "csv.gz",
            lambda b: gzip.decompress(b).decode().splitlines()[0] == "id,name,day,ts",
        ),
        ("parquet", "none", "parquet", lambda b: b[:4] == b[-4:] == b"PAR1"),
    ],
    ids=["csv-gzip", "parquet"],
)
async def test_extract_expand_and_sign(
    jobs: BigQueryJobs,
    stack: LocalStack,
    gcs: storage.Client,
    bucket: storage.Bucket,
    source_table: str,
    fmt: str,
    compression: str,
    ext: str,
    check: object,
) -> None:
    pattern = f"gs://{bucket.name}/exports/{fmt}/part-*.{ext}"
    config = JobConfig(
        kind="extract",
        project="maestro-local",
        source=source_table,
        destination_uris=[pattern],
        format=fmt,
        compression=compression,
        labels={"maestro_table": "source"},
    )
    job_id = job_id_for(f"run-{uuid.uuid4().hex[:8]}", "source", 1, kind="extract")
    assert await jobs.submit(job_id, config) is True
    assert await jobs.submit(job_id, config) is False
    state = await wait_done(jobs, job_id)
    assert state.error is None
    assert state.destination_uris == [pattern]
    assert state.statistics.destination_uri_file_counts == [1]

    written = f"gs://{bucket.name}/exports/{fmt}/part-000000000000.{ext}"
    assert await expand_extract_uris(gcs, [pattern]) == [written]
    data = bucket.blob(f"exports/{fmt}/part-000000000000.{ext}").download_as_bytes()
    assert check(data)  # type: ignore[operator]

    # A file left by an earlier, larger extract matches the pattern but was not written now.
    bucket.blob(f"exports/{fmt}/part-000000000001.{ext}").upload_from_string(b"stale")
    assert len(await expand_extract_uris(gcs, [pattern])) == 2
    counts = state.statistics.destination_uri_file_counts
    assert await expand_extract_uris(gcs, [pattern], file_counts=counts) == [written]
    assert await expand_extract_uris(gcs, [written]) == [written]  # plain URIs pass as they are

    url = signed_url(
        gcs, written, lifetime=datetime.timedelta(hours=1), credentials=_service_account()
    )
    assert url.startswith(
        f"{stack.gcs_endpoint}/{bucket.name}/exports/{fmt}/part-000000000000.{ext}?"
    )
    assert "X-Goog-Algorithm=GOOG4-RSA-SHA256" in url and "X-Goog-Expires=3600" in url
    assert await asyncio.to_thread(_http_get, url) == data


def test_signed_url_needs_credentials_that_can_sign(gcs: storage.Client) -> None:
    with pytest.raises(ConfigurationError):
        signed_url(gcs, "gs://adapter-test-bucket/x.csv", lifetime=datetime.timedelta(minutes=5))
    with pytest.raises(ValueError):
        signed_url(gcs, "https://example.com/x.csv", lifetime=datetime.timedelta(minutes=5))


# --- pure functions ---------------------------------------------------------------------------


def _api_error(
    cls: type[exceptions.GoogleAPICallError], reason: str | None, message: str = "m"
) -> Exception:
    return cls(message, errors=[{"reason": reason, "message": message}] if reason else [])


@pytest.mark.parametrize(
    ("error", "reason", "retryable"),
    [
        (_api_error(exceptions.TooManyRequests, None), "http_429", True),
        (_api_error(exceptions.InternalServerError, "backendError"), "backendError", True),
        (_api_error(exceptions.InternalServerError, None), "http_500", True),
        (_api_error(exceptions.BadGateway, None), "http_502", True),
        (_api_error(exceptions.ServiceUnavailable, None), "http_503", True),
        (_api_error(exceptions.GatewayTimeout, None), "http_504", True),
        (_api_error(exceptions.BadRequest, "invalidQuery"), "invalidQuery", False),
        (_api_error(exceptions.BadRequest, "invalid"), "invalid", False),
        (_api_error(exceptions.BadRequest, "jobRateLimitExceeded"), "jobRateLimitExceeded", True),
        (_api_error(exceptions.BadRequest, None), "http_400", False),
        (_api_error(exceptions.Forbidden, "rateLimitExceeded"), "rateLimitExceeded", True),
        (_api_error(exceptions.Forbidden, "accessDenied"), "accessDenied", False),
        (_api_error(exceptions.Forbidden, "quotaExceeded"), "quotaExceeded", False),
        (
            _api_error(exceptions.Forbidden, "billingTierLimitExceeded"),
            "billingTierLimitExceeded",
            False,
        ),
        (_api_error(exceptions.NotFound, "notFound"), "notFound", False),
        (_api_error(exceptions.Conflict, "duplicate"), "duplicate", False),
        # A known permanent reason is not retried even when the status is a 5xx.
        (_api_error(exceptions.ServiceUnavailable, "accessDenied"), "accessDenied", False),
        # BigQuery's own hint wins over the reason.
        (
            _api_error(
                exceptions.BadRequest,
                "invalid",
                "Error during execution. Retrying may solve the problem.",
            ),
            "invalid",
            True,
        ),
        (ConnectionError("refused"), "network", True),
        (ConnectionResetError("reset"), "network", True),
        (requests.exceptions.ConnectionError("refused"), "network", True),
        (requests.exceptions.ReadTimeout("slow"), "requestTimeout", True),
        (TimeoutError("slow"), "requestTimeout", True),
        (requests.exceptions.SSLError("bad certificate"), "ssl", False),
        (
            exceptions.RetryError(
                "Timeout of 30.0s exceeded",
                _api_error(exceptions.ServiceUnavailable, "backendError"),
            ),
            "backendError",
            True,
        ),
        (exceptions.RetryError("Timeout of 30.0s exceeded", None), "retryExhausted", True),
        (RuntimeError("what?"), "unknown", False),
    ],
)
def test_classify_exceptions(error: Exception, reason: str, retryable: bool) -> None:
    classified = classify(error)
    assert (classified.reason, classified.retryable) == (reason, retryable)
    assert classified.message


@pytest.mark.parametrize(
    ("error_result", "retryable"),
    [
        ({"reason": "backendError", "message": "Backend error. Job aborted."}, True),
        ({"reason": "internalError", "message": "An internal error occurred."}, True),
        ({"reason": "jobBackendError", "message": "x"}, True),
        ({"reason": "jobInternalError", "message": "x"}, True),
        ({"reason": "rateLimitExceeded", "message": "Exceeded rate limits"}, True),
        ({"reason": "tableUnavailable", "message": "x"}, True),
        ({"reason": "invalidQuery", "location": "query", "message": "Syntax error"}, False),
        ({"reason": "notFound", "message": "Not found: Table p:d.t"}, False),
        ({"reason": "accessDenied", "message": "x"}, False),
        (
            {
                "reason": "bytesBilledLimitExceeded",
                "message": "Query exceeded limit for bytes billed",
            },
            False,
        ),
        (
            {"reason": "resourcesExceeded", "message": "Resources exceeded during query execution"},
            False,
        ),
        ({"reason": "quotaExceeded", "message": "Quota exceeded"}, False),
        (
            {
                "reason": "stopped",
                "message": "Job execution was cancelled: User requested cancellation",
            },
            False,
        ),
        ({"reason": "somethingNew", "message": "x"}, False),
        ({"reason": "somethingNew", "message": "Retrying may solve the problem."}, True),
        ({"message": "no reason at all"}, False),
        ({"reason": "invalidQuery", "message": "Could not serialize access to table"}, True),
        ({"reason": "invalidQuery", "message": "Failed to commit DuckLake transaction."}, True),
    ],
)
def test_classify_error_results(error_result: dict[str, str], retryable: bool) -> None:
    classified = classify(error_result)
    assert classified.retryable is retryable
    assert classified.reason == error_result.get("reason", "unknown")
    assert classified.message == error_result["message"]


@pytest.mark.parametrize(
    "table_id",
    ["t1", "dataset.table$20240101", "a b/c:d", "ünïcödé", "x" * 5000, "", "-leading-dash"],
    ids=["plain", "partition-decorator", "punctuation", "unicode", "very-long", "empty", "dash"],
)
def test_job_id_for_is_deterministic_and_valid(table_id: str) -> None:
    job_id = job_id_for("daily/2026-01-01T00:00", table_id, 2)
    assert job_id == job_id_for("daily/2026-01-01T00:00", table_id, 2)
    assert len(job_id) <= 1024
    assert job_id.replace("_", "").replace("-", "").isalnum() and job_id.isascii()
    assert job_id.startswith("maestro_query_daily_2026-01-01T00_00_")
    assert job_id != job_id_for("daily/2026-01-01T00:00", table_id, 3)
    assert job_id != job_id_for("daily/2026-01-01T00:00", table_id, 2, kind="extract")
    assert job_id != job_id_for(None, table_id, 2)


def test_job_id_for_keeps_distinct_inputs_distinct() -> None:
    # Same readable part after sanitising; a shared id would make the second job adopt the first.
    assert job_id_for("a_b", "c", 1) != job_id_for("a", "b_c", 1)
    assert job_id_for("r", "d.t", 1) != job_id_for("r", "d_t", 1)
    assert job_id_for(None, "t", 1).startswith("maestro_query_adhoc_t_1_")
    assert job_id_for(None, "t", 1) != job_id_for("adhoc", "t", 1)
