"""The OpenAPI document, generated from the route table: nothing in it is written by hand.

Each operation documents its success response and every error status it can answer, derived from
its declaration (so the property-based tests can hold the server to it, tests/integration/
test_api_fuzz.py):

- any route that takes input (path parameters, a query, a body): 400 (an integer beyond int64,
  a malformed request) and 422 (validation);
- a route with credentials (any rule but ``public``): 401, 403 (a rule not met, or a session's
  write without the CSRF header) and 429 (too many failed attempts from the address);
- a route with path parameters: 404; a write (POST, PUT, PATCH, DELETE): 409 and, with a body, 413;
- anything else a route may answer is declared on it (``Route.errors``: 502, 503).

Integers are documented with the signed 64-bit range where their model sets no narrower bound:
that is what PostgreSQL stores, and what ``maestro.http.validation`` enforces.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from maestro.http.routing import Route
from maestro.http.validation import INT64_MAX, INT64_MIN

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {
    400: "bad request (an integer out of range, a malformed request)",
    401: "no credentials, or credentials refused",
    403: "forbidden by the route's rule",
    404: "not found",
    409: "conflicts with the current state (a concurrent change, a duplicate, a dependency)",
    413: "request body too large",
    422: "the request does not validate: each field's problem",
    429: "too many failed attempts; see Retry-After",
    502: "BigQuery refused or failed the request",
    503: "a service this needs is not running or not configured",
}
_BODIES: dict[str, Any] = {
    "application/json": {"type": "object"},
    # Each Server-Sent Event: the event's position, its type, and the event as JSON.
    "text/event-stream": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
        "required": ["id", "event", "data"],
    },
}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ERROR_SCHEMA = {
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
    "required": ["error"],
}


def error_statuses(r: Route) -> list[int]:
    """Every error status the route can answer (see the module's docstring)."""
    statuses = set(r.errors)
    params = bool(_path_params(r.path))
    if params or r.query is not None or r.body is not None or r.method in _WRITES:
        statuses |= {400, 422}
    if r.rule != "public":
        statuses |= {401, 403, 429}
    if params:
        statuses.add(404)
    if r.method in _WRITES:
        statuses.add(409)
        if r.method != "DELETE":
            statuses.add(413)
    return sorted(statuses)


def _responses(r: Route) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "success"}
    if r.status != 204:
        success["content"] = {r.content_type: {"schema": _BODIES.get(r.content_type, {"type": "string"})}}
    responses: dict[str, Any] = {str(r.status): success}
    for status in error_statuses(r):
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status], "content": {"application/json": {"schema": _ERROR_REF}},
        }
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        responses[str(status)] = response
    return responses


def _bounded(schema: Any) -> Any:
    """``schema`` with the int64 range on each integer that declares no bound of its own."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    if out.get("type") == "integer":
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = INT64_MAX
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = INT64_MIN
    return out


def _operation(r: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": r.summary,
        "tags": [r.tag],
        "operationId": f"{r.method.lower()}_{r.handler.__name__}",
        "x-maestro-rule": r.rule,
        "responses": _responses(r),
    }
    params = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for p in _path_params(r.path)
    ]
    if r.query is not None:
        schema = r.query.model_json_schema(by_alias=True)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": _bounded(prop)})
    if params:
        op["parameters"] = params
    if r.body is not None:
        body_schema = r.body.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for name, definition in body_schema.pop("$defs", {}).items():
            schemas[name] = _bounded(definition)
        schemas[r.body.__name__] = _bounded(body_schema)
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.body.__name__}"}}},
        }
    if r.rule != "public":
        op["security"] = [{"bearer": []}, {"apiToken": []}, {"session": []}]
    return op


def openapi(items: Iterable[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    for r in items:
        if r.path.startswith("/api/"):
            paths.setdefault(_openapi_path(r.path), {})[r.method.lower()] = _operation(r, schemas)
    schemas["Error"] = _ERROR_SCHEMA
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
