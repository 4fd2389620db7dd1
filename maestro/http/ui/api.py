"""Pages that show what an API route answers call that route in-process, as their caller.

``api_get`` finds the route in the one route table, checks its rule with the auth middleware's
own ``authorize`` (so a page can never show what the API would refuse the same person), and runs
its handler on a copy of the request aimed at the route (same principal, same cookies). The page
then renders the JSON the API would have sent. Only routes without path parameters are called
this way; pages about one object read its read model directly under their own rule.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from yarl import URL

from maestro.http.auth import authorize, principal
from maestro.http.routing import ROUTE_TABLE, Route


def _route(app: web.Application, method: str, path: str) -> Route:
    for aio_route, route in app[ROUTE_TABLE].items():
        if route.method == method and route.path == path and "{" not in path:
            return route
    raise LookupError(f"no API route {method} {path}")  # a programming error: the page names a route


async def api_response(request: web.Request, path: str, query: dict[str, str] | None = None,
                       accept: str = "application/json") -> web.Response:
    route = _route(request.app, "GET", path)
    headers = {**request.headers, "Accept": accept}
    aimed = request.clone(rel_url=URL(path).with_query({k: v for k, v in (query or {}).items() if v not in (None, "")}),
                          headers=headers)
    await authorize(route, aimed, principal(request))
    response = await route.handler(aimed)
    assert isinstance(response, web.Response)
    return response


async def api_get(request: web.Request, path: str, query: dict[str, str] | None = None) -> Any:
    response = await api_response(request, path, query)
    assert response.body is not None
    return orjson.loads(response.body)  # type: ignore[arg-type]
