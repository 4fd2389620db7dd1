"""The web UI: server-rendered pages over the API's read models, a little script, and SSE.

Every page is a route of the one route table with its rule (``maestro.http.routing``), so the
auth middleware admits or refuses it exactly as it does the API; every change a page makes is its
script calling the API. See docs/ui.md.
"""

from __future__ import annotations

from aiohttp import web

from maestro.http.routing import Route, register, routes


async def home(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/tables"})


HOME = routes(Route("GET", "/", home, "The UI's home: the tables", rule="read", tag="ui", content_type="text/html"))


def add_routes(app: web.Application) -> None:
    from maestro.http.ui import admin, live, reports, runs, signin, tables

    for module_routes in (HOME, signin.ROUTES, tables.ROUTES, runs.ROUTES, live.ROUTES, reports.ROUTES, admin.ROUTES):
        register(app, module_routes)
