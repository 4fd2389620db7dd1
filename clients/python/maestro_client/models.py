"""Typed answers: small frozen dataclasses built from the API's JSON (``from_json``).

Each keeps the JSON it came from in ``raw`` for fields this version does not name.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

_LOCATION = re.compile(r"\[(\d+):(\d+)\]")


def parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def error_location(message: str | None) -> tuple[int, int] | None:
    """(line, column) from the ``[line:column]`` BigQuery puts in SQL error messages."""
    found = _LOCATION.findall(message or "")
    return (int(found[-1][0]), int(found[-1][1])) if found else None


@dataclass(frozen=True)
class TableInfo:
    id: str
    number: int
    dataset: str
    name: str
    kind: str
    deleted: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def qualified_name(self) -> str:
        return f"{self.dataset}.{self.name}"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableInfo:
        return cls(d["id"], int(d["number"]), d["dataset"], d["name"], d["kind"], bool(d.get("deleted")), d)


@dataclass(frozen=True)
class Status:
    """What a table is doing: ``state`` is running, failed, succeeded or idle (never run)."""

    state: str
    error: str | None
    line: int | None
    column: int | None
    last_ok_at: dt.datetime | None
    run_id: str | None
    job_id: str | None
    at: dt.datetime | None  # of the table's latest activity
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Status:
        where = d.get("error_location") or {}
        return cls(d["state"], d.get("error"), where.get("line"), where.get("column"), parse_time(d.get("last_ok_at")),
                   d.get("run_id"), d.get("job_id"), parse_time(d.get("at")), d)


@dataclass(frozen=True)
class RunTable:
    table_id: str
    name: str
    state: str
    error: str | None
    job_id: str | None
    attempt: int
    progress: dict[str, Any] | None
    updated_at: dt.datetime | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunTable:
        return cls(d["table_id"], d["name"], d["state"], d.get("error"), d.get("job_id"), int(d.get("attempt") or 0),
                   d.get("progress"), parse_time(d.get("updated_at")))


@dataclass(frozen=True)
class Run:
    """A run; ``tables`` is filled by ``run_status`` (a list of runs leaves it empty)."""

    id: str
    status: str  # queued, running, succeeded, failed, cancelled, skipped
    trigger: str
    frequency_id: str | None
    planned_at: dt.datetime | None
    finished_at: dt.datetime | None
    counts: dict[str, int]
    reason: str | None
    tables: tuple[RunTable, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    TERMINAL = frozenset({"succeeded", "failed", "cancelled", "skipped"})

    @property
    def done(self) -> bool:
        return self.status in self.TERMINAL

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        return cls(
            d["id"], d["status"], d.get("trigger", ""), d.get("frequency_id"), parse_time(d.get("planned_at")),
            parse_time(d.get("finished_at")), dict(d.get("counts") or {}), d.get("reason"),
            tuple(RunTable.from_json(t) for t in d.get("tables") or ()), d,
        )


@dataclass(frozen=True)
class ExtractFile:
    uri: str  # gs://bucket/object
    url: str  # signed: fetch it with no credentials


@dataclass(frozen=True)
class Extract:
    job_id: str
    run_id: str | None
    finished_at: dt.datetime | None
    expires_at: dt.datetime | None
    files: tuple[ExtractFile, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Extract:
        files = tuple(ExtractFile(f["uri"], f["url"]) for f in d.get("files") or ())
        return cls(d["job_id"], d.get("run_id"), parse_time(d.get("finished_at")), parse_time(d.get("expires_at")), files)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    mode: str  # NULLABLE, REQUIRED, REPEATED
    fields: tuple[Column, ...] = ()
    description: str | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Column:
        return cls(d["name"], d["type"], d.get("mode") or "NULLABLE",
                   tuple(cls.from_json(f) for f in d.get("fields") or ()), d.get("description"))


@dataclass(frozen=True)
class Load:
    """An external table's load of one uploaded object."""

    job_id: str
    object: str
    state: str  # planned, submitted, succeeded, failed
    output_rows: int | None
    error: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_job(cls, d: dict[str, Any], uri: str) -> Load:
        stats = d.get("statistics") or {}
        return cls(d["job_id"], uri, d["state"], stats.get("output_rows"), d.get("error"), d)


@dataclass(frozen=True)
class CostItem:
    key: str | None
    name: str | None
    bytes_billed: int
    bytes_processed: int
    slot_ms: int
    jobs: int
    usd: float


@dataclass(frozen=True)
class Costs:
    by: str
    price_per_tib: float
    items: tuple[CostItem, ...]
    bytes_billed: int
    usd: float

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Costs:
        by = d["by"]
        items = tuple(
            CostItem(i.get(by), i.get("name"), int(i.get("bytes_billed") or 0), int(i.get("bytes_processed") or 0),
                     int(i.get("slot_ms") or 0), int(i.get("jobs") or 0), float(i.get("usd") or 0))
            for i in d.get("items") or ()
        )
        total = d.get("total") or {}
        return cls(by, float(d.get("price_per_tib") or 0), items, int(total.get("bytes_billed") or 0),
                   float(total.get("usd") or 0))
