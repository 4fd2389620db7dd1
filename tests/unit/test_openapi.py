"""The OpenAPI document generated from the route table documents every answer a route can give."""

from __future__ import annotations

import maestro.http.app  # noqa: F401 - registers every route in the table
from maestro.http.openapi import openapi
from maestro.http.routing import ROUTES
from maestro.http.validation import INT64_MAX, VERSION_MAX

DOC = openapi(ROUTES, "test")


def _responses(path: str, method: str) -> dict:
    return DOC["paths"][path][method]["responses"]


def test_error_statuses_follow_from_each_route_declaration() -> None:
    assert set(_responses("/api/v1/openapi.json", "get")) == {"200"}  # public, no input
    assert set(_responses("/api/v1/me", "get")) == {"200", "401", "403", "429"}
    assert set(_responses("/api/v1/tables/{table_id}", "patch")) == {
        "200", "400", "401", "403", "404", "409", "413", "422", "429"
    }
    assert {"502", "503"} <= set(_responses("/api/v1/tables/{table_id}/dry-run", "post"))
    assert set(_responses("/api/v1/groups/{group_id}", "delete")) == {
        "204", "400", "401", "403", "404", "409", "422", "429"
    }
    assert "content" not in _responses("/api/v1/groups/{group_id}", "delete")["204"]
    error = _responses("/api/v1/me", "get")["401"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    assert DOC["components"]["schemas"]["Error"]["required"] == ["error"]


def test_integers_carry_the_range_the_server_enforces() -> None:
    params = {p["name"]: p["schema"] for p in DOC["paths"]["/api/v1/streams/{stream_id}"]["get"]["parameters"]}
    assert params["after_version"]["maximum"] == VERSION_MAX  # the field's own, narrower bound
    events = {p["name"]: p["schema"] for p in DOC["paths"]["/api/v1/events"]["get"]["parameters"]}
    assert events["after"]["maximum"] == INT64_MAX


def test_server_sent_events_are_documented_as_such() -> None:
    content = _responses("/api/v1/runs/{run_id}/events", "get")["200"]["content"]
    assert set(content) == {"text/event-stream"}


def test_table_changes_document_their_bodies_and_name_rules() -> None:
    patch = DOC["paths"]["/api/v1/tables/{table_id}"]["patch"]["requestBody"]["content"]["application/json"]
    assert patch["schema"] == {"$ref": "#/components/schemas/TablePatch"}
    fields = DOC["components"]["schemas"]["TablePatch"]["properties"]
    assert "version" in fields and "import" in fields and "required" not in DOC["components"]["schemas"]["TablePatch"]
    assert fields["dataset"]["pattern"] == "^[A-Za-z0-9_]{1,1024}$"
