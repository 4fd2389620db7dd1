"""Delivery commands and queries: list them, show one with every attempt, redeliver one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from maestro.errors import Conflict, NotFound
from maestro.events.deliveries import (
    DeliveryAttempted,
    DeliveryFailed,
    DeliveryRedeliveryRequested,
    DeliverySucceeded,
    RetrySchedule,
    delivery_stream,
)
from maestro.events.model import Metadata, RecordedEvent, now
from maestro.events.store import EventStore
from maestro.handlers.notify.delivery import DeliveryState

_COLUMNS = (
    "delivery_id, kind, table_id, run_id, job_id, target, state, chain, attempts, last_status, last_error, "
    "reason, next_attempt_at, deadline, planned_at, updated_at, finished_at"
)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def row_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r["delivery_id"], "kind": r["kind"], "table_id": r["table_id"], "run_id": r["run_id"],
        "job_id": r["job_id"], "target": r["target"], "status": r["state"], "chain": r["chain"],
        "attempts": r["attempts"], "last_status": r["last_status"], "error": r["last_error"], "reason": r["reason"],
        "next_attempt_at": _iso(r["next_attempt_at"]), "deadline": _iso(r["deadline"]),
        "planned_at": _iso(r["planned_at"]), "updated_at": _iso(r["updated_at"]), "finished_at": _iso(r["finished_at"]),
    }


def _attempt(r: RecordedEvent) -> dict[str, Any] | None:
    e = r.event
    if isinstance(e, DeliveryAttempted):
        return {"event": "attempted", "at": r.occurred_at.isoformat(), "chain": e.chain, "attempt": e.attempt,
                "status_code": e.status_code, "error": e.error, "duration_ms": e.duration_ms,
                "next_attempt_at": _iso(e.next_attempt_at)}
    if isinstance(e, DeliverySucceeded):
        return {"event": "succeeded", "at": r.occurred_at.isoformat(), "chain": e.chain, "attempt": e.attempt}
    if isinstance(e, DeliveryFailed):
        return {"event": "failed", "at": r.occurred_at.isoformat(), "chain": e.chain, "reason": e.reason,
                "message": e.message, "exhausted": e.exhausted}
    if isinstance(e, DeliveryRedeliveryRequested):
        return {"event": "redelivery_requested", "at": r.occurred_at.isoformat(), "chain": e.chain,
                "by": r.metadata.actor}
    return None


class Deliveries:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def list(self, *, table_id: str | None = None, status: str | None = None, kind: str | None = None,
                   run_id: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        rows = await self.store.pool.fetch(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM deliveries "
            "WHERE ($1::text IS NULL OR table_id = $1) AND ($2::text IS NULL OR state = $2) "
            "AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR run_id = $4) "
            "ORDER BY planned_at DESC, delivery_id OFFSET $5 LIMIT $6",
            table_id, status, kind, run_id, offset, limit,
        )
        return [row_dict(r) for r in rows], (rows[0]["total"] if rows else 0)

    async def get(self, delivery_id: str) -> dict[str, Any]:
        row = await self.store.pool.fetchrow(f"SELECT {_COLUMNS} FROM deliveries WHERE delivery_id = $1", delivery_id)
        if row is None:
            raise NotFound(f"no delivery {delivery_id!r}")
        events = await self.store.read(delivery_stream(delivery_id))
        history = [a for a in (_attempt(r) for r in events) if a is not None]
        return {**row_dict(row), "history": history}

    async def table_of(self, delivery_id: str) -> tuple[bool, str | None]:
        """(the delivery exists, its table id)."""
        row = await self.store.pool.fetchrow("SELECT table_id FROM deliveries WHERE delivery_id = $1", delivery_id)
        return (row is not None, row["table_id"] if row is not None else None)

    async def redeliver(self, delivery_id: str, actor: Metadata) -> dict[str, Any]:
        """A new chain of attempts for a finished delivery, with a schedule as long as its first."""
        state = DeliveryState.fold(await self.store.read(delivery_stream(delivery_id)))
        if state is None:
            raise NotFound(f"no delivery {delivery_id!r}")
        if not state.done:
            raise Conflict(f"delivery {delivery_id} is still being delivered (attempt {state.attempt} of chain "
                           f"{state.chain}); redeliver it once it has succeeded or failed")
        first = state.plan.schedule
        at = now()
        window = first.deadline - state.planned.occurred_at
        schedule = RetrySchedule(initial=first.initial, max_delay=first.max_delay, deadline=at + window,
                                 timeout=first.timeout)
        p = state.plan
        await self.store.append(delivery_stream(delivery_id), state.version, [DeliveryRedeliveryRequested(
            delivery_id=delivery_id, table_id=p.table_id, run_id=p.run_id, chain=state.chain + 1, schedule=schedule,
        )], actor)
        return await self.get(delivery_id)
