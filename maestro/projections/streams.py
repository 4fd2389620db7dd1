"""Streams at a glance: one row per stream with its version and latest event (async)."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.model import RecordedEvent, category_of
from maestro.events.store import Connection
from maestro.projections.base import Projection


class StreamsProjection(Projection):
    name = "streams"
    mode = "async"
    event_types = None
    tables = ("proj_streams",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        # Fold the batch per stream first: one upsert row per stream, not per event.
        rows: dict[str, list] = {}
        for e in events:
            row = rows.get(e.stream_id)
            if row is None:
                rows[e.stream_id] = [
                    e.stream_id, category_of(e.stream_id), e.version, e.position, e.position,
                    e.type, e.occurred_at, e.occurred_at,
                ]
            else:
                row[2], row[4], row[5], row[7] = e.version, e.position, e.type, e.occurred_at
        if not rows:
            return
        columns = list(zip(*rows.values()))
        await conn.execute(
            """
            INSERT INTO proj_streams AS s (stream_id, category, version, first_position,
                                           last_position, last_type, created_at, updated_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[],
                                 $6::text[], $7::timestamptz[], $8::timestamptz[])
            ON CONFLICT (stream_id) DO UPDATE SET
                version = EXCLUDED.version,
                last_position = EXCLUDED.last_position,
                last_type = EXCLUDED.last_type,
                updated_at = EXCLUDED.updated_at
            """,
            *[list(c) for c in columns],
        )
