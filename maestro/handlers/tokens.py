"""API tokens: create (shown once), verify, revoke, and the bootstrap admin token.

A token reads ``mae_<token id>_<secret>``. The secret is 32 random bytes, so a plain SHA-256 of
it is a safe verifier (no password-style stretching needed); the id makes lookup one indexed
read, and the comparison is constant-time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from maestro.errors import Unauthenticated
from maestro.events.auth import ApiTokenCreated, ApiTokenRevoked
from maestro.events.model import Metadata, now
from maestro.events.store import NO_STREAM, EventStore

log = logging.getLogger(__name__)

PREFIX = "mae_"
BOOTSTRAP_USER = "bootstrap-admin"
# The same message for every refusal, so a caller learns nothing about which tokens exist.
REFUSED = "invalid or expired API token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is making a request."""

    user_id: str
    token_id: str | None
    admin: bool

    @property
    def actor(self) -> str:
        return f"user:{self.user_id}"

    def metadata(self, **extra: object) -> Metadata:
        return Metadata(actor=self.actor, extra={"token_id": self.token_id, **extra} if self.token_id else dict(extra))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(PREFIX):
        return None
    parts = token[len(PREFIX):].split("_", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


class TokenService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def create(
        self,
        user_id: str,
        name: str,
        actor: Metadata,
        *,
        admin: bool = False,
        expires_at: dt.datetime | None = None,
    ) -> tuple[str, str]:
        """Create a token; return (token id, the full token). The token is never stored."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        await self.store.append(
            f"token-{token_id}",
            NO_STREAM,
            [
                ApiTokenCreated(
                    token_id=token_id, user_id=user_id, name=name, secret_hash=_hash(secret),
                    admin=admin, expires_at=expires_at,
                )
            ],
            actor,
        )
        return token_id, f"{PREFIX}{token_id}_{secret}"

    async def revoke(self, token_id: str, actor: Metadata) -> None:
        await self.store.append(f"token-{token_id}", 1, [ApiTokenRevoked(token_id=token_id)], actor)

    async def verify(self, token: str) -> Principal:
        parts = _split(token.strip())
        if parts is None:
            raise Unauthenticated(REFUSED)
        token_id, secret = parts
        row = await self.store.pool.fetchrow(
            "SELECT user_id, secret_hash, admin, expires_at, revoked_at FROM auth_tokens WHERE token_id = $1",
            token_id,
        )
        if (
            row is None
            or not hmac.compare_digest(row["secret_hash"], _hash(secret))
            or row["revoked_at"] is not None
            or (row["expires_at"] is not None and row["expires_at"] <= now())
        ):
            raise Unauthenticated(REFUSED)
        return Principal(user_id=row["user_id"], token_id=token_id, admin=row["admin"])

    async def bootstrap(self, data_dir: Path) -> str | None:
        """On first start (no token at all), create an admin token and write it to a 0600 file.

        Returns the token when one was created. Two processes starting at once on an empty
        database race on the fixed stream id: one wins, the other finds the token made.
        """
        if await self.store.pool.fetchval("SELECT count(*) FROM auth_tokens") > 0:
            return None
        secret = secrets.token_urlsafe(32)
        token_id = "bootstrap"
        from maestro.errors import ConcurrencyConflict

        try:
            await self.store.append(
                "token-bootstrap",
                NO_STREAM,
                [
                    ApiTokenCreated(
                        token_id=token_id, user_id=BOOTSTRAP_USER, name="bootstrap admin",
                        secret_hash=_hash(secret), admin=True,
                    )
                ],
                Metadata(actor="system:bootstrap"),
            )
        except ConcurrencyConflict:
            return None
        token = f"{PREFIX}{token_id}_{secret}"
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "bootstrap-token"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        log.warning(
            "created the bootstrap admin API token; it is in %s (shown once). "
            "Create personal tokens with `maestro token create` and revoke this one.",
            path,
        )
        return token
