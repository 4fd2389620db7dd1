"""A table's database export checked when it is saved: what can be known without the target.

Refused at save (nothing appended): a target that is not registered, or not registered with
``export: true``; a target table name the target database cannot hold (PostgreSQL: 63 bytes;
MySQL: 64 characters, no trailing space, nothing beyond U+FFFF; neither: NUL); a ``schema`` for a
MySQL target (its database is the DSN's); an extract format the export cannot read (Avro).
Column names and types (and so the key columns) are known only when the query has run: the
export itself checks them and fails its step with the reason.

    >>> from maestro.events.catalog import TableSpec
    >>> spec = TableSpec.model_validate({"dataset": "d", "name": "t", "query": "SELECT 1",
    ...                                  "db_export": {"database": "crm"}})
    >>> [p["message"] for p in check_db_export(spec, {})]
    ["no database 'crm' is registered (add it with POST /api/v1/databases, export: true)"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from maestro.adapters.targets.files import FORMATS
from maestro.adapters.targets.types import name_problem
from maestro.errors import ValidationFailed
from maestro.events.catalog import TableSpec


def check_db_export(spec: TableSpec, databases: Mapping[str, Any] | Callable[[str], Any]) -> list[dict[str, str]]:
    """The problems of ``spec.db_export`` as ``{"field", "message"}``; [] when none (or no export).

    ``databases``: name -> the registered database's section (``driver``, ``export``), as a
    mapping or a lookup function returning None for an unknown name.
    """
    settings = spec.db_export
    if settings is None:
        return []
    find = databases if callable(databases) else databases.get
    section = find(settings.database)
    problems: list[dict[str, str]] = []
    if section is None:
        return [{"field": "db_export.database", "message": f"no database {settings.database!r} is registered "
                 "(add it with POST /api/v1/databases, export: true)"}]
    if not getattr(section, "export", False):
        problems.append({"field": "db_export.database", "message": f"the database {settings.database!r} is not "
                         "registered for export (set export: true on it)"})
    name = settings.table or spec.name
    if problem := name_problem(section.driver, name):
        field = "db_export.table" if settings.table else "name"
        problems.append({"field": field, "message": f"the target table name {name!r} {problem}"})
    if settings.schema_name is not None:
        if section.driver != "postgres":
            problems.append({"field": "db_export.schema", "message": "a schema applies to PostgreSQL targets "
                             "only (a MySQL target writes into its DSN's database)"})
        elif problem := name_problem("postgres", settings.schema_name):
            problems.append({"field": "db_export.schema", "message": f"the schema name {problem}"})
    fmt = spec.extract.format if spec.extract is not None else "csv"
    if fmt not in FORMATS:
        problems.append({"field": "extract.format", "message": f"a database export reads the table's extract: "
                         f"{fmt} extracts cannot be exported (use {', '.join(FORMATS)})"})
    return problems


def refuse_db_export(spec: TableSpec, databases: Mapping[str, Any] | Callable[[str], Any]) -> None:
    """Raise :class:`ValidationFailed` naming every problem (for the catalog's save path)."""
    if problems := check_db_export(spec, databases):
        first = problems[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", problems=problems, field=first["field"])


def export_key(spec: TableSpec | Mapping[str, Any] | None) -> Any:
    """What the check depends on: the export settings, the table's name and its extract format."""
    if spec is None:
        return None
    if isinstance(spec, TableSpec):
        return (spec.db_export.model_dump(mode="json", by_alias=True) if spec.db_export else None, spec.name,
                spec.extract.format if spec.extract else None)
    extract = spec.get("extract")
    return (spec.get("db_export"), spec.get("name"), extract.get("format") if isinstance(extract, Mapping) else None)


def needs_db_export_check(spec: TableSpec, old: TableSpec | Mapping[str, Any] | None) -> bool:
    """A table whose export this save adds or changes (an edit of its description does not
    re-check a target since switched off: that fails the export's step instead)."""
    if spec.db_export is None:
        return False
    before = export_key(old)
    if isinstance(old, Mapping) and before[0] is not None:  # stored: fill the defaults to compare
        try:
            before = export_key(TableSpec.model_validate(dict(old)))
        except ValueError:
            return True
    return export_key(spec) != before
