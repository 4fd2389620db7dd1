"""Authentication of API requests: ``Authorization: Bearer <token>`` or ``X-Api-Token``.

Every ``/api/`` route needs a valid token except the OpenAPI document; ``/healthz`` and
``/metrics`` are for infrastructure and stay open. (Login with Google OAuth, sessions and the
per-route authorization table arrive with the people-and-secrets work.)
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from maestro.errors import Forbidden, Unauthenticated
from maestro.handlers.tokens import REFUSED, Principal
from maestro.http.keys import PRINCIPAL, RUNTIME

PUBLIC = frozenset({"/api/v1/openapi.json"})


def token_from(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated(REFUSED)
        return value.strip()
    return request.headers.get("X-Api-Token")  # clients of the original send this


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/") or request.path in PUBLIC:
        return await handler(request)
    token = token_from(request)
    if token is None:
        raise Unauthenticated("authentication required: send Authorization: Bearer <token>")
    request[PRINCIPAL] = await request.app[RUNTIME].tokens.verify(token)
    return await handler(request)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require_admin(request: web.Request) -> Principal:
    who = request[PRINCIPAL]
    if not who.admin:
        raise Forbidden("this action needs an administrator (rule: admin)")
    return who
