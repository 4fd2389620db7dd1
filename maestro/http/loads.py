"""External tables' loads: load an uploaded object (``POST /tables/{id}/load``), and any job by id.

The upload URL itself is part of ``GET /tables/{id}`` (:func:`upload_field`), for the table's
writers only. docs/external.md tells the whole story.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import Conflict, NotFound, ServiceUnavailable
from maestro.events.catalog import TableSpec
from maestro.handlers.runs import uploads
from maestro.http.auth import principal
from maestro.http.extract_rule import unreadable_extracts
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.rules import write_problem
from maestro.http.validation import json_response, parse_body


class LoadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    object: str | None = Field(None, min_length=1, max_length=2048, description="gs://<bucket>/<name> of the upload")
    name: str | None = Field(None, min_length=1, max_length=1024, description="the upload's object name in the bucket")


def _services(request: web.Request) -> Any:
    services = request.app[RUNTIME].services
    if services is None:
        raise ServiceUnavailable("Google Cloud Storage is not available in this process")
    return services


async def _spec(request: web.Request, table_id: str) -> TableSpec:
    view = await request.app[RUNTIME].catalog.get_table(table_id)  # 404 for an unknown table
    if view.deleted:
        raise Conflict(f"table {table_id} is deleted")
    return TableSpec.model_validate(view.spec)


async def upload_field(request: web.Request, view: Any) -> dict[str, Any] | None:
    """``upload`` of ``GET /tables/{id}``: a signed PUT URL for a new object, for those the write
    rule admits on the table (others get nothing: not even the bucket's layout). None for other
    tables, deleted ones, or without Cloud Storage in this process."""
    if view.deleted or view.spec.get("kind") != "external":
        return None
    who = principal(request)
    if not who.admin and await write_problem(request, who) is not None:
        return None
    runtime = request.app[RUNTIME]
    services = runtime.services
    if services is None:
        return None
    lifetime = dt.timedelta(seconds=runtime.settings.upload_url_lifetime)
    return await uploads.sign_upload(
        services.storage, services.signer, services.runner.config.bucket, TableSpec.model_validate(view.spec), lifetime
    )


async def load_table(request: web.Request) -> web.Response:
    body = await parse_body(LoadBody, request)
    table_id = request.match_info["table_id"]
    spec = await _spec(request, table_id)
    runtime = request.app[RUNTIME]
    services = _services(request)
    planned = await uploads.request_load(
        runtime.store, services.storage, services.runner.config.bucket, runtime.runs.project, table_id, spec,
        body.model_dump(), principal(request).metadata(),
    )
    return json_response(
        {"job_id": planned.job_id, "object": planned.uri, "generation": planned.generation, "table_id": table_id},
        status=202,
    )


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    pool = request.app[RUNTIME].pool
    r = await pool.fetchrow(
        "SELECT job_id, run_id, table_id, attempt, kind, state, adopted, planned_at, submitted_at, finished_at, "
        "statistics::text, destination_uris::text, error, reason, progress::text, config->'source_uris' AS sources "
        "FROM jobs WHERE job_id = $1", job_id,
    )
    if r is None:
        raise NotFound(f"no job {job_id!r}")
    # As in the table's job list: extracted files only for whom the extract rule admits.
    hide_files = bool(await unreadable_extracts(pool, principal(request), [r["table_id"]]))
    deleted = await pool.fetchval(
        "SELECT data::text FROM events WHERE stream_id = $1 AND type = 'LoadSourceDeleted' LIMIT 1", f"job-{job_id}")
    return json_response({
        "job_id": r["job_id"], "run_id": r["run_id"], "table_id": r["table_id"], "attempt": r["attempt"],
        "kind": r["kind"], "state": r["state"], "adopted": r["adopted"], "planned_at": _iso(r["planned_at"]),
        "submitted_at": _iso(r["submitted_at"]), "finished_at": _iso(r["finished_at"]),
        "statistics": orjson.loads(r["statistics"]) if r["statistics"] else None,
        "files": None if hide_files else orjson.loads(r["destination_uris"]),
        "error": r["error"], "reason": r["reason"],
        "progress": orjson.loads(r["progress"]) if r["progress"] else None,
        # Loads: what they read, and what became of it afterwards (LoadSourceDeleted).
        "sources": orjson.loads(r["sources"]) if r["kind"] == "load" and r["sources"] else None,
        "sources_deleted": _deleted(orjson.loads(deleted)) if deleted else None,
    })


def _deleted(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k) for k in ("uris", "missing", "kept", "errors")}


ROUTES = routes(
    Route("POST", "/api/v1/tables/{table_id}/load", load_table,
          "Load an uploaded object into an external table (once per object generation)",
          rule="write", body=LoadBody, status=202, tag="runs", errors=(502, 503)),
    Route("GET", "/api/v1/jobs/{job_id}", get_job, "One job: its state, statistics, error (loads: their sources)",
          rule="read", tag="runs"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
