"""Catalog events: tables, frequencies, datasets — and the table specification they carry.

A table's whole definition is a :class:`TableSpec`. ``TableCreated`` carries the first one;
later edits append only what changed (``TableQueryChanged``, ``TableSettingsChanged``), so the
history of a table reads as a list of meaningful changes.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from maestro.events.model import Event
from maestro.events.runs import LoadField
from maestro.events.table_steps import ExtractSettings, SheetsExport

# BigQuery's naming rules (https://cloud.google.com/bigquery/docs/datasets#dataset-naming,
# .../tables#table_naming): datasets are ASCII letters, digits and underscores, up to 1,024
# characters; tables may also use Unicode letters, marks, numbers, dashes and spaces, up to 1,024
# UTF-8 bytes; project ids are 6-30 lowercase letters, digits and hyphens.
# Always used with fullmatch: with match, a trailing "$" also accepts a trailing newline.
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_TABLE = re.compile(r"[\w\- ]+")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_LABEL_KEY = re.compile(r"[\w-]{1,63}")
_LABEL_VALUE = re.compile(r"[\w-]{0,63}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")


def _dataset_name(value: str) -> str:
    if not _DATASET.fullmatch(value):
        raise ValueError("dataset names use letters, digits and underscores (at most 1,024)")
    return value


def _table_name(value: str) -> str:
    if (
        not _TABLE.fullmatch(value)
        or len(value.encode()) > 1024
        or value != value.strip()
        or "*" in value
    ):
        raise ValueError(
            "table names use letters, marks, numbers, underscores, dashes and inner spaces "
            "(at most 1,024 bytes)"
        )
    return value


def _project_id(value: str) -> str:
    if not _PROJECT.fullmatch(value):
        raise ValueError("project ids are 6-30 lowercase letters, digits and hyphens")
    return value


def _column_name(value: str) -> str:
    if not _COLUMN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid column name")
    return value


def _table_reference(value: str) -> str:
    """``dataset.name`` or ``project.dataset.name``, as a query names a table (no backticks)."""
    parts = value.split(".")
    if len(parts) not in (2, 3):
        raise ValueError(f"{value!r}: name a table as dataset.name or project.dataset.name")
    try:
        if len(parts) == 3:
            parts[0] = _project_id(parts[0].lower())  # project ids compare case-insensitively
        _dataset_name(parts[-2])
        _table_name(parts[-1])
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    return ".".join(parts)


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _documented(pattern: re.Pattern[str]) -> WithJsonSchema:
    """The rule in the JSON schema (the OpenAPI document) too; the validator above enforces it."""
    return WithJsonSchema({"type": "string", "pattern": f"^{pattern.pattern}$"})


DatasetName = Annotated[str, AfterValidator(_dataset_name), _documented(_DATASET)]
TableName = Annotated[str, AfterValidator(_table_name)]
ProjectId = Annotated[str, AfterValidator(_project_id), _documented(_PROJECT)]
ColumnName = Annotated[str, AfterValidator(_column_name), _documented(_COLUMN)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
TableReference = Annotated[str, AfterValidator(_table_reference)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Model):
    """When a table runs: fields AND together (empty = any); conditions in a list OR together."""

    months: list[Annotated[int, Field(ge=1, le=12)]] = []
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = []  # 0 = Sunday, as in the original
    days: list[Annotated[int, Field(ge=1, le=31)]] = []
    hours: list[Annotated[int, Field(ge=0, le=23)]] = []

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if not (self.months or self.weekdays or self.days or self.hours):
            raise ValueError("a condition needs at least one of months, weekdays, days, hours")
        return self


class Partitioning(_Model):
    type: Literal["day", "column"] = "day"
    column: ColumnName | None = None
    granularity: Literal["HOUR", "DAY", "MONTH", "YEAR"] = "DAY"

    @model_validator(mode="after")
    def _column_rule(self) -> Partitioning:
        if self.type == "column" and self.column is None:
            raise ValueError("column partitioning needs a column")
        if self.type == "day" and self.column is not None:
            raise ValueError("day (ingestion-time) partitioning takes no column")
        return self


class DatabaseExport(_Model):
    """Write the table into a database registered with ``export: true`` after its extract
    (docs/db-export.md): ``replace`` swaps the whole table in atomically; ``upsert`` inserts or
    updates rows by ``key_columns``."""

    database: str = Field(min_length=1)
    table: str | None = Field(None, min_length=1)  # default: the table's own name
    schema_name: str | None = Field(None, alias="schema", min_length=1, description="PostgreSQL schema")
    mode: Literal["replace", "upsert"] = "replace"
    # upsert: the columns that identify a row; replace: made the new table's primary key.
    key_columns: list[ColumnName] = Field(default_factory=list, max_length=32)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _keys_rule(self) -> DatabaseExport:
        if self.mode == "upsert" and not self.key_columns:
            raise ValueError("an upsert export needs key_columns (the columns that identify a row)")
        if len({k.lower() for k in self.key_columns}) != len(self.key_columns):
            raise ValueError("key_columns: a column is listed twice")
        return self


class ImportSettings(_Model):
    """Where an import table reads and how (docs/imports.md).

    ``query`` is the original's restricted SELECT in the source's own dialect (a select list, one
    FROM table, WHERE, LIMIT; maestro.catalog.import_query). Empty: the whole ``source_table``,
    or the table named like the import table. ``select`` and ``where`` are the earlier form of
    the same query (``SELECT <select> FROM <source_table> WHERE <where>``), still accepted.
    """

    source_database: str = Field(min_length=1)
    source_table: str = ""  # [schema.]table; the query's FROM when a query is given
    query: str = Field("", max_length=64 * 1024)
    select: str = "*"
    where: str = ""
    # Incremental import (append) by this id or timestamp column when set; else full (replace).
    id_column: ColumnName | None = None
    # A scheduled run whose slot meets one of these re-imports in full (truncate, then append).
    reimport_conditions: list[Condition] = []
    # When the source's columns differ from what the table was loaded with (appends only; a full
    # import replaces the table's schema): add the new columns, re-import in full, or fail.
    on_schema_change: Literal["add_columns", "reimport", "fail"] = "add_columns"
    # MySQL incremental imports: rows are imported once they are this many seconds old in the
    # importer's eyes (a transaction committing later than that may be missed; docs/imports.md).
    settle_seconds: float = Field(30, ge=0, le=86400)

    @property
    def incremental(self) -> bool:
        return self.id_column is not None

    def query_text(self, table_name: str) -> tuple[str, str | None]:
        """(query, table for an empty query) as maestro.catalog.import_query parses them."""
        if self.query.strip():
            return self.query, None
        table = self.source_table or table_name
        if self.select.strip() in ("", "*") and not self.where.strip():
            return "", table
        where = f" WHERE {self.where}" if self.where.strip() else ""
        return f"SELECT {self.select or '*'} FROM {table}{where}", None


class ExternalSettings(_Model):
    format: Literal["csv", "ndjson", "parquet", "avro"] = "csv"
    wait_timeout: int = Field(3600, ge=60, le=10800)
    # CSV: header lines to skip (None: autodetection decides). Columns: autodetected unless
    # declared here (CSV, NDJSON; Parquet and Avro files carry their own).
    skip_leading_rows: int | None = Field(None, ge=0, le=1000)
    schema_fields: list[LoadField] = Field(default_factory=list, alias="schema", max_length=10000)
    delete_after_load: bool = True  # the uploaded object, once its load has ended

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TableSpec(_Model):
    """Everything that defines a table. Kind-specific parts validate per kind."""

    dataset: DatasetName
    name: TableName
    project: ProjectId | None = None
    description: str = Field("", max_length=16384)
    kind: Literal["summary", "import", "external"] = "summary"
    query: str = Field("", max_length=1024 * 1024)
    legacy_sql: bool = False
    write_disposition: Literal["replace", "append"] = "replace"
    partitioning: Partitioning | None = None
    clustering: list[ColumnName] = Field(default_factory=list, max_length=4)
    frequency_id: str | None = None
    conditions: list[Condition] = []
    timezone: TimeZone = "UTC"
    group_id: str | None = None
    owner_id: str | None = None
    # Where this table's Slack alerts go instead of its group's channel (docs/slack.md).
    slack_channel: str | None = Field(
        None, pattern=r"^(#?[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{8,20})$",
        description="Slack channel for this table's alerts (overrides the group's)",
    )
    labels: dict[str, str] = {}
    maximum_bytes_billed: int | None = Field(None, gt=0)
    max_attempts: int = Field(
        3, ge=1, le=20, description="BigQuery attempts when a job fails with a retryable error"
    )
    extract: ExtractSettings | None = None
    sheets_export: SheetsExport | None = None
    db_export: DatabaseExport | None = None
    import_settings: ImportSettings | None = Field(None, alias="import")
    external: ExternalSettings | None = None
    # Dependencies the SQL does not show, and references it shows that must not order runs (a
    # table reading the previous state of a table that reads it). Resolved like references.
    depends_on: list[TableReference] = Field(default_factory=list, max_length=1000)
    not_dependencies: list[TableReference] = Field(default_factory=list, max_length=1000)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _per_kind(self) -> TableSpec:
        for key, value in self.labels.items():
            if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value) or key.lower() != key:
                raise ValueError(f"label {key!r}: lowercase letters, digits, '_' and '-' (63 max)")
        if len(self.labels) > 64:
            raise ValueError("at most 64 labels")
        if self.kind == "summary":
            if not self.query.strip():
                raise ValueError("a summary table needs a query")
            if self.import_settings is not None or self.external is not None:
                raise ValueError("a summary table takes no import or external settings")
        elif self.kind == "import":
            if self.import_settings is None:
                raise ValueError("an import table needs import settings")
            if self.query.strip() or self.external is not None:
                raise ValueError("an import table takes no query or external settings")
        else:
            if self.external is None:
                raise ValueError("an external table needs external settings")
            if self.query.strip() or self.import_settings is not None:
                raise ValueError("an external table takes no query or import settings")
        if self.kind != "summary":
            steps = [k for k in ("extract", "sheets_export", "db_export") if getattr(self, k) is not None]
            if steps:
                raise ValueError(f"{', '.join(steps)}: only a summary table has steps after its run "
                                 "(read this table from a summary table that extracts or exports)")
        if self.legacy_sql and (self.partitioning is not None or self.clustering):
            raise ValueError("partitioning and clustering need standard SQL")
        for key in ("depends_on", "not_dependencies"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key}: a table is listed twice")
        if both := sorted(set(self.depends_on) & set(self.not_dependencies)):
            raise ValueError(f"{', '.join(both)}: in both depends_on and not_dependencies")
        if self.clustering and self.partitioning is None:
            pass  # BigQuery allows clustering unpartitioned tables
        return self

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @property
    def qualified_name(self) -> str:
        return f"{self.dataset}.{self.name}"


# Fields of TableSpec that an update may change apart from the query itself.
QUERY_FIELDS = frozenset({"query", "legacy_sql"})


class TableCreated(Event):
    table_id: str
    spec: TableSpec


class TableQueryChanged(Event):
    table_id: str
    query: str
    legacy_sql: bool


class TableSettingsChanged(Event):
    """Only the changed fields, by their JSON names, with their new values."""

    table_id: str
    changes: dict[str, Any]


class TableDeleted(Event):
    table_id: str
    reason: str = ""


class TableRestored(Event):
    """A deleted table is live again."""

    table_id: str


MAX_PERIOD = 10 * 366 * 86400


class FrequencySpec(_Model):
    """A cadence: every ``period`` seconds shifted by ``offset`` (the original's semantics:
    truncation counted from 0001-01-01 UTC, so a daily period aligns to UTC midnight), or a cron
    expression in a time zone."""

    name: str = Field(min_length=1, max_length=200)
    # Bounded so that slot arithmetic stays within datetime's range (years 1-9999).
    period: int | None = Field(None, gt=0, le=MAX_PERIOD, description="seconds (at most ten years)")
    offset: int = Field(0, ge=-MAX_PERIOD, le=MAX_PERIOD, description="seconds; may be negative; less than the period")
    cron: str | None = Field(None, description="a cron expression instead of period/offset")
    timezone: TimeZone = "UTC"
    active: bool = True
    missed: Literal["latest", "skip"] = Field(
        "latest", description="slots missed while down: run the latest once, or skip them"
    )
    overlap: Literal["skip", "queue", "allow"] = Field(
        "skip",
        description="a slot that comes while the frequency's run is still going: skip it, queue it "
        "(it starts when that run ends; at most one waits), or allow it to run alongside",
    )

    @model_validator(mode="after")
    def _schedule_rule(self) -> FrequencySpec:
        if self.cron is None:
            if self.period is None:
                raise ValueError("a frequency needs a period (seconds) or a cron expression")
            if self.offset >= self.period:
                raise ValueError("offset must be less than the period")
            if self.timezone != "UTC":
                raise ValueError("period frequencies are aligned to UTC; use cron for a local time zone")
        elif self.period is not None or self.offset:
            raise ValueError("a frequency has either a cron expression or a period and offset")
        return self


class FrequencyCreated(Event):
    frequency_id: str
    spec: FrequencySpec


class FrequencyChanged(Event):
    frequency_id: str
    changes: dict[str, Any]


class DatasetRegistered(Event):
    dataset: DatasetName
    project: ProjectId | None = None
    description: str = ""


class DatasetOwnerChanged(Event):
    """An administrator gave a dataset to a group (None: to no group). Members of other groups
    may not point tables at it; without an owner, the groups whose tables it holds own it."""

    dataset: DatasetName
    group_id: str | None = None
