"""Export a table's extract into a target database (PostgreSQL or MySQL/MariaDB), exactly once.

A reactor calls :func:`export_table` after a table's extract succeeded, with the files the
extract wrote. The export:

1. refuses what it can know first, before touching the target: a database not registered for
   export, a table or column name the target cannot hold, a type without a mapping, files larger
   than ``limits.max_bytes`` (their size as stored);
2. streams the files (bounded memory: :mod:`maestro.adapters.targets.stream`) into a staging
   table named after the export id, counting rows against ``limits.max_rows``;
3. swaps the staging table in atomically (``replace``) or upserts from it by the key columns
   (``upsert``), and records the export id in the target's ``_maestro_exports``.

Any failure raises :class:`~maestro.errors.ExportFailed` with a stable ``reason``, a message and
``retryable``; the previous table is intact and no staging table is left (MySQL: dropped on a
fresh connection; if even that fails, the next attempt of the same export drops it).

Exactly once per run: :func:`export_id_for` derives the id from the run and the table, so every
attempt of one run's export has the same id. An attempt that finds the id recorded in the target
writes nothing and returns ``already_done`` — the case of a crash after the target committed but
before the reactor recorded the outcome (docs/db-export.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maestro.adapters.targets import mysql as mysql_target
from maestro.adapters.targets import postgres as pg_target
from maestro.adapters.targets.common import TargetTable
from maestro.adapters.targets.files import object_sizes
from maestro.adapters.targets.stream import load_chunks
from maestro.adapters.targets.types import ExportColumn, UnsupportedColumn, export_columns, name_problem
from maestro.errors import MaestroError
from maestro.errors_outside import ExportFailed
from maestro.events.catalog import DatabaseExport, TableSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """Configurable ceilings; the original allowed 100 M rows and 1 GB."""

    max_rows: int = 100_000_000
    max_bytes: int = 10 * 1024**3  # the extract's files, as stored (compressed when gzipped)

    @classmethod
    def from_settings(cls, settings: Any) -> ExportLimits:
        """From ``MAESTRO_EXPORT_MAX_ROWS`` / ``MAESTRO_EXPORT_MAX_BYTES`` (maestro.settings)."""
        return cls(settings.export_max_rows, settings.export_max_bytes)


@dataclass(frozen=True, slots=True)
class ExportDatabase:
    """A registered database as the export needs it (a ``databases`` config entry + password)."""

    name: str
    driver: str  # postgres | mysql
    dsn: str
    password: str | None = None
    export: bool = False  # registered with export: true

    @classmethod
    def of(cls, name: str, section: Any, password: str | None) -> ExportDatabase:
        return cls(name, section.driver, section.dsn, password, bool(section.export))


@dataclass(frozen=True, slots=True)
class ExportResult:
    export_id: str
    table: str  # the target table written ([schema.]name)
    rows: int
    bytes: int  # the extract files read (as stored)
    seconds: float
    already_done: bool  # the target had this export recorded: nothing written this time


def export_id_for(run_id: str, table_id: str) -> str:
    """The id every attempt of one run's export of one table shares.

    >>> export_id_for("run-f1-20240101T0000", "t42")
    'run-f1-20240101T0000/t42'
    """
    return f"{run_id}/{table_id}"


def target_table(spec: TableSpec) -> TargetTable:
    settings = _settings(spec)
    return TargetTable(settings.table or spec.name, settings.schema_name)


async def export_table(
    target: ExportDatabase, spec: TableSpec, schema: Sequence[Any], uris: Sequence[str], storage: Any, *,
    export_id: str, limits: ExportLimits = ExportLimits(), file_format: str | None = None,
    compression: str | None = None, spool_dir: Path | None = None, connect_timeout: float = 10.0,
) -> ExportResult:
    """Write the extract files ``uris`` (BigQuery ``schema``: the table's fields) into ``target``
    as ``spec.db_export`` says. ``file_format`` / ``compression`` default to the table's extract
    settings (gzip is also recognised by a ``.gz`` name)."""
    started = time.perf_counter()
    settings = _settings(spec)
    table = target_table(spec)
    columns = _checked_columns(target, table, settings, schema)
    fmt = file_format or (spec.extract.format if spec.extract else "csv")
    default_compression = compression or (spec.extract.compression if spec.extract else "none")
    files = [(uri, fmt, "gzip" if uri.endswith(".gz") else default_compression) for uri in uris]
    size = sum(await asyncio.to_thread(object_sizes, storage, list(uris)))
    if size > limits.max_bytes:
        raise ExportFailed("limit_exceeded", f"the extract is {size:,} bytes, over the export limit max_bytes = "
                           f"{limits.max_bytes:,}", retryable=False)
    counted = 0

    def count(rows: int) -> None:
        nonlocal counted
        counted += rows
        if counted > limits.max_rows:
            raise ExportFailed("limit_exceeded", f"the table has more than {limits.max_rows:,} rows, the export "
                               "limit max_rows", retryable=False)

    dialect = "postgres" if target.driver == "postgres" else "mysql"
    chunks = load_chunks(storage, files, columns, dialect, on_rows=count)
    try:
        async with _open(target, connect_timeout, spool_dir) as writer:
            written = await writer.export(table, columns, chunks, export_id=export_id, mode=settings.mode)
    except BaseException as exc:
        await _discard(target, export_id, connect_timeout)
        if isinstance(exc, ExportFailed | asyncio.CancelledError):
            raise
        if isinstance(exc, MaestroError):  # Cloud Storage, mostly: keep its retryability
            raise ExportFailed(str(getattr(exc, "reason", exc.code)), exc.message,
                               retryable=bool(getattr(exc, "retryable", False))) from exc
        raise
    finally:
        await chunks.aclose()
    if not written.already_done and written.rows != counted:
        raise ExportFailed("row_count", f"{counted:,} rows were sent but the target holds {written.rows:,}",
                           retryable=True)
    name = f"{table.schema}.{table.name}" if table.schema else table.name
    return ExportResult(export_id, name, written.rows, size, time.perf_counter() - started, written.already_done)


def _settings(spec: TableSpec) -> DatabaseExport:
    if spec.db_export is None:
        raise ExportFailed("not_configured", f"{spec.qualified_name} has no db_export settings", retryable=False)
    return spec.db_export


def _checked_columns(
    target: ExportDatabase, table: TargetTable, settings: DatabaseExport, schema: Sequence[Any]
) -> list[ExportColumn]:
    if not target.export:
        raise ExportFailed("not_export_enabled", f"the database {target.name!r} is not registered for export "
                           "(set export: true on it)", retryable=False)
    if problem := name_problem(target.driver, table.name):
        raise ExportFailed("bad_name", f"the table name {table.name!r} {problem}", retryable=False)
    try:
        columns = export_columns(schema, settings.key_columns)
    except UnsupportedColumn as exc:
        raise ExportFailed("unsupported_column", str(exc), retryable=False) from None
    for column in columns:
        if problem := name_problem(target.driver, column.name):
            raise ExportFailed("bad_name", f"the column name {column.name!r} {problem}", retryable=False,
                               column=column.name)
    return columns


@contextlib.asynccontextmanager
async def _open(target: ExportDatabase, timeout: float, spool_dir: Path | None) -> AsyncIterator[Any]:
    if target.driver == "postgres":
        async with pg_target.open_target(target.dsn, target.password, connect_timeout=timeout) as writer:
            yield writer
    else:
        async with mysql_target.open_target(target.dsn, target.password, connect_timeout=timeout,
                                            spool_dir=spool_dir) as writer:
            yield writer


async def _discard(target: ExportDatabase, export_id: str, timeout: float) -> None:
    """After a failure: drop the staging table a MySQL attempt left (PostgreSQL's rolled back).
    Best effort: when the target cannot be reached, the next attempt drops it."""
    if target.driver != "mysql":
        return
    try:
        async with mysql_target.open_target(target.dsn, target.password, connect_timeout=timeout) as writer:
            await asyncio.wait_for(writer.discard(export_id), timeout=30)
    except (ExportFailed, OSError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001 - logged, retried later
        log.warning("export staging left for the next attempt", extra={"export_id": export_id, "error": repr(exc)})
