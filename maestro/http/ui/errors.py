"""Errors on pages: an HTML page for a browser, the API's JSON for everyone else.

The same auth middleware refuses a page as it refuses the API (the UI adds no authorization of
its own); this middleware only changes how a refusal or an error *looks* when a browser asked for
a page (a GET whose ``Accept`` names ``text/html``, outside ``/api/``): no credentials → to the
sign-in page, carrying where the browser was going; another error → a page with the API's code
and message and the status. A 500 keeps the JSON middleware's rule: the text of what failed is
logged with a request id, never shown.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from maestro.errors import MaestroError, Unauthenticated
from maestro.http.errors import request_id
from maestro.http.ui.render import page

log = logging.getLogger(__name__)
_NOT_PAGES = ("/api/", "/healthz", "/metrics", "/auth/", "/ui/static/", "/ui/live/")


def wants_page(request: web.Request) -> bool:
    if request.method not in ("GET", "HEAD") or request.path.startswith(_NOT_PAGES):
        return False
    return "text/html" in request.headers.get("Accept", "")


TITLES = {400: "Bad request", 401: "Sign in required", 403: "Not allowed", 404: "Not found",
          409: "Conflict", 422: "Not valid", 429: "Too many attempts", 500: "Internal error"}


def error_page(request: web.Request, status: int, code: str, message: str) -> web.Response:
    title = TITLES.get(status, "Unavailable" if status > 500 else "Error")
    return page(request, "error.html", status=status, code=code, message=message, title=title)


@web.middleware
async def ui_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not wants_page(request):
        return await handler(request)
    try:
        return await handler(request)
    except Unauthenticated:
        target = request.path_qs
        return web.Response(status=303, headers={"Location": f"/signin?return_to={quote(target, safe='')}"})
    except MaestroError as exc:
        if exc.status == 500:
            return _internal(request, f"page failed: {exc.code}")
        return error_page(request, exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_page(request, 404, "not_found", f"there is no page at {request.path}")
        if exc.status == 405:
            return error_page(request, 405, "method_not_allowed", f"{request.method} is not allowed here")
        raise
    except Exception:
        return _internal(request, "page failed")


def _internal(request: web.Request, what: str) -> web.Response:
    rid = request_id(request)
    log.exception(what, extra={"request_id": rid, "method": request.method, "path": request.path})
    response = error_page(request, 500, "internal_error", f"internal error; see the server log (request {rid})")
    response.headers["X-Request-Id"] = rid
    return response
