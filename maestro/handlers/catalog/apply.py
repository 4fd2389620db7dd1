"""GitOps for the catalog: sync a folder of SQL files into it (``apply``); the folder format and
``export`` are in :mod:`maestro.handlers.catalog.folder`.

Both sides of a comparison are validated through :class:`TableSpec`, so defaults and normalised
values (URLs) compare equal.

**All or nothing, up front.** Every file is read and checked (YAML, spec, SQL syntax with file
line and column) before anything is planned, and the whole change set is planned on one
:class:`DependencyState` (so a cycle among new tables is refused with its path) before the
first append. The appends themselves are one per table stream — the log has no multi-stream
transaction — so only a concurrent writer can make an apply stop half-way; re-running it then
finishes the job, since applying is idempotent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from maestro.errors import Conflict, MaestroError, ValidationFailed
from maestro.events.catalog import TableCreated, TableDeleted, TableSpec
from maestro.events.model import Event, Metadata
from maestro.events.store import NO_STREAM
from maestro.handlers.catalog.service import CatalogService, new_id, validate_spec
from maestro.handlers.catalog.dependencies import DependencyState
from maestro.handlers.catalog.folder import canonical_query, row_spec
from maestro.handlers.catalog.import_check import ImportsRefused, needs_check

# Appends in flight at once. Measured on the 2-core machine, PostgreSQL on the same cores (2,000
# creates, bench/bench_catalog.py): 1 writer 2.7 s, 4 writers 1.2 s, 8 writers 1.25 s.
CONCURRENCY = 4


# ---------------------------------------------------------------------------------- planning
@dataclass(frozen=True, slots=True)
class Change:
    action: Literal["create", "update", "delete"]
    dataset: str
    name: str
    spec: TableSpec | None = None  # the wanted spec (create, update)
    table_id: str | None = None  # the catalog's table (update, delete)
    version: int | None = None  # the version planned against (update, delete)
    current: dict[str, Any] | None = None  # the catalog's spec as stored (update, delete)
    fields: tuple[str, ...] = ()  # the JSON names of the fields that change (update)

    @property
    def label(self) -> str:
        return f"{self.dataset}.{self.name}"

    def describe(self) -> str:
        if self.action == "create":
            return f"+ create {self.label}"
        if self.action == "update":
            return f"~ update {self.label} ({', '.join(self.fields)})"
        return f"- delete {self.label}"


@dataclass(frozen=True, slots=True)
class Plan:
    creates: tuple[Change, ...] = ()
    updates: tuple[Change, ...] = ()
    deletes: tuple[Change, ...] = ()
    unchanged: int = 0
    kept: tuple[str, ...] = ()  # live tables missing from the folder, kept (no prune)

    @property
    def changes(self) -> tuple[Change, ...]:
        return self.creates + self.updates + self.deletes

    @property
    def has_changes(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def summary(self) -> str:
        return (
            f"{len(self.creates)} to create, {len(self.updates)} to update, "
            f"{len(self.deletes)} to delete, {self.unchanged} unchanged"
        )


def canonical_payload(spec: TableSpec | Mapping[str, Any]) -> dict[str, Any]:
    """A spec's JSON payload as it is compared: validated (defaults filled), canonical query."""
    if not isinstance(spec, TableSpec):
        try:
            spec = TableSpec.model_validate(dict(spec))
        except ValueError:  # stored by an older shape: compare what is there
            return {**spec, "query": canonical_query(str(spec.get("query", "")))}
    payload = spec.to_payload()
    payload["query"] = canonical_query(payload["query"])
    return payload


