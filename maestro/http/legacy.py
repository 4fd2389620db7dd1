"""The original Maestro's API, at its paths and with its JSON, for its existing clients.

``pythonlib/maestro.py`` and scripts written against the original call these (reference §3, §9):

    GET  /table/{dataset.name}/id     {"Id": n | null}
    GET  /table/{id}                  the table with Parents, Extracts (signed URLs), UploadURL
    GET  /table/{id}/status           {"Id", "Status": "running" | "error" | "", "Error", "LastOkRunEndAt"}
    GET  /table/{id}/bq_info          BigQuery's table resource, or null
    POST /table/{id}/load_external    form field fn: load the uploaded object
    GET  /table/{id}/run              run the table now: {"bq_job_id"}
    GET  /tables, GET /runs?p=N       lists

``{id}`` is the table's integer number (our ids and ``dataset.name`` are accepted too): the
middleware below turns it into the table's id *before* authorization, so the same rules as our
own routes apply to the table it means -- write access for ``run`` and ``load_external`` (the
original checked neither on ``load_external``), the extract rule on the signed URLs, and the
upload URL only for the table's writers. ``GET /table/{id}/run`` changes things on a GET, so it
is refused to a session cookie (a link on another site could follow it): send ``X-Api-Token``.
Tokens go in ``X-Api-Token`` as the original's did, or ``Authorization: Bearer``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field

from maestro.adapters.bigquery import job_id_for
from maestro.errors import Conflict, Forbidden, NotFound, ServiceUnavailable
from maestro.events.catalog import TableSpec
from maestro.handlers.catalog import table_refs
from maestro.handlers.runs import extracts, uploads
from maestro.handlers.runs.legacy_upload import load_body, octet_upload_url
from maestro.handlers.runs.table_status import table_status, table_statuses
from maestro.http import legacy_views as views
from maestro.http.auth import principal
from maestro.http.extract_rule import unreadable_extracts
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, route_of, routes
from maestro.http.rules import write_problem
from maestro.http.table_info import bigquery_resource
from maestro.http.validation import json_response, parse_query

_NAME = re.compile(r"\w+\.\w+", re.ASCII)
_JOB_KINDS = {"summary": "query", "import": "import", "external": "external"}
PAGE = 20
LEGACY_REF = web.RequestKey("legacy_table", table_refs.TableRef)


class TablesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sort: Literal["id", "name"] = "id"
    order: Literal["asc", "desc"] = "asc"
    filter: Literal["bq", "import", "external"] | None = None


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p: int = Field(0, ge=0, le=1_000_000)


def _ref(request: web.Request) -> table_refs.TableRef:
    ref = request.get(LEGACY_REF)
    if ref is None:
        raise NotFound(f"no table {request.match_info.get('table_id')!r}")
    return ref


# ---------------------------------------------------------------------- reading
async def table_id_by_name(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        return json_response({"Id": None, "Error": f"{name!r} is not dataset.name"})
    found = await table_refs.find(request.app[RUNTIME].pool, name)
    return json_response({"Id": found.number if found is not None and not found.deleted else None})


async def list_tables(request: web.Request) -> web.Response:
    q = parse_query(TablesQuery, request)
    pool = request.app[RUNTIME].pool
    refs = await table_refs.live_tables(pool)
    kind = {"bq": "summary", "import": "import", "external": "external"}.get(q.filter or "")
    refs = [r for r in refs if kind is None or r.kind == kind]
    refs.sort(key=(lambda r: r.number) if q.sort == "id" else (lambda r: (r.dataset, r.name)), reverse=q.order == "desc")
    statuses = await table_statuses(pool, [r.table_id for r in refs])
    return json_response([views.table(r, statuses[r.table_id]) for r in refs])


async def get_table(request: web.Request) -> web.Response:
    ref = _ref(request)
    runtime = request.app[RUNTIME]
    body = views.table(ref, await table_status(runtime.pool, ref.table_id))
    await runtime.catalog.refresh()
    parents = runtime.catalog.dependencies(ref.table_id)["parents"]
    rows = await runtime.pool.fetch(
        "SELECT number, dataset, name FROM catalog_tables WHERE table_id = ANY($1) ORDER BY number", parents)
    body["Parents"] = [{"Id": r["number"], "Dataset": r["dataset"], "Name": r["name"]} for r in rows]
    body["Extracts"] = views.extracts(await _latest_extract(request, ref))
    body["UploadURL"] = await _upload_url(request, ref)
    body["GithubUrl"] = ""
    body["ImportSelect"] = (ref.spec.get("import") or {}).get("query", "")
    return json_response(body)


async def _latest_extract(request: web.Request, ref: table_refs.TableRef) -> dict[str, Any] | None:
    """The latest extract's signed URLs, for whom the extract rule admits (others: none)."""
    runtime = request.app[RUNTIME]
    services = runtime.services
    if services is None or await unreadable_extracts(runtime.pool, principal(request), [ref.table_id]):
        return None
    lifetime = dt.timedelta(seconds=runtime.settings.signed_url_lifetime)
    return await extracts.latest_extract(runtime.catalog, services.storage, services.signer, ref.table_id, lifetime)


