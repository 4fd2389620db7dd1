"""``GET /api/v1/costs``: bytes billed, slot-ms and USD by user, group, table, run or day.

JSON by default; ``Accept: text/csv`` gives the same items as CSV (one header line, then one line
per item), for spreadsheets. Every item names its key for people (``name``), not only its id.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import ValidationFailed
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_query
from maestro.projections.cost_queries import cost_items, usd


class CostQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Literal["user", "group", "table", "run", "day"] = "table"
    from_: dt.date | None = Field(None, alias="from")
    to: dt.date | None = None
    group: str | None = Field(None, description="only the jobs billed to this group")


def _wants_csv(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip() == "text/csv" for part in accept.split(","))


def _csv(by: str, items: list[dict]) -> web.Response:
    out = io.StringIO()
    columns = [by, "name", "bytes_billed", "bytes_processed", "slot_ms", "jobs", "usd"]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")  # RFC 4180
    writer.writeheader()
    for item in items:
        writer.writerow({c: item.get(c) for c in columns})
    response = web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="costs-by-{by}.csv"'
    return response


async def costs(request: web.Request) -> web.Response:
    q = parse_query(CostQuery, request)
    if q.from_ and q.to and q.from_ > q.to:
        raise ValidationFailed("from: must not be after to")
    runtime = request.app[RUNTIME]
    price = runtime.config.price_per_tib
    items = await cost_items(runtime.pool, q.by, start=q.from_, end=q.to, group_id=q.group, price_per_tib=price)
    if _wants_csv(request):
        return _csv(q.by, items)
    total = sum(i["bytes_billed"] for i in items)
    return json_response(
        {
            "by": q.by, "price_per_tib": price, "items": items,
            "total": {"bytes_billed": total, "slot_ms": sum(i["slot_ms"] for i in items), "usd": usd(total, price)},
        }
    )


ROUTES = routes(
    Route("GET", "/api/v1/costs", costs, "Bytes, slot-ms and USD by user, group, table, run or day (JSON, or CSV with Accept: text/csv)", query=CostQuery, rule="read", tag="costs"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
