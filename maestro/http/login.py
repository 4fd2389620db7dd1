"""Login routes: ``GET /login``, ``GET /auth/callback``, ``POST /logout`` (docs/auth.md).

``/login`` redirects to the identity provider and binds the pending login to this browser with a
ten-minute cookie; the callback finishes it and sets the session cookie (``Secure``, ``HttpOnly``,
``SameSite=Lax``) and the CSRF cookie (readable by our pages' scripts). With no OAuth client
configured, ``/login`` answers 503 telling the administrator how to configure one: there is no
setup form, so nobody can configure login without already being an administrator.
"""

from __future__ import annotations

from aiohttp import web

from maestro.errors import MaestroError
from maestro.handlers.people.sessions import csrf_token
from maestro.http.auth import CSRF_COOKIE, LIMITER, SESSION_COOKIE, client_address, principal, throttled
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, register, routes

LOGIN_COOKIE = "__Host-maestro_login"
LOGIN_COOKIE_SECONDS = 600


def safe_return_to(value: str | None) -> str:
    """Only a path on this site: an open redirect would turn our login into a phishing aid.

    >>> [safe_return_to(v) for v in ["/tables?x=1", "//evil.org", "https://evil.org", "/\\\\evil", None]]
    ['/tables?x=1', '/', '/', '/', '/']
    """
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 2000:
        return "/"
    if any(c in value for c in "\r\n\t") or any(ord(c) < 32 for c in value):
        return "/"
    return value


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _cookie(response: web.Response, name: str, value: str, max_age: int, *, http_only: bool = True) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=http_only, samesite="Lax")


async def login(request: web.Request) -> web.Response:
    browser, url = await request.app[RUNTIME].login.begin(safe_return_to(request.query.get("return_to")))
    response = _redirect(url)
    _cookie(response, LOGIN_COOKIE, browser, LOGIN_COOKIE_SECONDS)
    return response


async def callback(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    address = client_address(request)
    limiter = request.app[LIMITER]
    # A genuine login passes even from an address out of budget; only failures get the 429.
    wait = limiter.retry_after(address)
    try:
        done = await runtime.login.finish(
            request.cookies.get(LOGIN_COOKIE), code=request.query.get("code", ""),
            state=request.query.get("state", ""), error=request.query.get("error"), address=address,
            audit_refusal=wait is None,
        )
    except MaestroError as exc:
        if exc.status < 500:  # a 503 (provider down, login unconfigured) is not the caller's failure
            if wait is not None:
                raise throttled(request, address, wait) from exc
            limiter.failed(address)
        raise
    response = _redirect(done.return_to)
    lifetime = runtime.settings.session_lifetime
    _cookie(response, SESSION_COOKIE, done.cookie, lifetime)
    _cookie(response, CSRF_COOKIE, csrf_token(done.cookie), lifetime, http_only=False)
    response.del_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


async def logout(request: web.Request) -> web.Response:
    """End the session of the cookie (a token-authenticated call has none to end)."""
    who = principal(request)
    if who.session_id is not None:
        await request.app[RUNTIME].sessions.end(who.session_id, who.metadata())
    response = web.Response(status=204)
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.del_cookie(name, path="/", secure=True, httponly=http_only, samesite="Lax")
    return response


ROUTES = routes(
    Route("GET", "/login", login, "Log in: redirect to the identity provider", rule="public", tag="auth"),
    Route("GET", "/auth/callback", callback, "The identity provider's redirect back: open a session", rule="public", tag="auth"),
    Route("POST", "/logout", logout, "End this browser's session", rule="read", status=204, tag="auth"),
)


def add_routes(app: web.Application) -> None:
    register(app, ROUTES)
