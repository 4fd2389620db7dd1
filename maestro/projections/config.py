"""Configuration (inline): the current state of every config stream, secrets as ciphertext only.

Inline because an administrator's change must be readable by the very next request; the events
carry each stream's whole state, so applying one is an upsert.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from maestro.events.config import CONFIG_EVENT_TYPES, ConfigRemoved, ConfigState
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection

_UPSERT = (
    "INSERT INTO config_entries (stream_id, section, name, settings, secrets, version, deleted, "
    "updated_at, updated_by) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9) "
    "ON CONFLICT (stream_id) DO UPDATE SET settings = EXCLUDED.settings, secrets = EXCLUDED.secrets, "
    "version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at, "
    "updated_by = EXCLUDED.updated_by"
)


class ConfigProjection(Projection):
    name = "config"
    mode = "inline"
    event_types = CONFIG_EVENT_TYPES
    tables = ("config_entries",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            if isinstance(e, ConfigState):
                settings, secrets, deleted = e.settings, e.secrets, False
            elif isinstance(e, ConfigRemoved):
                settings, secrets, deleted = {}, {}, True
            else:
                continue
            await conn.execute(
                _UPSERT, r.stream_id, e.section, e.name, orjson.dumps(settings).decode(),
                orjson.dumps(secrets).decode(), r.version, deleted, r.occurred_at, r.metadata.actor,
            )
