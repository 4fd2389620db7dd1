"""Authentication and authorization of every request, in one middleware.

The request's route is looked up in the declarative table (``maestro.http.routing``) and its rule
decides: ``public`` routes run without looking at credentials; every other rule needs a principal,
from ``Authorization: Bearer <token>``, ``X-Api-Token`` (clients of the original) or the session
cookie, in that order; then ``read`` admits any enabled user, ``admin`` only administrators, and
``write`` administrators and members of the groups the request touches (``maestro.http.rules``),
``extract`` administrators, the table's group, or everyone when its extracts are shared
(``maestro.http.extract_rule``).
Handlers never check permissions themselves.

Refusals: missing credentials → 401; credentials refused (wrong, expired, revoked, malformed, or
the user disabled) → 401 with one message per kind, audited, and counted against the client
address (``maestro.http.forwarded``). Once an address's budget is spent, its failing or
credential-less requests get 429 with Retry-After and are counted, not appended one by one; a
valid credential always passes, whatever others did from the same address. A cookie-authenticated
write without the CSRF header → 403; a rule not met → 403 naming the rule; both counted per user,
rule and route a minute. Nothing else is appended.
"""

from __future__ import annotations

import datetime as dt
from typing import NoReturn

from aiohttp import web
from aiohttp.typedefs import Handler

from maestro.errors import CredentialsRefused, Forbidden, RateLimited, Unauthenticated
from maestro.events.auth import AccessDenied, AuthenticationThrottled, SessionRejected, TokenRejected
from maestro.handlers.people.audit import ANONYMOUS
from maestro.handlers.people.principal import Principal
from maestro.handlers.people.sessions import csrf_matches
from maestro.http.keys import PRINCIPAL, RUNTIME
from maestro.http.extract_rule import extract_problem
from maestro.http.forwarded import Network
from maestro.http.forwarded import client_address as _forwarded_client
from maestro.http.ratelimit import FailureLimiter
from maestro.http.routing import RULES, Route, route_of
from maestro.http.rules import write_problem

# __Host-: the browser accepts these only if Secure, for Path=/ and without Domain, so neither a
# sibling subdomain nor a plain-http page can plant or overwrite them.
SESSION_COOKIE = "__Host-maestro_session"
CSRF_COOKIE = "__Host-maestro_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LIMITER = web.AppKey("auth_limiter", FailureLimiter)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
NO_CREDENTIALS = (
    "authentication required: send Authorization: Bearer <API token>, or log in at /login"
)


def client_address(request: web.Request) -> str:
    trusted: tuple[Network, ...] = request.app.get(TRUSTED_PROXIES, ())
    return _forwarded_client(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)


def throttled(request: web.Request, address: str, wait: int) -> RateLimited:
    """Count a failed attempt from an address out of budget; the 429 to raise."""
    request.app[RUNTIME].audit.count(
        ("AuthenticationThrottled", address), ANONYMOUS,
        lambda n, first, last: AuthenticationThrottled(address=address, count=n, first_at=first, last_at=last),
    )
    return RateLimited(wait)


def _presented_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        # Another scheme (Basic...) is a malformed token, refused like any bad token.
        return value.strip() if scheme.lower() == "bearer" else ""
    return request.headers.get("X-Api-Token")  # clients of the original send this


async def authenticate(request: web.Request) -> Principal:
    runtime = request.app[RUNTIME]
    token = _presented_token(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    address = client_address(request)
    limiter = request.app[LIMITER]
    if token is None and cookie is None:
        wait = limiter.retry_after(address)
        if wait is not None:
            raise throttled(request, address, wait)
        raise Unauthenticated(NO_CREDENTIALS)
    # Credentials are checked first: a valid one passes even from an address out of budget (behind
    # a proxy, one guesser would otherwise lock everyone out). Guessing is not what the budget
    # stops -- secrets are 256 random bits -- it bounds what failures cost and append.
    try:
        if token is not None:
            return await runtime.tokens.verify(token, address=address)
        who = await runtime.sessions.verify(cookie or "")
    except CredentialsRefused as exc:
        wait = limiter.retry_after(address)
        if wait is not None:
            raise throttled(request, address, wait) from exc
        limiter.failed(address)
        await _record_rejection(request, exc, token=token is not None)
        raise
    if request.method not in SAFE_METHODS and not csrf_matches(cookie or "", request.headers.get(CSRF_HEADER)):
        await deny(request, who, "csrf", f"a write with the session cookie must send the {CSRF_HEADER} header "
                                         f"(its value is in the {CSRF_COOKIE} cookie and in GET /api/v1/me)")
    return who


async def _record_rejection(request: web.Request, exc: CredentialsRefused, *, token: bool) -> None:
    where = {"address": client_address(request), "method": request.method, "path": request.path}
    if token:
        event: TokenRejected | SessionRejected = TokenRejected(reason=exc.reason, token_id=exc.credential_id, **where)
    else:
        event = SessionRejected(reason=exc.reason, session_id=exc.credential_id, **where)
    await request.app[RUNTIME].audit.record(event)


async def recheck(request: web.Request) -> Principal:
    """The request's principal as of now: its credentials verified again (for long responses).

    Raises :class:`CredentialsRefused` (audited) once the token is revoked or expired, the session
    ended or expired, or the user disabled. Not counted against the address: it was valid before.
    """
    runtime = request.app[RUNTIME]
    token = _presented_token(request)
    try:
        if token is not None:
            return await runtime.tokens.verify(token, address=client_address(request))
        return await runtime.sessions.verify(request.cookies.get(SESSION_COOKIE) or "")
    except CredentialsRefused as exc:
        await _record_rejection(request, exc, token=token is not None)
        raise


async def deny(
    request: web.Request, who: Principal, rule: str, why: str, error: type[Forbidden] = Forbidden
) -> NoReturn:
    """Refuse with 403. Counted: one ``AccessDenied`` per user, rule, route and minute, since a
    user can repeat a forbidden request at will and the log keeps everything forever."""
    declared = route_of(request)
    route = declared.path if declared is not None else request.path
    method, path, address = request.method, request.path, client_address(request)

    def summary(count: int, first: dt.datetime, last: dt.datetime) -> AccessDenied:
        return AccessDenied(rule=rule, user_id=who.user_id, method=method, path=path, address=address,
                            route=route, count=count, first_at=first, last_at=last)

    request.app[RUNTIME].audit.count(("AccessDenied", rule, method, route), who.actor, summary)
    raise error(f"forbidden by rule '{rule}': {why}", rule=rule)


async def authorize(route: Route, request: web.Request, who: Principal) -> None:
    if route.rule == "read" or (who.admin and route.rule in RULES):
        return
    if route.rule == "admin":
        await deny(request, who, "admin", "only administrators may do this")
    if route.rule == "write":
        refusal = await write_problem(request, who)
        if refusal is not None:
            await deny(request, who, "write", refusal.why, refusal.error)
        return
    if route.rule == "extract":
        problem = await extract_problem(request, who)
        if problem is not None:
            await deny(request, who, "extract", problem)
        return
    raise Forbidden(f"the route declares an unknown rule {route.rule!r}: nobody may call it")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_of(request)
    if route is None:
        if request.match_info.http_exception is not None:
            return await handler(request)  # 404 or 405: nothing to authorize
        raise Forbidden("this route declares no authorization rule, so nobody may call it")
    if route.rule == "public":
        return await handler(request)
    who = await authenticate(request)
    request[PRINCIPAL] = who
    await authorize(route, request, who)
    return await handler(request)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]
