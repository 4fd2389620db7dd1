"""The runs API: start, watch (JSON; Server-Sent Events in ``run_events``), retry, cancel; job history
(costs: ``maestro.http.costs``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import NotFound, ServiceUnavailable
from maestro.handlers.notify.steps import run_steps
from maestro.handlers.runs import estimates, extracts
from maestro.http.auth import principal
from maestro.http.extract_rule import unreadable_extracts
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.run_events import run_events
from maestro.http.validation import json_response, parse_body, parse_query

def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


class RunListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "skipped"] | None = None
    frequency: str | None = None
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)


class StartRunBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frequency_id: str = Field(min_length=1)
    workers: int | None = Field(None, ge=1, le=1000)


class RunTableBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    descendants: bool = Field(False, description="also run every table downstream of it")


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset: int = Field(0, ge=0)
    limit: int = Field(20, ge=1, le=500)


def _run_row(r: Any) -> dict[str, Any]:
    return {
        "id": r["run_id"],
        "frequency_id": r["frequency_id"],
        "slot": _iso(r["slot"]),
        "trigger": r["trigger"],
        "status": r["status"],
        "planned_at": _iso(r["planned_at"]),
        "planned_by": r["planned_by"],
        "finished_at": _iso(r["finished_at"]),
        "cancel_requested": r["cancel_requested"],
        "counts": orjson.loads(r["counts"]),
        # A slot that overlapped the frequency's previous run: the run it waited for or was
        # skipped behind, and why (the frequency's overlap policy).
        "blocked_by": r["blocked_by"],
        "reason": r["reason"],
    }


_RUN_COLUMNS = (
    "run_id, frequency_id, slot, trigger, status, planned_at, planned_by, finished_at, "
    "cancel_requested, counts::text, blocked_by, reason"
)


async def list_runs(request: web.Request) -> web.Response:
    q = parse_query(RunListQuery, request)
    rows = await request.app[RUNTIME].pool.fetch(
        f"SELECT {_RUN_COLUMNS}, count(*) OVER () AS total FROM runs "
        "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR frequency_id = $2) "
        "ORDER BY planned_at DESC, run_id OFFSET $3 LIMIT $4",
        q.status, q.frequency, q.offset, q.limit,
    )
    return json_response({"runs": [_run_row(r) for r in rows], "total": rows[0]["total"] if rows else 0})


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    pool = request.app[RUNTIME].pool
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS}, skipped::text FROM runs WHERE run_id = $1", run_id)
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    tables = await pool.fetch(
        "SELECT table_id, name, priority, parents, state, job_id, attempt, error, updated_at, progress::text "
        "FROM run_tables WHERE run_id = $1 ORDER BY priority DESC, name",
        run_id,
    )
    steps = await run_steps(pool, run_id)
    return json_response(
        {
            **_run_row(row),
            "skipped": orjson.loads(row["skipped"]),
            "tables": [
                {
                    "table_id": t["table_id"], "name": t["name"], "priority": t["priority"],
                    "state": t["state"], "job_id": t["job_id"], "attempt": t["attempt"],
                    "error": t["error"], "updated_at": _iso(t["updated_at"]),
                    # imports and external waits: phase, rows read, bytes written, ...
                    "progress": orjson.loads(t["progress"]) if t["progress"] else None,
                    # after the table's job: its callback (and exports), each with its own state
                    "steps": steps.get(t["table_id"], []),
                }
                for t in tables
            ],
            "graph": {"edges": [{"parent": p, "child": t["table_id"]} for t in tables for p in t["parents"]]},
        }
    )


async def start_run(request: web.Request) -> web.Response:
    body = await parse_body(StartRunBody, request)
    runtime = request.app[RUNTIME]
    run_id, _ = await runtime.runs.plan_frequency(
        body.frequency_id, slot=None, trigger="manual", actor=principal(request).metadata(), workers=body.workers
    )
    return json_response({"id": run_id}, status=201)


async def run_table(request: web.Request) -> web.Response:
    body = await parse_body(RunTableBody, request)
    run_id = await request.app[RUNTIME].runs.plan_table(
        request.match_info["table_id"], descendants=body.descendants, actor=principal(request).metadata()
    )
    return json_response({"id": run_id}, status=201)


async def retry_run(request: web.Request) -> web.Response:
    tables = await request.app[RUNTIME].runs.retry(request.match_info["run_id"], principal(request).metadata())
    return json_response({"id": request.match_info["run_id"], "retrying": tables})


async def cancel_run(request: web.Request) -> web.Response:
    await request.app[RUNTIME].runs.cancel(request.match_info["run_id"], principal(request).metadata())
    return json_response({"id": request.match_info["run_id"], "cancel_requested": True}, status=202)


async def table_extracts(request: web.Request) -> web.Response:
    """The latest successful extract's files, with signed URLs valid for the configured lifetime."""
    runtime = request.app[RUNTIME]
    services = runtime.services
    if services is None:
        raise ServiceUnavailable("Google Cloud Storage is not available in this process")
    table_id = request.match_info["table_id"]
    lifetime = dt.timedelta(seconds=runtime.settings.signed_url_lifetime)
    extract = await extracts.latest_extract(runtime.catalog, services.storage, services.signer, table_id, lifetime)
    return json_response({"id": table_id, "extract": extract})


