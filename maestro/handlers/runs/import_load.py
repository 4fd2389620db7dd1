"""An import's load (maestro.handlers.runs.imports): one BigQuery load job of the uploaded file,
planned before it is sent, re-attached after a restart, tried again on a retryable failure,
confirmed with BigQuery when given up on, its outcome recorded once, the file deleted after.

``ImportLoad`` is the loading half of the import job; the reading half is in imports.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from maestro.errors import ConcurrencyConflict, database_unavailable
from maestro.events.imports import ImportSchemaChanged, ImportStarted, ImportUploaded
from maestro.events.runs import JobCancelled, JobConfig, JobFailed, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import ANY_VERSION, NO_STREAM
from maestro.handlers.runs.executor import Outcome
from maestro.handlers.runs.loads import delete_sources

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger("maestro.handlers.runs.imports")
CONFIRM_WAIT = 300.0  # seconds to wait for a load given up on to stop, before recording it failed


class MaestroDown(Exception):
    """Maestro's own database went away under the import (its ``__cause__``): not the source's
    failure, so not the import's either."""


def load_job_id(import_job_id: str, attempt: int = 1) -> str:
    """The BigQuery job id of an import's load (``attempt`` > 1: a load tried again)."""
    return f"{import_job_id}_load" if attempt == 1 else f"{import_job_id}_load{attempt}"


