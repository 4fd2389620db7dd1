"""BigQuery jobs: the one module that runs work in BigQuery (ARCHITECTURE.md, "Exactly-once").

Every job is inserted under a deterministic id recorded (``JobPlanned``) before anything is sent.
jobs.insert under an id BigQuery already has answers 409, which :meth:`BigQueryJobs.submit`
reports as "adopted": after a crash, a lost response or a retried request, the executor
re-attaches to the job it already paid for instead of starting a second one. The same code
runs against Google and against local-bigquery; it only ever receives a ``bigquery.Client``.

The Google clients block, so every call runs on a small thread pool of our own: a slow
jobs.insert (local-bigquery holds it up to 1 s) never stalls the event loop, and the pool's size
bounds how many requests we have in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery, storage

from maestro.adapters.bigquery_errors import JobError, classify
from maestro.adapters.bigquery_jobconfig import extract_job_config, load_job_config, query_job_config
from maestro.errors import BigQueryError, ConfigurationError
from maestro.events.runs import JobConfig, JobStatistics

__all__ = [
    "BigQueryJobs", "DryRun", "JobError", "JobState", "classify", "expand_extract_uris",
    "extract_job_config", "job_id_for", "load_job_config", "query_job_config", "signed_url",
]  # fmt: skip

T = TypeVar("T")

_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_GS_URI = re.compile(r"gs://([^/]+)/(.+)")


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: Literal["PENDING", "RUNNING", "DONE"]
    error: JobError | None  # only when DONE; reason "stopped" means it was cancelled
    statistics: JobStatistics
    destination_uris: list[str]  # extract jobs: the configured (possibly wildcard) URIs


@dataclass(frozen=True)
class DryRun:
    valid: bool
    bytes_processed: int
    error: JobError | None


class BigQueryJobs:
    """Async facade over ``bigquery.Client`` for job execution.

    Every method raises :class:`BigQueryError` for what it cannot answer; its ``retryable`` says
    whether to try again with backoff. Transient errors are first retried inside the call for up
    to ``api_retry_seconds`` (the client's standard predicate), so a blip costs nothing upstream.

    ``max_workers`` bounds concurrent requests. The client's HTTP pool keeps 10 connections
    (requests' default); above that urllib3 logs "Connection pool is full" and reconnects.
    """

    def __init__(
        self,
        client: bigquery.Client,
        *,
        location: str | None = None,
        max_workers: int = 16,
        request_timeout: float = 60.0,
        api_retry_seconds: float | None = 30.0,
        max_waits: int = 8,
    ) -> None:
        self.client = client
        self.location = location
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="bigquery")
        # Server-side waits hold a thread each for up to their timeout: a pool of their own, so
        # they never starve inserts and state calls, and a bound on how many are open.
        self._max_waits = max_waits
        self._waiting = 0
        self._wait_executor = ThreadPoolExecutor(max_waits, thread_name_prefix="bigquery-wait")
        self._request_timeout = request_timeout
        retry = (
            bigquery.DEFAULT_RETRY.with_timeout(api_retry_seconds) if api_retry_seconds else None
        )
        # Passed to every call: the client's default retry would block a thread for 10 minutes.
        self._opts: dict[str, Any] = dict(location=location, retry=retry, timeout=request_timeout)

    def use(self, client: bigquery.Client, *, location: str | None) -> None:
        """Talk through ``client`` from the next call on (the configuration changed, live)."""
        self.client = client
        self.location = location
        self._opts["location"] = location

    def close(self) -> None:
        """Stop the pool (requests in flight finish); the client belongs to the caller."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._wait_executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Like asyncio.to_thread, on our own bounded pool, keeping context vars (log fields).
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def submit(self, job_id: str, config: JobConfig) -> bool:
        """Insert the job under ``job_id``; False if BigQuery already had it (adopt it).

        Returns once BigQuery has accepted the job, never waiting for it to finish.
        """
        adopted, _ = await self.submit_state(job_id, config)
        return not adopted

    async def submit_state(self, job_id: str, config: JobConfig) -> tuple[bool, JobState | None]:
        """Like :meth:`submit`: (adopted, the job's state as jobs.insert answered it). The
        answer already says DONE for a job that ended while the insert was in flight (the local
        stack holds inserts up to 1 s), so no call is spent asking again. Adopted: no state."""
        with _translated():
            try:
                job = await self._call(self._insert, job_id, config)
            except api_exceptions.Conflict:
                return True, None  # ours, from an earlier attempt to insert it: never a second job
        return False, _state(job) if job is not None else None

    async def ensure_dataset(self, dataset: str) -> None:
        """Create ``project.dataset`` unless it exists (destinations need their dataset)."""
        with _translated():
            await self._call(
                self.client.create_dataset, dataset, exists_ok=True, retry=self._opts["retry"],
                timeout=self._opts["timeout"],
            )

    def _insert(self, job_id: str, config: JobConfig) -> Any:
        opts = dict(self._opts, job_id=job_id, project=config.project)
        if config.kind == "query":
            # job_retry=None: a job cannot be re-run under the same id (and the client warns
            # otherwise). Given a job id, the client raises the 409 instead of fetching the job.
            query = query_job_config(config)
            return self.client.query(config.query, job_config=query, job_retry=None, **opts)
        elif config.kind == "extract":
            extract, uris = extract_job_config(config), list(config.destination_uris)
            return self.client.extract_table(config.source, uris, job_config=extract, **opts)
        elif config.kind == "load":
            # Like query(), given a job id the client raises the 409 rather than fetch the job.
            load, uris = load_job_config(config), list(config.source_uris)
            return self.client.load_table_from_uri(uris, config.destination, job_config=load, **opts)
        else:
            raise ValueError(f"BigQueryJobs cannot submit {config.kind!r} jobs")

    async def get(self, job_id: str, *, project: str | None = None) -> JobState | None:
        """The job's state, or None if BigQuery has never seen the id (submit it then).

        Right after a 409 BigQuery may still answer 404 for a while; submitting again is safe,
        it just answers 409 once more.
        """
        with _translated():
            try:
                job = await self._call(self.client.get_job, job_id, project=project, **self._opts)
            except api_exceptions.NotFound:
                return None
        return _state(job)

    async def wait(self, job_id: str, *, project: str | None = None, timeout: float) -> bool | None:
        """Wait up to ``timeout`` seconds, server-side, for a query job to end: True when it
        has (or BigQuery answered with the job's error: ask :meth:`get` for its state), False when
        it still runs, None at once when every wait slot is taken (poll instead).

        jobs.getQueryResults with ``timeoutMs`` and no rows (``maxResults=0``) returns as soon as
        the job ends, so the end of a parent is noticed at once, and a long job costs one request
        per ``timeout`` instead of a poll every few seconds. The client exposes it only as
        ``Client._get_query_results`` (what ``QueryJob.result`` itself calls).
        """
        if self._waiting >= self._max_waits:
            return None
        self._waiting += 1
        call = functools.partial(
            contextvars.copy_context().run, self.client._get_query_results, job_id, None,
            project=project, timeout_ms=int(timeout * 1000), location=self.location,
            timeout=timeout + self._request_timeout, page_size=0,
        )
        try:
            with _translated():
                try:
                    results = await asyncio.get_running_loop().run_in_executor(self._wait_executor, call)
                except api_exceptions.GoogleAPICallError as exc:
                    if classify(exc).retryable:
                        raise
                    return True  # the job failed (its error is the answer) or is unknown
            return bool(results.complete)
        finally:
            self._waiting -= 1

    async def cancel(self, job_id: str, *, project: str | None = None) -> None:
        """Ask BigQuery to stop the job; it ends DONE with reason "stopped" (or as it was).

        Cancelling is a request, not a result: poll :meth:`get`. A job BigQuery never saw has
        nothing to cancel, so 404 is not an error.
        """
        with _translated():
            try:
                await self._call(self.client.cancel_job, job_id, project=project, **self._opts)
            except api_exceptions.NotFound:
                return

    async def dry_run(
        self, query: str, *, legacy_sql: bool = False, project: str | None = None
    ) -> DryRun:
        """Validate a query. An invalid query is ``valid=False`` with BigQuery's message."""
        config = bigquery.QueryJobConfig(
            dry_run=True, use_query_cache=False, use_legacy_sql=legacy_sql
        )
        try:
            job = await self._call(
                self.client.query, query, job_config=config, job_retry=None, project=project,
                **self._opts,
            )  # fmt: skip
        except Exception as exc:
            error = classify(exc)
            if error.retryable:  # BigQuery did not answer about the query: no verdict
                raise BigQueryError(error.reason, error.message, retryable=True) from exc
            return DryRun(valid=False, bytes_processed=0, error=error)
        # An invalid query is an HTTP error (400 invalidQuery, 404 notFound), never an errorResult.
        return DryRun(valid=True, bytes_processed=job.total_bytes_processed or 0, error=None)

    async def list_job_ids(
        self,
        *,
        state_filter: str | None = None,
        max_results: int | None = None,
        project: str | None = None,
    ) -> list[str]:
        """Ids of this account's jobs, newest first (``state_filter``: done, pending, running)."""

        def ids() -> list[str]:
            jobs = self.client.list_jobs(
                project=project, state_filter=state_filter, max_results=max_results,
                retry=self._opts["retry"], timeout=self._opts["timeout"],
            )  # fmt: skip
            return [job.job_id for job in jobs]

        with _translated():
            return await self._call(ids)

    async def list_states(
        self, *, since: datetime, project: str | None = None
    ) -> dict[str, JobState]:
        """Every job of this account created since ``since``, by id, with its state and statistics
        (jobs.list, projection full, 1,000 a page).

        Re-attaching many jobs at start-up this way costs a page per thousand jobs instead of one
        jobs.get each. A job absent from the answer is not proof that BigQuery lacks it (other
        location, clock skew): ask :meth:`get` for those.
        """

        def states() -> dict[str, JobState]:
            jobs = self.client.list_jobs(
                project=project, min_creation_time=since, page_size=1000,
                retry=self._opts["retry"], timeout=self._opts["timeout"],
            )  # fmt: skip
            return {job.job_id: _state(job) for job in jobs}

        with _translated():
            return await self._call(states)


def _state(job: Any) -> JobState:
    error = classify(job.error_result) if job.error_result else None
    statistics = JobStatistics(
        # Query statistics exist only on query jobs; local-bigquery reports 0 bytes, no slot-ms.
        total_bytes_processed=getattr(job, "total_bytes_processed", None) or 0,
        total_bytes_billed=getattr(job, "total_bytes_billed", None) or 0,
        total_slot_ms=getattr(job, "slot_millis", None) or 0,
        cache_hit=bool(getattr(job, "cache_hit", False)),
        created=job.created,
        started=job.started,
        ended=job.ended,
        destination_uri_file_counts=list(getattr(job, "destination_uri_file_counts", None) or []),
        output_rows=getattr(job, "output_rows", None) or 0,  # load statistics, on load jobs only
        input_files=getattr(job, "input_files", None) or 0,
        input_file_bytes=getattr(job, "input_file_bytes", None) or 0,
    )
    uris = list(getattr(job, "destination_uris", None) or [])
    return JobState(job.job_id, job.state, error, statistics, uris)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The one place where the client's errors become ours (STYLE.md item 9).

    Everything is translated, the client's own argument checks (ValueError) included, so a
    caller handles one error type and reads ``retryable`` (False for what classify cannot name).
    """
    try:
        yield
    except Exception as exc:
        error = classify(exc)
        raise BigQueryError(error.reason, error.message, retryable=error.retryable) from exc


def job_id_for(run_id: str | None, table_id: str, attempt: int, kind: str = "query") -> str:
    """The BigQuery job id of one attempt of one table in one run; the same inputs, the same id.

    A readable part (unsafe characters become ``_``) plus a digest of the exact inputs: without
    the digest, run "a_b" + table "c" and run "a" + table "b_c" would share an id, and the second
    job would silently "adopt" the first. Jobs outside a run (``run_id`` None) are told apart
    only by ``attempt``, so the caller must not reuse one.

    >>> job_id_for("daily-2026-01-01", "t1", 1)
    'maestro_query_daily-2026-01-01_t1_1_0b61876dd601e282'
    """
    inputs = json.dumps([kind, run_id, table_id, attempt]).encode()
    digest = hashlib.sha256(inputs).hexdigest()[:16]
    run, table = (_JOB_ID_UNSAFE.sub("_", part)[:400] for part in (run_id or "adhoc", table_id))
    return f"maestro_{_JOB_ID_UNSAFE.sub('_', kind)[:20]}_{run}_{table}_{attempt}_{digest}"


def signed_url(
    storage_client: storage.Client, uri: str, *, lifetime: timedelta, credentials: Any = None,
    method: str = "GET", content_type: str | None = None,
) -> str:
    """A v4 signed URL for ``gs://bucket/object`` (at most 7 days): GET by default; PUT (an
    upload) with the ``content_type`` the uploader must send, which the signature covers.

    ``credentials`` must be able to sign (a service-account key); None uses the client's. The
    URL is on the client's endpoint, so against the local stack it points at fake-gcs-server.
    """
    bucket, name = _split_gs_uri(uri)
    blob = storage_client.bucket(bucket).blob(name)
    try:
        return str(
            blob.generate_signed_url(
                version="v4", expiration=lifetime, method=method, credentials=credentials,
                content_type=content_type,
            )
        )
    except AttributeError as exc:  # google-auth's way of saying "these credentials cannot sign"
        raise ConfigurationError(f"cannot sign URLs for {uri}: {exc}") from exc


async def expand_extract_uris(
    storage_client: storage.Client, pattern_uris: list[str], *, file_counts: list[int] | None = None
) -> list[str]:
    """The objects an extract wrote: wildcard URIs listed in GCS, plain URIs as they are.

    BigQuery replaces a URI's single ``*`` with 000000000000, 000000000001, ... Pass the job's
    ``destination_uri_file_counts`` as ``file_counts`` to keep only the files this extract wrote
    when an earlier, larger extract left more under the same pattern.
    """

    def expand() -> list[str]:
        found: list[str] = []
        for index, uri in enumerate(pattern_uris):
            if "*" not in uri:
                found.append(uri)
                continue
            bucket, pattern = _split_gs_uri(uri)
            prefix, suffix = pattern.split("*", 1)
            names = sorted(
                blob.name
                for blob in storage_client.list_blobs(bucket, prefix=prefix)
                # Only "*" is special to BigQuery ("?" and "[" are literal, unlike fnmatch).
                if blob.name.endswith(suffix) and len(blob.name) >= len(prefix) + len(suffix)
            )
            if file_counts is not None and index < len(file_counts):
                numbered = {pattern.replace("*", f"{n:012d}", 1) for n in range(file_counts[index])}
                names = [name for name in names if name in numbered]
            found.extend(f"gs://{bucket}/{name}" for name in names)
        return found

    def translated() -> list[str]:
        with _translated():  # a storage blip is retryable like a BigQuery one
            return expand()

    return await asyncio.to_thread(translated)


def _split_gs_uri(uri: str) -> tuple[str, str]:
    match = _GS_URI.fullmatch(uri)
    if match is None:
        raise ValueError(f"not a gs://bucket/object URI: {uri!r}")
    return match.group(1), match.group(2)
