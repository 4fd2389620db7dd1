"""A run's end: exactly one RunFinished per round of the run (its plan, or a retry of it)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from maestro.errors import ConcurrencyConflict
from maestro.events.runs import RunFinished
from maestro.events.store import NO_STREAM
from maestro.handlers.runs.state import RunState

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger("maestro.handlers.runs.runner")


async def finish(runner: Runner, run: RunState) -> None:
    """Record the run's one RunFinished. The run's stream is read first: a cancel that landed
    meanwhile is taken into account (the append would conflict), and a RunFinished already
    recorded for this attempt of the run (by another leader) is not repeated."""
    counts: dict[str, int] = {}
    for t in run.tables.values():
        counts[t.state] = counts.get(t.state, 0) + 1
    stream = f"run-{run.run_id}"
    while True:
        events = await runner._db(lambda: runner.store.read(stream))
        starts = [i for i, e in enumerate(events) if e.type in ("RunPlanned", "RunRetryRequested")]
        since = events[starts[-1] + 1:] if starts else events
        if any(e.type == "RunFinished" for e in since):
            break
        cancelled = run.cancel_requested or any(e.type == "RunCancelRequested" for e in since)
        if all(t.state == "succeeded" for t in run.tables.values()):
            status = "succeeded"  # a cancel that came too late to stop anything
        else:
            status = "cancelled" if cancelled else "failed"
        event = RunFinished(run_id=run.run_id, status=status, counts=counts)  # type: ignore[arg-type]
        expected = events[-1].version if events else NO_STREAM
        try:
            # Not through _append: after a blip, a conflict here may be a cancel that landed,
            # not our own first try. Reading the stream again tells which.
            await runner._db(lambda: runner.store.append(stream, expected, [event], runner._metadata(stream, event)))
        except ConcurrencyConflict:
            continue  # something landed in between: look again
        log.info("run finished", extra={"run_id": run.run_id, "status": status, "counts": counts})
        break
