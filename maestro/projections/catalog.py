"""The catalog read model (inline): what every table, frequency and dataset looks like now."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from maestro.events.catalog import (
    DatasetOwnerChanged,
    DatasetRegistered,
    FrequencyChanged,
    FrequencyCreated,
    TableCreated,
    TableDeleted,
    TableQueryChanged,
    TableRestored,
    TableSettingsChanged,
)
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection

DUPLICATE_TABLE = "catalog_tables_live_name"
DUPLICATE_FREQUENCY = "catalog_frequencies_name"


def apply_table_event(spec: dict, event: object) -> dict:
    """Fold one table event into a spec payload (also used to read a table as of a past time)."""
    if isinstance(event, TableCreated):
        return event.spec.to_payload()
    if isinstance(event, TableQueryChanged):
        return {**spec, "query": event.query, "legacy_sql": event.legacy_sql}
    if isinstance(event, TableSettingsChanged):
        return {**spec, **event.changes}
    return spec


class CatalogProjection(Projection):
    name = "catalog"
    mode = "inline"
    event_types = frozenset(
        {
            "TableCreated",
            "TableQueryChanged",
            "TableSettingsChanged",
            "TableDeleted",
            "TableRestored",
            "FrequencyCreated",
            "FrequencyChanged",
            "DatasetRegistered",
            "DatasetOwnerChanged",
        }
    )
    tables = ("catalog_tables", "catalog_frequencies", "catalog_datasets")
    unique_messages = {
        DUPLICATE_TABLE: "a live table with this dataset and name already exists",
        DUPLICATE_FREQUENCY: "a frequency with this name already exists",
    }

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e = r.event
            actor = r.metadata.actor
            if isinstance(e, TableCreated):
                spec = e.spec.to_payload()
                await conn.execute(
                    # number: the table's integer id, the position of this event (sql/014).
                    "INSERT INTO catalog_tables (table_id, project, dataset, name, kind, spec, "
                    "version, created_at, created_by, updated_at, updated_by, last_position, number) "
                    "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $8, $9, $10, $10)",
                    e.table_id, spec["project"], spec["dataset"], spec["name"], spec["kind"],
                    orjson.dumps(spec).decode(), r.version, r.occurred_at, actor, r.position,
                )
            elif isinstance(e, (TableQueryChanged, TableSettingsChanged)):
                current = await conn.fetchval(
                    "SELECT spec::text FROM catalog_tables WHERE table_id = $1", e.table_id
                )
                spec = apply_table_event(orjson.loads(current), e)
                await conn.execute(
                    "UPDATE catalog_tables SET spec = $2::jsonb, project = $3, dataset = $4, "
                    "name = $5, kind = $6, version = $7, updated_at = $8, updated_by = $9, "
                    "last_position = $10 WHERE table_id = $1",
                    e.table_id, orjson.dumps(spec).decode(), spec["project"], spec["dataset"],
                    spec["name"], spec["kind"], r.version, r.occurred_at, actor, r.position,
                )
            elif isinstance(e, (TableDeleted, TableRestored)):
                await conn.execute(
                    "UPDATE catalog_tables SET deleted = $2, version = $3, updated_at = $4, "
                    "updated_by = $5, last_position = $6 WHERE table_id = $1",
                    e.table_id, isinstance(e, TableDeleted), r.version, r.occurred_at, actor,
                    r.position,
                )
            elif isinstance(e, FrequencyCreated):
                await conn.execute(
                    "INSERT INTO catalog_frequencies (frequency_id, name, spec, version, updated_at) "
                    "VALUES ($1, $2, $3::jsonb, $4, $5)",
                    e.frequency_id, e.spec.name, e.spec.model_dump_json(), r.version, r.occurred_at,
                )
            elif isinstance(e, FrequencyChanged):
                current = await conn.fetchval(
                    "SELECT spec::text FROM catalog_frequencies WHERE frequency_id = $1",
                    e.frequency_id,
                )
                spec = {**orjson.loads(current), **e.changes}
                await conn.execute(
                    "UPDATE catalog_frequencies SET spec = $2::jsonb, name = $3, version = $4, "
                    "updated_at = $5 WHERE frequency_id = $1",
                    e.frequency_id, orjson.dumps(spec).decode(), spec["name"], r.version,
                    r.occurred_at,
                )
            elif isinstance(e, DatasetRegistered):
                await conn.execute(
                    "INSERT INTO catalog_datasets (dataset, project, description, created_at) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (dataset) DO UPDATE SET "
                    "project = EXCLUDED.project, description = EXCLUDED.description",
                    e.dataset, e.project, e.description, r.occurred_at,
                )
            elif isinstance(e, DatasetOwnerChanged):
                # A dataset only tables use has no row yet: the assignment creates it.
                await conn.execute(
                    "INSERT INTO catalog_datasets (dataset, created_at, owner_group) VALUES ($1, $2, $3) "
                    "ON CONFLICT (dataset) DO UPDATE SET owner_group = EXCLUDED.owner_group",
                    e.dataset, r.occurred_at, e.group_id,
                )
