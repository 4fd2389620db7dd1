"""What a projection is.

A projection is a deterministic function of the log: it declares the event types it handles and
the tables it owns, and folds batches of recorded events into those tables. The runner keeps its
checkpoint in the same transaction as its tables, so a crash never leaves the two out of step,
and a rebuild from position 0 gives identical state.

``mode`` says when it runs: ``inline`` projections are updated inside the append's transaction
(a request reads its own writes); ``async`` ones follow the log from a subscription.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from maestro.events.model import RecordedEvent
from maestro.events.store import Connection


class Projection:
    name: ClassVar[str]
    mode: ClassVar[Literal["inline", "async"]] = "async"
    # Event type names handled; None means every type.
    event_types: ClassVar[frozenset[str] | None] = None
    # Tables the projection owns, emptied before a rebuild.
    tables: ClassVar[tuple[str, ...]] = ()
    # Unique indexes of those tables, with the message a violation means (inline projections only).
    unique_messages: ClassVar[dict[str, str]] = {}

    def handles(self, type_name: str) -> bool:
        return self.event_types is None or type_name in self.event_types

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        """Fold ``events`` (in position order, all handled types) into the tables."""
        raise NotImplementedError

    async def reset(self, conn: Connection) -> None:
        """Empty the tables before a rebuild. Projections holding in-memory state extend this."""
        if self.tables:
            await conn.execute(f"TRUNCATE {', '.join(self.tables)}")
