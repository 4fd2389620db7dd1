"""One middleware turns every error into ``{"error": {"code", "message"}}`` JSON."""

from __future__ import annotations

import logging

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MaestroError as exc:
        if exc.status >= 500:
            log.exception("request failed", extra={"path": request.path})
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
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(500, "internal_error", "internal error; see the server log")
