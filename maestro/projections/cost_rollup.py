"""The per-day cost sums (``cost_daily``), kept by the costs projection beside ``cost_jobs``.

A job counts once it has statistics and a day. When a job's statistics are recorded, the change
it makes to each sum is a delta: its old contribution (if it had one: a second outcome for the
same job replaces the first) out, its new one in. Deltas are summed over a batch of events and
written at the batch's end, in the batch's transaction, so the sums always equal a ``GROUP BY``
over ``cost_jobs`` — the same rows a rebuild from the log produces (a sum whose last job left it
is deleted, not kept at zero).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from maestro.events.store import Connection

# The dimensions with their own rows, and the cost_jobs column each is keyed by.
DIMENSIONS = {"user": "owner_id", "table": "table_id", "run": "run_id"}

# (dimension, day, key, group_id) -> [bytes_processed, bytes_billed, slot_ms, jobs]
Slot = tuple[str, dt.date, str | None, str | None]

# What the sums are, straight from the job rows: what tests compare with, the benchmark fills the
# table with, and sql/016_cost_rollup.sql ran once over the rows a database already had.
SUMS_OF_JOBS = """
SELECT d.dimension, c.day,
       CASE d.dimension WHEN 'user' THEN c.owner_id WHEN 'table' THEN c.table_id ELSE c.run_id END AS key,
       c.group_id, sum(c.bytes_processed)::bigint AS bytes_processed, sum(c.bytes_billed)::bigint AS bytes_billed,
       sum(c.slot_ms)::bigint AS slot_ms, count(*) AS jobs
FROM cost_jobs c CROSS JOIN (VALUES ('user'), ('table'), ('run')) AS d (dimension)
WHERE c.day IS NOT NULL
GROUP BY 1, 2, 3, 4
"""

_UPSERT = """
WITH d AS (
    SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::bigint[], $6::bigint[],
                         $7::bigint[], $8::bigint[])
        AS d (dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs)
), up AS (
    INSERT INTO cost_daily AS c (dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs)
    SELECT * FROM d
    ON CONFLICT (dimension, day, coalesce(key, ''), (key IS NULL), coalesce(group_id, ''), (group_id IS NULL))
    DO UPDATE SET bytes_processed = c.bytes_processed + excluded.bytes_processed,
                  bytes_billed = c.bytes_billed + excluded.bytes_billed,
                  slot_ms = c.slot_ms + excluded.slot_ms,
                  jobs = c.jobs + excluded.jobs
    RETURNING c.dimension, c.day, c.key, c.group_id, c.jobs
)
SELECT dimension, day, key, group_id FROM up WHERE jobs = 0
"""

# A statement cannot delete what its own INSERT wrote (one snapshot), hence a second one for the
# sums that a moved job emptied. It matches the unique index's expressions, so it uses it.
_DELETE_EMPTY = """
DELETE FROM cost_daily c USING unnest($1::text[], $2::date[], $3::text[], $4::text[]) AS z (dimension, day, key, group_id)
WHERE c.dimension = z.dimension AND c.day = z.day
  AND coalesce(c.key, '') = coalesce(z.key, '') AND (c.key IS NULL) = (z.key IS NULL)
  AND coalesce(c.group_id, '') = coalesce(z.group_id, '') AND (c.group_id IS NULL) = (z.group_id IS NULL)
  AND c.jobs = 0
"""


class Deltas:
    """The changes a batch makes to the sums, written once at its end."""

    def __init__(self) -> None:
        self._sums: defaultdict[Slot, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def add(self, job: Mapping[str, Any], day: dt.date, processed: int, billed: int, slot_ms: int, sign: int) -> None:
        """Count one job (``sign`` 1) or take it out (-1) on ``day``, in every dimension."""
        for dimension, column in DIMENSIONS.items():
            sums = self._sums[(dimension, day, job[column], job["group_id"])]
            sums[0] += sign * processed
            sums[1] += sign * billed
            sums[2] += sign * slot_ms
            sums[3] += sign

    async def write(self, conn: Connection) -> None:
        # A job whose outcome was replaced by an equal one changes nothing.
        changed = [(slot, sums) for slot, sums in self._sums.items() if any(sums)]
        self._sums.clear()
        if not changed:
            return
        columns = list(zip(*(slot + tuple(sums) for slot, sums in changed), strict=True))
        emptied = await conn.fetch(_UPSERT, *columns)
        if emptied:
            await conn.execute(_DELETE_EMPTY, *zip(*(tuple(r) for r in emptied), strict=True))
