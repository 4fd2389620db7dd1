"""Google Sheets v4 and Drive v3 (sharing) through google-api-python-client.

The only module that imports the Google API client. Its calls block, so each runs in a thread;
one client's calls are serialised (an ``httplib2.Http`` must not be used by two threads at once,
and an export's steps are sequential anyway).

Credentials are a service-account key (the BigQuery section's): google-auth signs a JWT with it
and trades it at the key's ``token_uri`` for an access token, refreshed when it expires. Pointed
at another ``endpoint`` (and a key whose ``token_uri`` is local), the same code runs against the
tests' fake at the HTTP boundary.

Retries: Google asks for exponential backoff on 429 (``RESOURCE_EXHAUSTED``: per-minute quotas),
and 500/502/503/504 are transient. We retry those (and dropped connections) ourselves rather than
with the client's ``num_retries``, because it ignores ``Retry-After``. Every other answer becomes a
:class:`SheetsError` naming Google's status and message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import google_auth_httplib2
import httplib2
from google.auth.exceptions import RefreshError, TransportError
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from maestro.errors_outside import SheetsError

# The narrowest scopes that work: spreadsheets for the data, drive.file to share the files this
# account created (not every file in its Drive).
SCOPES = ("https://www.googleapis.com/auth/spreadsheets", "https://www.googleapis.com/auth/drive.file")
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; ``Retry-After`` wins when Google sends it."""

    attempts: int = 8
    base: float = 1.0
    cap: float = 64.0
    max_wait: float = 600.0  # total seconds of waiting for one call before it fails (retryable)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server knows when its quota refills: no cap, only max_wait
            return retry_after
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class SheetsClient:
    """The calls an export needs, each retried per ``retry``. ``requests`` counts HTTP requests
    sent (attempts included), for results and tests."""

    def __init__(
        self,
        key_info: dict[str, Any],
        *,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.account = key_info.get("client_email", "")
        self.retry = retry or RetryPolicy()
        self.requests = 0
        self.retries = 0
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._http = httplib2.Http(timeout=timeout)
        self._key_info = key_info
        self._endpoint = endpoint
        self._sheets: Any = None
        self._drive: Any = None

    def _build(self) -> None:
        """The API clients. Parsing the key and the discovery documents takes a while: done in a
        thread at the first call, not on the event loop."""
        creds = service_account.Credentials.from_service_account_info(self._key_info, scopes=list(SCOPES))
        http = google_auth_httplib2.AuthorizedHttp(creds, http=self._http)
        # One host serves both APIs here; an api_endpoint replaces the base URL *with* its service
        # path, so Drive's (drive/v3/) is added back. static_discovery: the API descriptions
        # shipped in the package (no discovery request).
        root = self._endpoint.rstrip("/") if self._endpoint else None
        self._sheets = build("sheets", "v4", http=http, static_discovery=True, cache_discovery=False,
                             client_options={"api_endpoint": root} if root else None)
        self._drive = build("drive", "v3", http=http, static_discovery=True, cache_discovery=False,
                            client_options={"api_endpoint": f"{root}/drive/v3/"} if root else None)

    def close(self) -> None:
        """Close the kept-alive connections (idempotent)."""
        self._http.close()

    async def __aenter__(self) -> SheetsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self._lock:  # not under a call still running in its thread
            self.close()

    # ------------------------------------------------------------------ calls
    async def create_spreadsheet(self, title: str) -> dict[str, Any]:
        """Not idempotent: retried only after an answer that says it was not applied (quota); a
        timeout, a dropped connection or a 5xx may have created one, so they raise (retryable)
        rather than create a second here."""
        body = {"properties": {"title": title}}
        return await self._call("create the spreadsheet", lambda: self._sheets.spreadsheets().create(body=body),
                                idempotent=False)

    async def get_spreadsheet(self, spreadsheet_id: str) -> dict[str, Any]:
        fields = "spreadsheetId,spreadsheetUrl,properties.title,sheets.properties"
        return await self._call("read the spreadsheet", lambda: self._sheets.spreadsheets().get(
            spreadsheetId=spreadsheet_id, fields=fields))

    async def batch_update(self, spreadsheet_id: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"requests": requests}
        return await self._call("change the tabs", lambda: self._sheets.spreadsheets().batchUpdate(
            spreadsheetId=spreadsheet_id, body=body))

    async def update_values(self, spreadsheet_id: str, a1_range: str, values: list[list[Any]]) -> dict[str, Any]:
        """Write ``values`` at ``a1_range`` as given (RAW: no formula or date parsing)."""
        body = {"range": a1_range, "majorDimension": "ROWS", "values": values}
        return await self._call("write rows", lambda: self._sheets.spreadsheets().values().update(
            spreadsheetId=spreadsheet_id, range=a1_range, valueInputOption="RAW", body=body))

    async def share_with_domain(self, file_id: str, domain: str, role: str = "reader") -> dict[str, Any]:
        body = {"type": "domain", "role": role, "domain": domain}
        return await self._call(f"share with {domain}", lambda: self._drive.permissions().create(
            fileId=file_id, body=body, sendNotificationEmail=False))

    # ------------------------------------------------------------------ retries
    async def _call(self, what: str, make: Callable[[], Any], *, idempotent: bool = True) -> Any:
        waited = 0.0
        async with self._lock:
            if self._sheets is None:
                await asyncio.to_thread(self._build)
            for attempt in range(self.retry.attempts):
                self.requests += 1
                try:
                    return await asyncio.to_thread(lambda: make().execute(num_retries=0))
                except Exception as exc:  # noqa: BLE001 - translated right here, once
                    error, retry_after = _translate(what, exc)
                refused = error.reason == "quota_exceeded"  # answered "not now": nothing was applied
                if not error.retryable or attempt == self.retry.attempts - 1 or not (idempotent or refused):
                    raise error
                delay = self.retry.delay(attempt, retry_after)
                if waited + delay > self.retry.max_wait:
                    raise error
                waited += delay
                self.retries += 1
                await self._sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")


def _translate(what: str, exc: Exception) -> tuple[SheetsError, float | None]:
    """Our error for a failed call (and the server's Retry-After in seconds, if any)."""
    if isinstance(exc, HttpError):
        status = exc.resp.status
        status_name, message, reasons = _error_body(exc)
        retryable = status in _RETRYABLE_STATUS or (status == 403 and bool(reasons & _RATE_REASONS))
        reason = {401: "unauthenticated", 403: "permission_denied", 404: "not_found", 429: "quota_exceeded"}.get(
            status, status_name.lower() or f"http_{status}")
        if retryable and status == 403:
            reason = "quota_exceeded"
        return SheetsError(reason, f"{what}: {message} (HTTP {status})", retryable=retryable), _retry_after(exc.resp)
    if isinstance(exc, RefreshError):
        # The token endpoint refused the key (revoked, deleted, wrong clock): not a passing fault,
        # unless google-auth says the refresh itself may be retried (a 5xx there).
        retryable = bool(getattr(exc, "retryable", False))
        return SheetsError("unauthenticated", f"{what}: the service account's token was refused: {exc}",
                           retryable=retryable), None
    if isinstance(exc, httplib2.HttpLib2Error | TransportError | OSError | socket.timeout):
        return SheetsError("unavailable", f"{what}: {type(exc).__name__}: {exc}", retryable=True), None
    raise exc


def _error_body(exc: HttpError) -> tuple[str, str, set[str]]:
    """(status name, message, reasons) from Google's JSON error body, or the raw text."""
    try:
        error = json.loads(exc.content.decode("utf-8", "replace"))["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", (exc.content or b"").decode("utf-8", "replace")[:500] or str(exc.resp.reason), set()
    if not isinstance(error, dict):
        return "", str(error)[:500], set()
    reasons = {str(d.get("reason")) for d in error.get("details", []) + error.get("errors", []) if isinstance(d, dict)}
    return str(error.get("status", "")), str(error.get("message", "")), reasons


def _retry_after(resp: Any) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    value = resp.get("retry-after") if hasattr(resp, "get") else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
