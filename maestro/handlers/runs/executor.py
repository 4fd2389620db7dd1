"""Executing one BigQuery job: submit (or adopt), wait for its end, and say how it ended.

The executor never raises for what BigQuery or the network does: every path ends in an
:class:`Outcome` — succeeded, cancelled, or failed with a reason, a message and whether a new
attempt may succeed — which the runner records as the job's last event. A refusal at
``jobs.insert`` or at dataset creation (400/403/404), a job past its deadline, a failure listing
an extract's files: each is a failed outcome, never a task that dies with the slot it held.

Waiting: the insert's own answer comes first (a job that ended meanwhile costs no further call);
then jobs.get is polled with backoff capped at ``early_poll_max`` for the first ``wait_after``
seconds, where most jobs end; after that a query job's end is awaited server-side
(``jobs.getQueryResults`` with ``timeoutMs``, in a bounded pool of waits), so a long job is noticed
as it ends and costs a call every ``wait_max`` seconds instead of a poll every ``poll_max``.
Extract jobs, and queries when every wait slot is taken, are polled with backoff. Against the
local stack (``server_wait`` off) polling stays capped at ``early_poll_max``: local-bigquery
answers a wait long after the job ended when it is busy (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from maestro.events.runs import JobConfig, JobStatistics
from maestro.handlers.runs.state import RunnerConfig

log = logging.getLogger(__name__)


class Jobs(Protocol):
    """What the runner needs of BigQuery (maestro.adapters.bigquery.BigQueryJobs)."""

    async def submit(self, job_id: str, config: JobConfig) -> bool: ...
    async def get(self, job_id: str, *, project: str | None = None) -> Any: ...
    async def cancel(self, job_id: str, *, project: str | None = None) -> None: ...


@dataclass(frozen=True)
class Outcome:
    status: Literal["succeeded", "failed", "cancelled"]
    statistics: JobStatistics | None = None
    reason: str = ""
    message: str = ""
    retryable: bool = False
    files: list[str] = field(default_factory=list)  # extract jobs: the objects written


class JobTimedOut(Exception):
    pass


class _NotInserted(Exception):
    """The run was cancelled before the job was inserted: it never reaches BigQuery."""


STATS_TIMEOUT = 30.0  # seconds for the last jobs.get of a job given up on


@dataclass
class _Job:
    """One job as the executor drives it: what is known of its progress."""

    job_id: str
    run_id: str | None
    config: JobConfig
    submitted: bool  # a JobSubmitted is recorded
    cancelled: Callable[[], bool]
    inserted: bool = False  # BigQuery has it (or may have it)
    deadline: float = 0.0


def failure(exc: BaseException, *, reason: str | None = None) -> Outcome:
    """A failed outcome from an exception: BigQuery's reason and retryability when it has them."""
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return Outcome(
        "failed",
        reason=reason or getattr(exc, "reason", None) or "internal",
        message=str(message),
        retryable=bool(getattr(exc, "retryable", False)),
    )


