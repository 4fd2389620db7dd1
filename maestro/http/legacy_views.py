"""The original Maestro's JSON shapes: Go field names (``Id``, ``Name``, ``LastOkRunEndAt``, ...).

Pure functions from our read models to what the original's routes answered (reference §2-§3), so
that its clients -- ``pythonlib/maestro.py`` and scripts written against it -- run unchanged:

- ``Id`` is the table's integer number; ``MaestroId`` adds our own id (extra keys are harmless);
- times that Go kept as ``time.Time`` are never null: the zero time ``0001-01-01T00:00:00Z``
  stands for "never" (its client parses ``LastOkRunEndAt`` unconditionally);
- ``ExternalTmout`` is 0 for tables that are not external (its client compares it with ``> 0``);
- ``Error`` is ``""`` when there is none; ``Disposition`` is BigQuery's ``WRITE_TRUNCATE`` /
  ``WRITE_APPEND``; ``ExternalFormat`` BigQuery's source format name.

Ids of users, groups, frequencies and databases are our strings (the original's were integers;
no client of it computes with them).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from maestro.handlers.catalog.table_refs import TableRef
from maestro.handlers.runs.table_status import TableStatus

ZERO_TIME = "0001-01-01T00:00:00Z"
_SOURCE_FORMATS = {"csv": "CSV", "ndjson": "NEWLINE_DELIMITED_JSON", "parquet": "PARQUET", "avro": "AVRO"}


def go_time(value: dt.datetime | None) -> str:
    """RFC 3339 in UTC, as Go's ``time.Time`` marshals; the zero time for None."""
    if value is None:
        return ZERO_TIME
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def table(ref: TableRef, status: TableStatus) -> dict[str, Any]:
    """A ``model.Table`` as ``GET /tables`` lists it."""
    spec = ref.spec
    extract = spec.get("extract") or None
    sheets = spec.get("sheets_export") or None
    export = spec.get("db_export") or None
    imported = spec.get("import") or None
    external = spec.get("external") or None
    return {
        "Id": ref.number,
        "MaestroId": ref.table_id,
        "UserId": spec.get("owner_id"),
        "GroupId": spec.get("group_id"),
        "Name": ref.name,
        "Dataset": ref.dataset,
        "Project": spec.get("project"),
        "Description": spec.get("description", ""),
        "Query": spec.get("query") or (imported or {}).get("query", ""),
        "LegacySQL": bool(spec.get("legacy_sql")),
        "Disposition": "WRITE_APPEND" if spec.get("write_disposition") == "append" else "WRITE_TRUNCATE",
        "Partitioned": spec.get("partitioning") is not None,
        "Running": status.running,
        "Error": status.error or "",
        "Extract": extract is not None,
        "NotifyExtractUrl": (extract or {}).get("notify_url") or "",
        "SheetsExtract": sheets is not None,
        "SheetId": (sheets or {}).get("sheet_id") or "",
        "ExportDbId": (export or {}).get("database"),
        "ExportTableName": (export or {}).get("table") or "",
        "FreqId": spec.get("frequency_id"),
        "Conditions": spec.get("conditions") or [],
        "ExternalTmout": int((external or {}).get("wait_timeout") or 0),
        "ExternalFormat": _SOURCE_FORMATS.get((external or {}).get("format", ""), ""),
        "ImportDbId": (imported or {}).get("source_database"),
        "IdColumn": (imported or {}).get("id_column") or "",
        "ReimportCond": (imported or {}).get("reimport_conditions") or [],
        "CreatedAt": go_time(ref.created_at),
        "DeletedAt": None,
        "LastOkRunEndAt": go_time(status.last_ok_at),
        "Kind": ref.kind,
        "Deleted": ref.deleted,
    }


def table_status(ref: TableRef, status: TableStatus) -> dict[str, Any]:
    """``GET /table/{id}/status``: ``Status`` is "running", "error" or ""."""
    code = "running" if status.running else "error" if status.state == "failed" else ""
    return {
        "Id": ref.number,
        "Status": code,
        "Error": status.error or "",
        "LastOkRunEndAt": go_time(status.last_ok_at),
    }


def extracts(found: dict[str, Any] | None) -> dict[str, Any]:
    """``Extracts`` of ``GET /table/{id}``: the latest extract's signed URLs (none: an empty list,
    which the original client reports as "No GCS extracts found")."""
    if found is None:
        return {"Id": None, "StartTime": ZERO_TIME, "URLs": []}
    finished = dt.datetime.fromisoformat(found["finished_at"]) if found.get("finished_at") else None
    return {"Id": found["job_id"], "StartTime": go_time(finished), "URLs": [f["url"] for f in found["files"]]}


def run(row: Any, total_bytes: int) -> dict[str, Any]:
    """A ``model.Run`` of ``GET /runs``."""
    return {
        "Id": row["run_id"],
        "UserId": row["planned_by"],
        "CreatedAt": go_time(row["planned_at"]),
        "StartTime": go_time(row["planned_at"]),
        "EndTime": go_time(row["finished_at"]) if row["finished_at"] else None,
        "Error": row["reason"] or ("" if row["status"] != "failed" else "the run failed"),
        "FreqId": row["frequency_id"],
        "FreqName": row["frequency_name"] or "",
        "TotalBytes": total_bytes,
        "Status": row["status"],
    }
