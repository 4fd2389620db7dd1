"""Imports and external loads: the phases between an import job's plan and its end.

An import job (``job-<id>``, kind ``import``) reads a source database into one Parquet object and
loads it with a BigQuery load job of its own (``job-<load id>``, kind ``load``). Its stream:

    JobPlanned  ->  ImportStarted (the snapshot, the window, the object it writes)
                ->  ImportProgress ... (rows read, bytes written; at most every few seconds)
                ->  ImportUploaded (the object's generation, rows, bytes)
                ->  [the load job: JobPlanned, JobSubmitted, JobSucceeded *with the watermark*]
                ->  LoadSourceDeleted (on the load's stream)
                ->  JobSucceeded | JobFailed  (the import's end)

A restart reads these back: an upload that finished but was not recorded is adopted (the object
exists at its deterministic name), one that did not is started again in a new snapshot, a load
planned is re-attached, never submitted twice (tests/integration/test_import_crash.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from maestro.events.model import Event
from maestro.events.runs import LoadField, Watermark


def import_stream(table_id: str) -> str:
    """A table's import stream: re-import requests and external load requests."""
    return f"import-{table_id}"


class ImportStarted(Event):
    """A read of the source began, in one snapshot; its rows go to ``uri`` (a new object)."""

    job_id: str
    run_id: str | None
    table_id: str
    read: int  # 1, 2, ...: a read restarted after a crash writes a new object
    uri: str
    full: bool  # everything (the table is replaced), else the window below (appended)
    reason: str = ""  # why a full import (first import, a reimport condition, requested, schema)
    window: dict[str, Any] = {}  # the bounds read: after / up_to / floor / snapshot / ...
    fields: list[LoadField] = []  # the BigQuery columns, as the source's types map


class ImportProgress(Event):
    job_id: str
    run_id: str | None
    table_id: str
    rows: int
    bytes: int  # Parquet bytes written so far


class ImportUploaded(Event):
    job_id: str
    run_id: str | None
    table_id: str
    uri: str
    generation: int
    rows: int
    bytes: int
    row_groups: int
    seconds: float  # from the read's start to the finished upload
    # What the load's JobSucceeded will record as the table's watermark (a candidate until then).
    watermark: Watermark | None = None


class ImportSchemaChanged(Event):
    """The source's columns differ from what the table was loaded with; ``action`` says what the
    table's ``on_schema_change`` policy did about it."""

    job_id: str
    run_id: str | None
    table_id: str
    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []  # "name: OLD -> NEW"
    action: Literal["add_columns", "reimport", "fail"]


class ReimportRequested(Event):
    """The table's next import reads everything and replaces the table (stream ``import-<id>``)."""

    table_id: str
    reason: str = ""


class LoadSourceDeleted(Event):
    """A load's source objects were deleted (at the generations it loaded) once it had ended.

    ``uris``: every source the load had; of those, ``missing`` were gone already (deleted by an
    attempt that crashed before recording it, or by someone else), ``kept`` had been written over
    by a newer generation (left in place: it is not what was loaded), and ``errors`` (uri ->
    reason) could not be deleted for a reason that would not change by trying again (say, no
    permission, or no Cloud Storage client). Recorded once per load; nothing retries after it."""

    job_id: str
    table_id: str
    uris: list[str]
    missing: list[str] = []  # already gone
    kept: list[str] = []  # a newer generation lives under the name
    errors: dict[str, str] = {}


class ExternalLoadRequested(Event):
    """Someone asked to load an uploaded object into an external table (stream ``import-<id>``);
    the load job it planned is ``load_job_id`` (one per object generation)."""

    table_id: str
    uri: str
    generation: int
    load_job_id: str
    at: dt.datetime | None = None
