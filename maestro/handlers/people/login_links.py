"""One-time login links for local mode, as Jupyter prints one: ``<base>/login/link?token=<token>``.

With no identity provider configured, nobody could open the UI: the bootstrap admin has only an
API token, which a browser cannot present. ``maestro serve`` (when login is not configured) and
``maestro login-link`` make a link that opens an ordinary session (the API's cookies and CSRF
rules; docs/auth.md) for one user, once, within a short lifetime.

The token reads ``ml_<link id>_<secret>``; the log holds only SHA-256 of the secret. Using the link
appends ``LoginLinkUsed`` at version 2 of ``login-link-<id>``: a second use (a replay, two
browsers racing) conflicts on that version and is refused; the session the loser had opened is
ended at once, so one link never leaves two sessions. Every refusal says the same thing (what to
run to get a new link), so a caller learns nothing about which links exist.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass

from maestro.errors import ConcurrencyConflict, CredentialsRefused, NotFound
from maestro.events.login_links import LoginLinkCreated, LoginLinkUsed
from maestro.events.model import Metadata, now
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.people.principal import secret_hash
from maestro.handlers.people.sessions import SessionService
from maestro.handlers.people.users import UserService

PREFIX = "ml_"
LIFETIME = dt.timedelta(minutes=15)
REFUSED = "this login link is invalid, expired or already used: run `maestro login-link` for a new one"


def link_stream(link_id: str) -> str:
    return f"login-link-{link_id}"


def split_link(token: str) -> tuple[str, str] | None:
    """(link id, secret) of a well-formed token.

    >>> split_link("ml_ab12_secret"), split_link("mae_x_y"), split_link("ml__s")
    (('ab12', 'secret'), None, None)
    """
    if not token.startswith(PREFIX):
        return None
    link_id, _, secret = token[len(PREFIX):].partition("_")
    return (link_id, secret) if link_id and secret and len(link_id) <= 32 else None


@dataclass(frozen=True, slots=True)
class UsedLink:
    user_id: str
    cookie: str  # the new session's cookie value
    expires_at: dt.datetime


class LoginLinks:
    def __init__(self, store: EventStore, users: UserService, sessions: SessionService) -> None:
        self.store = store
        self.users = users
        self.sessions = sessions

    async def create(self, user_id: str, actor: Metadata, *, lifetime: dt.timedelta = LIFETIME) -> tuple[str, dt.datetime]:
        """A new link's token for ``user_id`` (an existing, enabled user) and when it expires."""
        user = await self.users.get(user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        link_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        expires_at = now() + lifetime
        event = LoginLinkCreated(link_id=link_id, user_id=user_id, secret_hash=secret_hash(secret), expires_at=expires_at)
        await self.store.append(link_stream(link_id), NO_STREAM, [event], actor)
        return f"{PREFIX}{link_id}_{secret}", expires_at

    async def use(self, token: str, *, address: str | None = None) -> UsedLink:
        """Open a session with the link, once. Raises :class:`CredentialsRefused` (audit reason set)."""
        parts = split_link(token.strip())
        if parts is None:
            raise CredentialsRefused(REFUSED, reason="malformed login link")
        link_id, secret = parts
        events = await self.store.read(link_stream(link_id))
        created = events[0].event if events else None
        if not isinstance(created, LoginLinkCreated) or not hmac.compare_digest(created.secret_hash, secret_hash(secret)):
            raise CredentialsRefused(REFUSED, reason="unknown login link or wrong secret", credential_id=link_id)
        if len(events) > 1:
            raise CredentialsRefused(REFUSED, reason="login link already used", credential_id=link_id)
        if created.expires_at <= now():
            raise CredentialsRefused(REFUSED, reason="login link expired", credential_id=link_id)
        user = await self.users.get(created.user_id)
        if user is None or not user.enabled:
            raise CredentialsRefused(REFUSED, reason="user disabled", credential_id=link_id)
        cookie, expires_at = await self.sessions.start(created.user_id, address=address)
        session_id = cookie.partition(".")[0]
        actor = Metadata(actor=f"user:{created.user_id}", extra={"session_id": session_id})
        try:
            await self.store.append(link_stream(link_id), 1,
                                    [LoginLinkUsed(link_id=link_id, session_id=session_id, address=address)], actor)
        except ConcurrencyConflict:
            # Another browser used it between our read and this append: its session stands, ours ends.
            await self.sessions.end(session_id, actor, reason="login link already used")
            raise CredentialsRefused(REFUSED, reason="login link already used", credential_id=link_id) from None
        return UsedLink(created.user_id, cookie, expires_at)
