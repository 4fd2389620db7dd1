"""What can go wrong, as exceptions you can catch by kind.

Every error derives from :class:`MaestroClientError`. Answers of the server are :class:`ApiError`
subclasses by HTTP status, carrying the server's stable ``code``, its human ``message`` and
``details``; a server that cannot be reached is :class:`ConnectionFailed`; a table or run that
fails while you wait is :class:`RunFailed` with BigQuery's error and, for SQL errors, its line
and column.
"""

from __future__ import annotations

from typing import Any


class MaestroClientError(Exception):
    """Something went wrong talking to Maestro."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(MaestroClientError):
    """The server could not be reached (down, wrong URL, network), after the retries."""


class WaitTimeout(MaestroClientError):
    """What was waited for did not happen within the timeout."""


class ApiError(MaestroClientError):
    """The server refused or failed a request."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or {}
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"


class BadRequest(ApiError):
    """The request was invalid (400, 422): fix the input."""


class AuthenticationFailed(ApiError):
    """No token, or a token that is wrong, expired or revoked (401)."""


class PermissionDenied(ApiError):
    """The token's user may not do this (403); ``details['rule']`` names the rule."""


class NotFound(ApiError):
    """No such table, run, job or route (404)."""


class Conflict(ApiError):
    """The request conflicts with the current state (409): e.g. an object already loaded."""


class RateLimited(ApiError):
    """Too many requests (429), after the retries; ``retry_after`` says how long to wait."""


class ServerError(ApiError):
    """The server or a service behind it failed (5xx), after the retries."""


class RunFailed(MaestroClientError):
    """A run, a table or a load ended without succeeding.

    ``error`` is BigQuery's message (or Maestro's reason); ``line`` and ``column`` locate a SQL
    error in the table's query when BigQuery named them.
    """

    def __init__(self, message: str, *, error: str | None = None, line: int | None = None,
                 column: int | None = None, run_id: str | None = None, job_id: str | None = None,
                 table: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.line = line
        self.column = column
        self.run_id = run_id
        self.job_id = job_id
        self.table = table


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: AuthenticationFailed, 403: PermissionDenied, 404: NotFound, 409: Conflict,
    422: BadRequest, 429: RateLimited,
}


def api_error(status: int, body: Any, reason: str, retry_after: float | None = None) -> ApiError:
    """The exception for an error answer: the server's ``{"error": {code, message, details}}``,
    or (from a proxy, say) just the status."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code, message, details = str(error.get("code") or "error"), error["message"], error.get("details")
    else:
        code, message, details = "http_error", f"HTTP {status} {reason}".strip(), None
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return cls(status, code, message, details if isinstance(details, dict) else None, retry_after)
