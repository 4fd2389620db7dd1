"""The ``write`` rule: may this (non-administrator) user change the table this request touches?

A user may write a table when they belong to its group. The groups a request touches are the
group of the table named by ``{table_id}`` in the path (live or deleted) and the ``group_id`` in a
JSON body, so a member cannot move a table into a group they are not in, nor create one there (the
original's ``PUT /table`` trusted the body's group). Other hazards of the original closed here:
a body cannot make someone else the owner (costs are billed to owners), and a table outside any
group is for administrators only. A route without ``{table_id}`` (creating a table) needs a
``group_id`` the user belongs to, or any group at all (the handler then uses their first one).
``"descendants": true`` (run a table and everything downstream) touches the descendants' groups too.
A route with ``{delivery_id}`` (redeliver) touches the delivery's table; a delivery of no table
is for administrators only.

A restore of an old version is checked as the change it makes: the version's group and owner,
where they differ from the table's, pass the same checks as an edit that sets them. And a table
as a create, edit or restore would leave it must write where members may (project and dataset:
``maestro.handlers.catalog.destinations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from maestro.errors import Forbidden
from maestro.events.config import BigQuerySection
from maestro.handlers.catalog import destinations
from maestro.handlers.people.principal import Principal
from maestro.http.keys import RUNTIME

TABLES = "/api/v1/tables"
TABLE = "/api/v1/tables/{table_id}"
RESTORE = "/api/v1/tables/{table_id}/restore"
# The writes that save a definition (and so its destination): create, edit, replace, restore.
SAVES = {("POST", TABLES), ("PATCH", TABLE), ("PUT", TABLE), ("POST", RESTORE)}


@dataclass(frozen=True, slots=True)
class Refusal:
    why: str
    error: type[Forbidden] = Forbidden  # its ``code`` is what the client gets


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The body when it is a JSON object; the handler reads it again (aiohttp keeps it)."""
    if not request.body_exists:
        return None
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None  # the handler answers 422
    return body if isinstance(body, dict) else None


def _fields_problem(who: Principal, changes: dict[str, Any]) -> str | None:
    """Why ``who`` may not set these fields of a table (group, owner), or None."""
    if "group_id" in changes:
        named_group = changes["group_id"]
        if named_group is None:
            return "only administrators may take a table out of its group"
        if not isinstance(named_group, str) or not who.member_of(named_group):
            return f"you are not a member of group {named_group!r}"
    if changes.get("owner_id") not in (None, who.user_id):
        return "only administrators may make someone else a table's owner"
    return None


async def write_problem(request: web.Request, who: Principal) -> Refusal | None:
    """Why ``who`` may not make this write, or None when they may."""
    runtime = request.app[RUNTIME]
    table_id = request.match_info.get("table_id")
    if "delivery_id" in request.match_info:  # a delivery is its table's: redelivering is writing it
        found = await runtime.pool.fetchrow(
            "SELECT table_id FROM deliveries WHERE delivery_id = $1", request.match_info["delivery_id"])
        if found is not None and found["table_id"] is None:
            return Refusal("this delivery belongs to no table: only administrators may redeliver it")
        table_id = found["table_id"] if found is not None else None  # unknown: the handler answers 404
    current: dict[str, Any] | None = None
    if table_id is not None:
        row = await runtime.pool.fetchrow("SELECT spec::text FROM catalog_tables WHERE table_id = $1", table_id)
        # An unknown table: nothing to protect; the handler answers 404.
        if row is not None:
            current = orjson.loads(row["spec"])
            if current.get("group_id") is None:
                return Refusal("the table belongs to no group: only administrators may change it")
            if not who.member_of(current["group_id"]):
                return Refusal(f"you are not a member of the table's group {current['group_id']!r}")
    body = await _json_object(request)
    resource = request.match_info.route.resource
    route = (request.method, resource.canonical if resource is not None else "")
    saved: dict[str, Any] | None = None  # the table as this write would leave it
    if route == ("POST", RESTORE) and current is not None:
        saved, why = await _restore(runtime, table_id, current, body, who)
        if why is not None:
            return Refusal(why)
    else:
        if body is not None and (why := _fields_problem(who, body)) is not None:
            return Refusal(why)
        if table_id is None and (body is None or body.get("group_id") is None) and not who.groups:
            return Refusal("you belong to no group: an administrator must add you to one first")
        if table_id is not None and body is not None and body.get("descendants") is True:
            return await _descendants_problem(request, table_id, who)
        if body is not None:
            saved = _saved(route, current, body, who)
    if route in SAVES and saved is not None:
        found = await destinations.destination_problem(runtime.pool, _allowed_projects(runtime), saved, table_id)
        if found is not None:
            return Refusal(*found)
    return None


async def _restore(
    runtime: Any, table_id: str, current: dict[str, Any], body: dict[str, Any] | None, who: Principal
) -> tuple[dict[str, Any], str | None]:
    """(the table after the restore, why ``who`` may not make it or None)."""
    version = body.get("version") if body is not None else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return current, None  # an undelete (or a bad body, which the handler refuses)
    old = (await runtime.catalog.get_table(table_id, version=version)).spec  # 404 for no such version
    changes = {k: old.get(k) for k in ("group_id", "owner_id") if old.get(k) != current.get(k)}
    why = _fields_problem(who, changes)
    return old, (f"restoring version {version}: {why}" if why is not None else None)


def _saved(route: tuple[str, str], current: dict[str, Any] | None, body: dict[str, Any], who: Principal) -> dict[str, Any] | None:
    """The definition a create, edit or replace would save, as its handler fills it in."""
    if route == ("POST", TABLES):
        group = body["group_id"] if "group_id" in body else (who.groups[0] if who.groups else None)
        return {**body, "group_id": group}
    if current is None:
        return None  # an unknown table: the handler answers 404
    if route == ("PATCH", TABLE):
        return {**current, **body}
    if route == ("PUT", TABLE):  # a replacement keeps the group and owner it does not name
        return {"group_id": current.get("group_id"), "owner_id": current.get("owner_id"), **body}
    return None


def _allowed_projects(runtime: Any) -> frozenset[str]:
    section = runtime.config.get("bigquery") if runtime.config is not None else BigQuerySection()
    assert isinstance(section, BigQuerySection)
    settings = runtime.settings
    return destinations.allowed_projects(
        (settings.project, settings.google_project, section.project), section.allowed_projects
    )


async def _descendants_problem(request: web.Request, table_id: str, who: Principal) -> Refusal | None:
    """Running a table "with its descendants" runs (and bills) every table downstream too."""
    runtime = request.app[RUNTIME]
    await runtime.catalog.refresh()
    graph = runtime.catalog.deps.graph
    downstream = sorted(graph.descendants(table_id)) if table_id in graph else []
    rows = await runtime.pool.fetch(
        "SELECT DISTINCT spec->>'group_id' AS group_id FROM catalog_tables WHERE table_id = ANY($1)", downstream
    )
    outside = sorted(str(r["group_id"]) for r in rows if r["group_id"] is None or not who.member_of(r["group_id"]))
    if outside:
        return Refusal(f"its descendants include tables of groups you are not in ({', '.join(outside)})")
    return None
