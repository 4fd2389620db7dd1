"""The catalog API: tables, their dependencies, history and lineage; frequencies (datasets:
``maestro.http.datasets``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, create_model

from maestro.handlers.catalog import lineage
from maestro.errors import NotFound, ValidationFailed
from maestro.events.catalog import FrequencySpec, TableSpec
from maestro.handlers.catalog.service import validate_spec
from maestro.http.auth import principal
from maestro.http import deliveries, loads
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import VERSION_MAX, json_object, json_response, parse_body, parse_query, pop_expected_version

MAX_PAGE = 500
SPEC_FIELDS = frozenset(
    (f.alias or name) for name, f in TableSpec.model_fields.items()
)


def _catalog(request: web.Request):
    return request.app[RUNTIME].catalog


# ---------------------------------------------------------------------- tables
class TableListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["summary", "import", "external"] | None = None
    dataset: str | None = None
    group: str | None = None
    frequency: str | None = None
    q: str | None = Field(None, description="text search in name, description and SQL")
    include_deleted: bool = False
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=MAX_PAGE)


def _with_metadata(info: Any) -> Any:
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _table_body(name: str, *, partial: bool) -> type[BaseModel]:
    """The request shape of PUT (``partial=False``) or PATCH for the OpenAPI document: the spec's
    fields and the optional ``version`` read (409 if it moved). Validation is the handler's."""
    fields: dict[str, Any] = {
        # Absent means "unchanged": a default of None that is not a value to send.
        field: ((_with_metadata(info), Field(None, alias=info.alias)) if partial else (info.annotation, info))
        for field, info in TableSpec.model_fields.items()
    }
    fields["version"] = (int | None, Field(None, ge=0, le=VERSION_MAX, description="the version read: 409 if it moved"))
    return create_model(name, __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)


TablePatch = _table_body("TablePatch", partial=True)
TableReplace = _table_body("TableReplace", partial=False)


class AsOfQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.datetime | None = Field(None, description="ISO 8601 instant: the table as it was then")


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, le=VERSION_MAX, description="bring back this version (default: undelete)")


class ColumnQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: str = Field(min_length=1)


class GraphQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str | None = Field(None, description="centre the subgraph on this table id")
    depth: int | None = Field(None, ge=0, le=100)
    direction: Literal["up", "down", "both"] = "both"


async def list_tables(request: web.Request) -> web.Response:
    q = parse_query(TableListQuery, request)
    rows = await request.app[RUNTIME].pool.fetch(
        """
        SELECT table_id, spec::text, version, deleted, created_at, created_by, updated_at, updated_by,
               count(*) OVER () AS total
        FROM catalog_tables
        WHERE ($1 OR NOT deleted)
          AND ($2::text IS NULL OR kind = $2)
          AND ($3::text IS NULL OR dataset = $3)
          AND ($4::text IS NULL OR spec->>'group_id' = $4)
          AND ($5::text IS NULL OR spec->>'frequency_id' = $5)
          AND ($6::text IS NULL OR name ILIKE '%' || $6 || '%' OR spec->>'description' ILIKE '%' || $6 || '%'
               OR spec->>'query' ILIKE '%' || $6 || '%')
        ORDER BY dataset, name, table_id
        OFFSET $7 LIMIT $8
        """,
        q.include_deleted, q.kind, q.dataset, q.group, q.frequency, q.q, q.offset, q.limit,
    )
    tables = [_row_view(r) for r in rows]
    total = rows[0]["total"] if rows else 0
    return json_response({"tables": tables, "total": total, "offset": q.offset, "limit": q.limit})


def _row_view(r: Any) -> dict[str, Any]:
    return {
        "id": r["table_id"],
        **orjson.loads(r["spec"]),
        "version": r["version"],
        "deleted": r["deleted"],
        "created_at": r["created_at"].isoformat(),
        "created_by": r["created_by"],
        "updated_at": r["updated_at"].isoformat(),
        "updated_by": r["updated_by"],
    }


