"""Completion callbacks: after a table's extract succeeds, POST to its ``notify_url``.

The reactor (``callbacks``) follows ``JobSucceeded``; for an extract of a table whose planned
extract settings name a ``notify_url`` it plans a delivery on ``delivery-<id>``, the id derived
from the ``JobSucceeded`` (a repeat is a conflict, not a second callback). The sender makes each
attempt: the original's fields (``extractUrl``, ``extractUrls``, ``schema``, ``dataset``,
``name``) plus the table, run, job and delivery ids, signed (Standard Webhooks), within the
schedule's timeout. Signed URLs are made at each attempt, so a retry hours later still hands out
URLs that work. 2xx: done. Network errors, timeouts, 408, 429 and 5xx: retried (``Retry-After``
honoured) until the deadline. 410: the endpoint is disabled. Any other answer: failed, not retried.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from maestro.adapters.bigquery import signed_url
from maestro.adapters.webhooks import WebhookClient, signed_headers
from maestro.errors import ConcurrencyConflict, MaestroError
from maestro.events.deliveries import DeliveryFailed, DeliveryPlanned, delivery_id_for, delivery_stream
from maestro.events.model import Metadata, RecordedEvent
from maestro.events.runs import JobSucceeded
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.notify.delivery import DeliveryState, Outcome
from maestro.handlers.notify.endpoints import Endpoints
from maestro.handlers.notify.reactor import Reactor
from maestro.handlers.notify.schedule import new_schedule

ACTOR = "system:callbacks"


@dataclass(frozen=True)
class CallbackPolicy:
    timeout: float = 10.0
    initial: float = 5.0
    max_delay: float = 3600.0
    window: float = 24 * 3600.0
    url_lifetime: dt.timedelta = dt.timedelta(hours=4)


class CallbackReactor(Reactor):
    name = "callbacks"
    event_types = ("JobSucceeded",)
    concurrency = 16  # each extract's callback is planned on its own stream

    def __init__(self, store: EventStore, endpoints: Endpoints, policy: CallbackPolicy) -> None:
        self.store = store
        self.endpoints = endpoints
        self.policy = policy

    async def _plan(self, event: RecordedEvent) -> DeliveryPlanned | None:
        e = event.event
        if not isinstance(e, JobSucceeded) or e.run_id is None:
            return None
        row = await self.store.pool.fetchrow(
            "SELECT j.kind, j.config->>'source' AS source, rt.name, rt.extract->>'notify_url' AS url "
            "FROM jobs j JOIN run_tables rt ON rt.run_id = j.run_id AND rt.table_id = j.table_id "
            "WHERE j.job_id = $1", e.job_id)
        if row is None or row["kind"] != "extract" or not row["url"]:
            return None
        dataset, _, name = row["name"].partition(".")
        p = self.policy
        return DeliveryPlanned(
            delivery_id=delivery_id_for("callback", event.event_id), kind="callback",
            table_id=e.table_id, run_id=e.run_id, job_id=e.job_id, target=row["url"],
            schedule=new_schedule(event.occurred_at, initial=p.initial, max_delay=p.max_delay, window=p.window,
                                  timeout=p.timeout),
            caused_by=event.event_id,
            details={"files": e.destination_uris, "source": row["source"], "dataset": dataset, "name": name},
        )

    async def handle(self, event: RecordedEvent) -> None:
        plan = await self._plan(event)
        if plan is None:
            return
        meta = event.metadata.caused_by(event, actor=ACTOR)
        await self.endpoints.ensure(plan.table_id or "", meta)  # a table saved before endpoints existed
        try:
            await self.store.append(delivery_stream(plan.delivery_id), NO_STREAM, [plan], meta)
        except ConcurrencyConflict:
            pass  # planned before a crash moved the checkpoint: nothing more to do

    async def give_up(self, event: RecordedEvent, error: BaseException) -> None:
        """The callback could not even be planned: record it planned and failed, with the reason."""
        e = event.event
        if not isinstance(e, JobSucceeded) or e.run_id is None:
            return
        delivery_id = delivery_id_for("callback", event.event_id)
        reason = error.message if isinstance(error, MaestroError) else type(error).__name__
        p = self.policy
        plan = DeliveryPlanned(
            delivery_id=delivery_id, kind="callback", table_id=e.table_id, run_id=e.run_id, job_id=e.job_id,
            target="(unknown)", caused_by=event.event_id,
            schedule=new_schedule(event.occurred_at, initial=p.initial, max_delay=p.max_delay, window=p.window,
                                  timeout=p.timeout),
        )
        failed = DeliveryFailed(delivery_id=delivery_id, table_id=e.table_id, run_id=e.run_id, reason="invalid",
                                message=f"the callback could not be planned: {reason}")
        try:
            await self.store.append(delivery_stream(delivery_id), NO_STREAM, [plan, failed],
                                    event.metadata.caused_by(event, actor=ACTOR))
        except ConcurrencyConflict:
            pass


def payload(plan: DeliveryPlanned, urls: list[str], schema: list[dict[str, Any]]) -> dict[str, Any]:
    """The body: the original Maestro's fields first, then ours."""
    d = plan.details
    return {
        "extractUrl": urls[0] if urls else None,
        "extractUrls": urls,
        "schema": schema,
        "dataset": d.get("dataset"),
        "name": d.get("name"),
        "type": "table.extracted",
        "table_id": plan.table_id,
        "run_id": plan.run_id,
        "job_id": plan.job_id,
        "delivery_id": plan.delivery_id,
    }


