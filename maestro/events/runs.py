"""Runs and BigQuery jobs.

A run is a stream (``run-<run id>``; a scheduled run's id derives from its frequency and slot, so
two schedulers that decide the same slot collide on the stream instead of running twice). Each
BigQuery job is a stream of its own (``job-<job id>``) whose first event, ``JobPlanned``, records
the deterministic BigQuery job id *before* anything is sent: a restart re-attaches to it or
submits it under that id, never a second time under another.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from maestro.events.model import Event

# query / extract / load: BigQuery jobs. import: read a source database into a Parquet file in
# Cloud Storage, then load it (a load job of its own, planned by the import). external: wait for
# an external table's upload to be loaded (maestro.handlers.runs.external).
JobKind = Literal["query", "extract", "load", "import", "external"]
RunTrigger = Literal["schedule", "manual", "table", "retry"]
RunStatus = Literal["succeeded", "failed", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


LoadFormat = Literal["PARQUET", "CSV", "NEWLINE_DELIMITED_JSON", "AVRO"]
FieldType = Literal[
    "STRING", "BYTES", "INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BIGNUMERIC", "BOOLEAN",
    "BOOL", "TIMESTAMP", "DATE", "TIME", "DATETIME", "GEOGRAPHY", "JSON", "INTERVAL", "RECORD",
    "STRUCT",
]  # fmt: skip


class LoadField(_Model):
    """One column of a load job's explicit schema (BigQuery's TableFieldSchema)."""

    name: str
    type: FieldType
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = "NULLABLE"
    fields: list[LoadField] = []  # RECORD / STRUCT members


class ImportSpec(_Model):
    """What an import job reads: the table's import settings as planned (later edits do not
    change a planned run), with the query checked and the source resolved at plan time."""

    source_database: str  # resolved when the import runs (its driver says the query's dialect)
    query: str = ""  # the restricted SELECT; "" with ``table``: the whole table
    table: str | None = None
    id_column: str | None = None  # incremental (append) by this column, else full (replace)
    on_schema_change: Literal["add_columns", "reimport", "fail"] = "add_columns"
    settle_seconds: float = 30
    # Re-import in full (a reimport condition held at the run's slot, or one was requested).
    reimport: bool = False
    reimport_reason: str = ""


class Watermark(_Model):
    """How far an incremental import has loaded; recorded only in the load's ``JobSucceeded``.

    ``value``: the greatest value of ``column`` loaded (JSON: a number, or text for decimals and
    times). PostgreSQL: ``snapshot`` is the ``pg_snapshot`` the rows were read in, and ``floor``
    the value below which no row can still appear; the next import also reads rows above
    ``floor`` of the transactions it did not load (``seen``, ``cut``). MySQL: ``observed`` (at
    ``observed_at``) is the column's greatest value when last looked at; it becomes the upper bound once
    ``settle_seconds`` old; ``boundary`` fingerprints the rows loaded at ``value`` (read again
    with ``>=``, and dropped)."""

    column: str
    value: Any = None
    snapshot: str | None = None
    floor: Any = None
    observed: Any = None
    observed_at: dt.datetime | None = None
    boundary: list[str] = []
    fields: list[LoadField] = []  # the table's columns as loaded (schema changes compare to it)
    # Every earlier import snapshot still holding transactions in flight: (value, snapshot).
    open_snapshots: list[tuple[Any, str]] = []
    # PostgreSQL: which transactions' rows are loaded among those from ``snapshot``'s xmin on:
    # ``seen`` lists them as offsets from that xmin, all below ``cut`` (the 64-bit xid under
    # which every committed row ``snapshot`` shows is loaded; rows of later transactions wait
    # for the next import). None: a watermark from before this was tracked.
    seen: list[int] | None = None
    cut: int | None = None


class JobConfig(_Model):
    """A snapshot of what a job runs: later edits of the table do not change a planned run."""

    kind: JobKind = "query"
    project: str
    query: str = ""
    legacy_sql: bool = False
    destination: str = ""  # project.dataset.table
    write_disposition: Literal["WRITE_TRUNCATE", "WRITE_APPEND", "WRITE_EMPTY"] = "WRITE_TRUNCATE"
    partitioning: dict[str, Any] | None = None
    clustering: list[str] = []
    maximum_bytes_billed: int | None = None
    labels: dict[str, str] = {}
    # extract jobs
    source: str = ""
    destination_uris: list[str] = []
    format: str = ""
    compression: str = ""
    # load jobs (into ``destination``, with ``write_disposition``, ``partitioning``, ``clustering``)
    source_uris: list[str] = []
    source_format: LoadFormat = "PARQUET"
    load_schema: list[LoadField] = []  # empty: autodetect (CSV, JSON) or the file's own (Parquet, Avro)
    autodetect: bool = False
    # CSV header lines; None: not sent, so BigQuery's autodetect finds a header itself
    skip_leading_rows: int | None = Field(0, ge=0)
    max_bad_records: int = Field(0, ge=0)
    enable_list_inference: bool = True  # Parquet LIST -> REPEATED (not a record of "list.element")
    decimal_target_types: list[Literal["NUMERIC", "BIGNUMERIC", "STRING"]] = []  # [] BigQuery's default
    schema_update_options: list[Literal["ALLOW_FIELD_ADDITION", "ALLOW_FIELD_RELAXATION"]] = []
    # load jobs: delete the source objects (at these generations) once the load has ended
    delete_source: bool = False
    source_generations: list[int] = []
    import_job_id: str | None = None  # the import job this load belongs to
    watermark: Watermark | None = None  # recorded by the load's JobSucceeded
    # import jobs
    import_spec: ImportSpec | None = None
    # external waits: how long a run waits for the table's upload to be loaded
    wait_timeout: int = 0
    # which retry policy applies
    max_attempts: int = Field(3, ge=1, le=20)


    @model_validator(mode="after")
    def _load_names_its_files(self) -> JobConfig:
        if self.kind == "load" and not (self.source_uris and self.destination):
            raise ValueError("a load job needs source_uris and a destination")
        return self


class PlannedTable(_Model):
    table_id: str
    name: str  # dataset.name, for humans and logs
    priority: int  # number of descendants in the catalog (the original's rule)
    parents: list[str]  # table ids within this run
    config: JobConfig
    extract: dict[str, Any] | None = None  # extract settings when the table extracts after success
    owner_id: str | None = None
    group_id: str | None = None


class RunPlanned(Event):
    run_id: str
    frequency_id: str | None = None
    slot: dt.datetime | None = None
    trigger: RunTrigger
    tables: list[PlannedTable]
    skipped: dict[str, str] = {}  # table id -> why it is not in the run
    workers: int | None = None  # per-run concurrency limit


class RunQueued(Event):
    """A scheduled slot (``overlap: queue``) waits for the frequency's run that is still going.

    Nothing is planned yet: when ``blocking_run_id`` has finished, the scheduler appends the run's
    ``RunPlanned`` to the same stream (version 2), and the runner starts it like any other."""

    run_id: str
    frequency_id: str
    slot: dt.datetime
    blocking_run_id: str


class RunSkipped(Event):
    """A scheduled slot that does not run, decided once on the slot's own stream.

    ``overlap``: the frequency's run ``blocking_run_id`` was still going (``overlap: skip``), or
    another slot already waits behind it (``overlap: queue`` keeps one waiting run).
    ``inactive``: a queued slot whose frequency was deactivated before it could start.
    ``cancelled``: a queued slot cancelled (POST /runs/{id}/cancel) before it started."""

    run_id: str
    frequency_id: str
    slot: dt.datetime
    reason: Literal["overlap", "inactive", "cancelled"]
    blocking_run_id: str | None = None
    detail: str = ""


class FrequencyUnschedulable(Event):
    """The scheduler cannot compute a frequency's slots from its stored settings (say, a spec
    stored before today's bounds); it skips the frequency until the settings change. Recorded
    once per distinct settings, on ``schedule-<frequency>-<digest of the settings>``."""

    frequency_id: str
    reason: str


class RunCancelRequested(Event):
    run_id: str
    reason: str = ""


class RunRetryRequested(Event):
    """Re-run what failed or never ran; what succeeded stays done."""

    run_id: str
    tables: list[str]


class RunFinished(Event):
    run_id: str
    status: RunStatus
    counts: dict[str, int] = {}


class JobStatistics(_Model):
    total_bytes_processed: int = 0
    total_bytes_billed: int = 0
    total_slot_ms: int = 0
    cache_hit: bool = False
    created: dt.datetime | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    destination_uri_file_counts: list[int] = []
    # load jobs
    output_rows: int = 0
    input_files: int = 0
    input_file_bytes: int = 0


class JobPlanned(Event):
    job_id: str  # the BigQuery job id, deterministic
    run_id: str | None
    table_id: str
    attempt: int = 1
    config: JobConfig
    owner_id: str | None = None
    group_id: str | None = None


class JobSubmitted(Event):
    job_id: str
    run_id: str | None = None
    adopted: bool = False  # BigQuery already had it (409): we re-attached instead of resubmitting
    location: str | None = None


class JobSucceeded(Event):
    job_id: str
    run_id: str | None
    table_id: str
    statistics: JobStatistics
    destination_uris: list[str] = []  # extract jobs: the files written
    # A load of an incremental import: the watermark advances here and nowhere else.
    watermark: Watermark | None = None


class JobFailed(Event):
    job_id: str
    run_id: str | None
    table_id: str
    # BigQuery's reason (invalidQuery, accessDenied, ...) or ours: timeout (past the job's
    # deadline), extract_files (listing an extract's output failed), internal.
    reason: str
    message: str
    retryable: bool
    statistics: JobStatistics | None = None


class JobCancelled(Event):
    job_id: str
    run_id: str | None
    table_id: str
    # What BigQuery billed before the job stopped: a cancelled query can bill, and costs count it.
    statistics: JobStatistics | None = None


class JobSkipped(Event):
    """A planned table that will not run: a parent failed, or the table was deleted."""

    job_id: str
    run_id: str | None
    table_id: str
    reason: Literal["upstream_failed", "table_deleted", "cancelled"]
    detail: str = ""