async def create_table(request: web.Request) -> web.Response:
    who = principal(request)
    body = await json_object(request)
    # Who creates a table owns it (and is billed for it); it belongs to their first group unless
    # they name one (the write rule has checked that they may).
    body.setdefault("owner_id", who.user_id)
    if "group_id" not in body and who.groups:
        body["group_id"] = who.groups[0]
    await _known_group(request, body.get("group_id"))
    spec = validate_spec(body)
    warnings: list[str] = []
    await deliveries.check_save(request, body, warnings)  # 422 for a callback URL not allowed
    view = await _catalog(request).create_table(spec, who.metadata(), warnings=warnings)
    callback = await deliveries.after_save(request, view)  # a new endpoint's secret, once
    return json_response({**_with_deps(request, view.to_dict()), "warnings": warnings, **callback}, status=201)


async def get_table(request: web.Request) -> web.Response:
    q = parse_query(AsOfQuery, request)
    view = await _catalog(request).get_table(request.match_info["table_id"], as_of=q.as_of)
    body = view.to_dict()
    if q.as_of is None:
        body = _with_deps(request, body)
        if view.spec.get("kind") == "external":  # a signed upload URL, for the table's writers
            body["upload"] = await loads.upload_field(request, view)
    return json_response(body)


def _with_deps(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "dependencies": _catalog(request).dependencies(body["id"])}


async def _known_group(request: web.Request, group_id: Any) -> None:
    if isinstance(group_id, str) and not await request.app[RUNTIME].users.group_exists(group_id):
        raise ValidationFailed(f"group_id: no group {group_id!r}", problems=[{"field": "group_id", "message": "no such group"}])


async def _changes(request: web.Request, *, partial: bool) -> tuple[dict[str, Any], int | None]:
    body = await json_object(request)
    await _known_group(request, body.get("group_id"))
    expected = pop_expected_version(body)
    unknown = sorted(set(body) - SPEC_FIELDS)
    if unknown:
        raise ValidationFailed(
            "; ".join(f"{k}: unknown field" for k in unknown),
            problems=[{"field": k, "message": "unknown field"} for k in unknown],
        )
    if partial and not body:
        raise ValidationFailed("nothing to change: send the fields to change")
    return body, expected


async def patch_table(request: web.Request) -> web.Response:
    changes, expected = await _changes(request, partial=True)
    warnings: list[str] = []
    await deliveries.check_save(request, changes, warnings)
    view = await _catalog(request).update_table(
        request.match_info["table_id"], changes, principal(request).metadata(), expected_version=expected,
        warnings=warnings,
    )
    callback = await deliveries.after_save(request, view)
    return json_response({**_with_deps(request, view.to_dict()), "warnings": warnings, **callback})


async def put_table(request: web.Request) -> web.Response:
    spec, expected = await _changes(request, partial=False)
    # A replaced definition keeps its group and owner unless the body names them: leaving them
    # out is not a request to orphan the table (which would lock its group's members out).
    current = (await _catalog(request).get_table(request.match_info["table_id"])).to_dict()
    for key in ("group_id", "owner_id"):
        spec.setdefault(key, current.get(key))
    warnings: list[str] = []
    await deliveries.check_save(request, spec, warnings)
    view = await _catalog(request).update_table(
        request.match_info["table_id"], spec, principal(request).metadata(),
        expected_version=expected, replace=True, warnings=warnings,
    )
    callback = await deliveries.after_save(request, view)
    return json_response({**_with_deps(request, view.to_dict()), "warnings": warnings, **callback})


async def delete_table(request: web.Request) -> web.Response:
    view = await _catalog(request).delete_table(request.match_info["table_id"], principal(request).metadata())
    return json_response(view.to_dict())


async def restore_table(request: web.Request) -> web.Response:
    body = await parse_body(RestoreBody, request)
    view = await _catalog(request).restore_table(
        request.match_info["table_id"], principal(request).metadata(), version=body.version
    )
    return json_response(_with_deps(request, view.to_dict()))


async def table_history(request: web.Request) -> web.Response:
    table_id = request.match_info["table_id"]
    return json_response({"id": table_id, "versions": await _catalog(request).history(table_id)})


def _summaries(request: web.Request, ids: list[str]) -> list[dict[str, Any]]:
    deps = _catalog(request).deps
    return [
        {"id": i, "dataset": deps.entries[i].dataset, "name": deps.entries[i].name}
        for i in ids
        if i in deps.entries
    ]


