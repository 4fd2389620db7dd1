"""Operations: health, Prometheus metrics, projection status."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from maestro.http.keys import METRICS, RUNTIME
from maestro.http.routing import ROUTES as ROUTES_ALL
from maestro.http.openapi import openapi
from maestro.http.routing import Route, register, routes


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    await runtime.pool.fetchval("SELECT 1")
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    runtime = request.app[RUNTIME]
    for status in await runtime.projections.status():
        m.projection_lag.labels(status.name, status.mode).set(status.lag)
        m.projection_position.labels(status.name).set(status.position)
    m.log_head.set(await runtime.store.last_position())
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def projections_status(request: web.Request) -> web.Response:
    runner = request.app[RUNTIME].projections
    statuses = [s.to_dict() | {"error": runner.errors.get(s.name)} for s in await runner.status()]
    return web.json_response({"projections": statuses})


async def openapi_document(request: web.Request) -> web.Response:
    import maestro

    return web.json_response(openapi(ROUTES_ALL, maestro.__version__))


ROUTES = routes(
    Route("GET", "/healthz", healthz, "Liveness and database reachability", rule="public", tag="ops"),
    Route("GET", "/metrics", metrics, "Prometheus metrics", rule="public", tag="ops"),
    Route("GET", "/api/v1/openapi.json", openapi_document, "This document", rule="public", tag="ops"),
    Route("GET", "/api/v1/projections", projections_status, "Projection checkpoints, lag, errors", rule="read", tag="ops"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
