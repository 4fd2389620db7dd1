"""Google Sheets exports as deliveries: after a table's query succeeds, its result to a spreadsheet.

The reactor (``sheets``) follows ``JobSucceeded``; for a query job of a table with
``sheets_export`` it plans a delivery of kind ``sheets`` naming the table BigQuery wrote and the
run's date (the slot's, else the day the job succeeded). The sender makes each attempt with
:func:`export_to_sheet` (docs/sheets.md), reading the rows with ``tabledata.list`` (billed
nothing):

- the spreadsheet is the table's ``sheet_id`` if set, else the one recorded on
  ``sheets-<table id>``, else a new one, recorded (``SheetsSpreadsheetCreated``) from
  ``on_created`` as soon as it exists — before it is shared or any tab is written, so an attempt
  after a crash or a failed sharing uses it (and shares it first: ``SheetsSpreadsheetShared``);
- one tab per run whatever happens: the tab's title derives from the run, and an attempt that
  finds it rewrites it;
- 429 and quota answers are retried inside the client (backoff, ``Retry-After``); what still
  fails and is retryable follows the delivery's schedule; a result beyond Google's limits, a
  refused permission, a deleted spreadsheet end the step with Google's reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

from maestro.adapters.bigquery_rows import table_rows
from maestro.errors import BigQueryError, ConcurrencyConflict, MaestroError
from maestro.errors_outside import SheetsError, SheetsLimitExceeded
from maestro.events.catalog import TableSpec
from maestro.events.exports import (
    SheetsSpreadsheetCreated,
    SheetsSpreadsheetForgotten,
    SheetsSpreadsheetShared,
    sheets_stream,
)
from maestro.events.model import Metadata, RecordedEvent
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.notify.delivery import DeliveryState, Outcome
from maestro.handlers.notify.exports import ExportContext, ExportReactor, spec_of
from maestro.handlers.transfers.sheets_export import (
    export_to_sheet,
    google_credentials_configured,
    open_sheets_client,
    share_domains,
)

ACTOR = "system:sheets"


class SheetsReactor(ExportReactor):
    name = "sheets"
    kind = "sheets"
    job_kind = "query"

    def wanted(self, spec: TableSpec) -> bool:
        return spec.sheets_export is not None

    def target(self, spec: TableSpec, job: dict[str, Any]) -> str:
        assert spec.sheets_export is not None
        sid = spec.sheets_export.sheet_id
        return f"spreadsheet {sid}" if sid else f"the spreadsheet of {spec.qualified_name}"

    def details(self, spec: TableSpec, job: dict[str, Any], event: RecordedEvent) -> dict[str, Any]:
        day = (job["slot"] or event.occurred_at).astimezone(dt.timezone.utc).date()
        return {"source": job["config"].get("destination", ""), "run_date": day.isoformat()}


class SheetsSender:
    kind = "sheets"

    def __init__(self, store: EventStore, context: ExportContext) -> None:
        self.store = store
        self.context = context

    async def recorded(self, table_id: str) -> tuple[str | None, bool, int]:
        """The spreadsheet recorded for the table (None: none, or forgotten), whether it is still
        to be shared, and the stream's version."""
        events = await self.store.read(sheets_stream(table_id))
        current: str | None = None
        unshared = False
        for r in events:
            if isinstance(r.event, SheetsSpreadsheetCreated):
                current, unshared = r.event.spreadsheet_id, not r.event.shared
            elif isinstance(r.event, SheetsSpreadsheetShared) and r.event.spreadsheet_id == current:
                unshared = False
            elif isinstance(r.event, SheetsSpreadsheetForgotten):
                current, unshared = None, False
        return current, unshared, (events[-1].version if events else NO_STREAM)

    async def send(self, delivery: DeliveryState) -> Outcome:
        plan = delivery.plan
        spec = spec_of(plan)
        assert spec.sheets_export is not None and plan.table_id is not None and plan.run_id is not None
        config = self.context.config()
        if config is None or not google_credentials_configured(config):
            return Outcome(attempted=False, reason="invalid", error=(
                "not exported: a Google Sheets export needs Google credentials (the BigQuery section's project and "
                "service_account_json); configure them, then redeliver"))
        table_id = plan.table_id
        meta = Metadata(actor=ACTOR, correlation_id=delivery.planned.metadata.correlation_id,
                        causation_id=delivery.planned.event_id)
        recorded, unshared, version = await self.recorded(table_id)
        sid = spec.sheets_export.sheet_id or recorded
        domains = share_domains(config)
        appended = version

        async def on_created(spreadsheet_id: str) -> None:
            nonlocal appended
            created = SheetsSpreadsheetCreated(table_id=table_id, spreadsheet_id=spreadsheet_id, run_id=plan.run_id,
                                               delivery_id=plan.delivery_id, shared=not domains)
            try:
                appended = (await self.store.append(sheets_stream(table_id), version, [created], meta)).version
            except ConcurrencyConflict:
                # Another run's export of the table recorded one first: this attempt stops here
                # and the next writes to that one (the spreadsheet just created stays unused).
                raise SheetsError("conflict", "another export of the table created its spreadsheet at the same "
                                  "time; retrying with that one", retryable=True) from None

        async def on_shared(spreadsheet_id: str) -> None:
            # Expected version: a spreadsheet forgotten or replaced meanwhile is not marked shared.
            with contextlib.suppress(ConcurrencyConflict):
                await self.store.append(sheets_stream(table_id), appended, [SheetsSpreadsheetShared(
                    table_id=table_id, spreadsheet_id=spreadsheet_id, domains=domains)], meta)

        started = time.perf_counter()

        def took() -> int:
            return int((time.perf_counter() - started) * 1000)

        try:
            rows = await table_rows(self.context.bigquery(), plan.details["source"])
            async with open_sheets_client(config, endpoint=self.context.sheets_endpoint) as client:
                await asyncio.wait_for(export_to_sheet(
                    client, spec, rows.columns, rows.pages, run_id=plan.run_id,
                    run_date=dt.date.fromisoformat(plan.details["run_date"]), total_rows=rows.total_rows,
                    spreadsheet_id=sid, share_with=domains, on_created=on_created, on_shared=on_shared,
                    unshared=unshared and sid == recorded,
                ), timeout=plan.schedule.timeout)
        except SheetsLimitExceeded as exc:
            return Outcome(error=exc.message, reason="invalid", duration_ms=took())
        except SheetsError as exc:
            error = exc.message
            if exc.reason == "spreadsheet_gone" and sid is not None and sid == recorded:
                with contextlib.suppress(ConcurrencyConflict):  # recorded or forgotten by another attempt
                    await self.store.append(sheets_stream(table_id), version, [SheetsSpreadsheetForgotten(
                        table_id=table_id, spreadsheet_id=sid, reason=exc.message)], meta)
                error = (f"Google Sheets: the spreadsheet {sid} was deleted (or is no longer the service account's); "
                         "the next export creates a new one, or redeliver this one (spreadsheet_gone)")
            return Outcome(error=error, retryable=exc.retryable, reason="rejected", duration_ms=took())
        except BigQueryError as exc:
            return Outcome(error=exc.message, retryable=exc.retryable, reason="invalid", duration_ms=took())
        except asyncio.TimeoutError:
            return Outcome(error=f"timeout: the export took longer than {plan.schedule.timeout:g} s "
                           "(MAESTRO_EXPORT_TIMEOUT)", retryable=True, duration_ms=took())
        except MaestroError as exc:  # a secret that cannot be opened, ...
            return Outcome(error=exc.message, retryable=bool(getattr(exc, "retryable", True)), reason="invalid",
                           duration_ms=took())
        return Outcome(ok=True, duration_ms=took())
