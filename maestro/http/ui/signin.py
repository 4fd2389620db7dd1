"""Getting into the UI: the sign-in page, one-time login links, and the static files.

With an identity provider configured, signing in is the API's OIDC login (``/login``). In local
mode there is none, so ``maestro serve`` prints a one-time link (``maestro login-link`` makes
another; ``maestro.handlers.people.login_links``). Opening the link shows a button; the POST
behind it uses the link. A GET never uses it: chat and mail previewers fetch links they see,
and would burn a one-time link before its owner clicks it. The session it opens is the API's own
(same cookies, same CSRF rule), so nothing past this point knows how the user got in.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from urllib.parse import urlsplit

from aiohttp import web

from maestro.errors import CredentialsRefused
from maestro.events.auth import LoginDenied
from maestro.handlers.people.audit import ANONYMOUS
from maestro.events.model import Metadata
from maestro.handlers.people.login_links import LoginLinks
from maestro.handlers.people.tokens import BOOTSTRAP_USER
from maestro.handlers.people.sessions import csrf_token
from maestro.http.auth import CSRF_COOKIE, LIMITER, SESSION_COOKIE, client_address, throttled
from maestro.http.keys import RUNTIME
from maestro.http.login import safe_return_to
from maestro.http.routing import Route, routes
from maestro.http.ui.errors import error_page
from maestro.http.ui.render import STATIC_VERSIONS, page


def login_links(request: web.Request) -> LoginLinks:
    runtime = request.app[RUNTIME]
    return LoginLinks(runtime.store, runtime.users, runtime.sessions)


def link_url(base_url: str, token: str) -> str:
    return f"{base_url}/login/link?token={token}"


async def local_login_link(app: web.Application) -> str | None:
    """At start-up with no identity provider: a one-time link for the bootstrap administrator."""
    runtime = app[RUNTIME]
    if runtime.login.source() is not None:
        return None  # OIDC login is the way in
    links = LoginLinks(runtime.store, runtime.users, runtime.sessions)
    token, _ = await links.create(BOOTSTRAP_USER, Metadata(actor="system:serve"))
    return link_url(runtime.settings.base_url, token)


async def signin(request: web.Request) -> web.Response:
    return_to = safe_return_to(request.query.get("return_to"))
    return page(request, "signin.html", return_to=return_to, title="Sign in")


async def link_page(request: web.Request) -> web.Response:
    return page(request, "login_link.html", token=request.query.get("token", ""),
                return_to=safe_return_to(request.query.get("return_to")), title="Sign in with a login link")


def _same_origin(request: web.Request) -> bool:
    """A browser names the page a form came from; another site's form is refused."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


async def use_link(request: web.Request) -> web.Response:
    form = await request.post()
    token, return_to = str(form.get("token", "")), safe_return_to(str(form.get("return_to", "")))
    address = client_address(request)
    limiter = request.app[LIMITER]
    if not _same_origin(request):
        return error_page(request, 403, "forbidden", "this login form was sent from another site")
    try:
        used = await login_links(request).use(token, address=address)
    except CredentialsRefused as exc:
        wait = limiter.retry_after(address)
        if wait is not None:
            raise throttled(request, address, wait) from exc
        limiter.failed(address)
        await request.app[RUNTIME].audit.record(
            LoginDenied(reason=exc.reason, address=address, user_id=None), ANONYMOUS)
        return error_page(request, 401, "unauthenticated", exc.message)
    lifetime = request.app[RUNTIME].settings.session_lifetime
    response = web.Response(status=303, headers={"Location": return_to, "Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, used.cookie, max_age=lifetime, path="/", secure=True, httponly=True, samesite="Lax")
    response.set_cookie(CSRF_COOKIE, csrf_token(used.cookie), max_age=lifetime, path="/", secure=True,
                        httponly=False, samesite="Lax")
    return response


_STATIC = resources.files("maestro.http.ui") / "static"


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_VERSIONS:
        raise web.HTTPNotFound()
    body = (_STATIC / name).read_bytes()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    # A URL with the file's current hash never changes content: cache it for good.
    fresh = request.query.get("v") == STATIC_VERSIONS[name]
    cache = "public, max-age=31536000, immutable" if fresh else "no-cache"
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


ROUTES = routes(
    Route("GET", "/signin", signin, "The sign-in page", rule="public", tag="ui", content_type="text/html"),
    Route("GET", "/login/link", link_page, "A one-time login link: a button that uses it", rule="public", tag="ui", content_type="text/html"),
    Route("POST", "/login/link", use_link, "Use a one-time login link: open a session", rule="public", tag="ui", content_type="text/html"),
    Route("GET", "/ui/static/{name}", static, "The UI's own scripts and styles", rule="public", tag="ui"),
)
