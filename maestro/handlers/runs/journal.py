"""How the runner writes to the log: who and why on every event, and appends that wait out a
database blip without ever recording a step twice.

After a blip the first try of an append may have landed without our knowing (the commit happened,
the answer was lost). Every runner append is to a stream at a known version (or a job's outcome,
which a stream takes once), so a conflict on the retry means the first try landed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from maestro.errors import ConcurrencyConflict, database_unavailable
from maestro.events.model import Metadata
from maestro.events.runs import JobPlanned, JobSkipped
from maestro.events.store import NO_STREAM, EventStore

ACTOR = "system:runner"
OUTCOMES = ["JobSucceeded", "JobFailed", "JobCancelled"]


def metadata(stream: str, event: Any, correlation_id: str | None) -> Metadata:
    """Who and why: the runner, within the run's correlation, caused by the run's plan (a job's
    first event) or by the job's own plan (everything after it)."""
    run_id = getattr(event, "run_id", None)
    if stream.startswith("job-") and not isinstance(event, (JobPlanned, JobSkipped)):
        causation = f"{stream}@1"
    else:
        causation = f"run-{run_id}@1" if run_id else None
    if correlation_id:
        return Metadata(actor=ACTOR, correlation_id=correlation_id, causation_id=causation)
    return Metadata(actor=ACTOR, causation_id=causation)


async def through_blips(
    call: Callable[[], Awaitable[Any]], *, stopping: Callable[[], bool],
    down: Callable[[BaseException], None],
) -> Any:
    """``call()``, retried with backoff while PostgreSQL is unreachable (the runner's follow loop
    restarts it from the log after a longer outage); any other error is raised."""
    delay = 0.2
    while True:
        try:
            return await call()
        except Exception as exc:
            if not database_unavailable(exc) or stopping():
                raise
            down(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def append_through_blips(
    store: EventStore, stream: str, expected: int, event: Any, meta: Metadata, *,
    conflict_ok: bool = False, once: bool = False, stopping: Callable[[], bool],
    down: Callable[[BaseException], None],
) -> None:
    """Append one event, waiting out a blip. ``conflict_ok``: a stream already there is fine
    (skips). ``once``: a job's outcome; if its stream already holds one (another leader's, or our
    own first try), nothing is appended."""
    retried = False

    async def attempt() -> None:
        nonlocal retried
        try:
            if once:
                # Read the version with the check and append at it: two writers racing to record
                # the same job's outcome conflict instead of both landing.
                row = await store.pool.fetchrow(
                    "SELECT max(version) AS version, bool_or(type = ANY($2)) AS done FROM events "
                    "WHERE stream_id = $1", stream, OUTCOMES,
                )
                if row["done"]:
                    return
                await store.append(stream, row["version"] if row["version"] is not None else NO_STREAM, [event], meta)
                return
            await store.append(stream, expected, [event], meta)
        except ConcurrencyConflict:
            if once:
                return await attempt()  # look again: someone recorded something meanwhile
            if not (conflict_ok or retried):
                raise
        except Exception as exc:
            if database_unavailable(exc):
                retried = True
            raise

    await through_blips(attempt, stopping=stopping, down=down)
