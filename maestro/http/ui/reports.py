"""Costs and audit pages.

Costs are ``GET /api/v1/costs`` itself, called in-process (``maestro.http.ui.api``): the same
filters, the same numbers, and the CSV download is that route answering ``Accept: text/csv``.
The audit page is for administrators (the API's ``admin`` rule): the log newest first, filtered by
actor, type and time, each entry linked to the object its stream is about.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web

from maestro.errors import ValidationFailed
from maestro.handlers.people.audit import normalize_actor
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, routes
from maestro.http.ui import svg
from maestro.http.ui.api import api_get, api_response
from maestro.http.ui.render import page

BY = ("group", "user", "table", "day", "run")
CHART_ITEMS = 25
TABLE_ITEMS = 500
AUDIT_PAGE = 50


def _cost_query(request: web.Request) -> dict[str, str]:
    today = dt.datetime.now(dt.timezone.utc).date()
    q = {
        "by": request.query.get("by") or "group",
        "from": request.query.get("from") or (today - dt.timedelta(days=29)).isoformat(),
        "to": request.query.get("to") or today.isoformat(),
        "group": request.query.get("group", ""),
    }
    return q


async def costs_page(request: web.Request) -> web.Response:
    q = _cost_query(request)
    data = await api_get(request, "/api/v1/costs", q)
    items = data["items"]
    label = (lambda i: i[q["by"]]) if q["by"] == "day" else (lambda i: i.get("name") or i[q["by"]] or "(none)")
    chart_items = sorted(items, key=lambda i: i[q["by"]]) if q["by"] == "day" else items[:CHART_ITEMS]
    chart = svg.bars([(str(label(i)), i["usd"]) for i in chart_items])
    groups = await request.app[RUNTIME].pool.fetch("SELECT group_id, name FROM groups ORDER BY lower(name)")
    return page(request, "costs.html", title="Costs", q=q, by_choices=[(b, b) for b in BY], data=data,
                items=items[:TABLE_ITEMS], more=max(0, len(items) - TABLE_ITEMS), label=label, chart=chart,
                groups=[(g[0], g[1]) for g in groups])


async def costs_csv(request: web.Request) -> web.Response:
    return await api_response(request, "/api/v1/costs", _cost_query(request), accept="text/csv")


def object_link(stream_id: str, data: dict[str, Any]) -> str | None:
    """The page of what an event is about, when there is one.

    >>> object_link("table-t1", {}), object_link("run-r1", {}), object_link("audit-x", {"user_id": "u1"})
    ('/tables/t1', '/runs/r1', '/admin/users#user-u1')
    """
    kind, _, rest = stream_id.partition("-")
    if kind == "table":
        return f"/tables/{rest}"
    if kind == "run":
        return f"/runs/{rest}"
    if kind == "user":
        return f"/admin/users#user-{rest}"
    if kind == "group":
        return f"/admin/groups#group-{rest}"
    if kind == "frequency":
        return "/admin/frequencies"
    if kind == "config":
        return "/admin/config"
    if kind == "job" and isinstance(data.get("table_id"), str):
        return f"/tables/{data['table_id']}#jobs"
    if isinstance(data.get("table_id"), str):
        return f"/tables/{data['table_id']}"
    if isinstance(data.get("run_id"), str):
        return f"/runs/{data['run_id']}"
    if isinstance(data.get("user_id"), str):
        return f"/admin/users#user-{data['user_id']}"
    return None


def _instant(name: str, value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{name}: an ISO 8601 date or time, e.g. 2026-01-31T12:00") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


async def audit_page(request: web.Request) -> web.Response:
    """Newest first, paged by position (``before``), reading only below the store's safe position."""
    runtime = request.app[RUNTIME]
    actor = request.query.get("actor") or None
    types = [t for raw in request.query.getall("type", []) for t in raw.split(",") if t.strip()]
    since, until = _instant("from", request.query.get("from")), _instant("to", request.query.get("to"))
    try:
        before = int(request.query.get("before") or 2**63 - 1)
    except ValueError:
        raise ValidationFailed("before: a position (a whole number)") from None
    bound = await runtime.store.head_position()
    rows = await runtime.pool.fetch(
        "SELECT position, stream_id, type, data, metadata->>'actor' AS actor, occurred_at FROM events "
        "WHERE position < $1 AND position <= $2 AND ($3::text IS NULL OR metadata->>'actor' = $3) "
        "AND ($4::timestamptz IS NULL OR occurred_at >= $4) AND ($5::timestamptz IS NULL OR occurred_at < $5) "
        "AND (cardinality($6::text[]) = 0 OR type = ANY($6)) ORDER BY position DESC LIMIT $7",
        before, bound, normalize_actor(actor) if actor else None, since, until, types, AUDIT_PAGE,
    )
    entries = []
    for r in rows:
        data = orjson.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
        entries.append({**dict(r), "data": data, "link": object_link(r["stream_id"], data)})
    older = entries[-1]["position"] if len(entries) == AUDIT_PAGE else None
    return page(request, "audit.html", title="Audit", entries=entries, older=older,
                filters={"actor": actor or "", "type": ",".join(types), "from": request.query.get("from", ""),
                         "to": request.query.get("to", "")})


ROUTES = routes(
    Route("GET", "/costs", costs_page, "Page: costs", rule="read", tag="ui", content_type="text/html"),
    Route("GET", "/costs/export.csv", costs_csv, "The costs page's items as CSV", rule="read", tag="ui", content_type="text/csv"),
    Route("GET", "/audit", audit_page, "Page: the audit trail", rule="admin", tag="ui", content_type="text/html"),
)
