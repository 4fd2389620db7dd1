"""The dispatcher: makes every delivery's attempts when they are due, and records each one.

It is a reactor itself (``deliveries``): it follows ``DeliveryPlanned`` and
``DeliveryRedeliveryRequested`` — whichever process appended them — and keeps a timetable of what
is due. At ``resume`` (every start and after an outage) it re-reads the open deliveries from the
read model and folds their streams, so a retry due in three hours is still due in three hours after
a restart. An attempt is recorded after it is made, with the expected version of the delivery's
stream: a second dispatcher (a replica that still thinks it leads) gets a conflict and re-reads,
and the receiver, which sees the same ``webhook-id`` on every attempt, can drop a repeat. A crash
between the attempt and its event means that attempt is made again: at least once on the wire,
exactly once in the log.

A failure that is not the database's (a bug in folding, deciding or recording) must not turn
"at least once" into "once a second forever": after an attempt was made, such a failure ends the
delivery with ``DeliveryFailed(reason="invalid")``; when even that cannot be recorded (or the
stream cannot be read), the delivery is looked at again with an exponential backoff and
``deliveries:attempts`` is down in ``/healthz`` until that delivery is handled again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import logging
import random
from collections.abc import Callable, Mapping

from maestro.errors import ConcurrencyConflict, database_unavailable
from maestro.events.deliveries import (
    DeliveryAttempted,
    DeliveryFailed,
    DeliverySucceeded,
    delivery_stream,
)
from maestro.events.model import Event, Metadata, RecordedEvent, now
from maestro.events.store import ANY_VERSION, EventStore
from maestro.health import Health
from maestro.handlers.notify.delivery import DeliveryState, Outcome, Sender
from maestro.handlers.notify.reactor import Reactor
from maestro.handlers.notify.schedule import next_attempt_at

log = logging.getLogger(__name__)
ACTOR = "system:deliveries"
# Its own /healthz entry: the host's "reactor:deliveries" says whether the log is followed (and is
# set ok on every read), this one whether attempts can be handled and recorded.
COMPONENT = "deliveries:attempts"


class Dispatcher(Reactor):
    name = "deliveries"
    event_types = ("DeliveryPlanned", "DeliveryRedeliveryRequested")

    def __init__(self, store: EventStore, senders: Mapping[str, Sender] = (), *, concurrency: int = 16,
                 clock: Callable[[], dt.datetime] = now, rng: random.Random | None = None,
                 db_retry: float = 1.0, max_retry: float = 300.0, health: Health | None = None) -> None:
        self.store = store
        self.senders: dict[str, Sender] = dict(senders)
        self.clock = clock
        self.rng = rng or random.Random()
        self.db_retry = db_retry
        self.max_retry = max_retry
        self.health = health
        self._failures: dict[str, int] = {}  # delivery id -> consecutive failures that were not outages
        self._due: list[tuple[dt.datetime, str]] = []  # heap of (when, delivery id)
        self._queued: dict[str, dt.datetime] = {}  # delivery id -> its earliest entry in the heap
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._loop_task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()

    def add_sender(self, sender: Sender) -> None:
        self.senders[sender.kind] = sender

    # ---------------------------------------------------------------- reactor
    async def resume(self) -> None:
        rows = await self.store.pool.fetch(
            "SELECT delivery_id, next_attempt_at FROM deliveries WHERE state IN ('pending', 'retrying') "
            "ORDER BY next_attempt_at NULLS FIRST")
        for row in rows:
            self.schedule(row["delivery_id"], row["next_attempt_at"] or self.clock())
        self._ensure_loop()

    async def handle(self, event: RecordedEvent) -> None:
        self.schedule(event.event.delivery_id, self.clock())  # type: ignore[attr-defined]
        self._ensure_loop()

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._attempts) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        self._attempts.clear()
        self._due.clear()
        self._queued.clear()
        self._busy.clear()
        self._failures.clear()
        if self.health is not None:
            self.health.forget(COMPONENT)

    # ---------------------------------------------------------------- timetable
    def schedule(self, delivery_id: str, when: dt.datetime) -> None:
        queued = self._queued.get(delivery_id)
        if queued is not None and queued <= when:
            return  # an earlier entry will look at it, and reschedule from its stream
        self._queued[delivery_id] = when
        heapq.heappush(self._due, (when, delivery_id))
        self._wake.set()

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="deliveries:timetable")

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            current = self.clock()
            while self._due and self._due[0][0] <= current:
                when, delivery_id = heapq.heappop(self._due)
                if self._queued.get(delivery_id) != when:
                    continue  # superseded by an earlier entry
                del self._queued[delivery_id]
                if delivery_id in self._busy:
                    continue  # its attempt in flight reschedules it
                self._busy.add(delivery_id)
                task = asyncio.get_running_loop().create_task(self._run(delivery_id))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            timeout = (self._due[0][0] - current).total_seconds() if self._due else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _run(self, delivery_id: str) -> None:
        try:
            async with self._slots:
                again = await self.attempt(delivery_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            again = self._failed(delivery_id, exc)
        else:
            if self._failures.pop(delivery_id, None) is not None and not self._failures and self.health is not None:
                self.health.ok(COMPONENT)
        finally:
            self._busy.discard(delivery_id)
        if again is not None:
            self.schedule(delivery_id, again)

    def _failed(self, delivery_id: str, exc: Exception) -> dt.datetime:
        """The log could not be read or written: look again later. An outage is retried at once
        (PostgreSQL comes back); anything else backs off and says so in /healthz."""
        if database_unavailable(exc):
            log.warning("delivery attempt not recorded; retrying", extra={"delivery_id": delivery_id, "error": str(exc)})
            return self.clock() + dt.timedelta(seconds=self.db_retry)
        count = self._failures[delivery_id] = self._failures.get(delivery_id, 0) + 1
        delay = min(self.max_retry, self.db_retry * 2 ** min(count, 30))
        log.error("delivery cannot be handled; backing off", exc_info=exc,
                  extra={"delivery_id": delivery_id, "failures": count, "retry_in": delay})
        if self.health is not None:
            self.health.down(COMPONENT, f"delivery {delivery_id} cannot be handled ({type(exc).__name__}, "
                                        f"{count} times; see the server log); retried in {delay:g} s")
        return self.clock() + dt.timedelta(seconds=delay)

    # ---------------------------------------------------------------- one attempt
    async def load(self, delivery_id: str) -> DeliveryState | None:
        return DeliveryState.fold(await self.store.read(delivery_stream(delivery_id)))

    async def attempt(self, delivery_id: str) -> dt.datetime | None:
        """Make the delivery's next attempt if it is due; when to look at it again (or None)."""
        state = await self.load(delivery_id)
        if state is None or state.done:
            return None
        current = self.clock()
        if state.next_attempt_at is not None and state.next_attempt_at > current:
            return state.next_attempt_at
        sender = self.senders.get(state.plan.kind)
        if sender is None:
            outcome = Outcome(attempted=False, reason="invalid",
                              error=f"this Maestro has no sender for {state.plan.kind} deliveries")
        else:
            try:
                outcome = await sender.send(state)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                log.exception("delivery sender failed", extra={"delivery_id": delivery_id})
                outcome = Outcome(error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
        decided = self.clock()
        if outcome.defer is not None:  # not tried: no event, look again then
            return decided + dt.timedelta(seconds=max(0.0, outcome.defer))
        meta = Metadata(actor=ACTOR, correlation_id=state.planned.metadata.correlation_id,
                        causation_id=state.planned.event_id)
        try:
            events, again = self._decide(state, outcome, decided)
            # Recorded at the moment the next attempt was drawn from, so the log shows the delay.
            await self.store.append(delivery_stream(delivery_id), state.version, events, meta, occurred_at=decided)
        except ConcurrencyConflict:
            return self.clock()  # someone else recorded something: look at the stream again
        except Exception as exc:
            if database_unavailable(exc):
                raise
            # The attempt was made but cannot be recorded as such: end the delivery, saying why,
            # instead of making it again (a redelivery starts a new chain once fixed).
            log.exception("delivery attempt made but not recordable; ending the delivery",
                          extra={"delivery_id": delivery_id})
            p = state.plan
            failed = DeliveryFailed(delivery_id=p.delivery_id, table_id=p.table_id, run_id=p.run_id,
                                    chain=state.chain, reason="invalid",
                                    message=f"attempt {state.attempt + 1} was made but could not be recorded "
                                            f"({type(exc).__name__}: {exc})"[:500])
            await self.store.append(delivery_stream(delivery_id), ANY_VERSION, [failed], meta)
            return None
        return again

    def _decide(self, state: DeliveryState, outcome: Outcome, at: dt.datetime) -> tuple[list[Event], dt.datetime | None]:
        p = state.plan
        ids = dict(delivery_id=p.delivery_id, table_id=p.table_id, run_id=p.run_id, chain=state.chain)
        if not outcome.attempted:
            return [DeliveryFailed(**ids, reason=outcome.reason, message=outcome.error or outcome.reason)], None
        attempt = state.attempt + 1
        next_at = None
        if not outcome.ok and outcome.retryable and state.schedule is not None:
            next_at = next_attempt_at(state.schedule, attempt, at, retry_after=outcome.retry_after, rng=self.rng)
        error = None if outcome.ok else (outcome.error or f"HTTP {outcome.status_code}")
        events: list[Event] = [DeliveryAttempted(
            **ids, attempt=attempt, status_code=outcome.status_code, error=error,
            duration_ms=outcome.duration_ms, next_attempt_at=next_at,
        )]
        if outcome.ok:
            events.append(DeliverySucceeded(**ids, attempt=attempt, status_code=outcome.status_code,
                                            response=outcome.response))
        elif next_at is None:
            exhausted = outcome.retryable
            reason = "exhausted" if exhausted else outcome.reason
            message = (f"{attempt} attempts failed until the deadline; the last: {error}" if exhausted else error)
            events.append(DeliveryFailed(**ids, reason=reason, message=message or reason, exhausted=exhausted))
        return events, next_at
