"""Login sessions: server-side, one row per login, the browser holding only a random secret.

The cookie reads ``<session id>.<secret>``: the id finds the row (one indexed read), the secret is
checked against its SHA-256 in constant time. Starting and ending a session are events (the audit
trail of logins); using one is not. A session stops working when it expires, when it is ended
(logout), or the moment its user is disabled (the user's standing is joined into every check).

CSRF: cookies ride along on cross-site requests, so a write authenticated by the cookie must also
carry ``X-CSRF-Token``, a value derived from the session secret (SHA-256 under its own label, so
the ``secret_hash`` in the log does not give it away). Another site can neither read our cookie
nor compute the value; our own pages read it from the ``__Host-maestro_csrf`` cookie (readable by
scripts of our origin only) or from ``GET /api/v1/me``. Requests with an API token need none:
browsers never attach ``Authorization`` headers on their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from maestro.errors import ConcurrencyConflict, CredentialsRefused
from maestro.events.auth import SessionEnded, SessionStarted
from maestro.events.model import Metadata, now
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.people.principal import USER_STANDING, Principal, secret_hash

REFUSED = "invalid or expired session: log in again"

_VERIFY = (
    f"SELECT s.user_id, s.secret_hash, s.expires_at, s.ended_at, {USER_STANDING} "
    "FROM auth_sessions s JOIN users u ON u.user_id = s.user_id WHERE s.session_id = $1"
)


def session_stream(session_id: str) -> str:
    return f"session-{session_id}"


def csrf_token(cookie: str) -> str:
    """The CSRF token that goes with a session cookie."""
    _, _, secret = cookie.partition(".")
    return hashlib.sha256(f"maestro-csrf\n{secret}".encode()).hexdigest()


def csrf_matches(cookie: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(cookie).encode(), presented.encode())


def session_id_of(cookie: str) -> str | None:
    session_id, dot, secret = cookie.partition(".")
    return session_id if dot and session_id and secret and len(session_id) <= 64 else None


class SessionService:
    def __init__(self, store: EventStore, lifetime: dt.timedelta) -> None:
        self.store = store
        self.lifetime = lifetime

    async def start(self, user_id: str, *, address: str | None = None) -> tuple[str, dt.datetime]:
        """Open a session for ``user_id``; return (cookie value, expiry). The secret is not stored."""
        session_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        expires_at = now() + self.lifetime
        event = SessionStarted(session_id=session_id, user_id=user_id, secret_hash=secret_hash(secret),
                               expires_at=expires_at, address=address)
        await self.store.append(session_stream(session_id), NO_STREAM, [event], Metadata(actor=f"user:{user_id}"))
        return f"{session_id}.{secret}", expires_at

    async def verify(self, cookie: str) -> Principal:
        session_id = session_id_of(cookie)
        if session_id is None:
            raise CredentialsRefused(REFUSED, reason="malformed session cookie")
        row = await self.store.pool.fetchrow(_VERIFY, session_id)
        _, _, secret = cookie.partition(".")
        if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash(secret)):
            raise CredentialsRefused(REFUSED, reason="unknown session or wrong secret", credential_id=session_id)
        if row["ended_at"] is not None:
            raise CredentialsRefused(REFUSED, reason="ended", credential_id=session_id)
        if row["expires_at"] <= now():
            raise CredentialsRefused(REFUSED, reason="expired", credential_id=session_id)
        if not row["enabled"]:
            raise CredentialsRefused(REFUSED, reason="user disabled", credential_id=session_id)
        return Principal(user_id=row["user_id"], admin=row["admin"], groups=tuple(row["groups"]),
                         session_id=session_id)

    async def end(self, session_id: str, actor: Metadata, reason: str = "logout") -> bool:
        """End a session (idempotent); True when it was open."""
        open_ = await self.store.pool.fetchval(
            "SELECT ended_at IS NULL FROM auth_sessions WHERE session_id = $1", session_id
        )
        if not open_:
            return False
        try:
            await self.store.append(session_stream(session_id), 1,
                                    [SessionEnded(session_id=session_id, reason=reason)], actor)
        except ConcurrencyConflict:
            return False  # ended meanwhile (a second logout racing this one)
        return True
