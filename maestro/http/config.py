"""The configuration API (administrators only): sections and source databases.

Secrets are write-only. A response shows a secret field as ``{"set": true|false}``; in a request a
secret that is blank, absent or sent back as that object keeps the stored one, and
``clear_secrets: ["field"]`` removes one. The body of a PUT or PATCH may carry the ``version``
read earlier: a change made meanwhile is then a 409 instead of being overwritten.
"""

from __future__ import annotations

from typing import Any, Union

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, RootModel, SecretStr, create_model

from maestro.errors import NotFound, ValidationFailed
from maestro.events.config import SECTIONS, SINGLE_SECTIONS, DatabaseName
from maestro.handlers.config.service import ConfigService, public_view
from maestro.handlers.git.status import git_status
from maestro.http.auth import principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_object, json_response, pop_expected_version

_SECRET_DOC = "secret, write-only: blank or absent keeps the stored value"


def _service(request: web.Request) -> ConfigService:
    return request.app[RUNTIME].config_service


async def _body(request: web.Request) -> tuple[dict[str, Any], int | None, list[str]]:
    """The values, the expected version and the secrets to clear, from a JSON object body."""
    body = await json_object(request)
    version = pop_expected_version(body)
    clear = body.pop("clear_secrets", [])
    if not isinstance(clear, list) or not all(isinstance(f, str) for f in clear):
        raise ValidationFailed("clear_secrets: must be a list of field names")
    return body, version, clear


def _section(request: web.Request) -> str:
    section = request.match_info["section"]
    if section not in SINGLE_SECTIONS:
        hint = " (databases: /api/v1/databases)" if section == "databases" else ""
        raise NotFound(f"no configuration section {section!r}; known: {', '.join(SINGLE_SECTIONS)}{hint}")
    return section


# ---------------------------------------------------------------------- sections
async def list_config(request: web.Request) -> web.Response:
    view = request.app[RUNTIME].config
    return json_response({
        "sections": [public_view(s, view.entry(s)) for s in SINGLE_SECTIONS],
        "databases": [public_view("databases", e, name=e.name) for e in view.entries() if e.section == "databases"],
    })


async def get_section(request: web.Request) -> web.Response:
    section = _section(request)
    view = public_view(section, await _service(request).current(section))
    if section == "git":  # the repository's last sync, its commit and any error (docs/git.md)
        view["status"] = await git_status(request.app[RUNTIME].pool, request.app[RUNTIME].config.get("git"))
    return json_response(view)


async def put_section(request: web.Request) -> web.Response:
    who = principal(request)
    section = _section(request)
    values, version, clear = await _body(request)
    entry = await _service(request).set_section(
        section, values, who.metadata(), partial=False, expected_version=version, clear=clear
    )
    return json_response(public_view(section, entry))


# ---------------------------------------------------------------------- databases
async def list_databases(request: web.Request) -> web.Response:
    rows = [e for e in request.app[RUNTIME].config.entries() if e.section == "databases"]
    return json_response({"databases": [public_view("databases", e, name=e.name) for e in rows]})


async def create_database(request: web.Request) -> web.Response:
    who = principal(request)
    values, _, _ = await _body(request)
    name = values.pop("name", None)
    entry = await _service(request).add_database(name, values, who.metadata())
    return json_response(public_view("databases", entry, name=name), status=201)


async def get_database(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    entry = await _service(request).current("databases", name)
    if entry is None or entry.deleted:
        raise NotFound(f"no database named {name!r}", name=name)
    return json_response(public_view("databases", entry, name=name))


async def patch_database(request: web.Request) -> web.Response:
    who = principal(request)
    name = request.match_info["name"]
    values, version, clear = await _body(request)
    if values.pop("name", name) != name:
        raise ValidationFailed("name: a database cannot be renamed; add one under the new name")
    entry = await _service(request).change_database(
        name, values, who.metadata(), expected_version=version, clear=clear
    )
    return json_response(public_view("databases", entry, name=name))


async def delete_database(request: web.Request) -> web.Response:
    who = principal(request)
    name = request.match_info["name"]
    await _service(request).remove_database(name, who.metadata())
    return json_response({"name": name, "deleted": True})


# ---------------------------------------------------------------------- OpenAPI bodies
def _input_model(section: str, *, name: bool = False, optional: bool = False) -> type[BaseModel]:
    """The request shape of a section for the OpenAPI document (validation is the service's)."""
    cls = SECTIONS[section]
    fields: dict[str, Any] = {}
    if name:
        fields["name"] = (DatabaseName, ...)
    for field, info in cls.model_fields.items():
        fields[field] = (info.annotation | None, None) if optional else (info.annotation, info)  # type: ignore[operator]
    for field in cls.secret_fields:
        fields[field] = (SecretStr | None, Field(None, description=_SECRET_DOC))
    fields["version"] = (int | None, Field(None, description="the version read: 409 if it moved"))
    fields["clear_secrets"] = (list[str], Field(default_factory=list, description="secret fields to remove"))
    title = cls.__name__.removesuffix("Section") + ("Create" if name else "Patch" if optional else "Config")
    return create_model(title, __config__=ConfigDict(extra="forbid"), **fields)


class ConfigUpdate(RootModel[Union[tuple(_input_model(s) for s in SINGLE_SECTIONS)]]):  # type: ignore[misc]
    """The body of PUT /api/v1/config/{section}: the fields of that section."""


DatabaseCreate = _input_model("databases", name=True)
DatabasePatch = _input_model("databases", optional=True)

ROUTES = routes(
    Route("GET", "/api/v1/config", list_config, "Every section and database: configured or not (no secrets)", rule="admin", tag="config"),
    Route("GET", "/api/v1/config/{section}", get_section, "A section's settings; secrets only as {set: bool}", rule="admin", tag="config"),
    Route("PUT", "/api/v1/config/{section}", put_section, "Replace a section's settings (blank secrets keep the stored ones); applies at once", rule="admin", body=ConfigUpdate, tag="config"),
    Route("GET", "/api/v1/databases", list_databases, "Source databases (no passwords)", rule="admin", tag="config"),
    Route("POST", "/api/v1/databases", create_database, "Add a source database", rule="admin", body=DatabaseCreate, status=201, tag="config"),
    Route("GET", "/api/v1/databases/{name}", get_database, "A source database (no password)", rule="admin", tag="config"),
    Route("PATCH", "/api/v1/databases/{name}", patch_database, "Change some fields of a source database", rule="admin", body=DatabasePatch, tag="config"),
    Route("DELETE", "/api/v1/databases/{name}", delete_database, "Remove a source database no table uses", rule="admin", tag="config"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
