"""What both target adapters share: the table written, the outcome, and the names derived from
the export id (so that a retry finds what an earlier attempt of the same export left)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

MARKER_TABLE = "_maestro_exports"  # one row per finished export, in the target (exactly once)
MARKER_DAYS = 30  # how long a finished export is remembered there


@dataclass(frozen=True, slots=True)
class TargetTable:
    name: str
    schema: str | None = None  # PostgreSQL: the schema (None: the connection's current schema)


@dataclass(frozen=True, slots=True)
class Written:
    rows: int
    already_done: bool  # the target had recorded this export as finished: nothing was written


def _digest(export_id: str) -> str:
    return hashlib.sha256(export_id.encode()).hexdigest()[:20]


def staging_name(export_id: str) -> str:
    """The export's staging table: derived from its id alone, short enough for any target.

    >>> staging_name("run-1/table-2")
    '_maestro_stage_ba5763347776136b5c92'
    """
    return f"_maestro_stage_{_digest(export_id)}"


def retired_name(export_id: str) -> str:
    """Where a MySQL replace export moves the previous table in its atomic RENAME."""
    return f"_maestro_old_{_digest(export_id)}"


def no_key_message(table: str, keys: list[str]) -> str:
    return (f"{table} has no primary key or unique index on ({', '.join(keys)}): an upsert export needs "
            "one (a replace export with key_columns creates the table with that primary key)")
