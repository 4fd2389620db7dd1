"""Cost attribution (async): every job's bytes billed and slot-ms, to table, run, owner, group, day.

Owner and group come from the job's ``JobPlanned`` (the snapshot the run took), statistics from its
``JobSucceeded``, ``JobFailed`` or ``JobCancelled`` (a failed or cancelled query can bill too). The day is the UTC day the job
finished.
"""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.model import RecordedEvent
from maestro.events.runs import JobCancelled, JobFailed, JobPlanned, JobSucceeded
from maestro.events.store import Connection
from maestro.projections.base import Projection


class CostsProjection(Projection):
    name = "costs"
    mode = "async"
    event_types = frozenset({"JobPlanned", "JobSucceeded", "JobFailed", "JobCancelled"})
    tables = ("cost_jobs",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
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
                await conn.execute(
                    "UPDATE cost_jobs SET bytes_processed = $2, bytes_billed = $3, slot_ms = $4, "
                    "cache_hit = $5, day = ($6 AT TIME ZONE 'UTC')::date, finished_at = $6 WHERE job_id = $1",
                    e.job_id, s.total_bytes_processed, s.total_bytes_billed, s.total_slot_ms,
                    s.cache_hit, s.ended or r.occurred_at,
                )
