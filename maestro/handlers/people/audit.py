"""The audit trail: refusals are recorded as events; the audit query reads the whole log.

Every change in Maestro is already an event with its actor, so "who did what, when" needs no
second record. What the log would otherwise miss are the attempts that changed nothing: denied
logins, rejected tokens and sessions, forbidden actions. Those are appended to ``audit-<day>``
with ``ANY_VERSION`` (no decision depends on that stream's version). Their volume is bounded by
the per-address rate limit on failed attempts.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import orjson

from maestro.errors import ConcurrencyConflict, MaestroError
from maestro.events.model import Event, Metadata, RawEvent, now
from maestro.events.store import ANY_VERSION, EventStore

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


def audit_stream(at: dt.datetime) -> str:
    return f"audit-{at.astimezone(dt.timezone.utc).date().isoformat()}"


def normalize_actor(actor: str) -> str:
    """``u123`` and ``user:u123`` name the same actor; ``system:...`` and ``anonymous`` stay."""
    return actor if ":" in actor or actor == ANONYMOUS else f"user:{actor}"


class AuditLog:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def record(self, event: Event, actor: str = ANONYMOUS) -> None:
        """Append a refusal. Never raises: failing to audit must not turn a 401 into a 500."""
        for _ in range(5):  # ANY_VERSION appends to one stream can still collide on its version
            try:
                await self.store.append(audit_stream(now()), ANY_VERSION, [event], Metadata(actor=actor))
                return
            except ConcurrencyConflict:
                continue
            except (MaestroError, OSError) as exc:
                log.warning("could not record an audit event", extra={"type": event.type_name(), "error": str(exc)})
                return
        log.warning("could not record an audit event: the stream stayed busy", extra={"type": event.type_name()})

    async def query(
        self,
        *,
        actor: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        types: Sequence[str] = (),
        after: int = 0,
        limit: int = 100,
    ) -> list[RawEvent]:
        """Events in position order matching every filter given (``until`` is exclusive).

        Only events at or below the store's safe position are read: an append that took a lower
        position may still be in flight, and a client that pages on from the last position it
        saw would never see that event once it commits (docs/event-store.md).
        """
        # The bound first, in its own statement; the read is the next one (a newer snapshot).
        bound = await self.store.head_position()
        rows = await self.store.pool.fetch(
            "SELECT position, stream_id, version, type, schema_version, data::text, metadata::text, occurred_at "
            "FROM events WHERE position > $1 AND position <= $7 "
            "AND ($2::text IS NULL OR metadata->>'actor' = $2) "
            "AND ($3::timestamptz IS NULL OR occurred_at >= $3) "
            "AND ($4::timestamptz IS NULL OR occurred_at < $4) "
            "AND (cardinality($5::text[]) = 0 OR type = ANY($5)) "
            "ORDER BY position LIMIT $6",
            after, normalize_actor(actor) if actor else None, since, until, list(types), limit, bound,
        )
        return [
            RawEvent(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), orjson.loads(r[6]), r[7]) for r in rows
        ]
