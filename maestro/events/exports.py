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
    # Shared with the allowed domains already. Recorded as soon as it exists, before sharing (so a
    # failed sharing leaves no orphan): False until SheetsSpreadsheetShared; earlier versions
    # recorded it only once shared, hence the default.
    shared: bool = True


class SheetsSpreadsheetShared(Event):
    """The recorded spreadsheet is shared (read-only) with these domains."""

    table_id: str
    spreadsheet_id: str
    domains: list[str]


class SheetsSpreadsheetForgotten(Event):
    """The recorded spreadsheet is gone (deleted, or no longer the service account's): the next
    export creates a new one."""

    table_id: str
    spreadsheet_id: str
    reason: str


def sheets_stream(table_id: str) -> str:
    return f"sheets-{table_id}"