async def table_jobs(request: web.Request) -> web.Response:
    q = parse_query(PageQuery, request)
    table_id = request.match_info["table_id"]
    pool = request.app[RUNTIME].pool
    await request.app[RUNTIME].catalog.get_table(table_id)  # 404 for an unknown table
    # Job history is for everyone; where the extracted files are is for whom the extract rule admits.
    hide_files = bool(await unreadable_extracts(pool, principal(request), [table_id]))
    rows = await pool.fetch(
        "SELECT job_id, run_id, attempt, kind, state, adopted, planned_at, submitted_at, finished_at, "
        "statistics::text, destination_uris::text, error, reason, count(*) OVER () AS total "
        "FROM jobs WHERE table_id = $1 ORDER BY planned_at DESC, job_id OFFSET $2 LIMIT $3",
        table_id, q.offset, q.limit,
    )
    jobs = [
        {
            "job_id": r["job_id"], "run_id": r["run_id"], "attempt": r["attempt"], "kind": r["kind"],
            "state": r["state"], "adopted": r["adopted"], "planned_at": _iso(r["planned_at"]),
            "submitted_at": _iso(r["submitted_at"]), "finished_at": _iso(r["finished_at"]),
            "statistics": orjson.loads(r["statistics"]) if r["statistics"] else None,
            "files": None if hide_files else orjson.loads(r["destination_uris"]),
            "error": r["error"], "reason": r["reason"],
        }
        for r in rows
    ]
    return json_response({"jobs": jobs, "total": rows[0]["total"] if rows else 0, "offset": q.offset, "limit": q.limit})


def _bigquery(request: web.Request):
    bq = request.app[RUNTIME].bigquery
    if bq is None:
        raise ServiceUnavailable("BigQuery is not available in this process")
    return bq


async def dry_run(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return json_response(await estimates.dry_run_table(
        runtime.catalog, _bigquery(request), request.match_info["table_id"], runtime.config.price_per_tib
    ))


async def frequency_plan(request: web.Request) -> web.Response:
    """What the frequency's next run would do: tables, order, and the total estimate."""
    runtime = request.app[RUNTIME]
    return json_response(await estimates.frequency_plan(
        runtime.runs, _bigquery(request), request.match_info["frequency_id"], runtime.config.price_per_tib
    ))


ROUTES = routes(
    Route("GET", "/api/v1/runs", list_runs, "Runs, newest first", query=RunListQuery, rule="read", tag="runs"),
    Route("POST", "/api/v1/runs", start_run, "Start a frequency's run now", rule="admin", body=StartRunBody, status=201, tag="runs", errors=(404,)),
    Route("GET", "/api/v1/runs/{run_id}", get_run, "A run with each table's state and the run's graph", rule="read", tag="runs"),
    Route("GET", "/api/v1/runs/{run_id}/events", run_events, "The run's state changes as Server-Sent Events", rule="read", tag="runs", content_type="text/event-stream"),
    Route("POST", "/api/v1/runs/{run_id}/retry", retry_run, "Re-run what failed or never ran", rule="admin", tag="runs"),
    Route("POST", "/api/v1/runs/{run_id}/cancel", cancel_run, "Cancel a run and its BigQuery jobs", rule="admin", status=202, tag="runs"),
    Route("POST", "/api/v1/tables/{table_id}/run", run_table, "Run one table now (optionally with its descendants)", rule="write", body=RunTableBody, status=201, tag="runs"),
    Route("GET", "/api/v1/tables/{table_id}/extracts", table_extracts, "The latest extract's files with signed URLs", rule="extract", tag="runs", errors=(503,)),
    Route("GET", "/api/v1/tables/{table_id}/jobs", table_jobs, "The table's BigQuery jobs, newest first", query=PageQuery, rule="read", tag="runs"),
    Route("POST", "/api/v1/tables/{table_id}/dry-run", dry_run, "Validity, bytes and price estimate", rule="write", tag="runs", errors=(502, 503)),
    Route("GET", "/api/v1/frequencies/{frequency_id}/plan", frequency_plan, "The next run's tables, order and estimate", rule="read", tag="runs", errors=(502, 503)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
