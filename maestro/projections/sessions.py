"""Login sessions (inline): a browser's cookie is checked against this table on every request."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.auth import SessionEnded, SessionStarted
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection


class SessionsProjection(Projection):
    name = "sessions"
    mode = "inline"
    event_types = frozenset({"SessionStarted", "SessionEnded"})
    tables = ("auth_sessions",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            if isinstance(e, SessionStarted):
                await conn.execute(
                    "INSERT INTO auth_sessions (session_id, user_id, secret_hash, created_at, expires_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    e.session_id, e.user_id, e.secret_hash, r.occurred_at, e.expires_at,
                )
            elif isinstance(e, SessionEnded):
                await conn.execute(
                    "UPDATE auth_sessions SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL",
                    e.session_id, r.occurred_at,
                )
