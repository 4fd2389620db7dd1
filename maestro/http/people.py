"""People routes: who am I, users (enable, disable, promote, demote) and groups with their members."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from maestro.errors import NotFound
from maestro.events.users import GroupName
from maestro.handlers.people.sessions import csrf_token
from maestro.http.auth import SESSION_COOKIE, principal
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response, parse_body


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: StrictBool | None = None
    admin: StrictBool | None = None

    @model_validator(mode="after")
    def _something(self) -> UserPatch:
        if self.enabled is None and self.admin is None:
            raise ValueError("nothing to change: send enabled and/or admin")
        return self


class GroupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: GroupName = Field(description="unique, case-insensitively")


async def me(request: web.Request) -> web.Response:
    who = principal(request)
    user = await request.app[RUNTIME].users.get(who.user_id)
    if user is None:
        raise NotFound(f"no user {who.user_id!r}")
    body: dict[str, Any] = {**user.to_dict(), "via": "session" if who.session_id else "token"}
    if who.session_id is not None:
        body["csrf_token"] = csrf_token(request.cookies.get(SESSION_COOKIE, ""))
    return json_response(body)


async def list_users(request: web.Request) -> web.Response:
    return json_response({"users": [u.to_dict() for u in await request.app[RUNTIME].users.list()]})


async def patch_user(request: web.Request) -> web.Response:
    patch = await parse_body(UserPatch, request)
    user = await request.app[RUNTIME].users.change(
        request.match_info["user_id"], principal(request).metadata(), enabled=patch.enabled, admin=patch.admin
    )
    return json_response(user.to_dict())


async def list_groups(request: web.Request) -> web.Response:
    return json_response({"groups": [g.to_dict() for g in await request.app[RUNTIME].users.groups()]})


async def create_group(request: web.Request) -> web.Response:
    body = await parse_body(GroupBody, request)
    group = await request.app[RUNTIME].users.create_group(body.name, principal(request).metadata())
    return json_response(group.to_dict(), status=201)


async def rename_group(request: web.Request) -> web.Response:
    body = await parse_body(GroupBody, request)
    group = await request.app[RUNTIME].users.rename_group(
        request.match_info["group_id"], body.name, principal(request).metadata()
    )
    return json_response(group.to_dict())


async def delete_group(request: web.Request) -> web.Response:
    await request.app[RUNTIME].users.delete_group(request.match_info["group_id"], principal(request).metadata())
    return web.Response(status=204)


async def add_member(request: web.Request) -> web.Response:
    group = await request.app[RUNTIME].users.add_member(
        request.match_info["group_id"], request.match_info["user_id"], principal(request).metadata()
    )
    return json_response(group.to_dict())


async def remove_member(request: web.Request) -> web.Response:
    group = await request.app[RUNTIME].users.remove_member(
        request.match_info["group_id"], request.match_info["user_id"], principal(request).metadata()
    )
    return json_response(group.to_dict())


ROUTES = routes(
    Route("GET", "/api/v1/me", me, "Who you are: user, groups, admin; the CSRF token of a session", rule="read", tag="people"),
    Route("GET", "/api/v1/users", list_users, "Every user", rule="admin", tag="people"),
    Route("PATCH", "/api/v1/users/{user_id}", patch_user, "Enable, disable, promote or demote a user", rule="admin", body=UserPatch, tag="people"),
    Route("GET", "/api/v1/groups", list_groups, "Groups and their members", rule="read", tag="people"),
    Route("POST", "/api/v1/groups", create_group, "Create a group", rule="admin", body=GroupBody, status=201, tag="people"),
    Route("PATCH", "/api/v1/groups/{group_id}", rename_group, "Rename a group", rule="admin", body=GroupBody, tag="people"),
    Route("DELETE", "/api/v1/groups/{group_id}", delete_group, "Delete a group that owns no table", rule="admin", status=204, tag="people"),
    Route("POST", "/api/v1/groups/{group_id}/members/{user_id}", add_member, "Add a member", rule="admin", tag="people"),
    Route("DELETE", "/api/v1/groups/{group_id}/members/{user_id}", remove_member, "Remove a member", rule="admin", tag="people"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
