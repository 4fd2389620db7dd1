"""Deliveries and callback endpoints (inline): what ``GET /deliveries`` lists, what a run shows as
each table's steps, and where the dispatcher finds what is still to be sent after a restart."""

from __future__ import annotations

from collections.abc import Sequence

from maestro.events.deliveries import (
    DELIVERY_EVENTS,
    ENDPOINT_EVENTS,
    DeliveryAttempted,
    DeliveryFailed,
    DeliveryPlanned,
    DeliveryRedeliveryRequested,
    DeliverySucceeded,
    WebhookEndpointCreated,
    WebhookEndpointDisabled,
    WebhookEndpointEnabled,
    WebhookSecretRotated,
)
from maestro.events.model import RecordedEvent
from maestro.events.store import Connection
from maestro.projections.base import Projection


class DeliveriesProjection(Projection):
    name = "deliveries"
    mode = "inline"
    event_types = frozenset({*DELIVERY_EVENTS, *ENDPOINT_EVENTS})
    tables = ("deliveries", "webhook_endpoints")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for r in events:
            e, at = r.event, r.occurred_at
            if isinstance(e, DeliveryPlanned):
                await conn.execute(
                    "INSERT INTO deliveries (delivery_id, kind, table_id, run_id, job_id, target, state, "
                    "next_attempt_at, deadline, planned_at, updated_at, version) "
                    "VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $7, $7, $9)",
                    e.delivery_id, e.kind, e.table_id, e.run_id, e.job_id, e.target, at,
                    e.schedule.deadline, r.version,
                )
            elif isinstance(e, DeliveryAttempted):
                await conn.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, last_status = $2, last_error = $3, "
                    "next_attempt_at = $4, state = CASE WHEN $3::text IS NULL THEN state ELSE 'retrying' END, "
                    "updated_at = $5, version = $6 WHERE delivery_id = $1",
                    e.delivery_id, e.status_code, e.error, e.next_attempt_at, at, r.version,
                )
            elif isinstance(e, DeliverySucceeded):
                await conn.execute(
                    "UPDATE deliveries SET state = 'succeeded', last_status = $2, last_error = NULL, reason = NULL, "
                    "next_attempt_at = NULL, finished_at = $3, updated_at = $3, version = $4 WHERE delivery_id = $1",
                    e.delivery_id, e.status_code, at, r.version,
                )
            elif isinstance(e, DeliveryFailed):
                await conn.execute(
                    "UPDATE deliveries SET state = 'failed', reason = $2, last_error = $3, next_attempt_at = NULL, "
                    "finished_at = $4, updated_at = $4, version = $5 WHERE delivery_id = $1",
                    e.delivery_id, e.reason, e.message, at, r.version,
                )
            elif isinstance(e, DeliveryRedeliveryRequested):
                await conn.execute(
                    "UPDATE deliveries SET state = 'pending', chain = $2, attempts = 0, reason = NULL, "
                    "next_attempt_at = $3, deadline = $4, finished_at = NULL, updated_at = $3, version = $5 "
                    "WHERE delivery_id = $1",
                    e.delivery_id, e.chain, at, e.schedule.deadline, r.version,
                )
            elif isinstance(e, WebhookEndpointCreated):
                await conn.execute(
                    "INSERT INTO webhook_endpoints (table_id, secret, rotated_at, updated_at, version) "
                    "VALUES ($1, $2, $3, $3, $4)",
                    e.table_id, e.secret, at, r.version,
                )
            elif isinstance(e, WebhookSecretRotated):
                await conn.execute(
                    "UPDATE webhook_endpoints SET secret = $2, enabled = true, disabled_reason = NULL, disabled_url = NULL, "
                    "rotated_at = $3, updated_at = $3, version = $4 WHERE table_id = $1",
                    e.table_id, e.secret, at, r.version,
                )
            elif isinstance(e, WebhookEndpointDisabled):
                await conn.execute(
                    "UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, disabled_url = $5, "
                    "updated_at = $3, version = $4 WHERE table_id = $1",
                    e.table_id, e.reason or f"{e.url} answered {e.status_code}", at, r.version, e.url,
                )
            elif isinstance(e, WebhookEndpointEnabled):
                await conn.execute(
                    "UPDATE webhook_endpoints SET enabled = true, disabled_reason = NULL, disabled_url = NULL, updated_at = $2, "
                    "version = $3 WHERE table_id = $1",
                    e.table_id, at, r.version,
                )
