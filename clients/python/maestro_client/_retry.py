"""When to try a request again, and how long to wait first.

Retried: 429 and 503 (the server refused before doing anything, and says so), and connection
failures that happened before the request was sent (connect errors and timeouts). Reads
(GET, HEAD) are also retried on other 5xx and on errors mid-response, since repeating them changes
nothing. A write that failed with 500/502/504 or lost its connection mid-way is *not* repeated: it
may have happened, and running a table twice is not what anyone asked for. Waits grow
exponentially with full jitter (AWS's "exponential backoff and jitter"), capped, and honour a
``Retry-After`` the server sends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALWAYS_RETRIED = frozenset({429, 503})
READS_RETRIED = frozenset({500, 502, 504})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # in all, the first included
    backoff: float = 0.5  # seconds: the first wait is up to this
    max_backoff: float = 30.0

    def status_retryable(self, method: str, status: int) -> bool:
        return status in ALWAYS_RETRIED or (method in SAFE_METHODS and status in READS_RETRIED)

    def error_retryable(self, method: str, exc: Exception) -> bool:
        if isinstance(exc, NOT_SENT):
            return True
        return method in SAFE_METHODS and isinstance(exc, httpx.TransportError)

    def pause(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        return random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
