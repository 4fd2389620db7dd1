"""One declarative table of routes: what each does, what it takes, and who may call it.

The same table registers the aiohttp routes, produces the OpenAPI document, and gives the one
authorization middleware (``maestro.http.auth``) each route's ``rule``:

- ``public``: anyone, no credentials looked at;
- ``read``: any enabled user;
- ``write``: administrators, and members of the group of the table the route names
  (``{table_id}``) and of any ``group_id`` in the body (docs/auth.md);
- ``extract``: administrators, members of the group of the table in ``{table_id}``, and any
  enabled user when the table's extracts are shared (``maestro.http.extract_rule``);
- ``admin``: administrators only.

A route without a rule is refused to everyone (fail closed), and the route-matrix test fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Rule = Literal["public", "read", "write", "extract", "admin"]
RULES: tuple[Rule, ...] = ("public", "read", "write", "extract", "admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    rule: Rule | None = None  # None: no rule declared, so nobody may call it
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    tag: str = "misc"


ROUTES: list[Route] = []


def routes(*items: Route) -> list[Route]:
    ROUTES.extend(r for r in items if r not in ROUTES)
    return list(items)


ROUTE_TABLE = web.AppKey("route_table", dict)
"""The app's aiohttp route -> our :class:`Route`: how the middleware finds a request's rule."""


def register(app: web.Application, items: Iterable[Route]) -> None:
    table = app.get(ROUTE_TABLE)
    if table is None:
        table = app[ROUTE_TABLE] = {}
    for r in items:
        table[app.router.add_route(r.method, r.path, r.handler)] = r


def route_of(request: web.Request) -> Route | None:
    """The declared route a request matched (None for 404/405 and undeclared routes)."""
    table = request.app.get(ROUTE_TABLE)
    return table.get(request.match_info.route) if table is not None else None


def openapi(items: Iterable[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    error_ref = {"$ref": "#/components/schemas/Error"}
    for r in items:
        if not r.path.startswith("/api/"):
            continue
        op: dict[str, Any] = {
            "summary": r.summary,
            "tags": [r.tag],
            "operationId": f"{r.method.lower()}_{r.handler.__name__}",
            "x-maestro-rule": r.rule,
            "responses": {
                str(r.status): {"description": "success"},
                "default": {"description": "error", "content": {"application/json": {"schema": error_ref}}},
            },
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _path_params(r.path)
        ]
        if r.query is not None:
            schema = r.query.model_json_schema()
            required = set(schema.get("required", []))
            for name, prop in schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if params:
            op["parameters"] = params
        if r.body is not None:
            body_schema = r.body.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
            for name, definition in body_schema.pop("$defs", {}).items():
                schemas[name] = definition
            schemas[r.body.__name__] = body_schema
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}},
            }
        if r.rule != "public":
            op["security"] = [{"bearer": []}, {"apiToken": []}, {"session": []}]
        paths.setdefault(_openapi_path(r.path), {})[r.method.lower()] = op
    schemas["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
                "required": ["code", "message"],
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Maestro API", "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiToken": {"type": "apiKey", "in": "header", "name": "X-Api-Token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "__Host-maestro_session"},
            },
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _openapi_path(path: str) -> str:
    return "/".join(
        "{" + part[1:-1].split(":")[0] + "}" if part.startswith("{") else part for part in path.split("/")
    )
