"""Runs and jobs (inline): the runner's memory across restarts, and what the API shows."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from maestro.events.imports import ImportProgress, ImportStarted, ImportUploaded, LoadSourceDeleted
from maestro.events.model import RecordedEvent
from maestro.events.runs import (
    JobCancelled,
    JobFailed,
    JobPlanned,
    JobSkipped,
    JobSubmitted,
    JobSucceeded,
    RunCancelRequested,
    RunFinished,
    RunPlanned,
    RunQueued,
    RunRetryRequested,
    RunSkipped,
)
from maestro.events.store import Connection
from maestro.projections.base import Projection

TERMINAL_TABLE_STATES = ("succeeded", "failed", "skipped", "cancelled")


class RunsProjection(Projection):
    name = "runs"
    mode = "inline"
    event_types = frozenset(
        {
            "RunPlanned", "RunQueued", "RunSkipped", "RunCancelRequested", "RunRetryRequested", "RunFinished",
            "JobPlanned", "JobSubmitted", "JobSucceeded", "JobFailed", "JobCancelled", "JobSkipped",
            "ImportStarted", "ImportProgress", "ImportUploaded", "LoadSourceDeleted",
        }
    )
    tables = ("run_tables", "jobs", "runs")

    async def reset(self, conn: Connection) -> None:
        await conn.execute("TRUNCATE run_tables, jobs, runs")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            at = r.occurred_at
            if isinstance(e, RunPlanned):
                # A queued slot already has its row: its plan turns it into a running run.
                await conn.execute(
                    "INSERT INTO runs (run_id, frequency_id, slot, trigger, status, workers, planned_at, "
                    "planned_by, skipped) VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8::jsonb) "
                    "ON CONFLICT (run_id) DO UPDATE SET status = 'running', workers = EXCLUDED.workers, "
                    "planned_at = EXCLUDED.planned_at, planned_by = EXCLUDED.planned_by, skipped = EXCLUDED.skipped",
                    e.run_id, e.frequency_id, e.slot, e.trigger, e.workers, at, r.metadata.actor,
                    orjson.dumps(e.skipped).decode(),
                )
                if e.tables:
                    await conn.executemany(
                        "INSERT INTO run_tables (run_id, table_id, name, priority, parents, config, extract, "
                        "owner_id, group_id, state, updated_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, 'pending', $10)",
                        [
                            (
                                e.run_id, t.table_id, t.name, t.priority, t.parents,
                                t.config.model_dump_json(),
                                orjson.dumps(t.extract).decode() if t.extract is not None else None,
                                t.owner_id, t.group_id, at,
                            )
                            for t in e.tables
                        ],
                    )
            elif isinstance(e, RunQueued):
                await conn.execute(
                    "INSERT INTO runs (run_id, frequency_id, slot, trigger, status, planned_at, planned_by, "
                    "blocked_by, reason) VALUES ($1, $2, $3, 'schedule', 'queued', $4, $5, $6, $7)",
                    e.run_id, e.frequency_id, e.slot, at, r.metadata.actor, e.blocking_run_id,
                    f"queued behind run {e.blocking_run_id}",
                )
            elif isinstance(e, RunSkipped):
                reason = f"{e.reason}: {e.detail}" if e.detail else e.reason
                status = "cancelled" if e.reason == "cancelled" else "skipped"
                # Either the slot's first event, or the end of a queued run (its row exists).
                await conn.execute(
                    "INSERT INTO runs (run_id, frequency_id, slot, trigger, status, planned_at, planned_by, "
                    "finished_at, blocked_by, reason) VALUES ($1, $2, $3, 'schedule', $8, $4, $5, $4, $6, $7) "
                    "ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, "
                    "blocked_by = coalesce(EXCLUDED.blocked_by, runs.blocked_by), reason = EXCLUDED.reason",
                    e.run_id, e.frequency_id, e.slot, at, r.metadata.actor, e.blocking_run_id, reason, status,
                )
            elif isinstance(e, RunCancelRequested):
                await conn.execute("UPDATE runs SET cancel_requested = true WHERE run_id = $1", e.run_id)
            elif isinstance(e, RunRetryRequested):
                await conn.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, cancel_requested = false "
                    "WHERE run_id = $1",
                    e.run_id,
                )
                await conn.execute(
                    "UPDATE run_tables SET state = 'pending', error = NULL, updated_at = $3, "
                    "retry_base = attempt WHERE run_id = $1 AND table_id = ANY($2)",
                    e.run_id, e.tables, at,
                )
            elif isinstance(e, RunFinished):
                await conn.execute(
                    "UPDATE runs SET status = $2, finished_at = $3, counts = $4::jsonb WHERE run_id = $1",
                    e.run_id, e.status, at, orjson.dumps(e.counts).decode(),
                )
            elif isinstance(e, JobPlanned):
                await conn.execute(
                    "INSERT INTO jobs (job_id, run_id, table_id, attempt, kind, state, config, owner_id, "
                    "group_id, planned_at) VALUES ($1, $2, $3, $4, $5, 'planned', $6::jsonb, $7, $8, $9)",
                    e.job_id, e.run_id, e.table_id, e.attempt, e.config.kind,
                    e.config.model_dump_json(), e.owner_id, e.group_id, at,
                )
                if e.config.import_job_id is not None:  # an import's load: the import's progress
                    await self._progress(conn, e.config.import_job_id, {"phase": "loading", "load_job_id": e.job_id})
                elif e.run_id is not None and e.config.kind in ("import", "external"):
                    phase = "waiting" if e.config.kind == "import" else "waiting for the upload"
                    await conn.execute(
                        "UPDATE run_tables SET state = 'running', job_id = $3, attempt = $4, error = NULL, "
                        "updated_at = $5, progress = $6::jsonb WHERE run_id = $1 AND table_id = $2",
                        e.run_id, e.table_id, e.job_id, e.attempt, at, orjson.dumps({"phase": phase}).decode(),
                    )
                    await conn.execute("UPDATE jobs SET progress = $2::jsonb WHERE job_id = $1",
                                       e.job_id, orjson.dumps({"phase": phase}).decode())
                elif e.run_id is not None:
                    state = "planned" if e.config.kind == "query" else "extracting"
                    await conn.execute(
                        "UPDATE run_tables SET state = $3, job_id = $4, attempt = $5, error = NULL, "
                        "updated_at = $6 WHERE run_id = $1 AND table_id = $2",
                        e.run_id, e.table_id, state, e.job_id, e.attempt, at,
                    )
            elif isinstance(e, JobSubmitted):
                row = await conn.fetchrow(
                    "UPDATE jobs SET state = 'submitted', submitted_at = $2, adopted = $3 WHERE job_id = $1 "
                    "RETURNING run_id, table_id, kind",
                    e.job_id, at, e.adopted,
                )
                if row is not None and row["run_id"] is not None and row["kind"] == "query":  # not an import's load
                    await self._table_state(conn, row["run_id"], row["table_id"], "running", None, at)
            elif isinstance(e, JobSucceeded):
                job = await conn.fetchrow(
                    "UPDATE jobs SET state = 'succeeded', finished_at = $2, statistics = $3::jsonb, "
                    "destination_uris = $4::jsonb WHERE job_id = $1 RETURNING kind, config->>'import_job_id' AS import_job",
                    e.job_id, at, e.statistics.model_dump_json(), orjson.dumps(e.destination_uris).decode(),
                )
                kind = job["kind"] if job is not None else None
                if job is not None and job["import_job"] is not None:
                    await self._progress(conn, job["import_job"], {"phase": "cleaning", "loaded_rows": e.statistics.output_rows})
                elif e.run_id is not None:
                    has_extract = await conn.fetchval(
                        "SELECT extract IS NOT NULL FROM run_tables WHERE run_id = $1 AND table_id = $2",
                        e.run_id, e.table_id,
                    )
                    done = kind != "query" or not has_extract
                    await self._table_state(
                        conn, e.run_id, e.table_id, "succeeded" if done else "extracting", None, at
                    )
            elif isinstance(e, JobFailed):
                await conn.execute(
                    "UPDATE jobs SET state = 'failed', finished_at = $2, error = $3, reason = $4, "
                    "statistics = $5::jsonb, retryable = $6 WHERE job_id = $1",
                    e.job_id, at, e.message, e.reason,
                    e.statistics.model_dump_json() if e.statistics else None, e.retryable,
                )
                if e.run_id is not None and not await self._is_import_load(conn, e.job_id):
                    await self._table_state(conn, e.run_id, e.table_id, "failed", e.message, at)
            elif isinstance(e, JobCancelled):
                await conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $2, "
                    "statistics = coalesce($3::jsonb, statistics) WHERE job_id = $1",
                    e.job_id, at, e.statistics.model_dump_json() if e.statistics else None,
                )
                if e.run_id is not None and not await self._is_import_load(conn, e.job_id):
                    await self._table_state(conn, e.run_id, e.table_id, "cancelled", None, at)
            elif isinstance(e, JobSkipped):
                if e.run_id is not None:
                    detail = f"{e.reason}: {e.detail}" if e.detail else e.reason
                    state = "cancelled" if e.reason == "cancelled" else "skipped"
                    await self._table_state(conn, e.run_id, e.table_id, state, detail, at)

            elif isinstance(e, ImportStarted):
                await self._progress(conn, e.job_id, {
                    "phase": "reading", "read": e.read, "full": e.full, "reason": e.reason, "rows": 0, "bytes": 0,
                })
            elif isinstance(e, ImportProgress):
                await self._progress(conn, e.job_id, {"phase": "reading", "rows": e.rows, "bytes": e.bytes})
            elif isinstance(e, ImportUploaded):
                await self._progress(conn, e.job_id, {
                    "phase": "uploaded", "rows": e.rows, "bytes": e.bytes, "uri": e.uri, "generation": e.generation,
                    "read_seconds": e.seconds,
                })
            elif isinstance(e, LoadSourceDeleted):
                import_job = await conn.fetchval("SELECT config->>'import_job_id' FROM jobs WHERE job_id = $1", e.job_id)
                if import_job is not None:
                    await self._progress(conn, import_job, {"phase": "cleaned"})

    @staticmethod
    async def _is_import_load(conn: Connection, job_id: str) -> bool:
        return bool(await conn.fetchval(
            "SELECT config->>'import_job_id' IS NOT NULL FROM jobs WHERE job_id = $1", job_id))

    @staticmethod
    async def _progress(conn: Connection, job_id: str, changes: dict) -> None:
        """Merge ``changes`` into an import (or wait) job's progress, and its run table's."""
        data = orjson.dumps(changes).decode()
        row = await conn.fetchrow(
            "UPDATE jobs SET progress = coalesce(progress, '{}'::jsonb) || $2::jsonb WHERE job_id = $1 "
            "RETURNING run_id, table_id, progress::text",
            job_id, data,
        )
        if row is not None and row["run_id"] is not None:
            await conn.execute(
                "UPDATE run_tables SET progress = $3::jsonb WHERE run_id = $1 AND table_id = $2 AND job_id = $4",
                row["run_id"], row["table_id"], row["progress"], job_id,
            )

    @staticmethod
    async def _table_state(conn: Connection, run_id: str, table_id: str, state: str, error: str | None, at) -> None:
        await conn.execute(
            "UPDATE run_tables SET state = $3, error = $4, updated_at = $5 WHERE run_id = $1 AND table_id = $2",
            run_id, table_id, state, error, at,
        )
