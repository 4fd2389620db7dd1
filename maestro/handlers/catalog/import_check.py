"""An import table's settings checked when it is saved (create, PATCH, PUT, ``maestro apply``).

What can be known without the source refuses the save, and nothing is appended:

* ``import.source_database`` must name a registered database (``/api/v1/databases``);
* the query must parse in that database's dialect (its ``driver``) as the restricted primitive
  (:mod:`maestro.catalog.import_query`), refused with ``import_query_refused`` at the line and
  column **of the field the user wrote** (``import.query``; for the earlier form, ``import.select``,
  ``import.where`` or ``import.source_table``);
* ``import.id_column`` must be a column the query selects (by its source or output name, ignoring
  case, as the importer finds it), or any column of the table with ``*``; and an incremental
  import's query takes no LIMIT (the importer refuses one: it reads every new row).

What needs the source is asked within :data:`TIMEOUT` seconds, on one connection per database
(in parallel across databases): the table must exist (``source_table_not_found``), every
selected column must exist and map to a BigQuery type (``source_column_error`` naming the column
and its type), and an incremental column must be one that orders (not an array, JSON or bool).
A source that cannot be reached, or does not answer in time, does **not** hold the save: the table
is saved and the caller gets a warning saying what was not checked (its runs will fail with the
reason if the source is still wrong then). A discovery still running at the deadline is
abandoned in the background; the save does not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from maestro.adapters.sources import mysql as mysql_source
from maestro.adapters.sources import postgres as pg_source
from maestro.catalog.import_query import ImportQuery, parse_import_query
from maestro.errors import (
    MaestroError,
    SecretUnavailable,
    SourceColumnError,
    SourceTableNotFound,
    SourceUnavailable,
    SqlSyntaxError,
    ValidationFailed,
)
from maestro.events.catalog import ImportSettings, TableSpec
from maestro.handlers.config.view import ConfigView
from maestro.handlers.transfers.sheets_export import check_sheets_export, google_credentials_configured, sheets_changed

log = logging.getLogger(__name__)

TIMEOUT = 2.5  # seconds a save may wait for a source (connect and discovery together)
# Column kinds an incremental import cannot order by (maestro.adapters.sources.columns).
_UNORDERED = {"json": "JSON", "bool": "a boolean", "bits": "a bit string"}
_POSITION = re.compile(r" \(line \d+, column \d+\)$")
# Discoveries abandoned at the deadline, kept referenced until they have cleaned up.
_ABANDONED: set[asyncio.Task[None]] = set()


class SourceTableUnknown(ValidationFailed):
    """The source database has no such table (or the import's user cannot see it)."""

    code = "source_table_not_found"


class ImportsRefused(ValidationFailed):
    """Import tables of the change set do not check against their sources; nothing was applied."""

    def __init__(self, refusals: Sequence[tuple[str, MaestroError]]) -> None:
        # ``problems`` as the CLI prints them, one line each (like FolderInvalid's).
        self.problems = [f"{label}: {exc.message}" for label, exc in refusals]
        count = f"{len(refusals)} import table{'s' if len(refusals) != 1 else ''}"
        super().__init__(
            f"{count} refused by the import check (below)",
            problems=[
                {"table": label, "code": exc.code, "message": exc.message,
                 **{k: v for k, v in exc.details.items() if k in ("field", "line", "column", "table", "source_type")}}
                for label, exc in refusals
            ],
        )


def import_key(spec: TableSpec | Mapping[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """What the check depends on: the name (an empty query reads the table named like it) and the
    import settings with their defaults. None for a table that is not an import (or no table)."""
    if spec is None:
        return None
    if not isinstance(spec, TableSpec):
        if spec.get("kind") != "import" or not isinstance(spec.get("import"), Mapping):
            return None
        try:
            settings = ImportSettings.model_validate(spec["import"])
        except ValueError:  # stored by an older shape: treat as changed
            return None
        return str(spec.get("name")), settings.model_dump(mode="json")
    if spec.kind != "import" or spec.import_settings is None:
        return None
    return spec.name, spec.import_settings.model_dump(mode="json")


def needs_check(spec: TableSpec, old: TableSpec | Mapping[str, Any] | None) -> bool:
    """An import table whose import settings (or name) this save changes: an edit of its
    description does not ask the source again."""
    key = import_key(spec)
    return key is not None and key != import_key(old)


@dataclass(frozen=True, slots=True)
class _Checked:
    """One import table that passed the checks needing no source: what discovery asks."""

    label: str
    query: ImportQuery
    settings: ImportSettings
    table_field: str  # the field naming the source table, for messages
    column_field: str  # the field naming the columns


class ImportCheck:
    """The check, against the live configuration (the registered databases and their passwords)."""

    def __init__(self, config: ConfigView, *, timeout: float = TIMEOUT) -> None:
        self.config = config
        self.timeout = timeout

    def export_problem(self, spec: TableSpec, old: TableSpec | Mapping[str, Any] | None) -> MaestroError | None:
        """Why the steps after the run this save adds or changes cannot work here (a Sheets export
        without Google credentials), or None."""
        if not sheets_changed(spec, old):
            return None
        return check_sheets_export(spec, google_credentials=google_credentials_configured(self.config))

    async def check(self, spec: TableSpec) -> list[str]:
        """Refuse ``spec`` (raise the error, naming the field) or return the save's warnings."""
        refusals, warnings = await self.check_all([spec])
        if refusals:
            raise refusals[0][1]
        return warnings

    async def check_all(self, specs: Iterable[TableSpec]) -> tuple[list[tuple[str, MaestroError]], list[str]]:
        """(refusals as (table label, error), warnings) for every import table of ``specs``."""
        refusals: list[tuple[str, MaestroError]] = []
        by_database: dict[str, list[_Checked]] = {}
        for spec in specs:
            if spec.kind != "import" or spec.import_settings is None:
                continue
            try:
                checked = self._static(spec)
            except MaestroError as exc:
                refusals.append((spec.qualified_name, exc))
                continue
            by_database.setdefault(checked.settings.source_database, []).append(checked)
        outcomes = await asyncio.gather(*(self._at_source(name, items) for name, items in sorted(by_database.items())))
        warnings: list[str] = []
        for found, warning in outcomes:
            refusals.extend(found)
            if warning:
                warnings.append(warning)
        return refusals, warnings

    # ------------------------------------------------------------------ without the source
    def _static(self, spec: TableSpec) -> _Checked:
        settings = spec.import_settings
        assert settings is not None
        name = settings.source_database
        section = self.config.database(name)
        if section is None:
            message = f"no source database {name!r} is registered (add it with POST /api/v1/databases)"
            raise ValidationFailed(
                f"import.source_database: {message}",
                problems=[{"field": "import.source_database", "message": message}],
                field="import.source_database",
            )
        sql, table = settings.query_text(spec.name)
        text, pieces = _pieces(settings, spec.name)
        try:
            query = parse_import_query(sql, section.driver, table=table)
        except SqlSyntaxError as exc:
            raise _located(exc, text, pieces) from None
        _check_id_column(query, settings)
        if settings.id_column is not None and query.limit is not None:
            field = "import.query" if settings.query.strip() else "import.where"
            message = "an incremental import (id_column) reads every new row: its query takes no LIMIT"
            raise ValidationFailed(f"{field}: {message}", problems=[{"field": field, "message": message}], field=field)
        table_field = pieces[0][0] if len(pieces) == 1 else pieces[1][0]
        column_field = pieces[0][0]  # import.query, import.select, or the table's field for *
        return _Checked(spec.qualified_name, query, settings, table_field, column_field)

    # ------------------------------------------------------------------ at the source
    async def _at_source(self, name: str, items: list[_Checked]) -> tuple[list[tuple[str, MaestroError]], str]:
        """Discover every table of one database on one connection, within the timeout."""
        section = self.config.database(name)
        assert section is not None  # _static saw it
        labels = ", ".join(item.label for item in items)
        try:
            password = self.config.secret("databases", "password", name=name)
        except SecretUnavailable as exc:
            return [], f"{labels}: saved without checking the source: the password of {name!r} cannot be opened ({exc.message})"
        results: dict[str, MaestroError | None] = {}
        opener = pg_source.open_source if section.driver == "postgres" else mysql_source.open_source
        task = asyncio.create_task(
            self._discover(opener, section.dsn, password, items, results, self.timeout), name=f"import-check-{name}"
        )
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            _abandon(task)
            raise
        problem = ""
        if not done:
            _abandon(task)
            problem = f"did not answer within {self.timeout:g} s"
        elif (exc := task.exception()) is not None:
            if isinstance(exc, SourceUnavailable):
                problem = f"cannot be reached ({exc.message})"
            else:
                log.warning("import check failed", extra={"database": name, "error": repr(exc)})
                problem = f"could not be asked ({type(exc).__name__}: {exc})"
        refusals = [(item.label, err) for item in items if (err := results.get(item.label)) is not None]
        unchecked = [item.label for item in items if item.label not in results]
        if not unchecked:
            return refusals, ""
        return refusals, (
            f"{', '.join(unchecked)}: saved without checking the source table and its columns: the source "
            f"database {name!r} {problem}. Its runs fail with the reason if it is still wrong then."
        )

    @staticmethod
    async def _discover(
        opener: Any, dsn: str, password: str | None, items: list[_Checked],
        results: dict[str, MaestroError | None], timeout: float,
    ) -> None:
        async with opener(dsn, password, connect_timeout=timeout, statement_timeout=timeout) as source:
            for item in items:
                try:
                    schema = await source.discover(item.query)
                    _check_id_type(schema, item)
                    results[item.label] = None
                except SourceTableNotFound as exc:
                    message = f"{item.table_field}: {exc.message}"
                    results[item.label] = SourceTableUnknown(
                        message, table=item.query.quoted_table, field=item.table_field,
                        problems=[{"field": item.table_field, "message": exc.message}],
                    )
                except SourceColumnError as exc:
                    named = SourceColumnError(f"{item.column_field}: {exc.message}", column=exc.column,
                                              source_type=exc.source_type)
                    named.details["field"] = item.column_field
                    results[item.label] = named
                except ValidationFailed as exc:  # the incremental column (_check_id_type)
                    results[item.label] = exc


def _abandon(task: asyncio.Task[None]) -> None:
    """Stop waiting for ``task``: cancelled, it closes its connection in the background."""
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_ABANDONED.discard)


# ---------------------------------------------------------------------------------- positions
def _pieces(settings: ImportSettings, table_name: str) -> tuple[str, list[tuple[str, int, str]]]:
    """The text the parser's positions count in, and the parts of it the user wrote:
    (field, start offset in the text, the field's text)."""
    if settings.query.strip():
        return settings.query, [("import.query", 0, settings.query)]
    table = settings.source_table or table_name
    table_field = "import.source_table" if settings.source_table else "name"
    sql, _ = settings.query_text(table_name)
    if not sql:  # the whole table: checked as a name, then parsed as SELECT * FROM <table>
        return f"SELECT * FROM {table}", [(table_field, len("SELECT * FROM "), table)]
    select = settings.select or "*"
    pieces = [("import.select", len("SELECT "), select)]
    pieces.append((table_field, pieces[0][1] + len(select) + len(" FROM "), table))
    if settings.where.strip():
        pieces.append(("import.where", pieces[1][1] + len(table) + len(" WHERE "), settings.where))
    return sql, pieces


def _located(exc: SqlSyntaxError, text: str, pieces: list[tuple[str, int, str]]) -> SqlSyntaxError:
    """``exc`` re-pointed at the field its position falls in, with the line and column in that
    field's text (a position between two fields counts as the end of the first).

    >>> text, pieces = _pieces(ImportSettings(source_database="d", source_table="t", where="a IN (SELECT 1)"), "x")
    >>> err = _located(SqlSyntaxError("bad", 1, 30), text, pieces)
    >>> err.message, err.details["field"]
    ('import.where: bad (line 1, column 8)', 'import.where')
    """
    base = _POSITION.sub("", exc.message)
    if exc.line is None or exc.column is None:
        located = type(exc)(f"{pieces[0][0]}: {base}")
        located.details["field"] = pieces[0][0]
        return located
    lines = text.split("\n")
    offset = sum(len(line) + 1 for line in lines[: exc.line - 1]) + exc.column - 1
    field, start, written = next((p for p in reversed(pieces) if p[1] <= offset), pieces[0])
    local = min(max(offset - start, 0), len(written))
    line = written.count("\n", 0, local) + 1
    column = local - (written.rfind("\n", 0, local) + 1) + 1
    located = type(exc)(f"{field}: {base}", line, column)
    located.details["field"] = field
    return located


# ---------------------------------------------------------------------------------- columns
def _named(column: Any, name: str) -> bool:
    """The importer's rule for the incremental column (maestro.handlers.runs.imports): a selected
    column whose source or output name is ``name``, ignoring case; it compares the source column."""
    return name.lower() in (column.source.lower(), column.name.lower())


def _refuse_id(message: str) -> ValidationFailed:
    return ValidationFailed(
        f"import.id_column: {message}",
        problems=[{"field": "import.id_column", "message": message}], field="import.id_column",
    )


def _check_id_column(query: ImportQuery, settings: ImportSettings) -> None:
    column = settings.id_column
    if column is None or query.columns is None:  # full import, or * (checked at the source)
        return
    if not any(_named(c, column) for c in query.columns):
        selected = ", ".join(c.name for c in query.columns)
        raise _refuse_id(f"{column!r} is not a column the query selects ({selected})")


def _check_id_type(schema: Any, item: _Checked) -> None:
    column = item.settings.id_column
    if column is None:
        return
    found = next((c for c in schema.columns if _named(c, column)), None)
    if found is None:
        names = ", ".join(c.source for c in schema.columns)
        raise _refuse_id(f"the source table {item.query.quoted_table} has no column {column!r} ({names})")
    unordered = "an array" if found.repeated else _UNORDERED.get(found.kind)
    if unordered is not None:
        raise _refuse_id(
            f"{column!r} is {unordered} ({found.source_type}): an incremental import needs an id or "
            "timestamp column whose values increase"
        )
