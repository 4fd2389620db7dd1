"""What a BigQuery failure means for Maestro: one reason, one message, retryable or not.

Retryability is data on the error (STYLE.md item 11): the executor never guesses from a message.
A retryable error is one where the *same* request or job, sent again later, can succeed; the
runner retries it with backoff (a new attempt, hence a new job id). Everything else needs a human
or a parent table, so it fails at once. BigQuery's reasons are documented at
https://cloud.google.com/bigquery/docs/error-messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests.exceptions
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

# Reasons that pass with time. The docs' advice for each is "retry with exponential backoff".
RETRYABLE_REASONS = frozenset(
    {
        "rateLimitExceeded",  # per-table/per-project rates (also "too many concurrent queries")
        "jobRateLimitExceeded",  # the job-level form of the same
        "backendError",  # a transient service error
        "internalError",
        "jobBackendError",  # the job died from an internal error, not from its SQL
        "jobInternalError",
        "badGateway",
        "tableUnavailable",  # a table backed by another Google product is briefly unavailable
    }
)

# Reasons where the same job fails the same way again. Listed (rather than left to the default)
# so that a 5xx status carrying one of them is still not retried.
PERMANENT_REASONS = frozenset(
    {
        "invalidQuery",  # the SQL does not compile
        "invalid",  # a malformed request or job configuration
        "notFound",  # a table, dataset or project is missing: a parent must run or a human act
        "accessDenied",  # permissions change by a human, not by waiting
        "duplicate",  # jobs.insert's 409 is adopted before it gets here; elsewhere it is a bug
        "quotaExceeded",  # daily / billing-tier quotas; short-window limits are rateLimitExceeded
        "billingTierLimitExceeded",
        "billingNotEnabled",
        "bytesBilledLimitExceeded",  # maximum_bytes_billed stops the same query every time
        "resourcesExceeded",  # too much memory/shuffle for this SQL: it must be rewritten
        "responseTooLarge",
        "timeout",  # the job ran past its time limit; it would again
        "stopped",  # cancelled on purpose (the runner reports it as cancelled, not failed)
    }
)

# Messages that mean "try again" whatever the reason says (matched lowercased).
RETRY_HINTS = (
    "retrying may solve the problem",  # BigQuery's own advice; it knows best
    "could not serialize access",  # BigQuery: concurrent updates of one table, retry later
    # local-bigquery: a DuckLake write-write conflict, reported as invalid/invalidQuery (seen on
    # datasets.insert under concurrent load).
    "failed to commit ducklake transaction",
    "catalog write-write conflict",  # local-bigquery: the same, on a load creating its table
)
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# Network trouble before BigQuery answered: the request may or may not have arrived, which is
# safe only because every job carries its own id (a retried insert gets a 409 and is adopted).
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exceptions.TransportError,
)


@dataclass(frozen=True)
class JobError:
    # BigQuery's reason (invalidQuery, ...), or ours: http_<status>, network, requestTimeout, ssl,
    # retryExhausted, unknown.
    reason: str
    message: str
    retryable: bool


def classify(error: BaseException | Mapping[str, Any]) -> JobError:
    """Classify an exception from the client, or a job's ``errorResult`` dict.

    >>> classify({"reason": "backendError", "message": "Backend error."}).retryable
    True
    >>> classify(api_exceptions.BadRequest("Syntax error", errors=[{"reason": "invalidQuery"}]))
    JobError(reason='invalidQuery', message='Syntax error', retryable=False)
    """
    if isinstance(error, Mapping):
        reason = str(error.get("reason") or "unknown")
        return _decide(reason, str(error.get("message") or reason), status=None)
    if isinstance(error, api_exceptions.RetryError):
        # The client's own retry gave up on a transient error: still transient for our backoff.
        cause = error.cause
        inner = classify(cause) if cause is not None else None
        if inner is not None and inner.reason != "unknown":
            return inner
        return JobError("retryExhausted", error.message, retryable=True)
    if isinstance(error, requests.exceptions.SSLError):
        # A certificate problem is configuration (a proxy, a CA bundle), not a blip.
        return JobError("ssl", str(error), retryable=False)
    if isinstance(error, api_exceptions.GoogleAPICallError):
        details = error.errors[0] if error.errors and isinstance(error.errors[0], Mapping) else {}
        status = error.code if isinstance(error.code, int) else None
        reason = (
            details.get("reason") or error.reason or (f"http_{status}" if status else "unknown")
        )
        # The item's message is BigQuery's own; error.message adds the URL and client debug lines.
        message = details.get("message") or error.message or str(error)
        return _decide(str(reason), str(message), status=status)
    if isinstance(error, _NETWORK_ERRORS):
        timed_out = isinstance(error, TimeoutError | requests.exceptions.Timeout)
        # Not BigQuery's "timeout" (a job past its limit, permanent): our request timed out.
        reason = "requestTimeout" if timed_out else "network"
        return JobError(reason, f"{type(error).__name__}: {error}", retryable=True)
    return JobError("unknown", f"{type(error).__name__}: {error}", retryable=False)


def _decide(reason: str, message: str, *, status: int | None) -> JobError:
    if reason in RETRYABLE_REASONS or any(hint in message.lower() for hint in RETRY_HINTS):
        retryable = True
    elif reason in PERMANENT_REASONS:
        retryable = False
    else:  # an unknown reason: trust the HTTP status if there is one, else do not retry
        retryable = status in RETRYABLE_STATUS
    return JobError(reason, message, retryable)
