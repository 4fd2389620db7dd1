"""API tokens (your own; administrators see and revoke anyone's) and the audit trail (admin)."""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.errors import NotFound, ValidationFailed
from maestro.http.auth import principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_body, parse_query

MAX_PAGE = 1000


class TokenListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: bool = Field(False, description="every user's tokens (administrators)")


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    expires_at: dt.datetime | None = Field(None, description="ISO 8601 instant; none: never")


async def list_tokens(request: web.Request) -> web.Response:
    who = principal(request)
    q = parse_query(TokenListQuery, request)
    if q.all and not who.admin:
        raise ValidationFailed("all: only administrators may list every user's tokens")
    tokens = await request.app[RUNTIME].tokens.list(None if q.all else who.user_id)
    return json_response({"tokens": [t.to_dict() for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    who = principal(request)
    body = await parse_body(TokenBody, request)
    if body.expires_at is not None and body.expires_at.tzinfo is None:
        raise ValidationFailed("expires_at: give a time zone (e.g. 2027-01-01T00:00:00Z)")
    tokens = request.app[RUNTIME].tokens
    token_id, token = await tokens.create(who.user_id, body.name, who.metadata(), expires_at=body.expires_at)
    info = await tokens.get(token_id)
    assert info is not None
    # The only time the secret is ever shown: it is stored hashed.
    return json_response({**info.to_dict(), "token": token}, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    who = principal(request)
    tokens = request.app[RUNTIME].tokens
    info = await tokens.get(request.match_info["token_id"])
    # Someone else's token is "not found": its existence is none of the caller's business.
    if info is None or (info.user_id != who.user_id and not who.admin):
        raise NotFound(f"no token {request.match_info['token_id']!r}")
    await tokens.revoke(info.token_id, who.metadata())
    return web.Response(status=204)


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    actor: str | None = Field(None, description="user id, user:<id>, system:<part> or anonymous")
    from_: dt.datetime | None = Field(None, alias="from", description="occurred at or after (ISO 8601)")
    to: dt.datetime | None = Field(None, description="occurred before (ISO 8601)")
    type: list[str] = Field(default_factory=list, description="event types (repeat or comma-separate)")
    after: int = Field(0, ge=0, description="position to continue after")
    limit: int = Field(100, ge=1, le=MAX_PAGE)


async def audit(request: web.Request) -> web.Response:
    q = parse_query(AuditQuery, request, multi=("type",))
    events = await request.app[RUNTIME].audit.query(
        actor=q.actor, since=q.from_, until=q.to, types=q.type, after=q.after, limit=q.limit
    )
    return json_response({
        "events": [e.to_dict() for e in events],
        "next_after": events[-1].position if len(events) == q.limit else None,
    })


ROUTES = routes(
    Route("GET", "/api/v1/tokens", list_tokens, "Your API tokens (never their secrets)", rule="read", query=TokenListQuery, tag="tokens"),
    Route("POST", "/api/v1/tokens", create_token, "Create an API token: the response shows it, once", rule="read", body=TokenBody, status=201, tag="tokens"),
    Route("DELETE", "/api/v1/tokens/{token_id}", revoke_token, "Revoke one of your tokens (administrators: any)", rule="read", status=204, tag="tokens"),
    Route("GET", "/api/v1/audit", audit, "Who did what, when: the log filtered, with refusals", rule="admin", query=AuditQuery, tag="audit"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
