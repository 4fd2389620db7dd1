"""The git webhook route: anyone may call it, the signature is the credential (docs/git.md)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from maestro.handlers.git import webhook
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes
from maestro.http.validation import json_response


class GitPush(BaseModel):
    """What Maestro reads of a push notification (GitHub's, Gitea's); the rest is ignored."""

    model_config = ConfigDict(extra="allow")
    ref: str = Field("", description="refs/heads/<branch>: a push to another branch is ignored")
    after: str = Field("", description="the branch's new head")


async def receive_webhook(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    config = runtime.config
    section = config.get("git")
    body = await request.read()
    webhook.verify(config.secret("git", "webhook_secret"), section, body, request.headers.get("X-Hub-Signature-256"))
    answer = await webhook.receive(runtime.store, section, body, request.headers)
    return json_response(answer, status=202)


ROUTES = routes(
    Route("POST", "/api/v1/git/webhook", receive_webhook,
          "A push on the catalog's branch (signed with X-Hub-Signature-256): fetch it now",
          rule="public", body=GitPush, status=202, tag="git", errors=(401, 404)),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