async def _upload_url(request: web.Request, ref: table_refs.TableRef) -> str:
    """A signed PUT URL of a new object, for the writers of a live external table; else ""."""
    runtime = request.app[RUNTIME]
    services = runtime.services
    if ref.kind != "external" or ref.deleted or services is None:
        return ""
    who = principal(request)
    if not who.admin and await write_problem(request, who) is not None:
        return ""
    lifetime = dt.timedelta(seconds=runtime.settings.upload_url_lifetime)
    spec = TableSpec.model_validate(ref.spec)
    return await octet_upload_url(services.storage, services.signer, services.runner.config.bucket, spec, lifetime)


async def get_status(request: web.Request) -> web.Response:
    ref = _ref(request)
    return json_response(views.table_status(ref, await table_status(request.app[RUNTIME].pool, ref.table_id)))


async def bq_info(request: web.Request) -> web.Response:
    return json_response(await bigquery_resource(request, _ref(request)))


async def list_runs(request: web.Request) -> web.Response:
    q = parse_query(PageQuery, request)
    rows = await request.app[RUNTIME].pool.fetch(
        "SELECT r.run_id, r.frequency_id, r.status, r.planned_at, r.planned_by, r.finished_at, r.reason, "
        "f.name AS frequency_name, "
        "(SELECT coalesce(sum((j.statistics->>'bytes_billed')::bigint), 0) FROM jobs j WHERE j.run_id = r.run_id) AS total "
        "FROM runs r LEFT JOIN catalog_frequencies f ON f.frequency_id = r.frequency_id "
        "ORDER BY r.planned_at DESC, r.run_id OFFSET $1 LIMIT $2",
        q.p * PAGE, PAGE,
    )
    return json_response([views.run(r, int(r["total"])) for r in rows])


# ---------------------------------------------------------------------- acting
async def run_table(request: web.Request) -> web.Response:
    ref = _ref(request)
    run_id = await request.app[RUNTIME].runs.plan_table(ref.table_id, descendants=False, actor=principal(request).metadata())
    job_id = job_id_for(run_id, ref.table_id, 1, _JOB_KINDS.get(ref.kind, "query"))
    return json_response({"bq_job_id": job_id, "RunId": run_id})


async def load_external(request: web.Request) -> web.Response:
    ref = _ref(request)
    if ref.deleted:
        raise Conflict(f"table {ref.number} is deleted")
    form = await request.post()
    fn = form.get("fn")
    runtime = request.app[RUNTIME]
    services = runtime.services
    if services is None:
        raise ServiceUnavailable("Google Cloud Storage is not available in this process")
    spec = TableSpec.model_validate(ref.spec)
    planned = await uploads.request_load(
        runtime.store, services.storage, services.runner.config.bucket, runtime.runs.project, ref.table_id, spec,
        load_body(fn if isinstance(fn, str) else None, spec), principal(request).metadata(),
    )
    return json_response({"bq_job_id": planned.job_id, "Object": planned.uri})


ROUTES = routes(
    Route("GET", "/table/{table_id}", get_table, "(original API) A table with Parents, Extracts, UploadURL",
          rule="read", tag="original"),
    Route("GET", "/table/{name}/id", table_id_by_name, "(original API) The number of dataset.name", rule="read", tag="original"),
    Route("GET", "/table/{table_id}/status", get_status, "(original API) running, error or nothing; LastOkRunEndAt",
          rule="read", tag="original"),
    Route("GET", "/table/{table_id}/bq_info", bq_info, "(original API) BigQuery's table resource, or null",
          rule="read", tag="original", errors=(502, 503)),
    Route("POST", "/table/{table_id}/load_external", load_external, "(original API) Load the uploaded object fn",
          rule="write", tag="original", errors=(502, 503)),
    Route("GET", "/table/{table_id}/run", run_table, "(original API) Run the table now (API token only)",
          rule="write", tag="original"),
)
_LEGACY = set(ROUTES)
_WRITES_ON_GET = {r for r in ROUTES if r.method == "GET" and r.rule == "write"}


def speaks_original(request: web.Request) -> bool:
    """A client of the original API: it sends ``X-Api-Token`` (a browser never does), or asks for
    JSON. ``GET /tables`` and ``GET /runs`` are both the UI's pages and the original's lists."""
    accept = request.headers.get("Accept", "")
    return "X-Api-Token" in request.headers or (accept.startswith("application/json") and "text/html" not in accept)


def negotiated(page: Handler, original: Handler) -> Handler:
    """One path, two answers: the original API's JSON for its clients, else the UI's page (both
    under the route's one rule, ``read``)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await (original if speaks_original(request) else page)(request)

    return handler


@web.middleware
async def legacy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn the table reference of an original route into its id before the rules read it."""
    route = route_of(request)
    if route is None or route not in _LEGACY:
        return await handler(request)
    if route in _WRITES_ON_GET and "Authorization" not in request.headers and "X-Api-Token" not in request.headers:
        if request.cookies:
            raise Forbidden(f"{request.path} changes things on a GET: send an API token (X-Api-Token), "
                            "not a session cookie", rule="csrf")
    given = request.match_info.get("table_id")
    if given is not None:
        found = await table_refs.find(request.app[RUNTIME].pool, given)
        if found is not None:
            request.match_info["table_id"] = found.table_id
            request[LEGACY_REF] = found
    return await handler(request)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
