"""What both clients share: answers decoded (or raised), transport errors named for people."""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlsplit

import httpx

from maestro_client.errors import ConnectionFailed, api_error
from maestro_client.models import ExtractFile

USER_AGENT = "maestro-client/0.1"


def decode(response: httpx.Response) -> Any:
    """The JSON of a success (None when empty); an :class:`ApiError` for an error status."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        retry_after = response.headers.get("Retry-After")
        wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        raise api_error(response.status_code, body, response.reason_phrase, wait)
    if not response.content or response.status_code == 204:
        return None
    if "json" not in response.headers.get("Content-Type", "json"):
        return response.text
    return response.json()


def request_error(url: str, exc: httpx.TransportError) -> ConnectionFailed:
    """One line naming what failed: the server is down, the name does not resolve, it timed out."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        why = "cannot connect (is the server running, and is the URL right?)"
    elif isinstance(exc, httpx.TimeoutException):
        why = "the server did not answer in time"
    else:
        why = f"the connection failed ({type(exc).__name__})"
    return ConnectionFailed(f"{url}: {why}")


def file_name(f: ExtractFile) -> str:
    """A download's local name: the object's base name (its URL's query is the signature)."""
    name = posixpath.basename(f.uri) or posixpath.basename(urlsplit(f.url).path)
    return name or "extract"
