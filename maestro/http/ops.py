"""Operations: health, Prometheus metrics, projection status."""

from __future__ import annotations

import asyncio
from typing import get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from maestro.health import State
from maestro.http.keys import METRICS, RUNTIME
from maestro.http.routing import ROUTES as ROUTES_ALL
from maestro.http.openapi import openapi
from maestro.http.routing import Route, register, routes

DATABASE_CHECK_TIMEOUT = 2.0
STATES = get_args(State)


async def healthz(request: web.Request) -> web.Response:
    """200 when every component works; 503 "degraded" naming what does not (the database
    unreachable, a follower retrying, the runner without its leadership because of an outage)."""
    runtime = request.app[RUNTIME]
    health = runtime.health
    try:
        await asyncio.wait_for(runtime.pool.fetchval("SELECT 1"), timeout=DATABASE_CHECK_TIMEOUT)
        health.ok("database")
    except Exception as exc:  # the answer is the point: report it, never a 500
        health.down("database", exc)
    components = {name: c.to_dict() for name, c in sorted(health.snapshot().items())}
    down = health.degraded()
    if down:
        return web.json_response({"status": "degraded", "down": down, "components": components}, status=503)
    return web.json_response({"status": "ok", "components": components})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    runtime = request.app[RUNTIME]
    for name, component in runtime.health.snapshot().items():
        for state in STATES:
            m.component_state.labels(name, state).set(1 if component.state == state else 0)
    try:
        for status in await runtime.projections.status():
            m.projection_lag.labels(status.name, status.mode).set(status.lag)
            m.projection_position.labels(status.name).set(status.position)
        m.log_head.set(await runtime.store.last_position())
    except Exception as exc:  # the database is down: the component states still say so
        runtime.health.down("database", exc)
        m.component_state.labels("database", "down").set(1)
        m.component_state.labels("database", "ok").set(0)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def projections_status(request: web.Request) -> web.Response:
    runner = request.app[RUNTIME].projections
    statuses = [s.to_dict() | {"error": runner.errors.get(s.name)} for s in await runner.status()]
    return web.json_response({"projections": statuses})


async def openapi_document(request: web.Request) -> web.Response:
    import maestro

    return web.json_response(openapi(ROUTES_ALL, maestro.__version__))


ROUTES = routes(
    Route("GET", "/healthz", healthz, "Health of every component (503 when degraded)", rule="public", tag="ops"),
    Route("GET", "/metrics", metrics, "Prometheus metrics", rule="public", tag="ops"),
    Route("GET", "/api/v1/openapi.json", openapi_document, "This document", rule="public", tag="ops"),
    Route("GET", "/api/v1/projections", projections_status, "Projection checkpoints, lag, errors", rule="read", tag="ops"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