class JobExecutor:
    def __init__(
        self,
        jobs: Jobs,
        config: RunnerConfig,
        *,
        submitted: Callable[[str, str | None, bool], Awaitable[None]],
        extract_files: Callable[[list[str], list[int] | None], Awaitable[list[str]]] | None = None,
        ensure_dataset: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.jobs = jobs
        self.config = config
        self._submitted = submitted  # async (job id, run id, adopted): records JobSubmitted
        self.extract_files = extract_files
        # async ("project.dataset") -> None: a destination dataset is created on first use, as
        # dbt creates schemas; the catalog's datasets need not exist in BigQuery beforehand.
        self.ensure_dataset = ensure_dataset
        self._datasets: set[str] = set()
        self._dataset_locks: dict[str, asyncio.Lock] = {}
        # Start-up: jobs BigQuery never saw are inserted only once every unfinished job has been
        # looked up (on the local stack an insert runs its query first).
        self.attached = asyncio.Event()
        self.attached.set()
        self.unattached = 0
        self.calls = 0  # BigQuery requests made for job states (get + wait), for the benchmark

    def forget_datasets(self) -> None:
        self._datasets.clear()

    async def execute(
        self, job_id: str, run_id: str | None, config: JobConfig, *, submitted: bool,
        recovered: bool = False, known: Any = None, planned_at: float | None = None,
        submitted_at: float | None = None, cancelled: Callable[[], bool] = lambda: False,
    ) -> Outcome:
        """Drive one job to its end.

        The deadline runs from the insert (``submitted_at`` for a job submitted before a restart;
        before it, from ``planned_at``): a job planned long ago and never sent is not sent only to
        be cancelled. ``cancelled()`` says whether the run was cancelled: a job not yet inserted
        is then never inserted, one just inserted is cancelled at once.
        """
        job = _Job(job_id, run_id, config, submitted, cancelled)
        job.deadline = (submitted_at or planned_at or time.time()) + self.config.job_timeout
        try:
            state = await self._drive(job, recovered, known)
        except JobTimedOut:
            stats = await self._stop_and_measure(job) if job.inserted else None
            return Outcome("failed", stats, reason="timeout", retryable=False, message=(
                f"the job did not finish within {self.config.job_timeout:.0f} s; it was cancelled"
                if job.inserted else
                f"BigQuery could not be reached to insert the job within {self.config.job_timeout:.0f} s"
            ))
        except _NotInserted:
            return Outcome("cancelled", reason="cancelled", message="the run was cancelled before the job started")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refusal BigQuery will repeat: the job fails, the run goes on
            log.warning("job failed", extra={"job_id": job_id, "error": str(exc), "inserted": job.inserted})
            # Refused after its insert (a 403 on jobs.get, say): stop it rather than let it run on
            # unwatched, and keep what it billed.
            stats = await self._stop_and_measure(job) if job.inserted else None
            return dataclasses.replace(failure(exc), statistics=stats)
        if state.error is None:
            files = list(state.destination_uris)
            if config.kind == "extract" and self.extract_files is not None:
                counts = list(state.statistics.destination_uri_file_counts) or None
                try:
                    files = await self._retrying(
                        lambda: self.extract_files(config.destination_uris, counts), job.deadline
                    )
                except asyncio.CancelledError:
                    raise
                except JobTimedOut:
                    return Outcome("failed", state.statistics, reason="timeout",
                                   message="listing the extract's files timed out")
                except Exception as exc:
                    return dataclasses.replace(failure(exc, reason="extract_files"), statistics=state.statistics)
            return Outcome("succeeded", state.statistics, files=files)
        if state.error.reason == "stopped":
            return Outcome("cancelled", state.statistics, reason="stopped", message=state.error.message)
        err = state.error
        return Outcome("failed", state.statistics, err.reason, err.message, err.retryable)

    async def _drive(self, job: _Job, recovered: bool, known: Any) -> Any:
        config = job.config
        state = None
        if job.submitted or recovered:
            job.inserted = job.submitted
            try:
                state = known if known is not None else await self._get(job)
            finally:
                self.unattached -= 1
                if self.unattached <= 0:
                    self.attached.set()
            if state is not None:
                job.inserted = True
                if not job.submitted:
                    await self._submitted(job.job_id, job.run_id, True)
                    job.submitted = True
            else:
                await self.attached.wait()
        if state is None:
            await self._ensure_destination(config, job.deadline)
            if job.cancelled():
                raise _NotInserted()
            adopted, state = await self._retrying(lambda: self._submit(job.job_id, config), job.deadline)
            job.inserted = True
            job.deadline = time.time() + self.config.job_timeout
            if not job.submitted:  # a recovered job BigQuery answered 404 for is recorded already
                await self._submitted(job.job_id, job.run_id, adopted)
                job.submitted = True
            if job.cancelled():
                await self._cancel_quietly(job)
        delay = self.config.poll_initial
        started = time.monotonic()
        while state is None or state.state != "DONE":
            if time.time() >= job.deadline:
                raise JobTimedOut(job.job_id)
            # Most jobs end within seconds: poll those as before (cheap calls, quick notice),
            # then wait server-side for the long ones instead of polling every poll_max seconds.
            early = time.monotonic() - started < self.config.wait_after
            server_wait = self.config.server_wait and config.kind == "query"
            waited = await self._wait(job) if server_wait and not early else None
            if waited is None:
                await asyncio.sleep(min(delay, max(job.deadline - time.time(), 0.0)))
                # Without server-side waits, polling stays at early_poll_max: a finished parent
                # is noticed within about a second.
                fast = early or not self.config.server_wait
                cap = min(self.config.poll_max, self.config.early_poll_max) if fast else self.config.poll_max
                delay = min(delay * 1.5, cap)
            elif waited is False:
                continue  # BigQuery says it is still running: no need to ask again for its state
            state = await self._get(job)
            if state is None:  # BigQuery lost it (should not happen): submit under the same id
                await self._retrying(lambda: self.jobs.submit(job.job_id, config), job.deadline)
        return state

    async def _submit(self, job_id: str, config: JobConfig) -> tuple[bool, Any]:
        """(adopted, the state the insert answered with when the client gives it)."""
        submit_state = getattr(self.jobs, "submit_state", None)
        if submit_state is not None:
            return await submit_state(job_id, config)
        return not await self.jobs.submit(job_id, config), None

    async def _wait(self, job: _Job) -> bool | None:
        """Wait server-side for the job's end: True when it ended (ask its state), False when it
        still runs, None when no wait is possible or it failed (poll with backoff instead)."""
        wait = getattr(self.jobs, "wait", None)
        if wait is None:
            return None
        timeout = min(self.config.wait_max, job.deadline - time.time())
        if timeout <= 0.05:
            return None
        t0 = time.monotonic()
        try:
            done = await wait(job.job_id, project=job.config.project, timeout=timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # a rate limit, say: never a tight loop of waits and gets
            return None
        if done is None:
            return None  # every wait slot is busy
        self.calls += 1
        if not done and time.monotonic() - t0 < timeout / 4:
            return None  # a server that ignores timeoutMs would make this loop spin: poll then
        return done

    async def _ensure_destination(self, config: JobConfig, deadline: float) -> None:
        if config.kind not in ("query", "load") or not config.destination or self.ensure_dataset is None:
            return
        dataset = config.destination.rsplit(".", 1)[0]
        if dataset in self._datasets:
            return
        async with self._dataset_locks.setdefault(dataset, asyncio.Lock()):
            if dataset not in self._datasets:
                await self._retrying(lambda: self.ensure_dataset(dataset), deadline)
                self._datasets.add(dataset)

    async def _get(self, job: _Job) -> Any:
        # The job's own project, from its snapshot: the configured project may change while it runs.
        self.calls += 1
        return await self._retrying(lambda: self.jobs.get(job.job_id, project=job.config.project), job.deadline)

    async def _cancel_quietly(self, job: _Job) -> None:
        try:
            await self.jobs.cancel(job.job_id, project=job.config.project)
        except Exception as exc:
            log.warning("could not cancel a job", extra={"job_id": job.job_id, "error": str(exc)})

    async def _stop_and_measure(self, job: _Job) -> JobStatistics | None:
        """Cancel a job we give up on, and what it billed so far (for costs), best effort."""
        await self._cancel_quietly(job)
        try:
            state = await asyncio.wait_for(self.jobs.get(job.job_id, project=job.config.project), STATS_TIMEOUT)
        except Exception:
            return None
        return state.statistics if state is not None else None

    async def _retrying(self, call: Callable[[], Awaitable[Any]], deadline: float) -> Any:
        """BigQuery unreachable: keep trying with backoff until the job's deadline; nothing is
        failed for a network blip. A refusal that will repeat (not retryable) is raised."""
        delay = self.config.retry_delay
        while True:
            try:
                return await call()
            except Exception as exc:
                if not getattr(exc, "retryable", False) and not isinstance(exc, (OSError, asyncio.TimeoutError)):
                    raise
                if time.time() + delay >= deadline:
                    raise JobTimedOut() from exc
                log.warning("BigQuery call failed; retrying", extra={"error": str(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
