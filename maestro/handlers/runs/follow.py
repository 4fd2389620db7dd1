"""The runner following the log: plans, retries and cancels of runs, from the safe position;
and loads planned outside runs (``POST /tables/{id}/load``): executed when planned, their sources
deleted when they end (maestro.handlers.runs.loads).

Events already reflected in what start-up loaded are recognised: a run already in memory (loaded
with this event in it), a run no longer running (an event replayed from before its end), a load
recovery re-attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from maestro.errors import database_unavailable
from maestro.events.model import RecordedEvent
from maestro.handlers.runs import loads
from maestro.handlers.runs.recovery import load_run

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger("maestro.handlers.runs.runner")
COMPONENT = "runner"
FOLLOWED = ["RunPlanned", "RunCancelRequested", "RunRetryRequested", "JobPlanned", *loads.OUTCOMES]


async def follow(runner: Runner, position: int) -> None:
    """Follow the run events from ``position``; a lost database marks the runner broken (its
    supervisor restarts it, which recovers from the log), any other error is retried."""
    delay = 0.5
    while not runner._stop.is_set():
        try:
            async for event in runner.store.subscribe(
                position, types=FOLLOWED, stop=runner._stop, on_read=lambda: runner.health.ok(COMPONENT, "leader")
            ):
                await _handle(runner, event)
                position = event.position
                delay = 0.5
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            runner.health.down(COMPONENT, exc)
            if database_unavailable(exc):
                # What failed to be recorded is not in memory either: start over from the log.
                log.warning("runner lost the database; restarting from the log", extra={"error": str(exc)})
                runner.broken.set()
                return
            log.exception("runner follow loop failed; resuming", extra={"position": position})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runner._stop.wait(), timeout=delay)
            delay = min(delay * 2, 10.0)

async def _handle(runner: Runner, event: RecordedEvent) -> None:
    run_id = event.event.run_id  # type: ignore[attr-defined]
    try:
        if event.type == "JobPlanned":
            await loads.on_planned(runner, event)
        elif event.type in loads.OUTCOMES:
            await loads.on_outcome(runner, event)
        elif event.type in ("RunPlanned", "RunRetryRequested"):
            run = runner.runs.get(run_id)
            if run is not None and run.finishing and event.type == "RunRetryRequested":
                await run.done.wait()  # the retry came right after the end: load it anew
                run = None
            if run is None:  # else: loaded at start-up, already with this event in it
                run = await load_run(runner, run_id)
                if run is not None:
                    await runner.advance(run)
        elif event.type == "RunCancelRequested" and run_id in runner.runs:
            await runner.cancel(runner.runs[run_id])
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if database_unavailable(exc):
            raise
        # Memory may now disagree with the log: start over from it rather than leave the
        # run hanging (the supervisor restarts the runner, which recovers).
        log.exception("runner failed to handle event; restarting from the log",
                      extra={"run_id": run_id, "type": event.type})
        runner.health.down(COMPONENT, exc)
        runner.broken.set()