def plan(specs: Iterable[TableSpec], catalog_rows: Iterable[Mapping[str, Any]], prune: bool) -> Plan:
    """What it takes to make the catalog (``catalog_rows``: ``table_id``, ``spec`` as a dict or
    JSON text, ``version``, ``deleted``) say what ``specs`` say. Pure; deleted rows are ignored.

    A name that only a deleted table had is a create (a new table), not a restore.
    """
    live: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in catalog_rows:
        if not row["deleted"]:
            spec = row_spec(row)
            live[(spec["dataset"], spec["name"])] = {**row, "spec": spec}
    creates, updates, unchanged = [], [], 0
    wanted = set()
    for spec in sorted(specs, key=lambda s: (s.dataset, s.name)):
        key = (spec.dataset, spec.name)
        if key in wanted:
            raise ValidationFailed(f"table {spec.qualified_name} is described twice")
        wanted.add(key)
        row = live.get(key)
        if row is None:
            creates.append(Change("create", spec.dataset, spec.name, spec=spec))
            continue
        new, old = canonical_payload(spec), canonical_payload(row["spec"])
        fields = tuple(k for k in new if new[k] != old.get(k))
        if not fields:
            unchanged += 1
            continue
        updates.append(Change(
            "update", spec.dataset, spec.name, spec=spec, table_id=row["table_id"],
            version=row["version"], current=row["spec"], fields=fields,
        ))
    missing = [
        Change("delete", dataset, name, table_id=row["table_id"], version=row["version"], current=row["spec"])
        for (dataset, name), row in sorted(live.items())
        if (dataset, name) not in wanted
    ]
    if prune:
        return Plan(tuple(creates), tuple(updates), tuple(missing), unchanged)
    return Plan(tuple(creates), tuple(updates), (), unchanged, tuple(c.label for c in missing))


async def load_rows(service: CatalogService) -> list[dict[str, Any]]:
    """Every table of the catalog read model (live and deleted; ``spec`` a dict), for
    :func:`plan` and :func:`export`."""
    rows = await service.pool.fetch(
        "SELECT table_id, spec::text AS spec, version, deleted FROM catalog_tables ORDER BY dataset, name"
    )
    return [{**row, "spec": orjson.loads(row["spec"])} for row in rows]


# ---------------------------------------------------------------------------------- executing
@dataclass
class Report:
    plan: Plan
    dry_run: bool
    created: dict[str, str] = field(default_factory=dict)  # label -> new table id
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # import sources that could not be checked

    def summary(self) -> str:
        if self.dry_run:
            return f"plan: {self.plan.summary()}"
        return (
            f"applied: {len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.deleted)} deleted, {self.plan.unchanged} unchanged "
            f"({self.events} events in {self.seconds:.2f} s)"
        )


class ApplyInterrupted(MaestroError):
    """The apply stopped part-way: a concurrent writer changed the catalog. Run it again."""

    code = "apply_interrupted"
    status = 409


