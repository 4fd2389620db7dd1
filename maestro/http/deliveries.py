"""Deliveries (callbacks, and every later kind) and tables' callback endpoints.

``GET /deliveries`` lists them (by table, status, kind, run), ``GET /deliveries/{id}`` shows one
with every attempt, ``POST /deliveries/{id}/redeliver`` starts a new chain of attempts (writers of
the delivery's table: the write rule resolves ``{delivery_id}`` to its table). A table's endpoint:
``GET /tables/{id}/callback`` (never the secret), ``POST .../callback/rotate`` (a new secret,
shown once in the answer) and ``POST .../callback/enable`` (after a 410 disabled it).

Table saves call :func:`check_save` before and :func:`after_save` after (maestro.http.catalog):
a ``notify_url`` that is not http(s) or reaches an address not allowed is refused with 422
``callback_url_refused`` before anything is appended; a first ``notify_url`` creates the endpoint,
and the save's answer carries its secret once (``callback.secret``).
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.adapters.webhooks import check_url, parse_networks
from maestro.errors import ServiceUnavailable
from maestro.handlers.notify.endpoints import Endpoints
from maestro.handlers.notify.service import Deliveries
from maestro.http.auth import principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_query


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    table: str | None = Field(None, max_length=200)
    status: Literal["pending", "retrying", "succeeded", "failed"] | None = None
    kind: Literal["callback", "slack", "sheets", "db_export"] | None = None
    run: str | None = Field(None, max_length=1000)
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)


def _deliveries(request: web.Request) -> Deliveries:
    return Deliveries(request.app[RUNTIME].store)


def endpoints(request: web.Request) -> Endpoints:
    runtime = request.app[RUNTIME]
    if runtime.config_service is None:
        raise ServiceUnavailable("stored secrets are not available in this process")
    return Endpoints(runtime.store, runtime.config_service.box)


async def list_deliveries(request: web.Request) -> web.Response:
    q = parse_query(DeliveryQuery, request)
    items, total = await _deliveries(request).list(
        table_id=q.table, status=q.status, kind=q.kind, run_id=q.run, offset=q.offset, limit=q.limit)
    return json_response({"deliveries": items, "total": total, "offset": q.offset, "limit": q.limit})


async def get_delivery(request: web.Request) -> web.Response:
    return json_response(await _deliveries(request).get(request.match_info["delivery_id"]))


async def redeliver(request: web.Request) -> web.Response:
    body = await _deliveries(request).redeliver(request.match_info["delivery_id"], principal(request).metadata())
    return json_response(body, status=202)


async def _notify_url(request: web.Request, table_id: str) -> str | None:
    view = await request.app[RUNTIME].catalog.get_table(table_id)  # 404 for an unknown table
    return ((view.spec.get("extract") or {}).get("notify_url")) if not view.deleted else None


async def get_callback(request: web.Request) -> web.Response:
    table_id = request.match_info["table_id"]
    url = await _notify_url(request, table_id)
    endpoint = await endpoints(request).get(table_id)
    return json_response({"table_id": table_id, "notify_url": url,
                          "endpoint": endpoint.public() if endpoint is not None else None})


async def rotate_callback(request: web.Request) -> web.Response:
    table_id = request.match_info["table_id"]
    await _notify_url(request, table_id)
    eps = endpoints(request)
    secret = await eps.rotate(table_id, principal(request).metadata())
    endpoint = await eps.get(table_id)
    assert endpoint is not None
    return json_response({"table_id": table_id, "secret": secret, "endpoint": endpoint.public(),
                          "note": "shown once: the previous secret no longer signs anything"})


async def enable_callback(request: web.Request) -> web.Response:
    table_id = request.match_info["table_id"]
    await _notify_url(request, table_id)
    eps = endpoints(request)
    changed = await eps.enable(table_id, principal(request).metadata())
    endpoint = await eps.get(table_id)
    assert endpoint is not None
    return json_response({"table_id": table_id, "enabled": True, "changed": changed, "endpoint": endpoint.public()})


# ---------------------------------------------------------------- table saves
def _url_in(body: dict[str, Any]) -> str | None:
    extract = body.get("extract")
    url = extract.get("notify_url") if isinstance(extract, dict) else None
    return url if isinstance(url, str) else None


async def check_save(request: web.Request, body: dict[str, Any], warnings: list[str]) -> None:
    """Refuse (422) a notify_url the body sets that may not be called; add what cannot be known now."""
    url = _url_in(body)
    if url is not None:
        allowed = parse_networks(request.app[RUNTIME].settings.callback_allowed_networks)
        warnings.extend(await check_url(url, allowed))


async def after_save(request: web.Request, view: Any) -> dict[str, Any]:
    """What to add to a save's answer: ``{"callback": {"secret": ...}}`` for a new endpoint."""
    if view.deleted:
        return {}
    url = (view.spec.get("extract") or {}).get("notify_url")
    created = await endpoints(request).after_save(view.table_id, url, principal(request).metadata())
    return {"callback": created} if created is not None else {}


ROUTES = routes(
    Route("GET", "/api/v1/deliveries", list_deliveries, "Deliveries (callbacks, ...), newest first", query=DeliveryQuery, rule="read", tag="deliveries"),
    Route("GET", "/api/v1/deliveries/{delivery_id}", get_delivery, "One delivery with every attempt", rule="read", tag="deliveries"),
    Route("POST", "/api/v1/deliveries/{delivery_id}/redeliver", redeliver, "Deliver again: a new chain of attempts", rule="write", status=202, tag="deliveries", errors=(409,)),
    Route("GET", "/api/v1/tables/{table_id}/callback", get_callback, "The table's callback endpoint (never its secret)", rule="read", tag="deliveries", errors=(503,)),
    Route("POST", "/api/v1/tables/{table_id}/callback/rotate", rotate_callback, "A new signing secret, shown once; enables the endpoint", rule="write", tag="deliveries", errors=(503,)),
    Route("POST", "/api/v1/tables/{table_id}/callback/enable", enable_callback, "Enable an endpoint a 410 disabled", rule="write", tag="deliveries", errors=(503,)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
