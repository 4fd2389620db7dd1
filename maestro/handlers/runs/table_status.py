"""What a table is doing, as one answer: running, failed, or fine, and when it last succeeded.

The original Maestro kept a ``running`` flag, an ``error`` text and ``last_ok_run_end_at`` on each
table row (reference §2) and cleared the error when a new run started. Here the same three facts
are read from the runs projection (``run_tables`` and ``jobs``): a table's *latest activity* is the
most recent of its run entries (a frequency's run, or "run this table now") and its ad-hoc loads
(``POST /tables/{id}/load``, which belong to no run). That activity decides:

- ``running``: it is under way (a job planned, submitted or extracting; an external table waiting
  for its upload). A table still *pending* in a run (its parents have not finished) is not
  running yet, as in the original;
- ``failed``: it ended without the table succeeding -- its job failed, or it was skipped because an
  upstream table failed, or cancelled: a caller waiting for the table's next success must stop;
- ``succeeded``: it succeeded; ``idle``: the table has never been run.

``last_ok_at`` is when the table last succeeded, by either path. BigQuery names the place of a SQL
error in its message ("... at [3:15]"); :func:`error_location` reads it back.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

ACTIVE = ("planned", "running", "extracting", "exporting")
ENDED_BADLY = ("failed", "skipped", "cancelled")
_LOCATION = re.compile(r"\[(\d+):(\d+)\]")

State = Literal["running", "failed", "succeeded", "idle"]

# Each table's run entries and ad-hoc loads; the newest decides (DISTINCT ON keeps it).
_ACTIVITY = """
SELECT table_id, updated_at AS at, state, error, run_id, job_id FROM run_tables
WHERE table_id = ANY($1) AND state <> 'pending'
UNION ALL
SELECT table_id, coalesce(finished_at, submitted_at, planned_at), state, error, NULL, job_id FROM jobs
WHERE table_id = ANY($1) AND run_id IS NULL AND kind = 'load' AND config->>'import_job_id' IS NULL
"""
_LATEST = f"SELECT DISTINCT ON (table_id) * FROM ({_ACTIVITY}) a ORDER BY table_id, at DESC"
_LAST_OK = f"SELECT table_id, max(at) AS at FROM ({_ACTIVITY}) a WHERE state = 'succeeded' GROUP BY table_id"


@dataclass(frozen=True, slots=True)
class TableStatus:
    state: State
    error: str | None
    last_ok_at: dt.datetime | None
    run_id: str | None
    job_id: str | None
    at: dt.datetime | None  # of the latest activity

    @property
    def running(self) -> bool:
        return self.state == "running"

    def to_dict(self) -> dict[str, Any]:
        line_column = error_location(self.error)
        return {
            "state": self.state,
            "running": self.running,
            "error": self.error,
            "error_location": {"line": line_column[0], "column": line_column[1]} if line_column else None,
            "last_ok_at": self.last_ok_at.isoformat() if self.last_ok_at else None,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "at": self.at.isoformat() if self.at else None,
        }


def error_location(message: str | None) -> tuple[int, int] | None:
    """(line, column) of a BigQuery SQL error, from the ``[line:column]`` its message ends with.

    >>> error_location("Syntax error: Unexpected identifier \\"FRM\\" at [2:3]")
    (2, 3)
    >>> error_location("Access Denied") is None
    True
    """
    found = _LOCATION.findall(message or "")
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def _state(row: Any) -> State:
    if row is None:
        return "idle"
    if row["state"] in ENDED_BADLY:
        return "failed"
    if row["state"] == "succeeded":
        return "succeeded"
    return "running"  # planned, submitted, running, extracting, ... : under way


async def table_statuses(pool: Any, table_ids: list[str]) -> dict[str, TableStatus]:
    """The status of each table in ``table_ids`` (two queries, however many tables)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        # One snapshot: the latest activity and the last success agree with each other.
        latest = {r["table_id"]: r for r in await conn.fetch(_LATEST, table_ids)}
        last_ok = {r["table_id"]: r["at"] for r in await conn.fetch(_LAST_OK, table_ids)}
    return {tid: _status(latest.get(tid), last_ok.get(tid)) for tid in table_ids}


async def table_status(pool: Any, table_id: str) -> TableStatus:
    return (await table_statuses(pool, [table_id]))[table_id]


def _status(latest: Any, last_ok: dt.datetime | None) -> TableStatus:
    state = _state(latest)
    if latest is None:
        return TableStatus(state, None, last_ok, None, None, None)
    error = (latest["error"] or f"the table's last run ended {latest['state']}") if state == "failed" else None
    return TableStatus(state, error, last_ok, latest["run_id"], latest["job_id"], latest["at"])
