"""The imports API: ask for an import table's full re-import, and see where its imports stand."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.handlers.catalog.import_state import import_state, request_reimport
from maestro.http.auth import principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_body, parse_query


class ReimportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=1000, description="why (kept in the event; default: a manual re-import)")
    run: bool = Field(False, description="also run the table now (as POST /tables/{id}/run does)")


class ReimportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: bool = Field(False, description="also run the table now")


async def reimport(request: web.Request) -> web.Response:
    q = parse_query(ReimportQuery, request)
    body = await parse_body(ReimportBody, request)
    runtime = request.app[RUNTIME]
    table_id = request.match_info["table_id"]
    actor = principal(request).metadata()
    reason = body.reason.strip() or "manual re-import"
    requested = await request_reimport(runtime.store, runtime.catalog, table_id, reason, actor)
    run_id = None
    if q.run or body.run:
        # Planned after the request, so the run's import finds it newer than its last plan.
        run_id = await runtime.runs.plan_table(table_id, descendants=False, actor=actor)
    return json_response({"id": table_id, **requested, "run_id": run_id}, status=202)


async def get_import(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    return json_response(await import_state(runtime.catalog, request.match_info["table_id"]))


ROUTES = routes(
    Route("POST", "/api/v1/tables/{table_id}/reimport", reimport,
          "Re-import an import table in full at its next import (optionally run it now)",
          rule="write", body=ReimportBody, query=ReimportQuery, status=202, tag="imports"),
    Route("GET", "/api/v1/tables/{table_id}/import", get_import,
          "An import table's mode, watermark, last import and pending re-import",
          rule="read", tag="imports", errors=(409,)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