async def _live(request: web.Request) -> str:
    catalog = _catalog(request)
    table_id = request.match_info["table_id"]
    await catalog.refresh()
    if table_id not in catalog.deps.entries:
        await catalog.get_table(table_id)  # 404 for unknown ids
    return table_id


async def table_parents(request: web.Request) -> web.Response:
    table_id = await _live(request)
    catalog = _catalog(request)
    references = catalog.references(table_id)
    found = catalog.deps.resolution(table_id)
    return json_response({
        # The tables that order this one's runs (kind inferred or depends_on) ...
        "parents": [r for r in references if r["kind"] != "not_dependency"],
        # ... and every table it names, including those its not_dependencies exclude.
        "references": references,
        "external": list(found.external),
        "missing": list(found.missing),  # depends_on entries naming no live table
    })


async def table_children(request: web.Request) -> web.Response:
    table_id = await _live(request)
    deps = _catalog(request).dependencies(table_id)
    return json_response({"children": _summaries(request, deps["children"])})


async def graph(request: web.Request) -> web.Response:
    q = parse_query(GraphQuery, request)
    catalog = _catalog(request)
    await catalog.refresh()
    g = catalog.deps.graph
    if q.table is not None:
        if q.table not in g:
            raise NotFound(f"table {q.table!r} is not a live table of the catalog")
        g = g.neighbourhood(q.table, q.depth, q.direction)
    priorities = catalog.deps.graph.priorities()
    nodes = [
        {
            "id": n,
            "dataset": catalog.deps.entries[n].dataset,
            "name": catalog.deps.entries[n].name,
            "priority": priorities.get(n, 0),
        }
        for n in g.nodes()
        if n in catalog.deps.entries
    ]
    resolved = {n: catalog.deps.resolution(n) for n in g.nodes() if n in catalog.deps.entries}
    edges = [{"parent": p, "child": c, "kind": resolved[c].kind(p)} for p, c in g.edges() if c in resolved]
    # References a not_dependencies entry keeps out of the DAG: shown, but they order nothing.
    ignored = [
        {"parent": p, "child": c, "kind": "not_dependency"}
        for c, found in sorted(resolved.items())
        for p in sorted(found.ignored)
        if p in g
    ]
    return json_response({
        "nodes": nodes, "edges": edges, "ignored_edges": ignored,
        "generations": g.topological_generations(),
    })


async def table_lineage(request: web.Request) -> web.Response:
    q = parse_query(ColumnQuery, request)
    table_id = await _live(request)
    sources = await lineage.column_sources(request.app[RUNTIME].catalog, table_id, q.column)
    return json_response({"id": table_id, "column": q.column, "sources": sources})


async def table_impact(request: web.Request) -> web.Response:
    q = parse_query(ColumnQuery, request)
    table_id = await _live(request)
    impacted = await lineage.impact(request.app[RUNTIME].catalog, table_id, q.column)
    return json_response({"id": table_id, "column": q.column, "impacted": impacted})


class CatalogAsOfQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: dt.datetime


async def catalog_as_of(request: web.Request) -> web.Response:
    q = parse_query(CatalogAsOfQuery, request)
    views = await _catalog(request).catalog_as_of(q.as_of)
    return json_response({"as_of": q.as_of.isoformat(), "tables": [v.to_dict() for v in views]})


# ---------------------------------------------------------------------- frequencies
class FrequencyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    period: int | None = Field(None, gt=0)
    offset: int | None = None
    cron: str | None = None
    timezone: str | None = None
    active: bool | None = None
    missed: Literal["latest", "skip"] | None = None
    overlap: Literal["skip", "queue", "allow"] | None = None


async def list_frequencies(request: web.Request) -> web.Response:
    rows = await request.app[RUNTIME].pool.fetch(
        "SELECT frequency_id, spec::text, version FROM catalog_frequencies ORDER BY name"
    )
    return json_response({"frequencies": [{"id": r[0], **_frequency_spec(r[1]), "version": r[2]} for r in rows]})