async def execute(
    plan: Plan,
    service: CatalogService,
    actor: Metadata,
    *,
    dry_run: bool = False,
    concurrency: int = CONCURRENCY,
) -> Report:
    """Carry out ``plan`` through ``service``'s store, as attributed catalog events.

    Holding the service's lock (no other edit of this process interleaves), it checks that the
    catalog is still what the plan was made from, plans the whole change set on one dependency
    state (CycleDetected names the path by table labels), and only then appends — one stream per
    table, ``concurrency`` at a time, each with its expected version — and swaps the state in.
    With ``dry_run`` it stops before the first append: the checks still run. Import tables the
    plan creates or whose import settings it changes are checked against their sources first
    (maestro.handlers.catalog.import_check; one refused refuses the whole apply).
    """
    started = time.perf_counter()
    report = Report(plan, dry_run)
    if service.import_check is not None:
        imports = [c.spec for c in plan.creates + plan.updates if c.spec is not None and needs_check(c.spec, c.current)]
        refusals, report.warnings = await service.import_check.check_all(imports)
        refusals += [(c.label, p) for c in plan.creates + plan.updates
                     if c.spec is not None and (p := service.import_check.export_problem(c.spec, c.current))]
        if refusals:
            raise ImportsRefused(refusals)
    async with service._lock:
        await service.refresh()
        await _check_still_current(plan, service)
        ids = {change.label: new_id() for change in plan.creates}
        state = _planned_state(plan, service, ids) if plan.has_changes else service.deps
        if dry_run or not plan.has_changes:
            report.seconds = time.perf_counter() - started
            return report
        work: list[tuple[Change, str, int, list[Event]]] = []
        for change in plan.creates:
            table_id = ids[change.label]
            work.append((change, table_id, NO_STREAM, [TableCreated(table_id=table_id, spec=change.spec)]))
        for change in plan.updates:
            assert change.spec is not None and change.current is not None
            wanted = canonical_payload(change.spec)
            merged = validate_spec({**change.current, **{k: wanted[k] for k in change.fields}})
            events = service._diff_events(change.table_id, change.current, merged.to_payload())
            if events:  # only canonical differences (trailing blanks): nothing to record
                work.append((change, change.table_id, change.version, events))
        for change in plan.deletes:
            event = TableDeleted(table_id=change.table_id, reason="not in the folder (apply --prune)")
            work.append((change, change.table_id, change.version, [event]))
        failures: list[BaseException] = []
        semaphore = asyncio.Semaphore(concurrency)

        async def one(change: Change, table_id: str, expected: int, events: list[Event]) -> None:
            async with semaphore:
                if failures:
                    return
                try:
                    await service._append(table_id, expected, events, actor)
                except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                    failures.append(exc)
                    return
            report.events += len(events)
            if change.action == "create":
                report.created[change.label] = table_id
            elif change.action == "update":
                report.updated.append(change.label)
            else:
                report.deleted.append(change.label)

        await asyncio.gather(*(one(*item) for item in work))
        report.seconds = time.perf_counter() - started
        if failures:
            service._position = -1  # the in-memory state is unknown: rebuild it on next use
            done = len(report.created) + len(report.updated) + len(report.deleted)
            first = failures[0]
            raise ApplyInterrupted(
                f"stopped after {done} of {len(work)} changes: "
                f"{first.message if isinstance(first, MaestroError) else first!r}. "
                "Run apply again: it picks up where this one stopped."
            ) from first
        service.deps = state
    report.updated.sort()
    report.deleted.sort()
    return report


async def _check_still_current(plan: Plan, service: CatalogService) -> None:
    """Refuse (nothing appended) if the tables the plan touches moved since it was made."""
    stale = [c.label for c in plan.creates if (c.dataset, c.name) in service.deps.by_name]
    touched = {c.table_id: c for c in plan.updates + plan.deletes}
    if touched:
        rows = await service.pool.fetch(
            "SELECT table_id, version, deleted FROM catalog_tables WHERE table_id = ANY($1)",
            list(touched),
        )
        now = {r["table_id"]: (r["version"], r["deleted"]) for r in rows}
        stale += [c.label for tid, c in touched.items() if now.get(tid) != (c.version, False)]
    if stale:
        raise Conflict(
            f"the catalog changed since the plan was made ({', '.join(sorted(stale)[:5])}"
            f"{' …' if len(stale) > 5 else ''}); plan again",
            tables=sorted(stale),
        )


def _planned_state(plan: Plan, service: CatalogService, ids: Mapping[str, str]) -> DependencyState:
    """The dependency state after the whole plan, built at once. Raises CycleDetected naming
    every cycle of the folder by table labels, and InvalidDependency for a ``depends_on`` on a
    table neither the catalog nor the folder has.

    One build is linear in the catalog; planning change by change (``DependencyState.planned``)
    copies the state each time, which is quadratic for a bulk create.
    """
    entries = dict(service.deps.entries)
    for change in plan.deletes:
        entries.pop(change.table_id, None)
    changed = [change.table_id for change in plan.updates] + [ids[change.label] for change in plan.creates]
    for change in plan.updates:
        entries[change.table_id] = service._entry(change.table_id, change.spec)
    for change in plan.creates:
        entries[ids[change.label]] = service._entry(ids[change.label], change.spec)
    state = DependencyState.build(entries.values(), service.default_project)
    for table_id in sorted(changed, key=state.label):
        state.check_declared(table_id)
    return state
