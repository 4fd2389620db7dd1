"""Table pages: the list (filters, search, sort, pages, inline run), a new table, one table.

Reads are the API's read models (``catalog_tables``, ``jobs``, the in-memory dependency graph,
the table's stream for its history); every change is made by the page's script calling the API
(``PUT /api/v1/tables/{id}``, ``POST .../run``, ``.../dry-run``, ``.../restore``...), so the
rules, validation and errors are the API's own.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError

from maestro.errors import ValidationFailed
from maestro.http import legacy
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, routes
from maestro.http.ui import tables_query
from maestro.http.ui.render import Pager, page, who
from maestro.projections.cost_queries import usd

# The fields the table form edits one by one; everything else of the spec is in its JSON box.
FORM_FIELDS = ("dataset", "name", "project", "kind", "description", "group_id", "owner_id", "frequency_id",
               "write_disposition", "legacy_sql", "query")
JOBS_PAGE = 20
TEMPLATES: dict[str, dict[str, Any]] = {
    "summary": {},
    "import": {"import": {"source_database": "", "source_table": "", "id_column": None}},
    "external": {"external": {"format": "csv", "wait_timeout": 3600}},
}


def _filters(request: web.Request) -> tables_query.TableFilters:
    try:
        return tables_query.TableFilters.from_query(request.query)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


async def tables_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    f = _filters(request)
    rows, total = await tables_query.list_tables(runtime.pool, f)
    choices = await tables_query.choices(runtime.pool)
    return page(request, "tables.html", title="Tables", rows=rows, f=f, choices=choices,
                statuses=[(s, s) for s in tables_query.STATUSES], frequency_names=dict(choices["frequencies"]),
                pager=Pager(request, total, f.offset, tables_query.PAGE))


async def new_table_page(request: web.Request) -> web.Response:
    kind = request.query.get("kind", "summary")
    if kind not in TEMPLATES:
        raise ValidationFailed("kind: one of summary, import, external")
    principal = who(request)
    spec = {"kind": kind, "dataset": "", "name": "", "description": "", "query": "", "write_disposition": "replace",
            "legacy_sql": False, "frequency_id": None, "owner_id": None,
            "group_id": principal.groups[0] if principal and principal.groups else None}
    return page(request, "table_form.html", title=f"New {kind} table", table=None, spec=spec,
                other=TEMPLATES[kind], choices=await tables_query.choices(request.app[RUNTIME].pool))


async def _jobs(pool: Any, table_id: str, offset: int, price: float) -> tuple[list[dict[str, Any]], int]:
    rows = await pool.fetch(
        "SELECT job_id, run_id, kind, state, attempt, planned_at, submitted_at, finished_at, error, "
        "COALESCE((statistics->>'total_bytes_billed')::bigint, 0) AS billed, "
        "COALESCE((statistics->>'total_bytes_processed')::bigint, 0) AS processed, "
        "(statistics->>'cache_hit')::boolean AS cache_hit, count(*) OVER () AS total "
        "FROM jobs WHERE table_id = $1 ORDER BY planned_at DESC, job_id OFFSET $2 LIMIT $3",
        table_id, offset, JOBS_PAGE,
    )
    jobs = [{**dict(r), "usd": usd(r["billed"], price)} for r in rows]
    return jobs, (rows[0]["total"] if rows else 0)


def _links(runtime: Any, ids: list[str]) -> list[dict[str, str]]:
    entries = runtime.catalog.deps.entries
    return [{"id": i, "label": f"{entries[i].dataset}.{entries[i].name}"} for i in ids if i in entries]


async def table_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    table_id = request.match_info["table_id"]
    view = await runtime.catalog.get_table(table_id)  # NotFound: the 404 page
    await runtime.catalog.refresh()
    deps = runtime.catalog.dependencies(table_id)
    spec = view.spec
    other = {k: v for k, v in spec.items() if k not in FORM_FIELDS and v not in (None, [], {})}
    try:
        jobs_offset = max(0, int(request.query.get("jobs_offset", "0")))
    except ValueError:
        raise ValidationFailed("jobs_offset: must be a whole number") from None
    jobs, jobs_total = await _jobs(runtime.pool, table_id, jobs_offset, runtime.config.price_per_tib)
    versions = await runtime.catalog.history(table_id)
    pager = Pager(request, jobs_total, jobs_offset, JOBS_PAGE, param="jobs_offset", anchor="#jobs")
    return page(
        request, "table.html", title=f"{spec['dataset']}.{spec['name']}", table=view.to_dict(), spec=spec,
        other=other, choices=await tables_query.choices(runtime.pool),
        parents=_links(runtime, deps["parents"]), children=_links(runtime, deps["children"]),
        external=deps["external"], jobs=jobs, jobs_pager=pager, versions=list(reversed(versions)),
        has_extract=spec.get("extract") is not None,
    )


ROUTES = routes(
    Route("GET", "/tables", legacy.negotiated(tables_page, legacy.list_tables),
          "Page: the tables (with X-Api-Token: the original API's JSON list)", rule="read", tag="ui", content_type="text/html"),
    Route("GET", "/tables/new", new_table_page, "Page: a new table", rule="read", tag="ui", content_type="text/html"),
    Route("GET", "/tables/{table_id}", table_page, "Page: one table", rule="read", tag="ui", content_type="text/html"),
)
