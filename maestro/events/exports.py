"""Exports' own facts beyond their deliveries: the spreadsheet a table's Sheets exports write to.

A table's first Sheets export creates a spreadsheet; its id is recorded on ``sheets-<table id>``
as soon as the spreadsheet exists (before any tab is written), so every later export — the next
attempt after a crash included — writes to the same one instead of creating another. A
``sheet_id`` set in the table's ``sheets_export`` wins over the recorded one.
"""

from __future__ import annotations

from maestro.events.model import Event


class SheetsSpreadsheetCreated(Event):
    table_id: str
    spreadsheet_id: str
    spreadsheet_url: str = ""
    run_id: str | None = None
    delivery_id: str | None = None  # the export that created it


class SheetsSpreadsheetForgotten(Event):
    """The recorded spreadsheet is gone (deleted, or no longer the service account's): the next
    export creates a new one."""

    table_id: str
    spreadsheet_id: str
    reason: str


def sheets_stream(table_id: str) -> str:
    return f"sheets-{table_id}"
