"""Sheets and database exports added to what ``serve`` runs (called from ``wiring.py``)."""

from __future__ import annotations

from maestro.events.store import EventStore
from maestro.handlers.notify.db_export_reactor import DbExportReactor, DbExportSender
from maestro.handlers.notify.dispatcher import Dispatcher
from maestro.handlers.notify.exports import ExportContext
from maestro.handlers.notify.reactor import ReactorHost
from maestro.handlers.notify.sheets_reactor import SheetsReactor, SheetsSender


def add_exports(host: ReactorHost, dispatcher: Dispatcher, store: EventStore, context: ExportContext) -> None:
    """The reactors plan the exports; the senders make their attempts (docs/reactors.md)."""
    host.add(SheetsReactor(store, context.policy))
    host.add(DbExportReactor(store, context.policy))
    dispatcher.add_sender(SheetsSender(store, context))
    dispatcher.add_sender(DbExportSender(context))