def _frequency_spec(stored: str) -> dict[str, Any]:
    """The stored spec with today's defaults: a frequency created before a field existed shows it."""
    return FrequencySpec.model_validate(orjson.loads(stored)).model_dump(mode="json")


async def _frequency(request: web.Request, frequency_id: str) -> dict[str, Any]:
    row = await request.app[RUNTIME].pool.fetchrow(
        "SELECT frequency_id, spec::text, version FROM catalog_frequencies WHERE frequency_id = $1",
        frequency_id,
    )
    if row is None:
        raise NotFound(f"no frequency {frequency_id!r}")
    return {"id": row[0], **_frequency_spec(row[1]), "version": row[2]}


async def create_frequency(request: web.Request) -> web.Response:
    spec = await parse_body(FrequencySpec, request)
    frequency_id = await _catalog(request).create_frequency(spec, principal(request).metadata())
    return json_response(await _frequency(request, frequency_id), status=201)


async def get_frequency(request: web.Request) -> web.Response:
    return json_response(await _frequency(request, request.match_info["frequency_id"]))


async def patch_frequency(request: web.Request) -> web.Response:
    patch = await parse_body(FrequencyPatch, request)
    frequency_id = request.match_info["frequency_id"]
    await _catalog(request).update_frequency(
        frequency_id, patch.model_dump(exclude_none=True), principal(request).metadata()
    )
    return json_response(await _frequency(request, frequency_id))


ROUTES = routes(
    Route("GET", "/api/v1/tables", list_tables, "List tables (filters, text search, pagination)", query=TableListQuery, rule="read", tag="tables"),
    Route("POST", "/api/v1/tables", create_table, "Create a table", rule="write", body=TableSpec, status=201, tag="tables"),
    Route("GET", "/api/v1/tables/{table_id}", get_table, "A table, now or as of an instant", query=AsOfQuery, rule="read", tag="tables"),
    Route("PATCH", "/api/v1/tables/{table_id}", patch_table, "Change some fields (optionally at an expected version)", rule="write", body=TablePatch, tag="tables"),
    Route("PUT", "/api/v1/tables/{table_id}", put_table, "Replace the whole definition", rule="write", body=TableReplace, tag="tables"),
    Route("DELETE", "/api/v1/tables/{table_id}", delete_table, "Delete a table (soft)", rule="write", tag="tables"),
    Route("POST", "/api/v1/tables/{table_id}/restore", restore_table, "Undelete, or bring back an old version", rule="write", body=RestoreBody, tag="tables"),
    Route("GET", "/api/v1/tables/{table_id}/history", table_history, "Every version: who, when, what changed", rule="read", tag="tables"),
    Route("GET", "/api/v1/tables/{table_id}/parents", table_parents, "Tables this one reads, and external sources", rule="read", tag="dependencies"),
    Route("GET", "/api/v1/tables/{table_id}/children", table_children, "Tables that read this one", rule="read", tag="dependencies"),
    Route("GET", "/api/v1/tables/{table_id}/lineage", table_lineage, "Source columns of an output column", query=ColumnQuery, rule="read", tag="dependencies"),
    Route("GET", "/api/v1/tables/{table_id}/impact", table_impact, "Downstream tables and columns that depend on a column", query=ColumnQuery, rule="read", tag="dependencies"),
    Route("GET", "/api/v1/graph", graph, "The whole DAG, or a subgraph around a table", query=GraphQuery, rule="read", tag="dependencies", errors=(404,)),
    Route("GET", "/api/v1/catalog", catalog_as_of, "The whole catalog as of an instant", query=CatalogAsOfQuery, rule="read", tag="tables"),
    Route("GET", "/api/v1/frequencies", list_frequencies, "List frequencies", rule="read", tag="frequencies"),
    Route("POST", "/api/v1/frequencies", create_frequency, "Create a frequency", rule="admin", body=FrequencySpec, status=201, tag="frequencies"),
    Route("GET", "/api/v1/frequencies/{frequency_id}", get_frequency, "A frequency", rule="read", tag="frequencies"),
    Route("PATCH", "/api/v1/frequencies/{frequency_id}", patch_frequency, "Change a frequency", rule="admin", body=FrequencyPatch, tag="frequencies"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
