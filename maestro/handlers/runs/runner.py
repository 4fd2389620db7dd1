"""The runner: turns planned runs into BigQuery jobs, exactly once, in priority order.

For every table whose parents in the run have succeeded, the runner appends ``JobPlanned`` with a
deterministic BigQuery job id *before* submitting; BigQuery's 409 on a known id means "adopt it".
It polls with backoff and appends the outcome with the job's statistics. A failure marks the
table's descendants in the run ``upstream_failed``; independent branches go on.

Everything it knows is in the log (and the inline ``runs`` projection). At start-up it reloads
every unfinished run and re-attaches every job planned but not finished: one ``jobs.list`` since
the oldest of them was planned gives their states (a ``jobs.get`` each for any it does not show);
a job only planned that BigQuery has is adopted, and one BigQuery never saw is inserted under its
recorded id once all are looked up. So ``kill -9`` at any instant loses nothing and bills nothing
twice (tests/integration/test_crash.py). Only one process runs jobs per database (a leader lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from maestro.errors import ConcurrencyConflict
from maestro.events.model import Metadata
from maestro.events.runs import (
    JobCancelled,
    JobConfig,
    JobFailed,
    JobPlanned,
    JobSkipped,
    JobSubmitted,
    JobSucceeded,
    RunFinished,
)
from maestro.events.store import NO_STREAM, EventStore

log = logging.getLogger(__name__)
ACTOR = "system:runner"
# Listing jobs at start-up from this long before the oldest unfinished job was planned (clock skew
# between PostgreSQL and BigQuery).
LIST_MARGIN = dt.timedelta(minutes=10)
UPSTREAM_BAD = frozenset({"failed", "skipped", "cancelled"})
TERMINAL = frozenset({"succeeded", "failed", "skipped", "cancelled"})


class Jobs(Protocol):
    """What the runner needs of BigQuery (maestro.adapters.bigquery.BigQueryJobs)."""

    async def submit(self, job_id: str, config: JobConfig) -> bool: ...
    async def get(self, job_id: str, *, project: str | None = None) -> Any: ...
    async def cancel(self, job_id: str) -> None: ...


@dataclass
class TableState:
    table_id: str
    name: str
    priority: int
    parents: list[str]
    config: JobConfig
    extract: dict[str, Any] | None
    owner_id: str | None
    group_id: str | None
    state: str = "pending"
    attempt: int = 0
    job_id: str | None = None


@dataclass
class RunState:
    """One run in memory. Readiness is incremental: ``unmet`` counts each table's parents that have
    not succeeded, and ``changed`` queues the tables whose state moved, so deciding after a
    completion costs the completed table's children, not the whole run (a run's parents are all
    its ancestors in the run: scanning every table's parents on every completion was quadratic)."""

    run_id: str
    tables: dict[str, TableState]
    workers: int | None
    cancel_requested: bool = False
    in_flight: int = 0
    children: dict[str, list[str]] = field(default_factory=dict)
    unmet: dict[str, int] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # table ids whose state moved, to propagate
    rescan: bool = True  # look at every pending table (after loading, a retry, a cancel)
    finishing: bool = False
    # The correlation id of the run's RunPlanned: every job event of the run carries it, so
    # "everything this run did" is one audit query.
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        for t in self.tables.values():
            self.unmet[t.table_id] = sum(1 for p in t.parents if self.tables[p].state != "succeeded")
            for p in t.parents:
                self.children.setdefault(p, []).append(t.table_id)

    def moved(self, table: TableState, state: str) -> None:
        """Set a table's state; a success or a dead end is propagated to its children later."""
        table.state = state
        self.changed.append(table.table_id)


@dataclass(frozen=True)
class RunnerConfig:
    workers: int = 16
    poll_initial: float = 0.05
    poll_max: float = 5.0
    retry_delay: float = 1.0
    bucket: str = "maestro-local"


