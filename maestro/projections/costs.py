"""Cost attribution (async): every job's bytes billed and slot-ms, to table, run, owner, group, day.

Owner and group come from the job's ``JobPlanned`` (the snapshot the run took), statistics from its
``JobSucceeded``, ``JobFailed`` or ``JobCancelled`` (a failed or cancelled query can bill too). The day is the UTC day the job
finished. The per-day sums the cost reports read (``cost_daily``, maestro/projections/cost_rollup.py)
change in the same transaction as the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.model import RecordedEvent
from maestro.events.runs import JobCancelled, JobFailed, JobPlanned, JobSucceeded
from maestro.events.store import Connection
from maestro.projections.base import Projection
from maestro.projections.cost_rollup import Deltas

# The row before and after, in one statement: the self-join reads the version the UPDATE replaces.
_RECORD_STATISTICS = (
    "UPDATE cost_jobs c SET bytes_processed = $2, bytes_billed = $3, slot_ms = $4, cache_hit = $5, "
    "day = ($6 AT TIME ZONE 'UTC')::date, finished_at = $6 FROM cost_jobs o WHERE c.job_id = $1 AND o.job_id = $1 "
    "RETURNING c.table_id, c.run_id, c.owner_id, c.group_id, c.day, o.day AS old_day, "
    "o.bytes_processed AS old_processed, o.bytes_billed AS old_billed, o.slot_ms AS old_slot_ms"
)


class CostsProjection(Projection):
    name = "costs"
    mode = "async"
    event_types = frozenset({"JobPlanned", "JobSucceeded", "JobFailed", "JobCancelled"})
    tables = ("cost_jobs", "cost_daily")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        deltas = Deltas()
        for r in events:
            e = r.event
            if isinstance(e, JobPlanned):
                await conn.execute(
                    "INSERT INTO cost_jobs (job_id, table_id, run_id, owner_id, group_id) "
                    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id) DO NOTHING",
                    e.job_id, e.table_id, e.run_id, e.owner_id, e.group_id,
                )
            elif isinstance(e, (JobSucceeded, JobFailed, JobCancelled)) and e.statistics is not None:
                s = e.statistics
                job = await conn.fetchrow(
                    _RECORD_STATISTICS, e.job_id, s.total_bytes_processed, s.total_bytes_billed, s.total_slot_ms,
                    s.cache_hit, s.ended or r.occurred_at,
                )
                if job is None:
                    continue  # an outcome without its JobPlanned: no row, so nothing to bill
                if job["old_day"] is not None:  # a second outcome for the job replaces the first
                    deltas.add(job, job["old_day"], job["old_processed"], job["old_billed"], job["old_slot_ms"], -1)
                deltas.add(job, job["day"], s.total_bytes_processed, s.total_bytes_billed, s.total_slot_ms, 1)
        await deltas.write(conn)
