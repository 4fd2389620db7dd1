"""A job task of the runner never dies silently: whatever it raises, its table fails with the
reason, its slot is given back and the run goes on to its end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from maestro.errors import database_unavailable
from maestro.events.runs import JobFailed
from maestro.events.store import ANY_VERSION
from maestro.handlers.runs.executor import failure
from maestro.handlers.runs.follow import COMPONENT
from maestro.handlers.runs.state import RunState, Slot, TableState

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger("maestro.handlers.runs.runner")


async def guarded(runner: Runner, coro, run: RunState | None, table: TableState | None, slot: Slot) -> None:
    """A job task never dies silently: whatever it raises, its table fails with the reason,
    its slot is given back and the run goes on to its end."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if runner._stop.is_set():
            return
        if database_unavailable(exc):  # recovery redoes what was not recorded
            log.warning("job task lost the database", extra={"error": str(exc)})
            runner.broken.set()
            return
        log.exception("runner task failed; failing its job")
        slot.release()
        if run is None or table is None:
            runner._dispatch()
            return
        if table.state not in ("running", "extracting"):
            # It failed deciding what follows, not running a job: start over from the log.
            runner.health.down(COMPONENT, exc)
            runner.broken.set()
            return
        outcome = failure(exc)
        if table.job_id is not None:
            with contextlib.suppress(Exception):
                await runner._append(f"job-{table.job_id}", ANY_VERSION, JobFailed(
                    job_id=table.job_id, run_id=run.run_id, table_id=table.table_id,
                    reason=outcome.reason, message=outcome.message, retryable=False,
                ), once=True)
        run.moved(table, "failed")
        await runner.advance(run)
