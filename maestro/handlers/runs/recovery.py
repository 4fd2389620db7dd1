"""Start-up (and every re-take of leadership): rebuild the runner's memory from the projection.

Every unfinished run is reloaded and every job planned but not finished is re-attached: one
``jobs.list`` since the oldest of them was planned gives their states (a ``jobs.get`` each for any
it does not show); a job only planned that BigQuery has is adopted, and one BigQuery never saw is
inserted under its recorded id once all are looked up. So ``kill -9`` at any instant — or a
database outage that cost the runner its leadership — loses nothing and bills nothing twice
(tests/integration/test_crash.py, test_db_outage.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import orjson

from maestro.events.runs import JobConfig
from maestro.handlers.runs import loads
from maestro.handlers.runs.state import RunState, TableState, memory_state

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger(__name__)
# Listing jobs at start-up from this long before the oldest unfinished job was planned (clock skew
# between PostgreSQL and BigQuery).
LIST_MARGIN = dt.timedelta(minutes=10)


async def recover(runner: Runner) -> None:
    """Reload unfinished runs; re-attach every job that was planned but not finished."""
    pool = runner.pool
    for row in await pool.fetch("SELECT run_id FROM runs WHERE status = 'running'"):
        await load_run(runner, row["run_id"])
    # An import's load is driven by its import (which re-attaches it when the import resumes).
    unfinished = await pool.fetch(
        "SELECT job_id, run_id, table_id, attempt, kind, config::text, state, planned_at, submitted_at FROM jobs "
        "WHERE state IN ('planned', 'submitted') AND config->>'import_job_id' IS NULL"
    )
    # Loads planned outside runs are re-attached here; the follow loop must not start them again.
    loads.note_recovered(runner, [j["job_id"] for j in unfinished if j["kind"] == "load" and j["run_id"] is None])
    listed = await _list_states(runner, min((j["planned_at"] for j in unfinished), default=None))
    executor = runner.executor
    # Re-attach first: every unfinished job is looked up (listed, or one jobs.get) before any
    # job BigQuery never saw is inserted.
    # (imports and external waits are not BigQuery jobs: nothing to look up for them)
    executor.unattached = sum(1 for j in unfinished if j["kind"] not in ("import", "external"))
    if executor.unattached:
        executor.attached.clear()
    else:
        executor.attached.set()
    for job in unfinished:
        run = runner.runs.get(job["run_id"]) if job["run_id"] else None
        table = run.tables.get(job["table_id"]) if run else None
        config = JobConfig.model_validate_json(job["config"])
        runner.spawn_job(
            job["job_id"], run, table, config, submitted=job["state"] == "submitted", recovered=True,
            known=listed.get(job["job_id"]), planned_at=job["planned_at"].timestamp(), table_id=job["table_id"],
            submitted_at=job["submitted_at"].timestamp() if job["submitted_at"] else None,
        )
    await loads.resume_deletes(runner)  # a crash between a load's end and its sources' deletion
    for run in list(runner.runs.values()):
        await _resume_extracts(runner, run)
        if run.cancel_requested:  # the old leader may have died before cancelling its jobs
            await runner.cancel(run)
        else:
            await runner.advance(run)
    log.info("runner recovered", extra={"runs": len(runner.runs), "jobs_reattached": len(unfinished)})


async def _list_states(runner: Runner, since: Any) -> dict[str, Any]:
    """One jobs.list for every job created since the oldest unfinished one was planned:
    re-attaching a thousand jobs in a page, not a thousand jobs.get. Only an accelerator:
    a job it does not show is looked up by id, and a failure falls back to that too."""
    lister = getattr(runner.jobs, "list_states", None)
    if since is None or lister is None:
        return {}
    try:
        return await lister(since=since - LIST_MARGIN)
    except Exception as exc:
        log.warning("could not list BigQuery jobs; re-attaching one by one", extra={"error": str(exc)})
        return {}


async def load_run(runner: Runner, run_id: str) -> RunState | None:
    """The run as the projection has it, in memory; None when it is not running (finished, or
    a stale event replayed from before its end)."""
    pool = runner.pool
    run_row = await pool.fetchrow(
        "SELECT workers, cancel_requested, status FROM runs WHERE run_id = $1", run_id
    )
    if run_row is None or run_row["status"] != "running":
        return None
    rows = await pool.fetch(
        "SELECT table_id, name, priority, parents, config::text, extract::text, owner_id, group_id, "
        "state, attempt, job_id, retry_base FROM run_tables WHERE run_id = $1",
        run_id,
    )
    tables = {
        r["table_id"]: TableState(
            r["table_id"], r["name"], r["priority"], list(r["parents"]),
            JobConfig.model_validate_json(r["config"]),
            orjson.loads(r["extract"]) if r["extract"] else None,
            r["owner_id"], r["group_id"], memory_state(r["state"]), r["attempt"], r["job_id"],
            r["retry_base"],
        )
        for r in rows
    }
    # A table whose query failed retryably, with attempts left, goes back in line.
    for t in tables.values():
        if t.state == "failed" and t.job_id is not None:
            job = await pool.fetchrow("SELECT retryable, kind FROM jobs WHERE job_id = $1", t.job_id)
            if job is not None and job["retryable"] and job["kind"] in ("query", "import") and t.may_retry():
                t.state = "pending"
    run = RunState(run_id, tables, run_row["workers"], run_row["cancel_requested"])
    run.round = await pool.fetchval(
        "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'RunRetryRequested'", f"run-{run_id}"
    )
    run.correlation_id = await pool.fetchval(
        "SELECT metadata->>'correlation_id' FROM events WHERE stream_id = $1 AND version = 1",
        f"run-{run_id}",
    )
    runner.runs[run_id] = run
    return run


async def _resume_extracts(runner: Runner, run: RunState) -> None:
    """A crash between a query's success and its extract's plan leaves 'extracting' alone."""
    for t in run.tables.values():
        if t.state == "extracting":
            planned = await runner.pool.fetchval(
                "SELECT count(*) FROM jobs WHERE run_id = $1 AND table_id = $2 AND kind = 'extract' "
                "AND attempt = $3",
                run.run_id, t.table_id, t.attempt,
            )
            if not planned:
                await runner.plan_extract(run, t)
