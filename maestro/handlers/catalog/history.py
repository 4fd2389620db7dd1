"""A table's past: its versions folded from the log, its history, the catalog as of an instant."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from maestro.errors import NotFound
from maestro.events.catalog import (
    QUERY_FIELDS,
    TableCreated,
    TableDeleted,
    TableQueryChanged,
    TableRestored,
    TableSettingsChanged,
)
from maestro.events.model import RecordedEvent
from maestro.events.store import EventStore
from maestro.projections.catalog import apply_table_event

TABLE_EVENTS = ("TableCreated", "TableQueryChanged", "TableSettingsChanged", "TableDeleted", "TableRestored")


def table_stream(table_id: str) -> str:
    return f"table-{table_id}"


@dataclass(frozen=True, slots=True)
class TableView:
    """A table as the API shows it."""

    table_id: str
    spec: dict[str, Any]
    version: int
    deleted: bool
    created_at: dt.datetime | None
    created_by: str | None
    updated_at: dt.datetime | None
    updated_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.table_id,
            **self.spec,
            "version": self.version,
            "deleted": self.deleted,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "updated_by": self.updated_by,
        }


async def versions(store: EventStore, table_id: str) -> list[dict[str, Any]]:
    """Every version of a table: who, when, what changed (a diff for queries)."""
    events = await store.read(table_stream(table_id))
    if not events:
        raise NotFound(f"no table {table_id!r}")
    versions = []
    spec: dict[str, Any] = {}
    for r in events:
        before = spec
        spec = apply_table_event(spec, r.event)
        entry: dict[str, Any] = {
            "version": r.version,
            "type": r.type,
            "actor": r.metadata.actor,
            "at": r.occurred_at.isoformat(),
            "position": r.position,
        }
        if "restored_from_version" in r.metadata.extra:
            entry["restored_from_version"] = r.metadata.extra["restored_from_version"]
        if isinstance(r.event, TableCreated):
            entry["changes"] = {"created": True}
            entry["diff"] = _unified(f"{r.version}", "", spec["query"])
        elif isinstance(r.event, TableQueryChanged):
            entry["changes"] = {k: spec[k] for k in QUERY_FIELDS if before.get(k) != spec[k]}
            entry["diff"] = _unified(f"{r.version}", before.get("query", ""), spec["query"])
        elif isinstance(r.event, TableSettingsChanged):
            entry["changes"] = {
                k: {"from": before.get(k), "to": v} for k, v in r.event.changes.items()
            }
        elif isinstance(r.event, TableDeleted):
            entry["changes"] = {"deleted": True, "reason": r.event.reason}
        elif isinstance(r.event, TableRestored):
            entry["changes"] = {"deleted": False}
        versions.append(entry)
    await _attach_commits(store, table_id, versions)
    return versions


async def _attach_commits(store: EventStore, table_id: str, versions: list[dict[str, Any]]) -> None:
    """Each version's commit in the catalog's repository (docs/git.md): the first commit holding
    that version or a later one (one commit may hold several versions: an edit of the query and
    the settings at once); None before it is committed, or without a repository."""
    rows = await store.pool.fetch(
        "SELECT version, sha FROM git_table_versions WHERE table_id = $1 ORDER BY version, position DESC",
        table_id,
    )
    for entry in versions:
        entry["commit"] = next((r["sha"] for r in rows if r["version"] >= entry["version"]), None)

async def catalog_as_of(store: EventStore, as_of: dt.datetime) -> list[TableView]:
    """Every table that was live at ``as_of``, as it was then."""
    by_stream: dict[str, list[RecordedEvent]] = {}
    position = 0
    while True:
        batch = await store.read_all(position, 5000, TABLE_EVENTS)
        if not batch:
            break
        position = batch[-1].position
        for r in batch:
            if r.occurred_at <= as_of:
                by_stream.setdefault(r.stream_id, []).append(r)
    views = [fold_table(sorted(evs, key=lambda e: e.version)) for evs in by_stream.values()]
    return sorted((v for v in views if not v.deleted), key=lambda v: (v.spec["dataset"], v.spec["name"]))

def fold_table(events: Sequence[RecordedEvent]) -> TableView:
    spec: dict[str, Any] = {}
    deleted = False
    for r in events:
        spec = apply_table_event(spec, r.event)
        if isinstance(r.event, TableDeleted):
            deleted = True
        elif isinstance(r.event, TableRestored):
            deleted = False
    first, last = events[0], events[-1]
    table_id = last.stream_id.removeprefix("table-")
    return TableView(
        table_id, spec, last.version, deleted, first.occurred_at, first.metadata.actor,
        last.occurred_at, last.metadata.actor,
    )


def _unified(label: str, old: str, new: str) -> str:
    # One line per line: with keepends, a last line without "\n" was glued to the next diff line.
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "before", f"version {label}", lineterm="")
    return "".join(f"{line}\n" for line in lines)
