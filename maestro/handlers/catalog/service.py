"""Catalog commands: create, change, delete and restore tables; frequencies; datasets.

Each command validates, decides and appends; the inline catalog projection updates the read
model in the same transaction. Dependencies are inferred from the SQL (maestro.catalog.sql) and
checked for cycles on a planned copy of the graph *before* anything is appended.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from maestro.catalog.sql import TableRef, analyze, self_reference_free
from maestro.errors import Conflict, InvalidDependency, NotFound
from maestro.events.catalog import (
    QUERY_FIELDS,
    DatasetRegistered,
    FrequencyChanged,
    FrequencyCreated,
    FrequencySpec,
    TableCreated,
    TableDeleted,
    TableQueryChanged,
    TableRestored,
    TableSettingsChanged,
    TableSpec,
)
from maestro.events.model import Event, Metadata
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.catalog import history
from maestro.handlers.catalog.dependencies import DependencyState, Entry
from maestro.handlers.catalog.history import TABLE_EVENTS, TableView, fold_table, table_stream
from maestro.handlers.catalog.import_check import ImportCheck, import_key, needs_check
from maestro.handlers.transfers.db_export_check import needs_db_export_check, refuse_db_export
from maestro.scheduling import Schedule
from maestro.validation import validated

__all__ = ["TABLE_EVENTS", "CatalogService", "TableView", "fold_table", "new_id", "table_stream", "validate_spec"]

SPEC_DEFAULTS = TableSpec.model_construct(dataset="d", name="n").to_payload()


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def validate_spec(payload: dict[str, Any]) -> TableSpec:
    return validated(TableSpec, payload)


class CatalogService:
    def __init__(self, store: EventStore, default_project: str | None) -> None:
        self.store = store
        self.pool = store.pool
        self.default_project = default_project
        self.deps = DependencyState(default_project)
        self._position = -1
        # One edit at a time per process: each plans against the state the previous one left.
        self._lock = asyncio.Lock()
        # An import table's settings checked against its source at save (open_runtime sets it:
        # it needs the live configuration). Run before the lock: it may wait for a source.
        self.import_check: ImportCheck | None = None

    # ------------------------------------------------------------------ loading
    def refs_of(self, spec: TableSpec | dict[str, Any]) -> frozenset[TableRef]:
        s = spec if isinstance(spec, TableSpec) else TableSpec.model_validate(spec)
        if s.kind != "summary":
            return frozenset()  # imports and external loads read nothing in BigQuery
        analysis = analyze(s.query, default_project=self.default_project, legacy_sql=s.legacy_sql)
        project = s.project or self.default_project
        return self_reference_free(analysis.references, project, s.dataset, s.name)

    def _entry(self, table_id: str, spec: TableSpec | dict[str, Any], *, check: bool = True) -> Entry:
        """The table as dependency resolution sees it. With ``check`` (a write), a
        ``not_dependencies`` entry the SQL does not read is refused (InvalidDependency); stored
        specs are read back without it, so a parser upgrade never makes the catalog unloadable."""
        s = spec if isinstance(spec, TableSpec) else TableSpec.model_validate(spec)
        refs = self.refs_of(s)
        ignored = frozenset(self._ref(name) for name in s.not_dependencies)
        if check:
            unread = [
                str(nd) for nd in sorted(ignored, key=str)
                if not any(ref == nd or ref.matches(nd.project, nd.dataset, nd.name) for ref in refs)
            ]
            if unread:
                raise InvalidDependency(
                    f"{s.qualified_name}: not_dependencies names what its SQL does not read: "
                    f"{', '.join(unread)}",
                    table=s.qualified_name, field="not_dependencies", names=unread,
                )
        depends_on = frozenset(self._ref(name) for name in s.depends_on)
        return Entry(table_id, s.project, s.dataset, s.name, refs, depends_on, ignored)

    def _ref(self, name: str) -> TableRef:
        """A ``depends_on``/``not_dependencies`` name resolved as the SQL's references are."""
        parts = name.split(".")
        project = parts[0] if len(parts) == 3 else self.default_project
        return TableRef(project.lower() if project else None, parts[-2], parts[-1])

    async def refresh(self) -> None:
        """Rebuild the in-memory dependency state if the catalog moved (another replica wrote).

        The fingerprint is the number of tables and the sum of their versions: every table event
        raises it, whatever its position, so a write by another replica that commits around ours
        is never mistaken for ours (comparing positions could be).
        """
        fingerprint = await self._fingerprint()
        if fingerprint == self._position:
            return
        rows = await self.pool.fetch(
            "SELECT table_id, spec::text FROM catalog_tables WHERE NOT deleted"
        )
        entries = [self._entry(r["table_id"], orjson.loads(r["spec"]), check=False) for r in rows]
        self.deps = DependencyState.build(entries, self.default_project)
        self._position = fingerprint

    async def _fingerprint(self) -> int:
        row = await self.pool.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(version), 0) AS v FROM catalog_tables"
        )
        return row["n"] * 2**40 + row["v"]

    # ------------------------------------------------------------------ tables: commands
    async def _check_import(self, spec: TableSpec, old: dict[str, Any] | None) -> list[str]:
        """Refuse an import table whose settings do not check (raises), else the save's warnings;
        and exports whose target cannot take them (a Sheets export without Google credentials,
        a database export's target: handlers/transfers/db_export_check)."""
        if self.import_check is None:
            return []
        if (problem := self.import_check.export_problem(spec, old)) is not None:
            raise problem
        if needs_db_export_check(spec, old):
            refuse_db_export(spec, self.import_check.config.database)
        if not needs_check(spec, old):
            return []
        return await self.import_check.check(spec)

    async def create_table(
        self, spec: TableSpec, actor: Metadata, *, warnings: list[str] | None = None
    ) -> TableView:
        """Create a table; what the import check could not verify is added to ``warnings``."""
        found = await self._check_import(spec, None)
        async with self._lock:
            await self.refresh()
            if (spec.dataset, spec.name) in self.deps.by_name:
                raise Conflict(f"table {spec.qualified_name} already exists")
            table_id = new_id()
            planned = self.deps.planned(table_id, self._entry(table_id, spec))
            await self._append(table_id, NO_STREAM, [TableCreated(table_id=table_id, spec=spec)], actor)
            self.deps = planned
        if warnings is not None:
            warnings.extend(found)
        return await self.get_table(table_id)

    async def update_table(
        self,
        table_id: str,
        changes: dict[str, Any],
        actor: Metadata,
        *,
        expected_version: int | None = None,
        replace: bool = False,
        warnings: list[str] | None = None,
    ) -> TableView:
        """Apply ``changes`` (a partial spec; with ``replace`` the whole new spec); what the import
        check could not verify is added to ``warnings``."""
        # The import check may wait seconds for a source: against the table as read now, before
        # the lock; again under it only if a concurrent edit changed what was checked.
        before = await self.get_table(table_id)
        checked: TableSpec | None = None
        found: list[str] = []
        if not before.deleted:
            checked = validate_spec(changes if replace else {**before.spec, **changes})
            found = await self._check_import(checked, before.spec)
        async with self._lock:
            await self.refresh()
            current = await self.get_table(table_id)
            if current.deleted:
                raise Conflict(f"table {table_id} is deleted; restore it first")
            if expected_version is not None and expected_version != current.version:
                raise Conflict(
                    f"table {table_id} is at version {current.version}, not {expected_version}: "
                    "someone changed it since you read it"
                )
            merged = changes if replace else {**current.spec, **changes}
            spec = validate_spec(merged)
            owner = self.deps.by_name.get((spec.dataset, spec.name))
            if owner is not None and owner != table_id:
                raise Conflict(f"table {spec.qualified_name} already exists")
            events = self._diff_events(table_id, current.spec, spec.to_payload())
            if not events:
                return current
            if checked is None or import_key(spec) != import_key(checked):
                found = await self._check_import(spec, current.spec)
            planned = self.deps.planned(table_id, self._entry(table_id, spec))
            await self._append(table_id, current.version, events, actor)
            self.deps = planned
        if warnings is not None:
            warnings.extend(found)
        return await self.get_table(table_id)

    async def delete_table(self, table_id: str, actor: Metadata, reason: str = "") -> TableView:
        async with self._lock:
            await self.refresh()
            current = await self.get_table(table_id)
            if current.deleted:
                return current
            planned = self.deps.planned(table_id, None)
            await self._append(table_id, current.version, [TableDeleted(table_id=table_id, reason=reason)], actor)
            self.deps = planned
        return await self.get_table(table_id)

    async def restore_table(self, table_id: str, actor: Metadata, version: int | None = None) -> TableView:
        """Bring a deleted table back, or bring back an old version as new events."""
        async with self._lock:
            await self.refresh()
            current = await self.get_table(table_id)
            events: list[Event] = []
            target = current.spec
            if version is not None:
                old = await self.get_table(table_id, version=version)
                # Validated, so fields added since that version come back at their defaults
                # (a version from before ``depends_on`` existed had none).
                target = validate_spec(old.spec).to_payload()
                events.extend(self._diff_events(table_id, current.spec, target))
            if current.deleted:
                events.insert(0, TableRestored(table_id=table_id))
            if not events:
                return current
            spec = validate_spec(target)
            if current.deleted and (spec.dataset, spec.name) in self.deps.by_name:
                raise Conflict(f"a live table {spec.qualified_name} exists; cannot restore this one")
            planned = self.deps.planned(table_id, self._entry(table_id, spec))
            meta = actor if version is None else Metadata(
                actor=actor.actor,
                correlation_id=actor.correlation_id,
                causation_id=actor.causation_id,
                extra={**actor.extra, "restored_from_version": version},
            )
            await self._append(table_id, current.version, events, meta)
            self.deps = planned
        return await self.get_table(table_id)

    def _diff_events(self, table_id: str, old: dict[str, Any], new: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if any(old.get(k) != new.get(k) for k in QUERY_FIELDS):
            events.append(TableQueryChanged(table_id=table_id, query=new["query"], legacy_sql=new["legacy_sql"]))
        # A field the stored spec lacks (added to TableSpec after it was written) has its default:
        # re-saving such a table records no change of it.
        settings = {
            k: v for k, v in new.items()
            if k not in QUERY_FIELDS and old.get(k, SPEC_DEFAULTS.get(k)) != v
        }
        if settings:
            events.append(TableSettingsChanged(table_id=table_id, changes=settings))
        return events

    async def _append(self, table_id: str, expected: int, events: Sequence[Event], meta: Metadata) -> None:
        await self.store.append(table_stream(table_id), expected, events, meta)
        # Our own write moves the fingerprint by exactly this much; anything else means another
        # writer too, and the next refresh rebuilds. (No await between the test and the sum.)
        if self._position >= 0:
            self._position += len(events) + (2**40 if expected == NO_STREAM else 0)

    # ------------------------------------------------------------------ tables: queries
    async def get_table(
        self, table_id: str, *, as_of: dt.datetime | None = None, version: int | None = None
    ) -> TableView:
        if as_of is None and version is None:
            row = await self.pool.fetchrow(
                "SELECT table_id, spec::text, version, deleted, created_at, created_by, updated_at, "
                "updated_by FROM catalog_tables WHERE table_id = $1",
                table_id,
            )
            if row is None:
                raise NotFound(f"no table {table_id!r}")
            return TableView(row[0], orjson.loads(row[1]), row[2], row[3], row[4], row[5], row[6], row[7])
        events = await self.store.read(table_stream(table_id), until=as_of)
        if version is not None:
            events = [e for e in events if e.version <= version]
            if not events or events[-1].version != version:
                raise NotFound(f"table {table_id!r} has no version {version}")
        if not events:
            raise NotFound(f"table {table_id!r} did not exist at {as_of.isoformat() if as_of else '?'}")
        return fold_table(events)

    async def history(self, table_id: str) -> list[dict[str, Any]]:
        return await history.versions(self.store, table_id)

    async def catalog_as_of(self, as_of: dt.datetime) -> list[TableView]:
        """Every table that was live at ``as_of``, as it was then."""
        return await history.catalog_as_of(self.store, as_of)

    def dependencies(self, table_id: str) -> dict[str, Any]:
        """Parents (the tables that order this one's runs), children, and external references."""
        entry = self.deps.entries.get(table_id)
        if entry is None:
            return {"parents": [], "children": [], "external": []}
        return {
            "parents": sorted(self.deps.graph.parents(table_id)),
            "children": sorted(self.deps.graph.children(table_id)),
            "external": list(self.deps.resolution(table_id).external),
        }

    def references(self, table_id: str) -> list[dict[str, Any]]:
        """Every catalog table this one names, with its kind: ``inferred`` (the SQL reads it),
        ``depends_on`` (declared; the SQL does not read it) — both order runs — or
        ``not_dependency`` (the SQL reads it, but it does not order runs)."""
        if table_id not in self.deps.entries:
            return []
        found = self.deps.resolution(table_id)
        kinds = {tid: found.kind(tid) for tid in found.parents}
        kinds.update({tid: "not_dependency" for tid in found.ignored})
        return [
            {"id": tid, "dataset": self.deps.entries[tid].dataset, "name": self.deps.entries[tid].name, "kind": kind}
            for tid, kind in sorted(kinds.items(), key=lambda item: (self.deps.label(item[0]), item[0]))
        ]

    # ------------------------------------------------------------------ frequencies and datasets
    async def create_frequency(self, spec: FrequencySpec, actor: Metadata) -> str:
        Schedule.from_spec(spec)  # a bad cron expression is refused here, not at the first tick
        frequency_id = new_id()
        await self.store.append(
            f"frequency-{frequency_id}", NO_STREAM, [FrequencyCreated(frequency_id=frequency_id, spec=spec)], actor
        )
        return frequency_id

    async def update_frequency(self, frequency_id: str, changes: dict[str, Any], actor: Metadata) -> None:
        row = await self.pool.fetchrow(
            "SELECT spec::text, version FROM catalog_frequencies WHERE frequency_id = $1", frequency_id
        )
        if row is None:
            raise NotFound(f"no frequency {frequency_id!r}")
        current = orjson.loads(row["spec"])
        spec = validated(FrequencySpec, {**current, **changes})
        Schedule.from_spec(spec)
        diff = {k: v for k, v in spec.model_dump().items() if current.get(k) != v}
        if diff:
            await self.store.append(
                f"frequency-{frequency_id}", row["version"], [FrequencyChanged(frequency_id=frequency_id, changes=diff)], actor
            )

    async def register_dataset(self, event: DatasetRegistered, actor: Metadata) -> None:
        await self.store.append(f"dataset-{event.dataset}", -2, [event], actor)
