"""The catalog's datasets: listed (registered or used by tables), registered, given to a group."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.events.catalog import DatasetName, DatasetRegistered, ProjectId
from maestro.handlers.catalog import destinations
from maestro.http.auth import principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_body
from maestro.validation import validated


class DatasetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: DatasetName
    project: ProjectId | None = None
    description: str = ""


async def list_datasets(request: web.Request) -> web.Response:
    rows = await request.app[RUNTIME].pool.fetch(
        """
        SELECT d.dataset, max(d.project) AS project, max(d.description) AS description,
               max(d.owner_group) AS owner_group, count(t.table_id) AS tables,
               array_remove(array_agg(DISTINCT t.spec->>'group_id'), NULL) AS table_groups
        FROM (SELECT dataset, project, description, owner_group FROM catalog_datasets
              UNION SELECT DISTINCT dataset, NULL, NULL, NULL FROM catalog_tables WHERE NOT deleted) d
        LEFT JOIN catalog_tables t ON t.dataset = d.dataset AND NOT t.deleted
        GROUP BY d.dataset ORDER BY d.dataset
        """
    )
    return json_response({"datasets": [
        {**dict(r), "description": r["description"] or "", "table_groups": sorted(r["table_groups"])} for r in rows
    ]})


class DatasetOwnerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    group_id: str | None = Field(description="the owning group; null: no owner (its tables' groups own it)")


async def set_dataset_owner(request: web.Request) -> web.Response:
    body = await parse_body(DatasetOwnerBody, request)
    dataset = validated(DatasetBody, {"dataset": request.match_info["dataset"]}).dataset
    runtime = request.app[RUNTIME]
    await destinations.set_dataset_owner(runtime.store, runtime.users, dataset, body.group_id, principal(request).metadata())
    owners = await destinations.dataset_owners(runtime.pool, dataset)
    return json_response({"dataset": dataset, "owner_group": owners.owner, "groups": sorted(owners.groups)})


async def register_dataset(request: web.Request) -> web.Response:
    body = await parse_body(DatasetBody, request)
    await request.app[RUNTIME].catalog.register_dataset(DatasetRegistered(**body.model_dump()), principal(request).metadata())
    return json_response(body.model_dump(), status=201)


ROUTES = routes(
    Route("GET", "/api/v1/datasets", list_datasets, "Datasets (registered or used by tables)", rule="read", tag="datasets"),
    Route("POST", "/api/v1/datasets", register_dataset, "Register a dataset", rule="admin", body=DatasetBody, status=201, tag="datasets"),
    Route("PUT", "/api/v1/datasets/{dataset}/owner", set_dataset_owner, "Give a dataset to a group (members of others may not write there)", rule="admin", body=DatasetOwnerBody, tag="datasets"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
