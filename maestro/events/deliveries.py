"""Deliveries: what Maestro sends out of itself (completion callbacks, Slack messages, Sheets and
database exports), one stream each, every attempt an event.

A delivery's stream is ``delivery-<id>``, and its id is derived from the event that caused it
(:func:`delivery_id_for`): a reactor that handles the same event twice (a crash before its
checkpoint moved) gets a concurrency conflict on ``DeliveryPlanned``, never a second delivery.
The schedule of retries is data on the plan, and each attempt records when the next one is due,
so a restart resumes the schedule from the log instead of starting it over.

A table's callback endpoint is a stream too (``webhook-<table id>``): its signing secret (sealed
with the master secret) and whether the receiver disabled it with ``410 Gone``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maestro.events.model import Event

# The kinds of delivery; a new reactor that sends something adds its kind here.
DeliveryKind = Literal["callback", "slack", "sheets", "db_export"]
# Why a delivery ended without success:
# exhausted: retried until the schedule's deadline; rejected: an answer retrying cannot change
# (a 4xx other than 408/429); endpoint_gone: 410, the endpoint is now disabled; endpoint_disabled:
# not sent, the endpoint was disabled; refused: the destination resolves to an address not allowed;
# invalid: what the delivery needs is missing (the table, its extract's files, ...).
FailureReason = Literal["exhausted", "rejected", "endpoint_gone", "endpoint_disabled", "refused", "invalid"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetrySchedule(_Model):
    """When attempts are made: the first at once, then after ``initial`` seconds, doubling up to
    ``max_delay`` with jitter (each delay drawn between half and all of it), never past
    ``deadline``. ``timeout``: seconds one attempt may take."""

    initial: float = Field(gt=0)
    max_delay: float = Field(gt=0)
    deadline: dt.datetime
    timeout: float = Field(gt=0)


class DeliveryPlanned(Event):
    delivery_id: str
    kind: DeliveryKind
    table_id: str | None = None
    run_id: str | None = None
    job_id: str | None = None
    target: str  # where it goes: a URL, a channel, a spreadsheet, a database (never a secret)
    schedule: RetrySchedule
    caused_by: str  # the causing event's id (stream@version)
    # What the sender needs that the log does not already say, per kind (callback: the extract's
    # files, the table's dataset and name).
    details: dict[str, Any] = {}


class DeliveryAttempted(Event):
    delivery_id: str
    table_id: str | None = None
    run_id: str | None = None
    chain: int = 1  # 1, then one more per redelivery
    attempt: int  # within the chain, from 1
    status_code: int | None = None  # the answer's status; None: no answer (network error, timeout)
    error: str | None = None  # None: it worked
    duration_ms: int
    next_attempt_at: dt.datetime | None = None  # None: no further attempt in this chain


class DeliverySucceeded(Event):
    delivery_id: str
    table_id: str | None = None
    run_id: str | None = None
    chain: int = 1
    attempt: int
    status_code: int | None = None
    # What the receiver answered that a later delivery needs (Slack: the message's channel and
    # ``ts``, so the run's message is edited instead of posted again). Never a secret.
    response: dict[str, Any] | None = None


class DeliveryFailed(Event):
    delivery_id: str
    table_id: str | None = None
    run_id: str | None = None
    chain: int = 1
    reason: FailureReason
    message: str
    exhausted: bool = False  # the schedule ran out (every allowed attempt was made)


class DeliveryRedeliveryRequested(Event):
    """Someone asked for a delivery again (``POST /deliveries/{id}/redeliver``; the actor is in the
    metadata): a new chain of attempts with a schedule of its own, under the same delivery id (the
    receiver's idempotency key)."""

    delivery_id: str
    table_id: str | None = None
    run_id: str | None = None
    chain: int
    schedule: RetrySchedule


class WebhookEndpointCreated(Event):
    table_id: str
    secret: str  # sealed (maestro.adapters.secrets); the plaintext was shown once, to its creator


class WebhookSecretRotated(Event):
    table_id: str
    secret: str  # sealed; a rotation also enables a disabled endpoint


class WebhookEndpointDisabled(Event):
    """The receiver answered ``410 Gone``: nothing more is sent until it is enabled again."""

    table_id: str
    delivery_id: str | None = None
    url: str
    status_code: int = 410
    reason: str = ""


class WebhookEndpointEnabled(Event):
    table_id: str
    why: Literal["enabled", "url_changed"] = "enabled"


def delivery_id_for(kind: str, caused_by: str) -> str:
    """The delivery that ``caused_by`` (an event id) causes of this kind; the same every time.

    >>> delivery_id_for("callback", "job-x@3") == delivery_id_for("callback", "job-x@3")
    True
    """
    digest = hashlib.sha256(f"{kind}|{caused_by}".encode()).hexdigest()[:24]
    return f"dlv_{digest}"


def delivery_stream(delivery_id: str) -> str:
    return f"delivery-{delivery_id}"


def endpoint_stream(table_id: str) -> str:
    return f"webhook-{table_id}"


DELIVERY_EVENTS = (
    "DeliveryPlanned", "DeliveryAttempted", "DeliverySucceeded", "DeliveryFailed", "DeliveryRedeliveryRequested",
)
ENDPOINT_EVENTS = ("WebhookEndpointCreated", "WebhookSecretRotated", "WebhookEndpointDisabled", "WebhookEndpointEnabled")
