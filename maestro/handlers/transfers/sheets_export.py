"""A table's result to a Google spreadsheet, after its query job succeeded (docs/sheets.md).

A reactor calls :func:`export_to_sheet` with the table's spec, its columns and its rows (from
:func:`maestro.adapters.bigquery_rows.table_rows`). The export:

1. reads every row once into a spool, checking Google's limits (cells, characters per cell,
   request size) — a result that cannot fit fails here, before any call to Google;
2. creates the spreadsheet on the first export (titled ``dataset.name``), hands its id to
   ``on_created`` at once (the caller records it as an event; ``SheetsResult.spreadsheet_id``
   carries it too) so later exports — and the retry of a failed sharing — reuse it, then shares it
   read-only with the allowed domains (``on_shared``);
3. adds the run's tab in front, sized to the result — or, when an earlier attempt of the same run
   already added it (a crash, a retry), rewrites that tab: the title is derived from the run, so
   one run has exactly one tab whatever happens;
4. writes the header and rows in batches with ``values.update`` at fixed ranges (idempotent: a
   retried batch rewrites the same cells, which ``values.append`` would duplicate);
5. removes the tabs beyond the newest ``keep_tabs`` once the new one is written (earlier only
   when the cells limit needs their room).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from maestro.adapters.sheets import SheetsClient
from maestro.errors import ValidationFailed
from maestro.errors_outside import SheetsError
from maestro.events.catalog import SheetsExport, TableSpec
from maestro.events.config import OAuthSection
from maestro.handlers.config.view import ConfigView
from maestro.handlers.transfers.sheets_plan import (
    SheetsLimits,
    Spool,
    TabPlan,
    a1,
    check_shape,
    grid_rows,
    plan_tabs,
    tab_title,
)

__all__ = [
    "SheetsCredentialsMissing", "SheetsResult", "check_sheets_export", "export_to_sheet",
    "google_credentials_configured", "open_sheets_client", "share_domains", "sheets_changed",
]


class SheetsCredentialsMissing(ValidationFailed):
    """A Sheets export needs Google credentials: a service-account key in the BigQuery section."""

    code = "sheets_needs_google_credentials"


@dataclass(frozen=True, slots=True)
class SheetsResult:
    spreadsheet_id: str
    spreadsheet_url: str
    created: bool  # this export created the spreadsheet: the caller records ``spreadsheet_id``
    tab: str
    tab_id: int
    rewritten: bool  # the run's tab was there already (an earlier attempt) and was rewritten
    rows: int
    cells: int
    requests: int  # HTTP requests sent to Google, retries included
    removed_tabs: int


# ---------------------------------------------------------------------------------- saving
def google_credentials_configured(config: ConfigView) -> bool:
    """Whether Google credentials are configured: the BigQuery section's project and key."""
    section = config.get("bigquery")
    return bool(getattr(section, "project", None)) and config.is_set("bigquery", "service_account_json")


def check_sheets_export(spec: TableSpec, *, google_credentials: bool) -> SheetsCredentialsMissing | None:
    """The problem with saving ``spec`` as it stands, or None. Pure: the caller says whether
    credentials are configured (:func:`google_credentials_configured`).

    >>> spec = TableSpec(dataset="d", name="t", query="SELECT 1", sheets_export={})
    >>> check_sheets_export(spec, google_credentials=False).details["field"]
    'sheets_export'
    >>> check_sheets_export(spec, google_credentials=True) is None
    True
    """
    if spec.sheets_export is None or google_credentials:
        return None
    message = ("a Google Sheets export needs Google credentials, and this Maestro has none (it runs on the local "
               "stack): set the BigQuery section's project and service_account_json (PUT /api/v1/config/bigquery) "
               "with a service account that may use the Sheets and Drive APIs, or remove sheets_export")
    return SheetsCredentialsMissing(f"sheets_export: {message}", field="sheets_export",
                                    problems=[{"field": "sheets_export", "message": message}])


