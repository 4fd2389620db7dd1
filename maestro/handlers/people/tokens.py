"""API tokens: create (shown once), list, verify, revoke, and the bootstrap admin token.

A token reads ``mae_<token id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256 of
it is a safe verifier (no password-style stretching needed); the id makes lookup one indexed
read, and the comparison is constant-time. A token acts exactly as its user: it stops working the
moment its user is disabled, and carries the user's current admin flag and groups.

When a token was last used is kept in ``auth_token_usage``, written at most once a minute per
token and not as an event: an event per request would make the log mostly noise.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.errors import ConcurrencyConflict, CredentialsRefused, NotFound, ValidationFailed
from maestro.events.auth import ApiTokenCreated, ApiTokenRevoked
from maestro.events.model import Metadata, now
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.people.principal import USER_STANDING, Principal, secret_hash
from maestro.handlers.people.users import UserService

__all__ = ["BOOTSTRAP_USER", "PREFIX", "REFUSED", "Principal", "TokenInfo", "TokenService"]

log = logging.getLogger(__name__)

PREFIX = "mae_"
BOOTSTRAP_USER = "bootstrap-admin"
# The same message for every refusal, so a caller learns nothing about which tokens exist.
REFUSED = "invalid or expired API token"
USAGE_RESOLUTION = dt.timedelta(seconds=60)

_VERIFY = (
    "SELECT t.user_id, t.secret_hash, t.expires_at, t.revoked_at, "
    f"(SELECT last_used_at FROM auth_token_usage g WHERE g.token_id = t.token_id) AS last_used_at, {USER_STANDING} "
    "FROM auth_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_id = $1"
)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    token_id: str
    user_id: str
    name: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        iso = lambda v: v.isoformat() if v else None  # noqa: E731
        return {
            "id": self.token_id, "user_id": self.user_id, "name": self.name,
            "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at), "last_used_at": iso(self.last_used_at),
        }


def split_token(token: str) -> tuple[str, str] | None:
    if not token.startswith(PREFIX):
        return None
    parts = token[len(PREFIX):].split("_", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


class TokenService:
    def __init__(self, store: EventStore, users: UserService) -> None:
        self.store = store
        self.users = users

    async def create(
        self, user_id: str, name: str, actor: Metadata, *, expires_at: dt.datetime | None = None,
        admin: bool | None = None,
    ) -> tuple[str, str]:
        """Create a token for an existing user; return (token id, the full token), never stored.

        ``admin`` (for trusted callers: the CLI, tests, scripts written before users existed)
        provisions the user: a missing one is created as a service user, admin or not, and
        ``admin=True`` promotes an existing one. Never reachable from the HTTP API.
        """
        if not name.strip() or len(name) > 200:
            raise ValidationFailed("name: 1-200 characters")
        if expires_at is not None and expires_at <= now():
            raise ValidationFailed("expires_at: must be in the future")
        if admin is not None:
            if not await self.users.ensure_service_user(user_id, user_id, actor, admin=admin) and admin:
                await self.users.change(user_id, actor, admin=True)
        if await self.users.get(user_id) is None:
            raise NotFound(f"no user {user_id!r}")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        event = ApiTokenCreated(
            token_id=token_id, user_id=user_id, name=name, secret_hash=secret_hash(secret), expires_at=expires_at
        )
        await self.store.append(f"token-{token_id}", NO_STREAM, [event], actor)
        return token_id, f"{PREFIX}{token_id}_{secret}"

    async def get(self, token_id: str) -> TokenInfo | None:
        row = await self.store.pool.fetchrow(
            "SELECT t.token_id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at, g.last_used_at "
            "FROM auth_tokens t LEFT JOIN auth_token_usage g USING (token_id) WHERE t.token_id = $1",
            token_id,
        )
        return TokenInfo(*row) if row is not None else None

    async def list(self, user_id: str | None) -> list[TokenInfo]:
        """A user's tokens (every token when ``user_id`` is None), newest first."""
        rows = await self.store.pool.fetch(
            "SELECT t.token_id, t.user_id, t.name, t.created_at, t.expires_at, t.revoked_at, g.last_used_at "
            "FROM auth_tokens t LEFT JOIN auth_token_usage g USING (token_id) "
            "WHERE $1::text IS NULL OR t.user_id = $1 ORDER BY t.created_at DESC, t.token_id",
            user_id,
        )
        return [TokenInfo(*r) for r in rows]

    async def revoke(self, token_id: str, actor: Metadata) -> None:
        info = await self.get(token_id)
        if info is None:
            raise NotFound(f"no token {token_id!r}")
        if info.revoked_at is not None:
            return  # revoking twice is not an error, and not a second event
        await self.store.append(f"token-{token_id}", 1, [ApiTokenRevoked(token_id=token_id)], actor)

    async def verify(self, token: str, *, address: str | None = None) -> Principal:
        parts = split_token(token.strip())
        if parts is None:
            raise CredentialsRefused(REFUSED, reason="malformed")
        token_id, secret = parts
        row = await self.store.pool.fetchrow(_VERIFY, token_id)
        at = now()
        if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash(secret)):
            raise CredentialsRefused(REFUSED, reason="unknown token or wrong secret", credential_id=token_id)
        if row["revoked_at"] is not None:
            raise CredentialsRefused(REFUSED, reason="revoked", credential_id=token_id)
        if row["expires_at"] is not None and row["expires_at"] <= at:
            raise CredentialsRefused(REFUSED, reason="expired", credential_id=token_id)
        if not row["enabled"]:
            raise CredentialsRefused(REFUSED, reason="user disabled", credential_id=token_id)
        if row["last_used_at"] is None or at - row["last_used_at"] >= USAGE_RESOLUTION:
            await self._record_use(token_id, at, address)
        return Principal(user_id=row["user_id"], admin=row["admin"], groups=tuple(row["groups"]), token_id=token_id)

    async def _record_use(self, token_id: str, at: dt.datetime, address: str | None) -> None:
        # The WHERE keeps concurrent requests of one token from rewriting it more than once a minute.
        await self.store.pool.execute(
            "INSERT INTO auth_token_usage AS g (token_id, last_used_at, last_used_by) VALUES ($1, $2, $3) "
            "ON CONFLICT (token_id) DO UPDATE SET last_used_at = EXCLUDED.last_used_at, "
            "last_used_by = EXCLUDED.last_used_by WHERE g.last_used_at <= EXCLUDED.last_used_at - $4::interval",
            token_id, at, address, USAGE_RESOLUTION,
        )

    async def bootstrap(self, data_dir: Path) -> str | None:
        """On first start (no token at all), create an admin token and write it to a 0600 file.

        The token acts as the service user ``bootstrap-admin``, created here if missing (also for
        databases from before users existed). Returns the token when one was created. Two
        processes starting at once on an empty database race on fixed stream ids: one wins, the
        other finds the work done.
        """
        system = Metadata(actor="system:bootstrap")
        await self.users.ensure_service_user(BOOTSTRAP_USER, "bootstrap admin", system, admin=True)
        if await self.store.pool.fetchval("SELECT count(*) FROM auth_tokens") > 0:
            return None
        secret = secrets.token_urlsafe(32)
        event = ApiTokenCreated(
            token_id="bootstrap", user_id=BOOTSTRAP_USER, name="bootstrap admin", secret_hash=secret_hash(secret)
        )
        try:
            await self.store.append("token-bootstrap", NO_STREAM, [event], system)
        except ConcurrencyConflict:
            return None
        token = f"{PREFIX}bootstrap_{secret}"
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "bootstrap-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.warning(
            "created the bootstrap admin API token; it is in %s (shown once). "
            "Configure login, then create personal tokens and revoke this one.",
            path,
        )
        return token
