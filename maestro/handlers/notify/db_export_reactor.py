"""Database exports as deliveries: after a table's extract succeeds, its files into the target.

The reactor (``db_export``) follows ``JobSucceeded``; for an extract of a table whose settings
have ``db_export`` it plans a delivery of kind ``db_export`` with the files the extract wrote, the
extract's format, and the export id of the run and table (:func:`export_id_for`). The sender makes
each attempt with :func:`export_table` (docs/db-export.md): the target comes from the ``databases``
section as it is at the attempt (a password rotated meanwhile is used), the BigQuery schema from
the table. Exactly once per run: every attempt shares the export id, and an attempt that finds it
recorded in the target (an earlier attempt committed, then Maestro died) writes nothing and
succeeds. Retryable failures (the target down, a killed connection, a deadlock) follow the
schedule; any other failure ends the step with the export's reason and message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from maestro.adapters.bigquery_tables import table_schema
from maestro.errors import BigQueryError, MaestroError
from maestro.errors_outside import ExportFailed
from maestro.events.catalog import TableSpec
from maestro.events.deliveries import FailureReason
from maestro.events.model import RecordedEvent
from maestro.handlers.notify.delivery import DeliveryState, Outcome
from maestro.handlers.notify.exports import ExportContext, ExportReactor, spec_of
from maestro.handlers.transfers.db_export import ExportDatabase, export_id_for, export_table, target_table

log = logging.getLogger(__name__)

# The export's reasons (docs/db-export.md) as the delivery's: the target would not take it, or
# what the export needs is wrong (a name, a type, a file, a limit).
_REFUSED_BY_TARGET = frozenset({"bad_value", "target_refused"})


class DbExportReactor(ExportReactor):
    name = "db_export"
    kind = "db_export"
    job_kind = "extract"

    def wanted(self, spec: TableSpec) -> bool:
        return spec.db_export is not None

    def target(self, spec: TableSpec, job: dict[str, Any]) -> str:
        assert spec.db_export is not None
        table = target_table(spec)
        return f"{spec.db_export.database}:{table.schema + '.' if table.schema else ''}{table.name}"

    def details(self, spec: TableSpec, job: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
        e = event.event
        config = job["config"]
        return {
            "files": list(e.destination_uris),  # type: ignore[attr-defined]
            "source": config.get("source", ""),
            "format": config.get("format") or None, "compression": config.get("compression") or None,
            "export_id": export_id_for(e.run_id, e.table_id),  # type: ignore[attr-defined]
        }


class DbExportSender:
    kind = "db_export"

    def __init__(self, context: ExportContext) -> None:
        self.context = context

    def _target(self, spec: TableSpec) -> ExportDatabase | Outcome:
        """The registered database as configured now, or why the export cannot start."""
        assert spec.db_export is not None
        name = spec.db_export.database
        config = self.context.config()
        section = config.database(name) if config is not None else None
        if section is None:
            return Outcome(attempted=False, reason="invalid", error=(
                f"not exported: no database {name!r} is registered (POST /api/v1/databases), or it was removed"))
        if not section.export:
            return Outcome(attempted=False, reason="refused", error=(
                f"not exported: the database {name!r} is not registered for export (set export: true on it, "
                "then redeliver)"))
        assert config is not None
        return ExportDatabase.of(name, section, config.secret("databases", "password", name=name))

    async def send(self, delivery: DeliveryState) -> Outcome:
        plan = delivery.plan
        spec = spec_of(plan)
        d = plan.details
        started = time.perf_counter()

        def took() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            target = self._target(spec)
            if isinstance(target, Outcome):
                return target
            schema = await table_schema(self.context.bigquery(), d["source"])
            result = await asyncio.wait_for(export_table(
                target, spec, schema, d.get("files") or [], self.context.storage(), export_id=d["export_id"],
                limits=self.context.limits, file_format=d.get("format"), compression=d.get("compression"),
            ), timeout=plan.schedule.timeout)
        except ExportFailed as exc:
            reason: FailureReason = "rejected" if exc.reason in _REFUSED_BY_TARGET else "invalid"
            return Outcome(error=f"{exc.reason}: {exc.message}", retryable=exc.retryable, reason=reason,
                           duration_ms=took())
        except BigQueryError as exc:  # the table's schema: gone (not retryable) or BigQuery down
            return Outcome(error=exc.message, retryable=exc.retryable, reason="invalid", duration_ms=took())
        except asyncio.TimeoutError:
            return Outcome(error=f"timeout: the export took longer than {plan.schedule.timeout:g} s "
                           "(MAESTRO_EXPORT_TIMEOUT); the target keeps its previous table", retryable=True,
                           duration_ms=took())
        except MaestroError as exc:  # a secret that cannot be opened, Cloud Storage, ...
            return Outcome(error=exc.message, retryable=bool(getattr(exc, "retryable", True)), reason="invalid",
                           duration_ms=took())
        log.info("database export done", extra={
            "delivery_id": plan.delivery_id, "export_id": result.export_id, "table": result.table,
            "rows": result.rows, "already_done": result.already_done})
        return Outcome(ok=True, duration_ms=took())
