"""Send Slack messages as deliveries: the dispatcher's ``Sender`` for kind ``slack``.

A Slack message is a delivery like a callback (``maestro.handlers.notify.dispatcher``): the reactor
plans it (``DeliveryPlanned`` carries the message: key, text, blocks, channel), the dispatcher makes
the attempts and records each one, retries with backoff and jitter (``Retry-After`` honoured) until
the schedule's deadline, and resumes after a restart from the events. One truth, one retry
mechanism. What Slack needs on top, this sender keeps:

- **A lane per channel, in order.** A message goes only when no message planned before it for the
  same channel is still open: a message being retried (a 429, Slack down) holds the ones behind it,
  so a run's "retrying" never arrives before its "failed" and an edit never before its post. A
  message held back answers ``Outcome(defer=...)``: nothing is recorded, the dispatcher looks again
  (when the one ahead is next due). The order is the plans' order in the log, so it holds across
  restarts and replicas; a busy channel never delays another.
- **One message per second per channel** (Slack's ``chat.postMessage`` limit): a channel's next
  message is deferred until a second after its last attempt, or until its ``Retry-After``.
- **Edits.** A notice with ``edit`` (a run's message) updates the message its key was posted as in
  that channel — found from the ``response`` (channel, ``ts``) of the last succeeded delivery with
  that key (:meth:`SlackSender.message_ref`) — or posts it the first time. A webhook cannot edit:
  it posts anew.
- **No second copy after a crash.** A message may have reached Slack without its success being
  recorded (``kill -9`` mid-call, a timeout). Every post carries message metadata naming its
  delivery; before posting such a delivery again the sender looks for it in the channel's recent
  history (``conversations.history``, scope ``channels:history``) and takes the message found.
  Without that scope, or for a webhook (which cannot read), it posts again: at least once there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from maestro.adapters.slack import Posted
from maestro.errors_outside import SlackError
from maestro.events.deliveries import DeliveryAttempted
from maestro.events.model import now
from maestro.handlers.notify.delivery import DeliveryState, Outcome
from maestro.handlers.notify.slack_messages import Notice
from maestro.handlers.notify.slack_routing import Connection

log = logging.getLogger(__name__)
KIND = "slack"
WEBHOOK_TARGET = "(incoming webhook)"  # the target of a delivery that goes to the webhook's channel
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,20}$")  # as the catalog checks a table's channel


@dataclass(frozen=True)
class SlackPolicy:
    interval: float = 1.0  # seconds between two messages of one channel (Slack: 1)
    initial: float = 1.0  # first retry delay, doubling (jittered) up to max_delay
    max_delay: float = 300.0
    window: float = 24 * 3600.0  # retries stop this long after the event
    timeout: float = 10.0  # one call


def content_digest(text: str, blocks: list[dict[str, Any]]) -> str:
    return hashlib.sha256(orjson.dumps([text, blocks])).hexdigest()[:32]


def notice_details(notice: Notice, channel: str) -> dict[str, Any]:
    """What ``DeliveryPlanned.details`` carries for a Slack message: all the sender needs, so a
    restart resumes it from the log."""
    return {"key": notice.key, "notice": notice.kind, "channel": channel, "edit": notice.edit,
            "text": notice.text, "blocks": notice.blocks, "digest": content_digest(notice.text, notice.blocks)}


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class SlackSender:
    kind = KIND

    def __init__(self, pool: Any, connect: Callable[[], Connection | None], policy: SlackPolicy = SlackPolicy(),
                 *, clock: Callable[[], dt.datetime] = now) -> None:
        self.pool = pool
        self._connect = connect  # the live connection (SlackConnector.current): None when not configured
        self.policy = policy
        self.clock = clock
        self._next_at: dict[str, float] = {}  # target -> monotonic time its next message may leave
        self._started = clock()
        self._tried: set[str] = set()  # deliveries this process attempted (see _maybe_posted)

    # ------------------------------------------------------------------ the lane
    async def ahead(self, delivery: DeliveryState) -> float | None:
        """Seconds to wait for an open message planned before this one in the same channel (None:
        this one is first). Looked at again when that one is next due, or soon if it is in flight."""
        row = await self.pool.fetchrow(
            "SELECT d.next_attempt_at FROM deliveries d, deliveries me WHERE me.delivery_id = $1 "
            "AND d.kind = 'slack' AND d.target = me.target AND d.state IN ('pending', 'retrying') "
            "AND (d.planned_at, d.delivery_id) < (me.planned_at, me.delivery_id) "
            "ORDER BY d.planned_at, d.delivery_id LIMIT 1", delivery.delivery_id)
        if row is None:
            return None
        due = row["next_attempt_at"]
        wait = (due - self.clock()).total_seconds() if due is not None else 0.0
        return min(max(wait, 0.0) + 0.05, 5.0)

    # ------------------------------------------------------------------ one attempt
    async def send(self, delivery: DeliveryState) -> Outcome:
        plan, d = delivery.plan, delivery.plan.details
        connection = self._connect()
        if connection is None:
            return Outcome(attempted=False, reason="invalid", error=(
                "not sent: Slack is not configured any more (PUT /api/v1/config/slack), then redeliver"))
        if (wait := await self.ahead(delivery)) is not None:
            return Outcome(defer=wait)
        lane = plan.target
        pace = self._next_at.get(lane, 0.0) - time.monotonic()
        if pace > 0:
            return Outcome(defer=pace)
        self._next_at[lane] = time.monotonic() + self.policy.interval
        channel = "" if connection.webhook else (d.get("channel") or connection.section.channel or "")
        if not connection.webhook and not channel:
            return Outcome(attempted=False, reason="invalid",
                           error="not sent: no channel (set the default channel in the Slack settings)")
        started = time.monotonic()
        try:
            posted, edited = await self._attempt(connection, delivery, channel)
        except SlackError as error:
            if error.retry_after is not None:
                self._next_at[lane] = max(self._next_at[lane], time.monotonic() + error.retry_after)
            return Outcome(error=error.message, retryable=error.retryable, retry_after=error.retry_after,
                           status_code=429 if error.reason in ("ratelimited", "rate_limited") else None,
                           reason="rejected", duration_ms=_ms(started))
        finally:
            self._tried.add(delivery.delivery_id)
        return Outcome(ok=True, status_code=200, duration_ms=_ms(started),
                       response={"channel": posted.channel, "ts": posted.ts, "edited": edited})

    async def _attempt(self, connection: Connection, delivery: DeliveryState, channel: str) -> tuple[Posted, bool]:
        plan, d = delivery.plan, delivery.plan.details
        poster = connection.poster
        text, blocks = str(d.get("text") or ""), list(d.get("blocks") or [])
        ref = None
        if d.get("edit") and poster.can_update:
            ref = await self.message_ref(str(d.get("key")), plan.target, plan.run_id)
        if ref is None and self._maybe_posted(delivery):
            ref = await self._find(connection, delivery, channel)
            if ref is not None and not d.get("edit"):
                return ref, False  # it did reach Slack before: that is this delivery's message
        if ref is not None and ref.ts:
            try:
                return await poster.update(ref.channel, ref.ts, text, blocks), True
            except SlackError as error:
                if error.reason != "message_not_found":
                    raise  # deleted in Slack since: post it anew
        return await poster.post(channel, text, blocks, delivery_id=delivery.delivery_id), False

    # ------------------------------------------------------------------ what Slack already has
    async def message_ref(self, key: str, target: str, run_id: str | None = None) -> Posted | None:
        """The message that ``key`` was last posted as in ``target``: the response of its last
        succeeded Slack delivery (with ``run_id``, looked up through the run's deliveries)."""
        row = await self.pool.fetchrow(
            "SELECT s.data->'response'->>'channel' AS channel, s.data->'response'->>'ts' AS ts "
            "FROM deliveries d JOIN events p ON p.stream_id = 'delivery-' || d.delivery_id AND p.version = 1 "
            "JOIN events s ON s.stream_id = p.stream_id AND s.type = 'DeliverySucceeded' "
            "WHERE d.kind = 'slack' AND d.target = $2 AND ($3::text IS NULL OR d.run_id = $3) "
            "AND p.data->'details'->>'key' = $1 AND s.data->'response'->>'ts' IS NOT NULL "
            "ORDER BY s.position DESC LIMIT 1", key, target, run_id)
        return Posted(row["channel"], row["ts"]) if row is not None else None

    def _maybe_posted(self, delivery: DeliveryState) -> bool:
        """Could this delivery have reached Slack without its success being recorded? Planned
        before this process started and not tried by it yet (a crash, or another leader, mid-call),
        or its last attempt timed out (Slack may have posted it all the same)."""
        if delivery.delivery_id not in self._tried and delivery.planned.occurred_at < self._started:
            return True
        last = next((r.event for r in reversed(delivery.history) if isinstance(r.event, DeliveryAttempted)), None)
        return last is not None and (last.error or "").endswith("(timeout)")

    async def _channel_id(self, channel: str, target: str) -> str | None:
        if _CHANNEL_ID.match(channel):
            return channel
        return await self.pool.fetchval(  # the id Slack answered for this channel before
            "SELECT s.data->'response'->>'channel' FROM deliveries d "
            "JOIN events s ON s.stream_id = 'delivery-' || d.delivery_id AND s.type = 'DeliverySucceeded' "
            "WHERE d.kind = 'slack' AND d.target = $1 AND d.state = 'succeeded' "
            "AND s.data->'response'->>'channel' <> '' ORDER BY s.position DESC LIMIT 1", target)

    async def _find(self, connection: Connection, delivery: DeliveryState, channel: str) -> Posted | None:
        find = getattr(connection.poster, "find_posted", None)
        if find is None:
            return None  # a webhook cannot read its channel
        channel_id = await self._channel_id(channel, delivery.plan.target)
        if channel_id is None:
            log.warning("cannot look for a message that may have been posted: the channel's id is unknown",
                        extra={"delivery_id": delivery.delivery_id, "channel": channel})
            return None
        try:
            return await find(channel_id, delivery.planned.occurred_at.timestamp() - 1, delivery.delivery_id)
        except SlackError as error:  # missing_scope, not_in_channel, ...: post, at least once
            log.warning("cannot look for a message that may have been posted; posting it",
                        extra={"delivery_id": delivery.delivery_id, "reason": error.reason})
            return None
