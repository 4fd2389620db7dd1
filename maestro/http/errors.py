"""One middleware turns every error into ``{"error": {"code", "message"}}`` JSON.

A 500 never carries the text of what failed: an unexpected exception (a driver's error quoting
SQL, a constraint or a value) or an internal :class:`MaestroError` is logged with a request id,
and the client gets a generic message with that id (also in ``X-Request-Id``) to quote to an
operator. Errors with another status are ours, written for the caller, and are sent as they are.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from maestro.errors import MaestroError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, **details: object) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return web.json_response({"error": body}, status=status)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(request: web.Request) -> str:
    """The caller's (a proxy's) ``X-Request-Id`` when it is a sane one, else a new id."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def internal_error(request: web.Request, what: str) -> web.Response:
    """Log the exception being handled under a request id; answer a 500 that only names that id."""
    rid = request_id(request)
    log.exception(what, extra={"request_id": rid, "method": request.method, "path": request.path})
    response = error_response(500, "internal_error", f"internal error; see the server log (request {rid})",
                              request_id=rid)
    response.headers["X-Request-Id"] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MaestroError as exc:
        if exc.status == 500:
            return internal_error(request, f"request failed: {exc.code}")
        if exc.status > 500:
            log.warning("request failed", extra={"path": request.path, "code": exc.code, "error": exc.message})
        response = web.json_response({"error": exc.to_dict()}, status=exc.status)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = "request body too large"
        elif exc.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        response = error_response(exc.status, code, message)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        return internal_error(request, "unhandled error")
