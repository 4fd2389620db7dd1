"""Authentication events: API tokens, login sessions, and the audit trail of refusals.

Tokens and sessions record only a SHA-256 of their secret: the log is readable by administrators
and must never let one of them act as someone else. Refusals (a denied login, a rejected token or
session, a forbidden action) go to per-day, per-process streams ``audit-<YYYY-MM-DD>-<process>``
(``maestro.handlers.people.audit``): they are facts for the audit API, never state that anything
folds. Refusals anyone can repeat at will are counted, one event per key and minute.
"""

from __future__ import annotations

import datetime as dt

from maestro.events.model import Event


class ApiTokenCreated(Event):
    """Only a hash of the secret is recorded; the secret is shown once, to its creator.

    ``admin`` is historical: since users exist, a token acts exactly as its user does.
    """

    token_id: str
    user_id: str
    name: str
    secret_hash: str
    admin: bool = False
    expires_at: dt.datetime | None = None


class ApiTokenRevoked(Event):
    token_id: str


class SessionStarted(Event):
    """A login succeeded; the browser holds the session's secret in a cookie."""

    session_id: str
    user_id: str
    secret_hash: str
    expires_at: dt.datetime
    address: str | None = None


class SessionEnded(Event):
    session_id: str
    reason: str = "logout"


# ------------------------------------------------ audit (streams audit-<day>-<process>)
class LoginDenied(Event):
    """A login that did not give a session: a refused callback, an unknown or disabled person."""

    reason: str
    address: str | None = None
    email: str | None = None
    user_id: str | None = None


class TokenRejected(Event):
    """Credentials were presented and refused. ``token_id`` is the public part, when well-formed."""

    reason: str
    address: str | None = None
    token_id: str | None = None
    method: str | None = None
    path: str | None = None


class SessionRejected(Event):
    reason: str
    address: str | None = None
    session_id: str | None = None
    method: str | None = None
    path: str | None = None


class AccessDenied(Event):
    """An authenticated user asked for something their rules do not allow.

    One event per user, rule, route and minute: ``count`` refusals between ``first_at`` and
    ``last_at``; ``path`` and ``address`` are the first one's. (Events from before counting have
    neither and stand for one refusal.)
    """

    rule: str
    user_id: str
    method: str
    path: str
    address: str | None = None
    route: str | None = None  # the route's template, e.g. /api/v1/tables/{table_id}
    count: int = 1
    first_at: dt.datetime | None = None
    last_at: dt.datetime | None = None


class AuthenticationThrottled(Event):
    """Failed attempts from an address whose failure budget was spent: answered 429, counted.

    One event per address and minute. Attempts within the budget are recorded one by one
    (``TokenRejected``, ``SessionRejected``, ``LoginDenied``).
    """

    address: str
    count: int
    first_at: dt.datetime
    last_at: dt.datetime
