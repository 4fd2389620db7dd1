"""One delivery as its stream tells it, and what a sender answers for one attempt.

A sender (one per delivery kind: callbacks here; Slack, Sheets and database exports plug in the
same way) makes one attempt and says how it went; the dispatcher records it and decides what
comes next. Senders never append delivery events themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from maestro.events.deliveries import (
    DeliveryAttempted,
    DeliveryFailed,
    DeliveryPlanned,
    DeliveryRedeliveryRequested,
    DeliverySucceeded,
    FailureReason,
    RetrySchedule,
)
from maestro.events.model import RecordedEvent


@dataclass
class DeliveryState:
    """The fold of ``delivery-<id>``: the plan, the current chain, and where it stands."""

    plan: DeliveryPlanned
    planned: RecordedEvent
    version: int = 0
    chain: int = 1
    attempt: int = 0  # attempts made in the current chain
    schedule: RetrySchedule | None = None
    next_attempt_at: dt.datetime | None = None
    done: bool = False
    succeeded: bool = False
    history: list[RecordedEvent] = field(default_factory=list)

    @property
    def delivery_id(self) -> str:
        return self.plan.delivery_id

    @classmethod
    def fold(cls, events: Sequence[RecordedEvent]) -> DeliveryState | None:
        if not events or not isinstance(events[0].event, DeliveryPlanned):
            return None
        plan = events[0].event
        state = cls(plan=plan, planned=events[0], schedule=plan.schedule, next_attempt_at=events[0].occurred_at)
        for r in events:
            e = r.event
            state.version = r.version
            state.history.append(r)
            if isinstance(e, DeliveryAttempted):
                state.attempt = e.attempt
                state.next_attempt_at = e.next_attempt_at
            elif isinstance(e, DeliverySucceeded):
                state.done, state.succeeded, state.next_attempt_at = True, True, None
            elif isinstance(e, DeliveryFailed):
                state.done, state.next_attempt_at = True, None
            elif isinstance(e, DeliveryRedeliveryRequested):
                state.chain, state.attempt, state.schedule = e.chain, 0, e.schedule
                state.done = state.succeeded = False
                state.next_attempt_at = r.occurred_at
        return state


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt went.

    ``attempted``: something was sent (an attempt event is recorded); False: the sender decided
    not to send (the endpoint is disabled, the destination is refused), which ends the delivery.
    ``ok``: it worked. Otherwise ``retryable`` says whether the schedule goes on, ``reason`` why it
    ends when it does not, and ``retry_after`` how long the receiver asked us to wait. ``defer``:
    the sender chose not to try yet (nothing is recorded, the delivery is looked at again later).
    """

    attempted: bool = True
    ok: bool = False
    status_code: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    reason: FailureReason = "rejected"
    duration_ms: int = 0
    # ok: what the receiver answered that is worth keeping (DeliverySucceeded.response).
    response: dict[str, Any] | None = None
    # Not now: nothing was sent nor is recorded; look at the delivery again in this many seconds
    # (a sender that keeps an order or a pace of its own, such as Slack's queue per channel).
    defer: float | None = None


class Sender(Protocol):
    kind: str

    async def send(self, delivery: DeliveryState) -> Outcome:
        """Make one attempt. Must not raise for the outside world's failures (say them in the
        outcome); a raise is recorded as a retryable failed attempt."""
        ...
