"""The runner: turns planned runs into BigQuery jobs, exactly once, in priority order.

For every table whose parents in the run have succeeded, the runner appends ``JobPlanned`` with a
deterministic BigQuery job id *before* submitting; BigQuery's 409 on a known id means "adopt it".
The job's execution (maestro.handlers.runs.executor) ends in an outcome the runner records as the
job's last event; a failure marks the table's descendants in the run ``upstream_failed`` while
independent branches go on. Every run ends in exactly one ``RunFinished`` (per attempt of it).

Everything it knows is in the log (and the inline ``runs`` projection): start-up, and every re-take
of leadership after a database outage, rebuilds memory from there (maestro.handlers.runs.recovery).
It follows the log from the store's no-skip safe position, so a ``RunPlanned`` that commits late
with a lower position is still executed. Only the leader runs it (maestro.services fences it).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import Any

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
)
from maestro.events.store import ANY_VERSION, NO_STREAM, EventStore
from maestro.handlers.runs.executor import Jobs, JobExecutor, Outcome
from maestro.handlers.runs.external import wait_external
from maestro.handlers.runs.imports import ImportContext, run_import
from maestro.handlers.runs.journal import append_through_blips, metadata, through_blips
from maestro.handlers.runs.recovery import recover
from maestro.handlers.runs.follow import COMPONENT, follow
from maestro.handlers.runs.guard import guarded
from maestro.handlers.runs.finish import finish
from maestro.handlers.runs.state import (
    TERMINAL,
    UPSTREAM_BAD,
    RunnerConfig,
    RunState,
    Slot,
    TableState,
    extract_config,
)
from maestro.health import Health

__all__ = ["Jobs", "Runner", "RunnerConfig"]

log = logging.getLogger(__name__)
STOP_TIMEOUT = 10.0


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
        health: Health | None = None,
        imports: ImportContext | None = None,
    ) -> None:
        self.store = store
        self.pool = store.pool
        self.jobs = jobs
        self.job_id_for = job_id_for
        self.executor = JobExecutor(
            jobs, config, submitted=self._record_submitted, extract_files=extract_files,
            ensure_dataset=ensure_dataset,
        )
        self._config = config
        self.imports = imports  # sources and storage for import tables (maestro.handlers.runs.imports)
        self.health = health or Health()
        self.runs: dict[str, RunState] = {}
        self._ready: list[tuple[int, str, str]] = []  # (-priority, run id, table id)
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        # Set when the runner cannot go on with what it has in memory (the database went away
        # under it): whoever supervises it stops it and starts it again, which recovers.
        self.broken = asyncio.Event()

    @property
    def jobs(self) -> Jobs:
        return self._jobs

    @jobs.setter
    def jobs(self, value: Jobs) -> None:
        self._jobs = value
        if hasattr(self, "executor"):
            self.executor.jobs = value

    @property
    def config(self) -> RunnerConfig:
        return self._config

    @config.setter
    def config(self, value: RunnerConfig) -> None:
        self._config = value
        self.executor.config = value

    def forget_datasets(self) -> None:
        """Destinations may live elsewhere now (the BigQuery configuration changed)."""
        self.executor.forget_datasets()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._stop.clear()
        self.broken.clear()
        self.health.set(COMPONENT, "starting", "recovering runs and jobs")
        # The safe position, not max(position): an append still in flight below the head (a
        # RunPlanned committing late) is read when it lands. Events already reflected in what
        # recover() loads are recognised and skipped.
        position = await self.store.head_position()
        await recover(self)
        self._main = asyncio.get_running_loop().create_task(follow(self, position), name="runner")
        self.health.ok(COMPONENT, "leader")

    async def stop(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._main, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            # Bounded: a task stuck in a driver call on a dead network must not hold the fence.
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            if pending:
                log.warning("runner tasks still stopping", extra={"tasks": len(pending)})
        self._tasks.clear()
        self._main = None
        # Memory is rebuilt from the log at the next start.
        self.runs.clear()
        self._ready.clear()
        self.in_flight = 0

    # ------------------------------------------------------------------ deciding
    async def advance(self, run: RunState) -> None:
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
        while self._ready and self.in_flight < self.config.workers:
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
            slot = Slot(self, run)
            self._spawn(self._start_job(run, table, slot), run, table, slot)
        for item in deferred:
            heapq.heappush(self._ready, item)

    async def _start_job(self, run: RunState, table: TableState, slot: Slot) -> None:
        job_id = self.job_id_for(run.run_id, table.table_id, table.attempt, table.config.kind)
        table.job_id = job_id  # from here on, a failure of this task is this job's
        deleted = await self._db(lambda: self.pool.fetchval(
            "SELECT deleted FROM catalog_tables WHERE table_id = $1", table.table_id
        ))
        if deleted is None or deleted:
            slot.release()
            await self._skip(run, table, "table_deleted", "the table was deleted after the run was planned")
            await self.advance(run)
            return
        try:
            await self._append(f"job-{job_id}", NO_STREAM, JobPlanned(
                job_id=job_id, run_id=run.run_id, table_id=table.table_id, attempt=table.attempt,
                config=table.config, owner_id=table.owner_id, group_id=table.group_id,
            ))
        except ConcurrencyConflict:
            # Planned already: by a leader that lost its lock a moment ago. Re-attach to it as
            # recovery would (looked up first, inserted only if BigQuery never saw it).
            submitted = await self._db(lambda: self.pool.fetchval(
                "SELECT state <> 'planned' FROM jobs WHERE job_id = $1", job_id))
            self.executor.unattached += 1
            await self._run_job(job_id, run, table, table.table_id, table.config, slot,
                                submitted=bool(submitted), recovered=True)
            return
        await self._run_job(job_id, run, table, table.table_id, table.config, slot, submitted=False)

    async def plan_extract(self, run: RunState, table: TableState) -> None:
        config = extract_config(table, run.run_id, self.config.bucket)
        # The query's attempt names the extract: a retried run extracts under a new id.
        attempt = max(table.attempt, 1)
        job_id = self.job_id_for(run.run_id, table.table_id, attempt, "extract")
        table.job_id = job_id
        await self._append(f"job-{job_id}", NO_STREAM, JobPlanned(
            job_id=job_id, run_id=run.run_id, table_id=table.table_id, attempt=attempt, config=config,
            owner_id=table.owner_id, group_id=table.group_id,
        ))
        slot = Slot(self, run)  # after the plan: a failed append holds no slot
        self._spawn(self._run_job(job_id, run, table, table.table_id, config, slot, submitted=False), run, table, slot)

    def spawn_job(
        self, job_id: str, run: RunState | None, table: TableState | None, config: JobConfig, *,
        submitted: bool, table_id: str, recovered: bool = False, known: Any = None,
        planned_at: float | None = None, submitted_at: float | None = None,
    ) -> None:
        """Execute (re-attach) a job already planned, in its own task holding a worker slot."""
        slot = Slot(self, run if table is not None else None)
        self._spawn(self._run_job(
            job_id, run, table, table_id, config, slot, submitted=submitted, recovered=recovered,
            known=known, planned_at=planned_at, submitted_at=submitted_at,
        ), run, table, slot)

    async def _run_job(
        self, job_id: str, run: RunState | None, table: TableState | None, table_id: str,
        config: JobConfig, slot: Slot, *, submitted: bool, recovered: bool = False, known: Any = None,
        planned_at: float | None = None, submitted_at: float | None = None,
    ) -> None:
        run_id = run.run_id if run is not None else None
        cancelled = (lambda: run.cancel_requested) if run is not None else (lambda: False)
        if config.kind == "import":
            outcome = await run_import(self, job_id, run_id, table_id, config, cancelled=cancelled)
        elif config.kind == "external":
            # A wait is not work: it gives its worker back, so waiting tables never starve the
            # others (its outcome is recorded as any job's; releasing twice is a no-op).
            slot.release()
            self._dispatch()
            outcome = await wait_external(
                self, job_id, run_id, table_id, config, planned_at=planned_at, cancelled=cancelled)
        else:
            outcome = await self.executor.execute(
                job_id, run_id, config, submitted=submitted, recovered=recovered, known=known,
                planned_at=planned_at, submitted_at=submitted_at, cancelled=cancelled,
            )
        await self._record(job_id, run, table, table_id, config, outcome, slot)

    async def _record_submitted(self, job_id: str, run_id: str | None, adopted: bool) -> None:
        await self._append(f"job-{job_id}", 1, JobSubmitted(job_id=job_id, run_id=run_id, adopted=adopted))

    async def _record(
        self, job_id: str, run: RunState | None, table: TableState | None, table_id: str,
        config: JobConfig, outcome: Outcome, slot: Slot,
    ) -> None:
        run_id = run.run_id if run is not None else None
        stream = f"job-{job_id}"
        if outcome.status == "succeeded":
            await self._append(stream, ANY_VERSION, JobSucceeded(
                job_id=job_id, run_id=run_id, table_id=table_id,
                statistics=outcome.statistics, destination_uris=outcome.files,
            ), once=True)
            slot.release()
            if run is not None and table is not None:
                if config.kind == "query" and table.extract and run.cancel_requested:
                    await self._skip(run, table, "cancelled", "the run was cancelled before the extract")
                elif config.kind == "query" and table.extract:
                    table.state = "extracting"
                    await self.plan_extract(run, table)
                else:
                    run.moved(table, "succeeded")
        elif outcome.status == "cancelled" or (run is not None and run.cancel_requested):
            await self._append(stream, ANY_VERSION, JobCancelled(
                job_id=job_id, run_id=run_id, table_id=table_id, statistics=outcome.statistics,
            ), once=True)
            slot.release()
            if run is not None and table is not None:
                run.moved(table, "cancelled")
        else:
            await self._append(stream, ANY_VERSION, JobFailed(
                job_id=job_id, run_id=run_id, table_id=table_id, reason=outcome.reason,
                message=outcome.message, retryable=outcome.retryable, statistics=outcome.statistics,
            ), once=True)
            slot.release()
            if run is not None and table is not None:
                if outcome.retryable and config.kind in ("query", "import") and table.may_retry():
                    await asyncio.sleep(self.config.retry_delay * (table.attempt - table.retry_base))
                    run.moved(table, "pending")
                else:
                    run.moved(table, "failed")
        if run is not None and table is not None:
            await self.advance(run)
        else:
            self._dispatch()

    # ------------------------------------------------------------------ endings
    async def _skip(self, run: RunState, table: TableState, reason: str, detail: str) -> None:
        run.moved(table, "skipped" if reason != "cancelled" else "cancelled")
        # A retried run may skip the same table again: one skip per round of the run.
        kind = "skip" if run.round == 0 else f"skip{run.round}"
        job_id = self.job_id_for(run.run_id, table.table_id, max(table.attempt, 1), kind)
        await self._append(f"job-{job_id}", NO_STREAM, JobSkipped(
            job_id=job_id, run_id=run.run_id, table_id=table.table_id, reason=reason, detail=detail,  # type: ignore[arg-type]
        ), conflict_ok=True)

    async def cancel(self, run: RunState) -> None:
        run.cancel_requested = True
        for t in run.tables.values():
            if t.state in ("running", "extracting") and t.job_id is not None and t.config.kind != "external":
                bq_job = t.job_id
                if t.config.kind == "import":  # its BigQuery job is its load (a read stops at the next batch)
                    bq_job = await self._db(lambda t=t: self.pool.fetchval(
                        "SELECT job_id FROM jobs WHERE config->>'import_job_id' = $1 "
                        "AND state IN ('planned', 'submitted') LIMIT 1", t.job_id))
                    if bq_job is None:
                        continue
                try:
                    await self.jobs.cancel(bq_job, project=t.config.project)
                except Exception as exc:  # the job ends as it ends; its outcome is recorded then
                    log.warning("could not cancel a job", extra={"job_id": t.job_id, "error": str(exc)})
        await self.advance(run)

    async def _finish(self, run: RunState) -> None:
        await finish(self, run)
        self.runs.pop(run.run_id, None)
        run.done.set()

    # ------------------------------------------------------------------ plumbing
    def _metadata(self, stream: str, event: Any) -> Metadata:
        run_id = getattr(event, "run_id", None)
        run = self.runs.get(run_id) if run_id else None
        return metadata(stream, event, run.correlation_id if run is not None else None)

    async def _append(
        self, stream: str, expected: int, event: Any, *, conflict_ok: bool = False, once: bool = False,
    ) -> None:
        await append_through_blips(
            self.store, stream, expected, event, self._metadata(stream, event),
            conflict_ok=conflict_ok, once=once, stopping=self._stop.is_set,
            down=lambda exc: self.health.down(COMPONENT, exc),
        )

    async def _db(self, call) -> Any:
        return await through_blips(call, stopping=self._stop.is_set, down=lambda exc: self.health.down(COMPONENT, exc))

    def _spawn(self, coro, run: RunState | None, table: TableState | None, slot: Slot) -> None:
        task = asyncio.get_running_loop().create_task(guarded(self, coro, run, table, slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