class ImportLoad:
    """The load of one import job; the import (imports._Import) provides these."""

    runner: Runner
    job_id: str
    run_id: str | None
    table_id: str
    config: JobConfig
    stream: str
    load_id: str
    cancelled: Any

    async def _append(self, event: Any, expected: int = ANY_VERSION, stream: str | None = None, **kw: Any) -> None:
        await self._db(lambda: self.runner._append(stream or self.stream, expected, event, **kw))

    async def _db(self, call: Any) -> Any:
        """A call on Maestro's database (through its blips); its loss is told apart from the source's."""
        try:
            return await self.runner._db(call)
        except Exception as exc:
            if database_unavailable(exc):
                raise MaestroDown() from exc
            raise

    async def _load(self, uploaded: ImportUploaded) -> Outcome:
        """Load the uploaded object; a load failing retryably is tried again (a new load job of
        the same file, up to the table's max_attempts), never the whole read."""
        runner = self.runner
        config = await self._load_config(uploaded)
        attempt = max(1, await self._db(lambda: runner.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE config->>'import_job_id' = $1", self.job_id)))
        while True:
            self.load_id = load_job_id(self.job_id, attempt)
            outcome = await self._one_load(config)
            if (outcome.status != "failed" or not outcome.retryable or self.cancelled()
                    or attempt >= self.config.max_attempts):
                break
            log.warning("import load failed; loading again", extra={"job_id": self.load_id, "error": outcome.message})
            await asyncio.sleep(runner.config.retry_delay * attempt)
            attempt += 1
        await self._clean(config)
        if outcome.status == "succeeded":
            stats = outcome.statistics or JobStatistics()
            return Outcome("succeeded", stats.model_copy(update={"input_file_bytes": uploaded.bytes}))
        if outcome.status == "cancelled":
            return Outcome("cancelled", reason="cancelled", message="the run was cancelled during the load")
        return Outcome("failed", outcome.statistics, reason=outcome.reason or "load_failed",
                       message=f"the load failed: {outcome.message}", retryable=outcome.retryable)

    async def _one_load(self, config: JobConfig) -> Outcome:
        """One load job ``self.load_id``: planned (or found planned), executed or re-attached,
        its outcome recorded once."""
        runner = self.runner
        owner = await self._db(lambda: runner.pool.fetchrow(
            "SELECT owner_id, group_id, attempt FROM jobs WHERE job_id = $1", self.job_id))
        try:
            await self._append(stream=f"job-{self.load_id}", expected=NO_STREAM, event=JobPlanned(
                job_id=self.load_id, run_id=self.run_id, table_id=self.table_id, config=config,
                attempt=owner["attempt"] if owner else 1, owner_id=owner["owner_id"] if owner else None,
                group_id=owner["group_id"] if owner else None,
            ))
            row = None
        except ConcurrencyConflict:
            row = await self._db(lambda: runner.pool.fetchrow(
                "SELECT state, config::text, error, reason, retryable, statistics::text, planned_at, "
                "submitted_at FROM jobs WHERE job_id = $1", self.load_id))
            config = JobConfig.model_validate_json(row["config"])
        if row is not None and row["state"] in ("succeeded", "failed", "cancelled"):
            stats = JobStatistics.model_validate_json(row["statistics"]) if row["statistics"] else None
            return Outcome(row["state"], stats, reason=row["reason"] or "", message=row["error"] or "",
                           retryable=bool(row["retryable"]))
        if row is not None:
            runner.executor.unattached += 1  # looked up before anything is inserted again
        try:
            outcome = await runner.executor.execute(
                self.load_id, self.run_id, config, submitted=row is not None and row["state"] == "submitted",
                recovered=row is not None, cancelled=self.cancelled,
                planned_at=row["planned_at"].timestamp() if row is not None else None,
                submitted_at=row["submitted_at"].timestamp() if row is not None and row["submitted_at"] else None,
            )
        except Exception as exc:  # recording JobSubmitted lost Maestro's database
            if database_unavailable(exc):
                raise MaestroDown() from exc
            raise
        if outcome.status != "succeeded":
            outcome = await self._confirm(config, outcome)
        await self._record_load(config, outcome)
        return outcome

    async def _confirm(self, config: JobConfig, outcome: Outcome) -> Outcome:
        """A load given up on (timed out, cancelled, BigQuery unreachable) may still commit: an
        append recorded as failed would then be read and appended again. Ask BigQuery how it
        ended (waiting up to CONFIRM_WAIT for it to stop) and record that."""
        jobs = self.runner.jobs
        deadline = time.monotonic() + CONFIRM_WAIT
        while True:
            try:
                state = await jobs.get(self.load_id, project=config.project)
            except Exception as exc:
                state, error = None, exc
            else:
                error = None
                if state is None:  # BigQuery never saw it: nothing was loaded
                    return outcome
                if state.state == "DONE":
                    if state.error is None:
                        log.warning("an import load given up on had succeeded", extra={"job_id": self.load_id})
                        return Outcome("succeeded", state.statistics)
                    return outcome
            if time.monotonic() >= deadline:
                why = f"BigQuery could not be asked ({error})" if error else "it was still running"
                log.error("an import load's end is unknown; recorded as failed", extra={"job_id": self.load_id})
                return dataclasses.replace(outcome, message=(
                    f"{outcome.message}; its end is unknown after {CONFIRM_WAIT:.0f} s ({why}): if it "
                    "committed after all, re-import the table (POST /api/v1/tables/{id}/reimport)"))
            await asyncio.sleep(2.0)

    async def _load_config(self, uploaded: ImportUploaded) -> JobConfig:
        plan = getattr(self, "_plan", None)
        if plan is None:  # resumed after ImportUploaded: the plan is in the log
            recorded = await self._db(lambda: self.runner.store.read(self.stream))
            started = next(r.event for r in reversed(recorded) if isinstance(r.event, ImportStarted))
            changed = [r.event for r in recorded if isinstance(r.event, ImportSchemaChanged)]
            additions = bool(changed) and changed[-1].action == "add_columns"
            plan = (started.full, additions, uploaded.watermark, started.fields)
        full, additions, watermark, fields = plan
        base = self.config
        return JobConfig(
            kind="load", project=base.project, destination=base.destination,
            write_disposition="WRITE_TRUNCATE" if full or not self.spec.id_column else "WRITE_APPEND",
            partitioning=base.partitioning, clustering=base.clustering, labels=base.labels,
            source_uris=[uploaded.uri], source_format="PARQUET", load_schema=fields,
            schema_update_options=["ALLOW_FIELD_ADDITION"] if additions else [],
            delete_source=True, source_generations=[uploaded.generation], import_job_id=self.job_id,
            watermark=watermark, max_attempts=1,
        )

    async def _record_load(self, config: JobConfig, outcome: Outcome) -> None:
        stream = f"job-{self.load_id}"
        common = {"job_id": self.load_id, "run_id": self.run_id, "table_id": self.table_id}
        if outcome.status == "succeeded":
            event: Any = JobSucceeded(**common, statistics=outcome.statistics or JobStatistics(),
                                      watermark=config.watermark)
        elif outcome.status == "cancelled" or self.cancelled():
            event = JobCancelled(**common, statistics=outcome.statistics)
        else:
            event = JobFailed(**common, reason=outcome.reason, message=outcome.message,
                              retryable=outcome.retryable, statistics=outcome.statistics)
        await self._append(event, ANY_VERSION, stream=stream, once=True)

    async def _clean(self, config: JobConfig) -> None:
        """Delete the loaded object at its generation, once (also after a crash right before)."""
        await self._db(lambda: delete_sources(self.runner, self.load_id, self.table_id, config))