def sheets_changed(spec: TableSpec, old: TableSpec | dict[str, Any] | None) -> bool:
    """The save adds or changes a Sheets export (an unrelated edit of the table is not refused
    because the credentials were removed since)."""
    if spec.sheets_export is None:
        return False
    if isinstance(old, TableSpec):
        return old.sheets_export != spec.sheets_export
    before = (old or {}).get("sheets_export")
    try:
        return before is None or SheetsExport.model_validate(before) != spec.sheets_export
    except ValueError:  # stored by an older shape: treat as changed
        return True


# ---------------------------------------------------------------------------------- running
def share_domains(config: ConfigView) -> list[str]:
    """The domains a new spreadsheet is shared with (read-only): the login's allowed domains."""
    oauth = config.get("oauth")
    return list(oauth.allowed_domains) if isinstance(oauth, OAuthSection) else []


def open_sheets_client(config: ConfigView, *, endpoint: str | None = None, **options: Any) -> SheetsClient:
    """A client on the BigQuery section's service-account key; refused when there is none."""
    key = config.secret("bigquery", "service_account_json") if google_credentials_configured(config) else None
    if key is None:
        raise SheetsError("no_credentials", "no Google credentials are configured (the BigQuery section's "
                          "service_account_json)", retryable=False)
    return SheetsClient(json.loads(key), endpoint=endpoint, **options)


async def export_to_sheet(
    client: SheetsClient,
    spec: TableSpec,
    columns: Sequence[Any],
    rows: AsyncIterable[Iterable[Sequence[Any]]],
    *,
    run_id: str,
    run_date: dt.date,
    limits: SheetsLimits = SheetsLimits(),
    total_rows: int | None = None,
    spreadsheet_id: str | None = None,
    share_with: Sequence[str] = (),
    on_created: Callable[[str], Awaitable[None]] | None = None,
    unshared: bool = False,
    on_shared: Callable[[str], Awaitable[None]] | None = None,
) -> SheetsResult:
    """Export ``rows`` (pages of value tuples, in ``columns``' order; a column is a name or has a
    ``.name``) to the table's spreadsheet: ``spreadsheet_id``, else ``spec.sheets_export.sheet_id``,
    else a new one. Raises :class:`SheetsLimitExceeded` before any call when the result cannot fit,
    :class:`SheetsError` (``reason``, ``retryable``) when Google refuses or stays unavailable.

    A new spreadsheet goes to ``on_created`` as soon as it exists, then is shared with
    ``share_with`` and handed to ``on_shared``; ``unshared``: ``spreadsheet_id`` was created by an
    earlier attempt whose sharing failed, so it is shared first."""
    settings = spec.sheets_export
    if settings is None:
        raise SheetsError("not_configured", f"{spec.qualified_name} has no sheets_export", retryable=False)
    header = [c if isinstance(c, str) else c.name for c in columns]
    check_shape(len(header), total_rows, limits)
    title = tab_title(run_id, run_date)
    sent_before = client.requests
    with Spool(header, limits) as spool:
        await spool.fill(rows)
        sid = spreadsheet_id or settings.sheet_id
        created = sid is None
        if sid is None:
            sid = await _create(client, spec.qualified_name, on_created)
        try:
            if (created or unshared) and share_with:
                await _share(client, sid, share_with, on_shared)
            return await _write(client, sid, title, spool, settings.keep_tabs, limits, created, sent_before)
        except SheetsError as exc:
            if created:  # the spreadsheet the caller recorded (``on_created``), for its message
                exc.spreadsheet_id = sid
                exc.details["spreadsheet_id"] = sid
            raise


async def _create(client: SheetsClient, title: str, on_created: Callable[[str], Awaitable[None]] | None) -> str:
    book = await client.create_spreadsheet(title)
    sid = str(book["spreadsheetId"])
    # Handed out at once, before sharing: a sharing that fails (a domain policy, an outage) is
    # retried on this spreadsheet by the next attempt, instead of each attempt creating another
    # that nobody can see but the service account.
    if on_created is not None:
        await on_created(sid)
    return sid


