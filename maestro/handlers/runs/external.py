"""An external table in a run: wait for its upload to be loaded, up to its timeout.

The wait began when its ``JobPlanned`` was recorded. The table's node succeeds when a load of the
table (``POST /tables/{id}/load``, maestro.handlers.runs.uploads) *ends* after that -- one
submitted before the wait began and still running then counts -- and fails with that load's
error when the first such load fails. With no load by ``planned + wait_timeout`` it fails with
reason ``timeout`` (the runner then skips its descendants as ``upstream_failed``); a cancelled run
ends the wait at once. "After" is by log position (the load's outcome event against the wait's
plan), not by clocks, and the deadline is from the plan's time, so a wait resumed by recovery
after ``kill -9`` keeps both its start and its deadline.

The wait wakes on appends to the log (this process's at once, other processes' by NOTIFY) and
looks at least every second, at most every ``MIN_GAP``: one indexed query on ``jobs``. Reads go
through ``runner._db``, so a database blip delays the wait and never ends it wrongly; a longer
outage restarts the runner, whose recovery resumes it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from maestro.events.runs import JobConfig, JobStatistics
from maestro.events.signals import wait_for_wakeup
from maestro.handlers.runs.executor import Outcome

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

POLL = 1.0  # seconds between looks without a wake-up
MIN_GAP = 0.2  # seconds between looks however busy the log is
# A load's outcome is looked for among loads that finished at most this long before the wait
# began (by the clock, generous for skew); the log position then decides exactly.
CLOCK_MARGIN = "1 hour"

_FIRST_LOAD_AFTER = f"""
SELECT j.job_id, j.state, j.error, j.reason, e.position
FROM jobs j JOIN events e ON e.stream_id = 'job-' || j.job_id AND e.type IN ('JobSucceeded', 'JobFailed')
WHERE j.table_id = $1 AND j.kind = 'load' AND j.config->>'import_job_id' IS NULL
  AND j.state IN ('succeeded', 'failed') AND j.finished_at >= $3::timestamptz - interval '{CLOCK_MARGIN}'
  AND e.position > $2
ORDER BY e.position LIMIT 1
"""


def _name(config: JobConfig) -> str:
    return ".".join(config.destination.split(".")[-2:])


async def wait_external(
    runner: Runner, job_id: str, run_id: str | None, table_id: str, config: JobConfig, *,
    planned_at: float | None, cancelled: Callable[[], bool],
) -> Outcome:
    plan = await runner._db(lambda: runner.pool.fetchrow(
        "SELECT position, occurred_at FROM events WHERE stream_id = $1 AND version = 1", f"job-{job_id}"))
    if plan is None:  # the runner appends the plan before it starts the wait
        return Outcome("failed", reason="internal", message=f"the wait {job_id} has no JobPlanned")
    seconds = runner.config.external_wait_override or config.wait_timeout
    deadline = (planned_at if planned_at is not None else plan["occurred_at"].timestamp()) + seconds
    wakeup = await runner.store.signals.register()
    try:
        while True:
            if cancelled():
                return Outcome("cancelled", reason="cancelled", message="the run was cancelled while waiting for the upload")
            wakeup.clear()
            looked = time.monotonic()
            load = await runner._db(lambda: runner.pool.fetchrow(
                _FIRST_LOAD_AFTER, table_id, plan["position"], plan["occurred_at"]))
            if load is not None:
                return _outcome(load, config)
            remaining = deadline - time.time()
            if remaining <= 0:
                return Outcome("failed", reason="timeout", message=(
                    f"no upload was loaded into {_name(config)} within {seconds:.0f} s"))
            await wait_for_wakeup(wakeup, min(POLL, remaining), runner._stop)
            gap = MIN_GAP - (time.monotonic() - looked)
            if gap > 0:
                await asyncio.sleep(min(gap, max(deadline - time.time(), 0.0)))
    finally:
        runner.store.signals.unregister(wakeup)


def _outcome(load: Any, config: JobConfig) -> Outcome:
    if load["state"] == "succeeded":
        # A wait bills nothing; JobSucceeded carries statistics, so they are zero.
        return Outcome("succeeded", JobStatistics())
    return Outcome("failed", reason=load["reason"] or "load_failed", message=(
        f"the load {load['job_id']} into {_name(config)} failed: {load['error']}"))
