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
Extract jobs, and queries when every wait slot is taken, are polled with backoff
(docs/benchmarks.md has the figures, and why the emulator answers waits late).
"""

from __future__ import annotations

import asyncio
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
        extract_files: Callable[[list[str]], Awaitable[list[str]]] | None = None,
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
    ) -> Outcome:
        """Drive one job to its end. ``planned_at`` (time.time()) starts its deadline."""
        deadline = (planned_at or time.time()) + self.config.job_timeout
        try:
            state = await self._drive(job_id, run_id, config, submitted, recovered, known, deadline)
        except JobTimedOut:
            await self._cancel_quietly(job_id, config.project)
            return Outcome("failed", reason="timeout", retryable=False, message=(
                f"the job did not finish within {self.config.job_timeout:.0f} s of being planned; "
                "it was cancelled"
            ))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refusal BigQuery will repeat: the job fails, the run goes on
            log.warning("job failed before it ran", extra={"job_id": job_id, "error": str(exc)})
            return failure(exc)
        if state.error is None:
            files = list(state.destination_uris)
            if config.kind == "extract" and self.extract_files is not None:
                try:
                    files = await self._retrying(lambda: self.extract_files(config.destination_uris), deadline)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    return failure(exc, reason="extract_files") if not isinstance(exc, JobTimedOut) else \
                        Outcome("failed", reason="timeout", message="listing the extract's files timed out")
            return Outcome("succeeded", state.statistics, files=files)
        if state.error.reason == "stopped":
            return Outcome("cancelled", state.statistics, reason="stopped", message=state.error.message)
        err = state.error
        return Outcome("failed", state.statistics, err.reason, err.message, err.retryable)

    async def _drive(
        self, job_id: str, run_id: str | None, config: JobConfig, submitted: bool, recovered: bool,
        known: Any, deadline: float,
    ) -> Any:
        state = None
        if submitted or recovered:
            try:
                state = known if known is not None else await self._get(job_id, config.project, deadline)
            finally:
                self.unattached -= 1
                if self.unattached <= 0:
                    self.attached.set()
            if state is not None and not submitted:
                await self._submitted(job_id, run_id, True)
            elif state is None:
                await self.attached.wait()
        if state is None:
            await self._ensure_destination(config, deadline)
            adopted, state = await self._retrying(lambda: self._submit(job_id, config), deadline)
            await self._submitted(job_id, run_id, adopted)
        delay = self.config.poll_initial
        started = time.monotonic()
        while state is None or state.state != "DONE":
            if time.time() >= deadline:
                raise JobTimedOut(job_id)
            # Most jobs end within seconds: poll those as before (cheap calls, quick notice),
            # then wait server-side for the long ones instead of polling every poll_max seconds.
            early = time.monotonic() - started < self.config.wait_after
            waited = await self._wait(job_id, config, deadline) if config.kind == "query" and not early else None
            if waited is None or (waited is False and self._waits_short):
                await asyncio.sleep(min(delay, max(deadline - time.time(), 0.0)))
                cap = min(self.config.poll_max, self.config.early_poll_max) if early else self.config.poll_max
                delay = min(delay * 1.5, cap)
            if waited is False:
                continue  # BigQuery says it is still running: no need to ask again for its state
            state = await self._get(job_id, config.project, deadline)
            if state is None:  # BigQuery lost it (should not happen): submit under the same id
                await self._retrying(lambda: self.jobs.submit(job_id, config), deadline)
        return state

    async def _submit(self, job_id: str, config: JobConfig) -> tuple[bool, Any]:
        """(adopted, the state the insert answered with when the client gives it)."""
        submit_state = getattr(self.jobs, "submit_state", None)
        if submit_state is not None:
            return await submit_state(job_id, config)
        return not await self.jobs.submit(job_id, config), None

    _waits_short = False  # set when the server returned an unfinished wait early (see _wait)

    async def _wait(self, job_id: str, config: JobConfig, deadline: float) -> bool | None:
        """Wait server-side for the job's end: True done (or unknown: ask its state), False still
        running, None when no wait is possible (poll instead)."""
        wait = getattr(self.jobs, "wait", None)
        if wait is None:
            return None
        timeout = min(self.config.wait_max, deadline - time.time())
        if timeout <= 0.05:
            return None
        t0 = time.monotonic()
        try:
            done = await wait(job_id, project=config.project, timeout=timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # the state call that follows says what happened
            return True
        if done is None:
            return None  # every wait slot is busy
        self.calls += 1
        # A server that ignores timeoutMs would make this loop spin: poll with backoff then.
        self._waits_short = not done and time.monotonic() - t0 < timeout / 4
        return done

    async def _ensure_destination(self, config: JobConfig, deadline: float) -> None:
        if config.kind != "query" or not config.destination or self.ensure_dataset is None:
            return
        dataset = config.destination.rsplit(".", 1)[0]
        if dataset in self._datasets:
            return
        async with self._dataset_locks.setdefault(dataset, asyncio.Lock()):
            if dataset not in self._datasets:
                await self._retrying(lambda: self.ensure_dataset(dataset), deadline)
                self._datasets.add(dataset)

    async def _get(self, job_id: str, project: str, deadline: float) -> Any:
        # The job's own project, from its snapshot: the configured project may change while it runs.
        self.calls += 1
        return await self._retrying(lambda: self.jobs.get(job_id, project=project), deadline)

    async def _cancel_quietly(self, job_id: str, project: str) -> None:
        try:
            await self.jobs.cancel(job_id, project=project)
        except Exception as exc:
            log.warning("could not cancel a timed-out job", extra={"job_id": job_id, "error": str(exc)})

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