async def _share(client: SheetsClient, sid: str, domains: Sequence[str],
                 on_shared: Callable[[str], Awaitable[None]] | None) -> None:
    for domain in domains:  # a repeat for a domain already given is harmless: the same permission
        await client.share_with_domain(sid, domain, role="reader")
    if on_shared is not None:
        await on_shared(sid)


async def _write(
    client: SheetsClient, sid: str, title: str, spool: Spool, keep_tabs: int, limits: SheetsLimits,
    created: bool, sent_before: int,
) -> SheetsResult:
    for attempt in range(2):
        try:
            book = await client.get_spreadsheet(sid)
        except SheetsError as exc:
            if exc.reason != "not_found":
                raise
            raise SheetsError("spreadsheet_gone", f"the spreadsheet {sid} was deleted (or is no longer the "
                              "service account's): clear sheets_export.sheet_id to create a new one",
                              retryable=False) from exc
        props = [s["properties"] for s in book.get("sheets", [])]
        plan = plan_tabs(props, title, keep_tabs, spool.rows, spool.columns, limits)
        try:
            tab_id = await _prepare_tab(client, sid, title, plan, spool)
            break
        except SheetsError as exc:
            # An earlier addSheet of ours was applied but its answer lost (a dropped connection,
            # retried): the tab is there now, so read again and rewrite it.
            # Likewise a batch whose deleteSheet applied: the retry finds the tab gone.
            if attempt or not ("already exists" in exc.message or _no_such_tab(exc)):
                raise
    for first_row, values in spool.batches():
        await client.update_values(sid, a1(title, first_row), values)
    if plan.drop_after:
        await _delete_tabs(client, sid, plan.drop_after)
    return SheetsResult(
        spreadsheet_id=sid, spreadsheet_url=str(book.get("spreadsheetUrl", "")), created=created, tab=title,
        tab_id=tab_id, rewritten=plan.existing is not None, rows=spool.rows,
        cells=grid_rows(spool.rows) * spool.columns, requests=client.requests - sent_before,
        removed_tabs=len(plan.drop_with_add) + len(plan.drop_after),
    )


def _no_such_tab(exc: SheetsError) -> bool:
    return exc.reason in ("invalid_argument", "http_400") and "No sheet with id" in exc.message


async def _delete_tabs(client: SheetsClient, sid: str, tab_ids: Sequence[int]) -> None:
    """Remove these tabs. The batch is retried after a lost answer; when the first try was
    applied, the retry finds a tab gone: read the tabs again and remove only what is left."""
    try:
        await client.batch_update(sid, [{"deleteSheet": {"sheetId": i}} for i in tab_ids])
    except SheetsError as exc:
        if not _no_such_tab(exc):
            raise
        book = await client.get_spreadsheet(sid)
        present = {int(s["properties"]["sheetId"]) for s in book.get("sheets", [])}
        if left := [i for i in tab_ids if i in present]:
            await client.batch_update(sid, [{"deleteSheet": {"sheetId": i}} for i in left])


async def _prepare_tab(client: SheetsClient, sid: str, title: str, plan: TabPlan, spool: Spool) -> int:
    """Add the run's tab in front, sized to the result, or resize the one an earlier attempt
    added (keeping its place); in one atomic batchUpdate with the removals that make room."""
    grid = {"rowCount": grid_rows(spool.rows), "columnCount": spool.columns,
            "frozenRowCount": 1 if spool.rows else 0}
    if plan.existing is not None:
        tab_id = int(plan.existing["sheetId"])
        fields = "gridProperties.rowCount,gridProperties.columnCount,gridProperties.frozenRowCount"
        requests: list[dict[str, Any]] = [
            {"updateSheetProperties": {"properties": {"sheetId": tab_id, "gridProperties": grid}, "fields": fields}}
        ]
    else:
        requests = [{"addSheet": {"properties": {"title": title, "index": 0, "gridProperties": grid}}}]
    requests += [{"deleteSheet": {"sheetId": i}} for i in plan.drop_with_add]
    reply = await client.batch_update(sid, requests)
    if plan.existing is not None:
        return tab_id
    return int(reply["replies"][0]["addSheet"]["properties"]["sheetId"])
