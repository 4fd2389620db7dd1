"""A run's steps after its tables' jobs: each delivery of the run (a completion callback, a
Sheets or database export) as a step of its table, with its own state and error.

A failed step is the table's step failing, not the table's job nor the run: the tables that do
not depend on it are untouched (deliveries never gate a run), and the run's status says what its
BigQuery work did. Every kind of delivery appears here without a change: a step is a row of the
``deliveries`` read model with the run's id — except Slack messages, which carry the run's id (to
find the run's message again) but are about the run, not a step of one of its tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


async def run_steps(pool: Any, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """table id -> its steps in the order they were planned."""
    rows = await pool.fetch(
        "SELECT delivery_id, kind, table_id, target, state, chain, attempts, last_status, last_error, reason, "
        "next_attempt_at, updated_at FROM deliveries WHERE run_id = $1 AND kind <> 'slack' "
        "ORDER BY planned_at, delivery_id",
        run_id,
    )
    steps: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        steps.setdefault(r["table_id"], []).append({
            "delivery_id": r["delivery_id"], "kind": r["kind"], "target": r["target"],
            "state": r["state"], "attempts": r["attempts"], "chain": r["chain"],
            "status_code": r["last_status"], "error": r["last_error"] if r["state"] != "succeeded" else None,
            "reason": r["reason"], "next_attempt_at": _iso(r["next_attempt_at"]), "updated_at": _iso(r["updated_at"]),
        })
    return steps


async def open_steps(pool: Any, run_id: str) -> int:
    """Steps of the run still to end: deliveries not yet succeeded or failed, and callbacks and
    exports due (an extract of the run succeeded for a table with a ``notify_url`` or a
    ``db_export``, a query for a table with a ``sheets_export``) but not planned yet — the
    reactors plan them a moment after the job, possibly after the run's end. A callback or an
    export counts as due for ten minutes after its job: one that is never planned — its extract
    succeeded before the callbacks reactor existed, this Maestro runs no reactors, or (exports)
    the table's export was added after an old run — must not keep the run's stream open for ever."""
    return await pool.fetchval(
        "SELECT (SELECT count(*) FROM deliveries WHERE run_id = $1 AND kind <> 'slack' "
        "AND state IN ('pending', 'retrying')) + "
        "(SELECT count(*) FROM jobs j JOIN run_tables rt ON rt.run_id = j.run_id AND rt.table_id = j.table_id "
        " WHERE j.run_id = $1 AND j.kind = 'extract' AND j.state = 'succeeded' "
        " AND rt.extract->>'notify_url' IS NOT NULL AND j.finished_at > now() - interval '10 minutes' "
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.job_id AND d.kind = 'callback')) + "
        "(SELECT count(*) FROM jobs j JOIN catalog_tables c ON c.table_id = j.table_id "
        " CROSS JOIN LATERAL (VALUES ('sheets', 'query', 'sheets_export'), ('db_export', 'extract', 'db_export')) "
        "   AS k(kind, job_kind, setting) "
        " WHERE j.run_id = $1 AND j.kind = k.job_kind AND j.state = 'succeeded' AND NOT c.deleted "
        " AND jsonb_typeof(c.spec -> k.setting) = 'object' AND j.finished_at > now() - interval '10 minutes' "
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.job_id AND d.kind = k.kind))",
        run_id,
    )


async def last_step_position(pool: Any, run_id: str) -> int | None:
    """The position of the last event of the run's deliveries (None: it has none)."""
    return await pool.fetchval(
        "SELECT max(position) FROM events WHERE stream_id IN "
        "(SELECT 'delivery-' || delivery_id FROM deliveries WHERE run_id = $1 AND kind <> 'slack')",
        run_id,
    )
