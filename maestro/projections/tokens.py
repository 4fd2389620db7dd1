"""API tokens (inline): a request authenticates against this table."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.auth import ApiTokenCreated, ApiTokenRevoked
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection


class TokensProjection(Projection):
    name = "tokens"
    mode = "inline"
    event_types = frozenset({"ApiTokenCreated", "ApiTokenRevoked"})
    tables = ("auth_tokens",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            if isinstance(e, ApiTokenCreated):
                await conn.execute(
                    "INSERT INTO auth_tokens (token_id, user_id, name, secret_hash, admin, "
                    "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    e.token_id, e.user_id, e.name, e.secret_hash, e.admin, r.occurred_at, e.expires_at,
                )
            elif isinstance(e, ApiTokenRevoked):
                await conn.execute(
                    "UPDATE auth_tokens SET revoked_at = $2 WHERE token_id = $1", e.token_id, r.occurred_at
                )
