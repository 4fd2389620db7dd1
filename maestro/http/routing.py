"""One declarative table of routes: what each does, what it takes, and who may call it.

The same table registers the aiohttp routes, produces the OpenAPI document
(``maestro.http.openapi``), and gives the one authorization middleware (``maestro.http.auth``)
each route's ``rule``:

- ``public``: anyone, no credentials looked at;
- ``read``: any enabled user;
- ``write``: administrators, and members of the group of the table the route names
  (``{table_id}``) and of any ``group_id`` in the body (docs/auth.md);
- ``extract``: administrators, members of the group of the table in ``{table_id}``, and any
  enabled user when the table's extracts are shared (``maestro.http.extract_rule``);
- ``admin``: administrators only.

A route without a rule is refused to everyone (fail closed), and the route-matrix test fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

Rule = Literal["public", "read", "write", "extract", "admin"]
RULES: tuple[Rule, ...] = ("public", "read", "write", "extract", "admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    rule: Rule | None = None  # None: no rule declared, so nobody may call it
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    tag: str = "misc"
    errors: tuple[int, ...] = ()  # error statuses beyond those the declaration implies (see openapi.py)
    content_type: str = "application/json"  # of the success response


ROUTES: list[Route] = []


def routes(*items: Route) -> list[Route]:
    ROUTES.extend(r for r in items if r not in ROUTES)
    return list(items)


ROUTE_TABLE = web.AppKey("route_table", dict)
"""The app's aiohttp route -> our :class:`Route`: how the middleware finds a request's rule."""


def register(app: web.Application, items: Iterable[Route]) -> None:
    table = app.get(ROUTE_TABLE)
    if table is None:
        table = app[ROUTE_TABLE] = {}
    for r in items:
        table[app.router.add_route(r.method, r.path, r.handler)] = r


def route_of(request: web.Request) -> Route | None:
    """The declared route a request matched (None for 404/405 and undeclared routes)."""
    table = request.app.get(ROUTE_TABLE)
    return table.get(request.match_info.route) if table is not None else None