class Runner:
    def __init__(
        self,
        store: EventStore,
        jobs: Jobs,
        job_id_for,
        config: RunnerConfig = RunnerConfig(),
        *,
        extract_files=None,
        ensure_dataset=None,
    ) -> None:
        self.store = store
        self.pool = store.pool
        self.jobs = jobs
        self.job_id_for = job_id_for
        self.config = config
        self.extract_files = extract_files  # async (uris) -> list of files, for extract jobs
        # async ("project.dataset") -> None: a destination dataset is created on first use, as
        # dbt creates schemas; the catalog's datasets need not exist in BigQuery beforehand.
        self.ensure_dataset = ensure_dataset
        self._datasets: set[str] = set()
        self._dataset_locks: dict[str, asyncio.Lock] = {}
        self.runs: dict[str, RunState] = {}
        self._ready: list[tuple[int, str, str]] = []  # (-priority, run id, table id)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._attached = asyncio.Event()  # start-up: every unfinished job has been looked up
        self._unattached = 0
        self._stop = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    def forget_datasets(self) -> None:
        """Destinations may live elsewhere now (the BigQuery configuration changed)."""
        self._datasets.clear()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._stop.clear()
        position = await self.store.last_position()
        await self.recover()
        self._main = asyncio.get_running_loop().create_task(self._follow(position), name="runner")

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def recover(self) -> None:
        """Reload unfinished runs; re-attach every job that was planned but not finished."""
        for row in await self.pool.fetch("SELECT run_id FROM runs WHERE status = 'running'"):
            await self._load_run(row["run_id"])
        unfinished = await self.pool.fetch(
            "SELECT job_id, run_id, table_id, attempt, config::text, state, planned_at FROM jobs "
            "WHERE state IN ('planned', 'submitted')"
        )
        listed = await self._list_states(min((j["planned_at"] for j in unfinished), default=None))
        # Re-attach first: every unfinished job is looked up (listed, or one jobs.get) before any
        # job BigQuery never saw is inserted (on the local stack an insert runs its query first).
        self._attached.clear()
        self._unattached = len(unfinished)
        if not unfinished:
            self._attached.set()
        for job in unfinished:
            run = self.runs.get(job["run_id"]) if job["run_id"] else None
            table = run.tables.get(job["table_id"]) if run else None
            if table is not None:
                run.in_flight += 1
            self._in_flight += 1
            config = JobConfig.model_validate_json(job["config"])
            self._spawn(self._execute(job["job_id"], job["run_id"], job["table_id"], config,
                                      submitted=job["state"] == "submitted", recovered=True,
                                      known=listed.get(job["job_id"])))
        for run in list(self.runs.values()):
            await self._resume_extracts(run)
            await self._advance(run)
        log.info("runner recovered", extra={"runs": len(self.runs), "jobs_reattached": len(unfinished)})

    async def _list_states(self, since: Any) -> dict[str, Any]:
        """One jobs.list for every job created since the oldest unfinished one was planned:
        re-attaching a thousand jobs in a page, not a thousand jobs.get. Only an accelerator:
        a job it does not show is looked up by id, and a failure falls back to that too."""
        lister = getattr(self.jobs, "list_states", None)
        if since is None or lister is None:
            return {}
        try:
            return await lister(since=since - LIST_MARGIN)
        except Exception as exc:
            log.warning("could not list BigQuery jobs; re-attaching one by one", extra={"error": str(exc)})
            return {}

    async def _load_run(self, run_id: str) -> RunState:
        run_row = await self.pool.fetchrow("SELECT workers, cancel_requested FROM runs WHERE run_id = $1", run_id)
        rows = await self.pool.fetch(
            "SELECT table_id, name, priority, parents, config::text, extract::text, owner_id, group_id, "
            "state, attempt, job_id FROM run_tables WHERE run_id = $1",
            run_id,
        )
        tables = {
            r["table_id"]: TableState(
                r["table_id"], r["name"], r["priority"], list(r["parents"]),
                JobConfig.model_validate_json(r["config"]),
                orjson.loads(r["extract"]) if r["extract"] else None,
                r["owner_id"], r["group_id"], _memory_state(r["state"]), r["attempt"], r["job_id"],
            )
            for r in rows
        }
        # A table whose job failed retryably, with attempts left, goes back in line.
        for t in tables.values():
            if t.state == "failed" and t.job_id is not None:
                job = await self.pool.fetchrow("SELECT retryable FROM jobs WHERE job_id = $1", t.job_id)
                if job is not None and job["retryable"] and t.attempt < t.config.max_attempts:
                    t.state = "pending"
        run = RunState(run_id, tables, run_row["workers"], run_row["cancel_requested"])
        run.correlation_id = await self.pool.fetchval(
            "SELECT metadata->>'correlation_id' FROM events WHERE stream_id = $1 AND version = 1",
            f"run-{run_id}",
        )
        self.runs[run_id] = run
        return run

    async def _resume_extracts(self, run: RunState) -> None:
        """A crash between a query's success and its extract's plan leaves 'extracting' alone."""
        for t in run.tables.values():
            if t.state == "extracting":
                planned = await self.pool.fetchval(
                    "SELECT count(*) FROM jobs WHERE run_id = $1 AND table_id = $2 AND kind = 'extract'",
                    run.run_id, t.table_id,
                )
                if not planned:
                    await self._plan_extract(run, t)

    # ------------------------------------------------------------------ following the log
    async def _follow(self, position: int) -> None:
        types = ["RunPlanned", "RunCancelRequested", "RunRetryRequested"]
        async for event in self.store.subscribe(position, types=types, stop=self._stop):
            run_id = event.event.run_id  # type: ignore[attr-defined]
            try:
                if event.type == "RunPlanned" or event.type == "RunRetryRequested":
                    if run_id in self.runs and event.type == "RunPlanned":
                        continue
                    await self._load_run(run_id)
                    await self._advance(self.runs[run_id])
                elif event.type == "RunCancelRequested" and run_id in self.runs:
                    await self._cancel(self.runs[run_id])
            except Exception:
                log.exception("runner failed to handle event", extra={"run_id": run_id, "type": event.type})

    # ------------------------------------------------------------------ deciding
    async def _advance(self, run: RunState) -> None:
        """Skip what can no longer run, queue what is ready, finish the run when all is done.

        Looks at the children of the tables whose state moved since the last call (all pending
        tables after a load, a retry or a cancel). Calls may interleave (each ``await`` in
        ``_skip``); every moved table is taken off the queue by exactly one of them."""
        while True:
            candidates: set[str] = set()
            if run.rescan or run.cancel_requested:
                run.rescan = False
                for t in run.tables.values():
                    if run.cancel_requested and t.state == "ready":  # queued, not started: drop it
                        t.state = "pending"
                    if t.state == "pending":
                        candidates.add(t.table_id)
            moved, run.changed = run.changed, []
            for tid in moved:
                state = run.tables[tid].state
                if state == "succeeded":
                    for child in run.children.get(tid, ()):
                        run.unmet[child] -= 1
                        if run.unmet[child] <= 0:
                            candidates.add(child)
                elif state in UPSTREAM_BAD:
                    candidates.update(run.children.get(tid, ()))
                elif state == "pending":  # a retry with attempts left
                    candidates.add(tid)
            if not candidates:
                break
            for tid in sorted(candidates):
                t = run.tables[tid]
                if t.state != "pending":
                    continue
                if run.cancel_requested:
                    await self._skip(run, t, "cancelled", "the run was cancelled")
                    continue
                bad = [p for p in t.parents if run.tables[p].state in UPSTREAM_BAD]
                if bad:
                    await self._skip(run, t, "upstream_failed", ", ".join(run.tables[p].name for p in bad))
                elif run.unmet[tid] <= 0:
                    t.state = "ready"
                    heapq.heappush(self._ready, (-t.priority, run.run_id, t.table_id))
        self._dispatch()
        if run.in_flight == 0 and not run.finishing and all(t.state in TERMINAL for t in run.tables.values()):
            run.finishing = True  # one RunFinished, however many callers get here
            await self._finish(run)

    def _dispatch(self) -> None:
        deferred = []
        while self._ready and self._in_flight < self.config.workers:
            _, run_id, table_id = heapq.heappop(self._ready)
            run = self.runs.get(run_id)
            if run is None or run.tables[table_id].state != "ready":
                continue
            if run.workers is not None and run.in_flight >= run.workers:
                deferred.append((-run.tables[table_id].priority, run_id, table_id))
                continue
            table = run.tables[table_id]
            table.state = "running"
            table.attempt += 1
            run.in_flight += 1
            self._in_flight += 1
            self._spawn(self._start_job(run, table))
        for item in deferred:
            heapq.heappush(self._ready, item)

    async def _start_job(self, run: RunState, table: TableState) -> None:
        deleted = await self.pool.fetchval("SELECT deleted FROM catalog_tables WHERE table_id = $1", table.table_id)
        if deleted is None or deleted:
            self._release(run)
            await self._skip(run, table, "table_deleted", "the table was deleted after the run was planned")
            await self._advance(run)
            return
        job_id = self.job_id_for(run.run_id, table.table_id, table.attempt, "query")
        table.job_id = job_id
        await self._append(f"job-{job_id}", NO_STREAM, JobPlanned(
            job_id=job_id, run_id=run.run_id, table_id=table.table_id, attempt=table.attempt,
            config=table.config, owner_id=table.owner_id, group_id=table.group_id,
        ))
        await self._execute(job_id, run.run_id, table.table_id, table.config, submitted=False)

    async def _plan_extract(self, run: RunState, table: TableState) -> None:
        settings = table.extract or {}
        fmt = settings.get("format", "csv")
        compression = settings.get("compression", "none")
        suffix = {"csv": "csv", "ndjson": "json", "avro": "avro", "parquet": "parquet"}[fmt]
        if compression == "gzip" and fmt in ("csv", "ndjson"):
            suffix += ".gz"
        dataset, name = table.config.destination.split(".")[-2:]
        uri = f"gs://{self.config.bucket}/extracts/{dataset}/{name}/{run.run_id}/part-*.{suffix}"
        config = JobConfig(
            kind="extract", project=table.config.project, source=table.config.destination,
            destination_uris=[uri], format=fmt, compression=compression, labels=table.config.labels,
        )
        job_id = self.job_id_for(run.run_id, table.table_id, 1, "extract")
        run.in_flight += 1
        self._in_flight += 1
        await self._append(f"job-{job_id}", NO_STREAM, JobPlanned(
            job_id=job_id, run_id=run.run_id, table_id=table.table_id, attempt=1, config=config,
            owner_id=table.owner_id, group_id=table.group_id,
        ))
        self._spawn(self._execute(job_id, run.run_id, table.table_id, config, submitted=False))

    # ------------------------------------------------------------------ executing
    async def _execute(
        self, job_id: str, run_id: str | None, table_id: str, config: JobConfig, *, submitted: bool,
        recovered: bool = False, known: Any = None,
    ) -> None:
        """Submit (or adopt) one job, poll it to the end, and record the outcome.

        A job found unfinished at start-up is looked up first (``known``: its state from the
        start-up listing; else one ``jobs.get``). If BigQuery has a job that was only planned (the
        crash came after the insert), it is adopted without a second insert and polled at once;
        if not, it is inserted under its recorded id once every unfinished job has been looked up.
        """
        delay = self.config.poll_initial
        state = None
        if submitted or recovered:
            try:
                state = known if known is not None else await self._get(job_id, config.project)
            finally:
                self._unattached -= 1
                if self._unattached <= 0:
                    self._attached.set()
            if state is not None and not submitted:
                await self._append(f"job-{job_id}", 1, JobSubmitted(job_id=job_id, run_id=run_id, adopted=True))
            elif state is None:
                await self._attached.wait()
        if state is None:
            if config.kind == "query" and config.destination and self.ensure_dataset is not None:
                dataset = config.destination.rsplit(".", 1)[0]
                if dataset not in self._datasets:
                    async with self._dataset_locks.setdefault(dataset, asyncio.Lock()):
                        if dataset not in self._datasets:
                            await self._retrying(lambda: self.ensure_dataset(dataset))
                            self._datasets.add(dataset)
            adopted = not await self._retrying(lambda: self.jobs.submit(job_id, config))
            await self._append(f"job-{job_id}", 1, JobSubmitted(job_id=job_id, run_id=run_id, adopted=adopted))
        while state is None or state.state != "DONE":
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.config.poll_max)
            state = await self._get(job_id, config.project)
            if state is None:  # BigQuery lost it (should not happen): submit under the same id
                await self._retrying(lambda: self.jobs.submit(job_id, config))
        await self._record(job_id, run_id, table_id, config, state)

    async def _get(self, job_id: str, project: str) -> Any:
        # The job's own project, from its snapshot: the configured project may change while it runs.
        return await self._retrying(lambda: self.jobs.get(job_id, project=project))

    async def _retrying(self, call) -> Any:
        """BigQuery unreachable: keep trying with backoff; nothing is failed for a network blip."""
        delay = self.config.retry_delay
        while True:
            try:
                return await call()
            except Exception as exc:
                if not getattr(exc, "retryable", False) and not isinstance(exc, (OSError, asyncio.TimeoutError)):
                    raise
                log.warning("BigQuery call failed; retrying", extra={"error": str(exc), "delay": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _record(self, job_id: str, run_id: str | None, table_id: str, config: JobConfig, state: Any) -> None:
        version = 2  # a job's stream: JobPlanned, JobSubmitted, then its outcome
        run = self.runs.get(run_id) if run_id else None
        table = run.tables.get(table_id) if run else None
        if state.error is None:
            files = list(state.destination_uris)
            if config.kind == "extract" and self.extract_files is not None:
                files = await self.extract_files(config.destination_uris)
            await self._append(f"job-{job_id}", version, JobSucceeded(
                job_id=job_id, run_id=run_id, table_id=table_id, statistics=state.statistics, destination_uris=files,
            ))
            if run is not None and table is not None:
                self._release(run)
                if config.kind == "query" and table.extract:
                    table.state = "extracting"
                    await self._plan_extract(run, table)
                else:
                    run.moved(table, "succeeded")
        elif state.error.reason == "stopped" or (run is not None and run.cancel_requested):
            await self._append(f"job-{job_id}", version, JobCancelled(job_id=job_id, run_id=run_id, table_id=table_id))
            if run is not None and table is not None:
                self._release(run)
                run.moved(table, "cancelled")
        else:
            err = state.error
            await self._append(f"job-{job_id}", version, JobFailed(
                job_id=job_id, run_id=run_id, table_id=table_id, reason=err.reason, message=err.message,
                retryable=err.retryable, statistics=state.statistics,
            ))
            if run is not None and table is not None:
                self._release(run)
                if err.retryable and table.attempt < config.max_attempts and config.kind == "query":
                    await asyncio.sleep(self.config.retry_delay * table.attempt)
                    run.moved(table, "pending")
                else:
                    run.moved(table, "failed")
        if run is not None:
            await self._advance(run)
        else:
            self._in_flight -= 1
            self._dispatch()

    def _release(self, run: RunState) -> None:
        run.in_flight -= 1
        self._in_flight -= 1

    # ------------------------------------------------------------------ endings
    async def _skip(self, run: RunState, table: TableState, reason: str, detail: str) -> None:
        run.moved(table, "skipped" if reason != "cancelled" else "cancelled")
        job_id = self.job_id_for(run.run_id, table.table_id, max(table.attempt, 1), "skip")
        await self._append(f"job-{job_id}", NO_STREAM, JobSkipped(
            job_id=job_id, run_id=run.run_id, table_id=table.table_id, reason=reason, detail=detail,  # type: ignore[arg-type]
        ), conflict_ok=True)

    async def _cancel(self, run: RunState) -> None:
        run.cancel_requested = True
        for t in run.tables.values():
            if t.state in ("running", "extracting") and t.job_id is not None:
                with contextlib.suppress(Exception):
                    await self.jobs.cancel(t.job_id)
        await self._advance(run)

    async def _finish(self, run: RunState) -> None:
        counts: dict[str, int] = {}
        for t in run.tables.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        if all(t.state == "succeeded" for t in run.tables.values()):
            status = "succeeded"  # a cancel that came too late to stop anything
        elif run.cancel_requested:
            status = "cancelled"
        else:
            status = "failed"
        version = await self.store.stream_version(f"run-{run.run_id}") or 0
        await self._append(f"run-{run.run_id}", version, RunFinished(run_id=run.run_id, status=status, counts=counts))  # type: ignore[arg-type]
        self.runs.pop(run.run_id, None)
        log.info("run finished", extra={"run_id": run.run_id, "status": status, "counts": counts})

    def _metadata(self, stream: str, event: Any) -> Metadata:
        """Who and why: the runner, within the run's correlation, caused by the run's plan (a job's
        first event) or by the job's own plan (everything after it)."""
        run_id = getattr(event, "run_id", None)
        run = self.runs.get(run_id) if run_id else None
        if stream.startswith("job-") and not isinstance(event, (JobPlanned, JobSkipped)):
            causation = f"{stream}@1"
        else:
            causation = f"run-{run_id}@1" if run_id else None
        if run is not None and run.correlation_id:
            return Metadata(actor=ACTOR, correlation_id=run.correlation_id, causation_id=causation)
        return Metadata(actor=ACTOR, causation_id=causation)

    async def _append(self, stream: str, expected: int, event: Any, *, conflict_ok: bool = False) -> None:
        try:
            await self.store.append(stream, expected, [event], self._metadata(stream, event))
        except ConcurrencyConflict:
            if not conflict_ok:
                raise

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("runner task failed", exc_info=t.exception())

        task.add_done_callback(done)


def _memory_state(projected: str) -> str:
    """The runner's view of a projected table state after a restart."""
    return {"planned": "running"}.get(projected, projected)
