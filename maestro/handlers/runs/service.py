"""Run commands: plan a run (a frequency's slot, a frequency now, one table), retry, cancel.

Planning takes a snapshot: the tables of the frequency whose conditions hold at the slot (in each
table's time zone), their dependencies among themselves, each one's priority (its number of
descendants in the catalog, the original's rule) and the exact job configuration. Later edits of
a table do not change a planned run.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import orjson

from maestro.errors import ConcurrencyConflict, Conflict, NotFound
from maestro.events.catalog import FrequencySpec, TableSpec
from maestro.events.model import Metadata
from maestro.events.runs import ImportSpec, JobConfig, PlannedTable, RunCancelRequested, RunPlanned, RunRetryRequested, RunSkipped
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.catalog.service import CatalogService
from maestro.scheduling import conditions_hold, run_id_for

_LABEL = re.compile(r"[^a-z0-9_-]")


def run_stream(run_id: str) -> str:
    return f"run-{run_id}"


async def running_run(pool: Any, frequency_id: str) -> str | None:
    """The frequency's oldest run still going (scheduled or manual), if any."""
    return await pool.fetchval(
        "SELECT run_id FROM runs WHERE frequency_id = $1 AND status = 'running' ORDER BY planned_at, run_id LIMIT 1",
        frequency_id,
    )


def label_value(value: str) -> str:
    """BigQuery label values: lowercase letters, digits, '_' and '-', at most 63 characters."""
    return _LABEL.sub("_", value.lower())[:63]


def job_config(
    table_id: str, spec: TableSpec, project: str, run_id: str | None, *, at: dt.datetime | None = None,
) -> JobConfig:
    """The job a table's run starts with: its query, its import (read, then a load), or the wait
    for its external upload. ``at``: the run's slot, which a reimport condition is checked at."""
    labels = {
        **spec.labels,
        "maestro_table": label_value(table_id),
        "maestro_run": label_value(run_id or "adhoc"),
        "maestro_owner": label_value(spec.owner_id or "none"),
        "maestro_group": label_value(spec.group_id or "none"),
    }
    destination = f"{spec.project or project}.{spec.dataset}.{spec.name}"
    if spec.kind == "import":
        settings = spec.import_settings
        assert settings is not None
        query, table = settings.query_text(spec.name)
        reimport = bool(settings.reimport_conditions and at is not None
                        and conditions_hold(settings.reimport_conditions, at, spec.timezone))
        return JobConfig(
            kind="import", project=project, destination=destination,
            write_disposition="WRITE_APPEND" if settings.incremental else "WRITE_TRUNCATE",
            partitioning=spec.partitioning.model_dump() if spec.partitioning else None,
            clustering=list(spec.clustering), labels=labels, max_attempts=spec.max_attempts,
            import_spec=ImportSpec(
                source_database=settings.source_database, query=query, table=table,
                id_column=settings.id_column, on_schema_change=settings.on_schema_change,
                settle_seconds=settings.settle_seconds, reimport=reimport,
                reimport_reason="a reimport condition holds at the run's slot" if reimport else "",
            ),
        )
    if spec.kind == "external":
        assert spec.external is not None
        return JobConfig(
            kind="external", project=project, destination=destination, labels=labels,
            wait_timeout=spec.external.wait_timeout, max_attempts=1,
        )
    return JobConfig(
        kind="query",
        project=project,
        query=spec.query,
        legacy_sql=spec.legacy_sql,
        destination=destination,
        write_disposition="WRITE_APPEND" if spec.write_disposition == "append" else "WRITE_TRUNCATE",
        partitioning=spec.partitioning.model_dump() if spec.partitioning else None,
        clustering=list(spec.clustering),
        maximum_bytes_billed=spec.maximum_bytes_billed,
        labels=labels,
        max_attempts=spec.max_attempts,
    )


