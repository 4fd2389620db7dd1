"""Sheets and database exports as reactors: what both need, and how ``serve`` adds them.

Each export is a delivery (docs/reactors.md): a reactor follows ``JobSucceeded`` and plans one
delivery per job on ``delivery-<delivery_id_for(kind, event id)>`` — a repeat after a crash is a
conflict, never a second export — and a sender makes the attempts the dispatcher schedules. The
plan carries the table's settings as they were when its job succeeded (``details.spec``), so a
retry hours later exports what the run asked for even if the table was edited since.

``sheets`` (``sheets_reactor.py``): after a table's query job, when it has ``sheets_export``.
``db_export`` (``db_export_reactor.py``): after a table's extract job, when it has ``db_export``.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from maestro.errors import ConcurrencyConflict, MaestroError
from maestro.events.catalog import TableSpec
from maestro.events.deliveries import (
    DeliveryFailed,
    DeliveryKind,
    DeliveryPlanned,
    RetrySchedule,
    delivery_id_for,
    delivery_stream,
)
from maestro.events.model import RecordedEvent
from maestro.events.runs import JobSucceeded
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.config.view import ConfigView
from maestro.handlers.notify.reactor import Reactor
from maestro.handlers.notify.schedule import new_schedule
from maestro.handlers.transfers.db_export import ExportLimits


@dataclass(frozen=True)
class ExportPolicy:
    """Retries of an export: Google's quotas and a target's outage last minutes, not seconds."""

    timeout: float = 3600.0  # one attempt, at most (a large table takes a while)
    initial: float = 30.0
    max_delay: float = 1800.0
    window: float = 12 * 3600.0

    @classmethod
    def from_settings(cls, settings: Any) -> ExportPolicy:
        return cls(settings.export_timeout, settings.export_retry_initial, settings.export_retry_max_delay,
                   settings.export_retry_window)

    def schedule(self, at: dt.datetime) -> RetrySchedule:
        return new_schedule(at, initial=self.initial, max_delay=self.max_delay, window=self.window,
                            timeout=self.timeout)


@dataclass(frozen=True)
class ExportContext:
    """What the export senders use, read at each attempt (the configuration is live)."""

    config: Callable[[], ConfigView | None]
    bigquery: Callable[[], Any]  # the BigQuery client now
    storage: Callable[[], Any]  # the Cloud Storage client now
    policy: ExportPolicy = ExportPolicy()
    limits: ExportLimits = ExportLimits()
    sheets_endpoint: str | None = None  # Sheets and Drive elsewhere than Google (the tests' fake)


def spec_of(plan: DeliveryPlanned) -> TableSpec:
    return TableSpec.model_validate(plan.details["spec"])


def failure(exc: BaseException) -> str:
    return exc.message if isinstance(exc, MaestroError) else f"{type(exc).__name__}: {exc}"[:300]


class ExportReactor(Reactor):
    """Plans one delivery of ``kind`` after each successful job of ``job_kind`` of a table whose
    settings ask for it; subclasses say which setting and what the plan carries."""

    kind: DeliveryKind
    job_kind: str
    event_types = ("JobSucceeded",)
    concurrency = 16  # each job's export is planned on its own stream

    def __init__(self, store: EventStore, policy: ExportPolicy) -> None:
        self.store = store
        self.policy = policy

    @abc.abstractmethod
    def wanted(self, spec: TableSpec) -> bool:
        """Whether the table's settings ask for this export."""

    @abc.abstractmethod
    def target(self, spec: TableSpec, job: dict[str, Any]) -> str:
        """Where it goes (shown in the delivery and its step)."""

    @abc.abstractmethod
    def details(self, spec: TableSpec, job: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
        """What the sender needs besides the table's settings (``spec``, added here)."""

    async def _job(self, e: JobSucceeded) -> dict[str, Any] | None:
        """The job (its kind, config, run's slot) and its table's settings now; None when the
        table is gone (deleted since: nothing to export)."""
        row = await self.store.pool.fetchrow(
            "SELECT j.kind, j.config, r.slot, c.spec FROM jobs j JOIN catalog_tables c ON c.table_id = j.table_id "
            "LEFT JOIN runs r ON r.run_id = j.run_id WHERE j.job_id = $1 AND NOT c.deleted", e.job_id)
        if row is None:
            return None
        return {"kind": row["kind"], "config": orjson.loads(row["config"]), "slot": row["slot"],
                "spec": orjson.loads(row["spec"])}

    async def handle(self, event: RecordedEvent) -> None:
        e = event.event
        if not isinstance(e, JobSucceeded) or e.run_id is None:
            return
        job = await self._job(e)
        if job is None or job["kind"] != self.job_kind:
            return
        spec = TableSpec.model_validate(job["spec"])
        if not self.wanted(spec):
            return
        plan = DeliveryPlanned(
            delivery_id=delivery_id_for(self.kind, event.event_id), kind=self.kind, table_id=e.table_id,
            run_id=e.run_id, job_id=e.job_id, target=self.target(spec, job), caused_by=event.event_id,
            schedule=self.policy.schedule(event.occurred_at),
            details={**self.details(spec, job, event), "spec": spec.to_payload()},
        )
        await self._append(event, [plan])

    async def give_up(self, event: RecordedEvent, error: BaseException) -> None:
        """The export could not even be planned (the table's settings unreadable, ...): recorded
        as planned and failed, with the reason, so the run shows the step failed."""
        e = event.event
        if not isinstance(e, JobSucceeded) or e.run_id is None:
            return
        delivery_id = delivery_id_for(self.kind, event.event_id)
        plan = DeliveryPlanned(delivery_id=delivery_id, kind=self.kind, table_id=e.table_id, run_id=e.run_id,
                               job_id=e.job_id, target="(unknown)", caused_by=event.event_id,
                               schedule=self.policy.schedule(event.occurred_at))
        failed = DeliveryFailed(delivery_id=delivery_id, table_id=e.table_id, run_id=e.run_id, reason="invalid",
                                message=f"the export could not be planned: {failure(error)}")
        await self._append(event, [plan, failed])

    async def _append(self, event: RecordedEvent, events: list[Any]) -> None:
        try:
            await self.store.append(delivery_stream(events[0].delivery_id), NO_STREAM, events,
                                    event.metadata.caused_by(event, actor=f"system:{self.kind}"))
        except ConcurrencyConflict:
            pass  # planned before a crash moved the checkpoint: nothing more to do
