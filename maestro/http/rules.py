"""The ``write`` rule: may this (non-administrator) user change the table this request touches?

A user may write a table when they belong to its group. The groups a request touches are the
group of the table named by ``{table_id}`` in the path (live or deleted) and the ``group_id`` in a
JSON body, so a member cannot move a table into a group they are not in, nor create one there (the
original's ``PUT /table`` trusted the body's group). Other hazards of the original closed here:
a body cannot make someone else the owner (costs are billed to owners), and a table outside any
group is for administrators only. A route without ``{table_id}`` (creating a table) needs a
``group_id`` the user belongs to, or any group at all (the handler then uses their first one).
``"descendants": true`` (run a table and everything downstream) touches the descendants' groups too.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from maestro.handlers.people.principal import Principal
from maestro.http.keys import RUNTIME


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    """The body when it is a JSON object; the handler reads it again (aiohttp keeps it)."""
    if not request.body_exists:
        return None
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None  # the handler answers 422
    return body if isinstance(body, dict) else None


async def write_problem(request: web.Request, who: Principal) -> str | None:
    """Why ``who`` may not make this write, or None when they may."""
    table_id = request.match_info.get("table_id")
    if table_id is not None:
        row = await request.app[RUNTIME].pool.fetchrow(
            "SELECT spec->>'group_id' AS group_id FROM catalog_tables WHERE table_id = $1", table_id
        )
        # An unknown table: nothing to protect; the handler answers 404.
        if row is not None:
            if row["group_id"] is None:
                return "the table belongs to no group: only administrators may change it"
            if not who.member_of(row["group_id"]):
                return f"you are not a member of the table's group {row['group_id']!r}"
    body = await _json_object(request)
    named_group = body.get("group_id") if body is not None else None
    if body is not None and "group_id" in body:
        if named_group is None:
            return "only administrators may take a table out of its group"
        if not isinstance(named_group, str) or not who.member_of(named_group):
            return f"you are not a member of group {named_group!r}"
    if body is not None and body.get("owner_id") not in (None, who.user_id):
        return "only administrators may make someone else a table's owner"
    if table_id is None and named_group is None and not who.groups:
        return "you belong to no group: an administrator must add you to one first"
    if table_id is not None and body is not None and body.get("descendants") is True:
        return await _descendants_problem(request, table_id, who)
    return None


async def _descendants_problem(request: web.Request, table_id: str, who: Principal) -> str | None:
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
        return f"its descendants include tables of groups you are not in ({', '.join(outside)})"
    return None