RETRYABLE_STATUS = frozenset({408, 425, 429})


class CallbackSender:
    kind = "callback"

    def __init__(
        self, endpoints: Endpoints, client: WebhookClient, policy: CallbackPolicy,
        storage: Callable[[], tuple[Any, Any]], schema: Callable[[str], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        self.endpoints = endpoints
        self.client = client
        self.policy = policy
        self.storage = storage  # () -> (storage client, URL signer), as they are now (live configuration)
        self.schema = schema

    async def body(self, plan: DeliveryPlanned) -> bytes:
        storage, signer = self.storage()
        files = list(plan.details.get("files") or [])
        urls = await asyncio.gather(*(
            asyncio.to_thread(signed_url, storage, uri, lifetime=self.policy.url_lifetime, credentials=signer)
            for uri in files
        ))
        source = plan.details.get("source")
        schema = await self.schema(source) if source else []
        return orjson.dumps(payload(plan, list(urls), schema))

    async def send(self, delivery: DeliveryState) -> Outcome:
        plan = delivery.plan
        table_id = plan.table_id or ""
        endpoint = await self.endpoints.get(table_id)
        if endpoint is None:
            await self.endpoints.ensure(table_id, Metadata(actor=ACTOR))
            endpoint = await self.endpoints.get(table_id)
        assert endpoint is not None
        if not endpoint.enabled:
            return Outcome(attempted=False, reason="endpoint_disabled", error=(
                f"not sent: the table's callback endpoint is disabled ({endpoint.disabled_reason}); enable it "
                f"(POST /api/v1/tables/{table_id}/callback/enable, or rotate its secret), then redeliver"))
        try:
            body = await self.body(plan)
        except MaestroError as exc:
            return Outcome(error=f"not sent: {exc.message}", retryable=bool(getattr(exc, "retryable", True)),
                           reason="invalid")
        text = body.decode()
        headers = signed_headers(self.endpoints.secret_of(endpoint), plan.delivery_id, text)
        headers["user-agent"] = "Maestro-Webhooks/1"
        result = await self.client.post(plan.target, body, headers, timeout=plan.schedule.timeout)
        if result.refused is not None:
            return Outcome(attempted=False, reason="refused", error=f"not sent: {result.refused}",
                           duration_ms=result.duration_ms)
        status = result.status
        if status is None:
            return Outcome(error=result.error, retryable=True, duration_ms=result.duration_ms)
        if 200 <= status < 300:
            return Outcome(ok=True, status_code=status, duration_ms=result.duration_ms)
        if status == 410:
            disabled = await self.endpoints.disable(
                table_id, plan.target, status, plan.delivery_id,
                Metadata(actor=ACTOR, causation_id=delivery.planned.event_id), expected_version=endpoint.version)
            if not disabled:  # rotated or enabled meanwhile: try again, signed as the endpoint is now
                return Outcome(status_code=status, retryable=True, duration_ms=result.duration_ms,
                               error="HTTP 410 Gone to a request signed before the endpoint changed; retrying")
            return Outcome(status_code=status, reason="endpoint_gone", duration_ms=result.duration_ms,
                           error="HTTP 410 Gone: the endpoint is disabled until enabled again or its secret rotated")
        retryable = status in RETRYABLE_STATUS or status >= 500
        return Outcome(status_code=status, error=f"HTTP {status}", retryable=retryable, retry_after=result.retry_after,
                       reason="rejected", duration_ms=result.duration_ms)
