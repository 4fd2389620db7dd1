"""Overlapping runs: what a frequency's due slot does while the frequency's previous run still runs.

The frequency's ``overlap`` policy decides, and every decision is an event:

- ``allow``: the slot is planned (``RunPlanned``) as it always was; runs may go side by side.
- ``skip`` (the default): the slot does not run; ``RunSkipped(reason="overlap", blocking_run_id)``.
- ``queue``: ``RunQueued(blocking_run_id)``; nothing is planned yet. Once no run of the frequency
  is going, the scheduler *releases* it: it plans the slot then and appends its ``RunPlanned`` to
  the same stream, which the runner follows like any other plan — the runner needs to know nothing
  about queues. At most one slot waits: a slot that comes while one is queued is skipped behind
  it, so a frequency whose runs last longer than its period does not pile up a backlog that never
  drains (each queued run would start the next as soon as it ends, forever behind).

"Going" means a run of the frequency in status ``running``, scheduled or manual (both run the same
tables). Manual runs are never held: ``POST /api/v1/runs`` and ``/tables/{id}/run`` plan at once.

Each decision is the first event of the slot's own stream (``run-<frequency>-<slot>``, appended
with NO_STREAM), so two schedulers that decide the same slot — even differently, one seeing the
blocker still running and the other not — record exactly one decision. A release appends at
version 1, right after the ``RunQueued``: two releases, or a release and a cancel, record one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Literal

from maestro.errors import ConcurrencyConflict
from maestro.events.model import Event, Metadata
from maestro.events.runs import RunQueued, RunSkipped
from maestro.events.store import NO_STREAM
from maestro.handlers.runs.service import RunService, run_stream, running_run
from maestro.scheduling import run_id_for

log = logging.getLogger(__name__)

Policy = Literal["skip", "queue", "allow"]
ACTOR = "system:scheduler"


@dataclass(frozen=True, slots=True)
class SlotDecision:
    run_id: str
    outcome: Literal["planned", "queued", "skipped", "released"]
    blocking_run_id: str | None = None


async def queued_run(pool, frequency_id: str) -> str | None:
    """The frequency's run that waits to start, if any."""
    return await pool.fetchval(
        "SELECT run_id FROM runs WHERE frequency_id = $1 AND status = 'queued' ORDER BY slot LIMIT 1",
        frequency_id,
    )


async def decide_slot(
    runs: RunService, frequency_id: str, slot: dt.datetime, policy: Policy, actor: Metadata
) -> SlotDecision | None:
    """Plan, queue or skip a due slot. None: the slot was already decided (another scheduler)."""
    run_id = run_id_for(frequency_id, slot)
    going = waiting = None
    if policy != "allow":
        going = await running_run(runs.pool, frequency_id)
        waiting = await queued_run(runs.pool, frequency_id)
    if going is None and waiting is None:
        _, created = await runs.plan_frequency(frequency_id, slot=slot, trigger="schedule", actor=actor)
        return SlotDecision(run_id, "planned") if created else None
    if policy == "queue" and waiting is None:
        assert going is not None
        event: Event = RunQueued(run_id=run_id, frequency_id=frequency_id, slot=slot, blocking_run_id=going)
        decision = SlotDecision(run_id, "queued", going)
    else:
        blocker = going if policy == "skip" and going is not None else waiting
        detail = f"run {blocker} is already queued" if blocker == waiting else f"run {blocker} was still running"
        event = RunSkipped(
            run_id=run_id, frequency_id=frequency_id, slot=slot, reason="overlap",
            blocking_run_id=blocker, detail=detail,
        )
        decision = SlotDecision(run_id, "skipped", blocker)
    try:
        await runs.store.append(run_stream(run_id), NO_STREAM, [event], actor)
    except ConcurrencyConflict:
        return None
    return decision


async def release_queued(runs: RunService) -> list[SlotDecision]:
    """Start each frequency's oldest queued run once none of the frequency's runs is going."""
    rows = await runs.pool.fetch(
        """
        SELECT DISTINCT ON (q.frequency_id) q.run_id, q.frequency_id, q.slot
        FROM runs q
        WHERE q.status = 'queued'
          AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.frequency_id = q.frequency_id AND r.status = 'running')
        ORDER BY q.frequency_id, q.slot
        """
    )
    released = []
    for row in rows:
        try:
            decision = await _release(runs, row["run_id"], row["frequency_id"], row["slot"])
        except Exception:
            log.exception("could not release a queued run", extra={"run_id": row["run_id"]})
            continue
        if decision is not None:
            released.append(decision)
    return released


async def _release(runs: RunService, run_id: str, frequency_id: str, slot: dt.datetime) -> SlotDecision | None:
    queued = (await runs.store.read(run_stream(run_id)))[0]
    # The plan continues the queued slot's causal chain: same correlation, caused by the RunQueued.
    actor = Metadata(actor=ACTOR, correlation_id=queued.metadata.correlation_id, causation_id=queued.event_id)
    blocker = getattr(queued.event, "blocking_run_id", None)
    if not (await runs.frequency(frequency_id))["active"]:
        event = RunSkipped(
            run_id=run_id, frequency_id=frequency_id, slot=slot, reason="inactive", blocking_run_id=blocker,
            detail="the frequency was deactivated while the run was queued",
        )
        try:
            await runs.store.append(run_stream(run_id), 1, [event], actor)
        except ConcurrencyConflict:
            return None
        return SlotDecision(run_id, "skipped", blocker)
    _, created = await runs.plan_frequency(frequency_id, slot=slot, trigger="schedule", actor=actor, expected=1)
    return SlotDecision(run_id, "released", blocker) if created else None
