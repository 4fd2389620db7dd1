"""What clients ask about a table besides its definition: which table a name or number means,
what it is doing now (status), and its BigQuery schema (docs/client.md)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.adapters.bigquery_tables import table_resource
from maestro.errors import ServiceUnavailable
from maestro.handlers.catalog import table_refs
from maestro.handlers.runs.table_status import table_status
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_query


class LookupQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # 512: a URL of any 512 characters stays within the 8 KiB request line aiohttp reads.
    ref: str = Field(min_length=1, max_length=512, description="a table's number, id, or dataset.name")


async def lookup(request: web.Request) -> web.Response:
    q = parse_query(LookupQuery, request)
    return json_response((await table_refs.resolve(request.app[RUNTIME].pool, q.ref)).to_dict())


async def status(request: web.Request) -> web.Response:
    pool = request.app[RUNTIME].pool
    ref = await table_refs.resolve(pool, request.match_info["table_id"])
    found = await table_status(pool, ref.table_id)
    return json_response({**ref.to_dict(), **found.to_dict()})


def destination(runtime: Any, ref: table_refs.TableRef) -> str:
    """``project.dataset.name`` of the table in BigQuery, as its jobs write it."""
    return f"{ref.spec.get('project') or runtime.runs.project}.{ref.dataset}.{ref.name}"


async def bigquery_resource(request: web.Request, ref: table_refs.TableRef) -> dict[str, Any] | None:
    runtime = request.app[RUNTIME]
    if runtime.bigquery is None:
        raise ServiceUnavailable("BigQuery is not available in this process")
    return await table_resource(runtime.bigquery, destination(runtime, ref))


async def bigquery_table(request: web.Request) -> web.Response:
    ref = await table_refs.resolve(request.app[RUNTIME].pool, request.match_info["table_id"])
    return json_response({"id": ref.table_id, "number": ref.number, "table": await bigquery_resource(request, ref)})


ROUTES = routes(
    Route("GET", "/api/v1/table-lookup", lookup, "Which table a number, id or dataset.name means",
          query=LookupQuery, rule="read", tag="tables", errors=(404,)),
    Route("GET", "/api/v1/tables/{table_id}/status", status,
          "What the table is doing: running, failed (with the error and its line/column), last success",
          rule="read", tag="runs"),
    Route("GET", "/api/v1/tables/{table_id}/bigquery", bigquery_table,
          "The table's BigQuery resource (schema, rows, bytes); null before its first run",
          rule="read", tag="tables", errors=(502, 503)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