class RunService:
    def __init__(self, store: EventStore, catalog: CatalogService, project: str) -> None:
        self.store = store
        self.pool = store.pool
        self.catalog = catalog
        self.project = project

    async def frequency(self, frequency_id: str) -> dict[str, Any]:
        row = await self.pool.fetchrow(
            "SELECT spec::text FROM catalog_frequencies WHERE frequency_id = $1", frequency_id
        )
        if row is None:
            raise NotFound(f"no frequency {frequency_id!r}")
        return orjson.loads(row["spec"])

    async def _live_specs(self, where: str, *args: Any) -> dict[str, TableSpec]:
        rows = await self.pool.fetch(
            f"SELECT table_id, spec::text FROM catalog_tables WHERE NOT deleted AND {where}", *args
        )
        return {r[0]: TableSpec.model_validate(orjson.loads(r[1])) for r in rows}

    async def plan_frequency(
        self,
        frequency_id: str,
        *,
        slot: dt.datetime | None,
        trigger: str,
        actor: Metadata,
        workers: int | None = None,
        expected: int = NO_STREAM,
    ) -> tuple[str, bool]:
        """Plan the frequency's run for ``slot`` (None: now, as a manual run).

        Returns (run id, created). A scheduled slot that was already planned — by this process
        or another replica — returns created=False: the slot's stream exists (or, for a queued
        slot released at ``expected=1``, has moved on). The overlap policy is the scheduler's
        (maestro/handlers/runs/overlap.py); planning here never holds a run.
        """
        freq = await self.frequency(frequency_id)
        if not freq["active"]:
            raise Conflict(f"frequency {freq['name']!r} is not active")
        at = slot or dt.datetime.now(dt.timezone.utc)
        run_id = run_id_for(frequency_id, slot) if slot is not None else f"{frequency_id}-manual-{uuid.uuid4().hex[:8]}"
        chosen, skipped = await self._select(frequency_id, at)
        created = await self._plan(run_id, chosen, skipped, actor, frequency_id=frequency_id, slot=slot,
                                   trigger=trigger, workers=workers, expected=expected)
        return run_id, created

    async def _select(self, frequency_id: str, at: dt.datetime) -> tuple[dict[str, TableSpec], dict[str, str]]:
        """The frequency's live tables whose run conditions hold at ``at``, and why others don't."""
        specs = await self._live_specs("spec->>'frequency_id' = $1", frequency_id)
        chosen = {tid: s for tid, s in specs.items() if conditions_hold(s.conditions, at, s.timezone)}
        skipped = {tid: "run conditions do not hold" for tid in specs.keys() - chosen.keys()}
        return chosen, skipped

    async def preview(self, frequency_id: str) -> dict[str, Any]:
        """What the frequency's next scheduled run would contain, in the order it would start."""
        from maestro.scheduling import Schedule, next_slot_after

        spec = FrequencySpec.model_validate(await self.frequency(frequency_id))
        slot = next_slot_after(Schedule.from_spec(spec), dt.datetime.now(dt.timezone.utc))
        chosen, skipped = await self._select(frequency_id, slot)
        await self.catalog.refresh()
        graph = self.catalog.deps.graph
        order = [
            tid
            for generation in graph.subgraph(chosen.keys() & set(graph.nodes())).topological_generations()
            for tid in generation
        ]
        priorities = graph.priorities()
        return {
            "frequency_id": frequency_id,
            "active": spec.active,
            "slot": slot.isoformat(),
            # What the slot does if this run is still going then (skip, queue or allow).
            "overlap": spec.overlap,
            "blocking_run_id": await running_run(self.pool, frequency_id),
            "skipped": skipped,
            "tables": [
                {
                    "table_id": tid, "name": chosen[tid].qualified_name, "priority": priorities.get(tid, 0),
                    "kind": chosen[tid].kind, "query": chosen[tid].query, "legacy_sql": chosen[tid].legacy_sql,
                }
                for tid in order
            ],
        }

    async def plan_table(self, table_id: str, *, descendants: bool, actor: Metadata) -> str:
        await self.catalog.refresh()
        if table_id not in self.catalog.deps.entries:
            await self.catalog.get_table(table_id)  # 404 for an unknown id
            raise Conflict(f"table {table_id} is deleted")
        ids = {table_id}
        if descendants:
            ids |= self.catalog.deps.graph.descendants(table_id)
        specs = await self._live_specs("table_id = ANY($1)", sorted(ids))
        run_id = f"table-{table_id}-{uuid.uuid4().hex[:8]}"
        await self._plan(run_id, specs, {}, actor, trigger="table")
        return run_id

    async def _plan(
        self,
        run_id: str,
        specs: dict[str, TableSpec],
        skipped: dict[str, str],
        actor: Metadata,
        *,
        trigger: str,
        frequency_id: str | None = None,
        slot: dt.datetime | None = None,
        workers: int | None = None,
        expected: int = NO_STREAM,
    ) -> bool:
        await self.catalog.refresh()
        graph = self.catalog.deps.graph
        priorities = graph.priorities()
        runnable = dict(specs)
        at = slot or dt.datetime.now(dt.timezone.utc)
        tables = []
        for tid, spec in sorted(runnable.items()):
            ancestors = graph.ancestors(tid) if tid in graph else set()
            tables.append(
                PlannedTable(
                    table_id=tid,
                    name=spec.qualified_name,
                    priority=priorities.get(tid, 0),
                    # Ordering within the run: every ancestor that is in the run, also through
                    # tables of other frequencies that are not.
                    parents=sorted(ancestors & runnable.keys()),
                    config=job_config(tid, spec, self.project, run_id, at=at),
                    extract=spec.extract.model_dump(mode="json") if spec.extract else None,
                    owner_id=spec.owner_id,
                    group_id=spec.group_id,
                )
            )
        event = RunPlanned(
            run_id=run_id, frequency_id=frequency_id, slot=slot, trigger=trigger,  # type: ignore[arg-type]
            tables=tables, skipped=skipped, workers=workers,
        )
        try:
            await self.store.append(run_stream(run_id), expected, [event], actor)
        except ConcurrencyConflict:
            return False
        return True

    async def cancel(self, run_id: str, actor: Metadata, reason: str = "") -> None:
        row = await self._run(run_id)
        if row["status"] == "queued":
            # Nothing started yet: the slot ends here, in one event after its RunQueued (version 1).
            # A release that won the race makes this a conflict; the run is then cancelled as a
            # running one.
            skipped = RunSkipped(
                run_id=run_id, frequency_id=row["frequency_id"], slot=row["slot"], reason="cancelled",
                detail=reason or "cancelled while queued",
            )
            try:
                await self.store.append(run_stream(run_id), 1, [skipped], actor)
                return
            except ConcurrencyConflict:
                row = await self._run(run_id)
        if row["status"] != "running":
            raise Conflict(f"run {run_id} is {row['status']}; only a running or queued run can be cancelled")
        version = await self.store.stream_version(run_stream(run_id))
        await self.store.append(run_stream(run_id), version or 0, [RunCancelRequested(run_id=run_id, reason=reason)], actor)

    async def retry(self, run_id: str, actor: Metadata) -> list[str]:
        """Re-run the tables that failed, were skipped or never ran; never redo a success."""
        row = await self._run(run_id)
        if row["status"] in ("running", "queued"):
            raise Conflict(f"run {run_id} is still {row['status']}")
        if row["status"] == "succeeded":
            raise Conflict(f"run {run_id} succeeded; nothing to retry")
        tables = [
            r["table_id"]
            for r in await self.pool.fetch(
                "SELECT table_id FROM run_tables WHERE run_id = $1 AND state <> 'succeeded' ORDER BY table_id",
                run_id,
            )
        ]
        if not tables:  # a skipped slot, or a queued one cancelled before it was planned
            raise Conflict(f"run {run_id} is {row['status']} with nothing planned; nothing to retry")
        version = await self.store.stream_version(run_stream(run_id))
        await self.store.append(run_stream(run_id), version or 0, [RunRetryRequested(run_id=run_id, tables=tables)], actor)
        return tables

    async def _run(self, run_id: str) -> Any:
        row = await self.pool.fetchrow("SELECT status, frequency_id, slot FROM runs WHERE run_id = $1", run_id)
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        return row
