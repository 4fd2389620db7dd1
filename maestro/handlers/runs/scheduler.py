"""The scheduler: no cron daemon, just a tick that plans each frequency's due slot.

Every ``tick`` seconds it reads the active frequencies and the latest slot each has started, asks
``maestro.scheduling.due_slots`` what is owed, and plans those runs. A slot's run lives in a stream
named after the frequency and the slot, so when two ``maestro serve`` processes decide the same
slot one of them finds the stream taken: exactly one run per slot, with no lock between them.

A slot that comes while the frequency's previous run still runs follows the frequency's
``overlap`` policy (skip, queue or allow; maestro/handlers/runs/overlap.py). Each tick first
releases the queued runs whose blocker has finished, then decides the due slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging

import orjson

from maestro.errors import ConcurrencyConflict
from maestro.events.catalog import FrequencySpec
from maestro.events.model import Metadata
from maestro.events.runs import FrequencyUnschedulable
from maestro.events.store import NO_STREAM
from maestro.handlers.runs.overlap import decide_slot, release_queued
from maestro.handlers.runs.service import RunService
from maestro.health import Health
from maestro.scheduling import Schedule, due_slots, slot_at_or_before

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, runs: RunService, *, tick: float = 1.0, health: Health | None = None) -> None:
        self.runs = runs
        self.health = health or Health()
        self.pool = runs.pool
        self.tick_seconds = tick
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._created: dict[str, dt.datetime] = {}
        self.unschedulable: list[str] = []  # frequency ids the last tick could not schedule

    async def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Decide every slot that is due at ``now`` and release queued runs whose blocker ended.

        Returns the run ids this call decided (planned, queued or skipped) or released.
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        self.unschedulable = []
        started = []
        for released in await release_queued(self.runs):
            started.append(released.run_id)
            log.info("queued run " + released.outcome, extra={"run_id": released.run_id})
        rows = await self.pool.fetch(
            """
            SELECT f.frequency_id, f.spec::text, last.slot,
                   (SELECT min(occurred_at) FROM events e WHERE e.stream_id = 'frequency-' || f.frequency_id) AS created_at
            FROM catalog_frequencies f
            LEFT JOIN LATERAL (
                SELECT max(slot) AS slot FROM runs r WHERE r.frequency_id = f.frequency_id AND r.trigger = 'schedule'
            ) last ON true
            WHERE (f.spec->>'active')::boolean
            """
        )
        for row in rows:
            try:
                spec = FrequencySpec.model_validate(orjson.loads(row["spec"]))
                schedule = Schedule.from_spec(spec)
                # A frequency that never ran owes the slots after its creation, not before.
                last = row["slot"] or slot_at_or_before(schedule, row["created_at"])
                due = due_slots(schedule, last, now, spec.missed)
            except Exception as exc:  # one frequency that cannot be scheduled must not stop the others
                log.exception("frequency cannot be scheduled", extra={"frequency_id": row["frequency_id"]})
                self.unschedulable.append(row["frequency_id"])
                await self._record_unschedulable(row["frequency_id"], row["spec"], exc)
                continue
            for slot in due:
                try:
                    decision = await decide_slot(
                        self.runs, row["frequency_id"], slot, spec.overlap,
                        # A fresh correlation per slot: each run is its own causal chain.
                        Metadata(actor="system:scheduler"),
                    )
                except Exception:
                    # Tried again at the next tick (the slot stays owed); health says so meanwhile.
                    log.exception("could not plan a run", extra={"frequency_id": row["frequency_id"]})
                    self.unschedulable.append(row["frequency_id"])
                    continue
                if decision is not None:
                    started.append(decision.run_id)
                    log.info("run " + decision.outcome, extra={
                        "run_id": decision.run_id, "slot": slot.isoformat(), "blocking_run_id": decision.blocking_run_id,
                    })
        return started

    async def _record_unschedulable(self, frequency_id: str, spec: str, exc: Exception) -> None:
        """Once per distinct settings (the stream is named after them): the audit log says why
        the frequency does not run, not only the process log."""
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        event = FrequencyUnschedulable(frequency_id=frequency_id, reason=str(reason)[:2000])
        with contextlib.suppress(ConcurrencyConflict):
            await self.runs.store.append(
                f"schedule-{frequency_id}-{digest}", NO_STREAM, [event], Metadata(actor="system:scheduler")
            )

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
                if self.unschedulable:
                    self.health.down("scheduler", "frequencies that cannot be scheduled: "
                                     + ", ".join(self.unschedulable) + " (see the log)")
                else:
                    self.health.ok("scheduler")
            except Exception as exc:  # the next tick tries again (a database outage, say)
                self.health.down("scheduler", exc)
                log.exception("scheduler tick failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.tick_seconds)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
