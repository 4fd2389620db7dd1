"""Send Slack messages: one queue per channel at Slack's one message per second, nothing dropped.

Slack allows about one ``chat.postMessage`` per second per channel and answers more with 429 and
``Retry-After`` (docs.slack.dev/apis/web-api/rate-limits). Each channel has its own queue and
worker, so a busy channel never delays another, and messages of a channel leave in the order they
were sent: a message being retried holds the ones behind it (a run's "retrying" must not arrive
before its "failed").

Every step is written to a :class:`DeliveryLog` — planned, each attempt with its error and when the
next one is due, then succeeded (with the message's ``ts``) or failed with Slack's reason — so the
delivery events (``maestro.events.deliveries``) tell what happened to each message; the log also
answers which message a key was posted as, which is how a run's message is edited instead of
posted again. A retryable error (429, 5xx, Slack unreachable) is tried again after
``Retry-After`` or an exponential backoff with jitter, until ``give_up_after``; an error that will
not pass by retrying (``invalid_auth``, ``channel_not_found``) fails the delivery at once, with
its reason. A log that cannot be written (PostgreSQL down) is retried until it can: the worker
waits rather than sending a message it could not account for.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import orjson

from maestro.adapters.slack import Posted
from maestro.errors import SlackError
from maestro.handlers.notify.slack_messages import Notice
from maestro.handlers.notify.slack_routing import Connection

log = logging.getLogger(__name__)
T = TypeVar("T")
_REMEMBERED = 10_000  # (key, channel) contents kept to skip an edit that changes nothing


@dataclass(frozen=True, slots=True)
class Outgoing:
    delivery_id: str  # derived from the causing event: a replay names the same delivery
    notice: Notice
    channel: str  # as routed; "" for a webhook's own channel


class DeliveryLog(Protocol):
    """Where the sender records what it does (the delivery events)."""

    async def planned(self, item: Outgoing) -> bool:
        """Record the delivery; False when it was already recorded (a replayed event)."""

    async def attempted(self, item: Outgoing, attempt: int, error: SlackError, retry_in: float) -> None:
        """An attempt failed and another follows in ``retry_in`` seconds."""

    async def succeeded(self, item: Outgoing, attempt: int, posted: Posted, edited: bool) -> None: ...

    async def failed(self, item: Outgoing, attempt: int, error: SlackError, exhausted: bool) -> None:
        """The delivery ends unsent: ``exhausted`` when retries ran out, else the error is final."""

    async def message_ref(self, key: str, channel: str) -> Posted | None:
        """The message a delivery with ``key`` was last posted as in ``channel``, if any."""


def _digest(notice: Notice) -> str:
    return hashlib.sha256(orjson.dumps([notice.text, notice.blocks])).hexdigest()


class SlackSender:
    def __init__(
        self, connect: Callable[[], Connection | None], deliveries: DeliveryLog, *,
        interval: float = 1.0, give_up_after: float = 24 * 3600, backoff: float = 1.0, backoff_max: float = 300.0,
    ) -> None:
        self._connect = connect
        self._log = deliveries
        self.interval = interval  # seconds between two messages of one channel
        self.give_up_after = give_up_after
        self.backoff, self.backoff_max = backoff, backoff_max
        self._queues: dict[str, asyncio.Queue[tuple[Outgoing, int]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._next_at: dict[str, float] = {}  # channel -> monotonic time its next message may leave
        self._sent: OrderedDict[tuple[str, str], str] = OrderedDict()

    # ------------------------------------------------------------------ entry points
    async def send(self, item: Outgoing) -> bool:
        """Plan and queue a message; False when there is nothing to do (already planned, or an
        edit that would leave the message as it is)."""
        if item.notice.edit and self._sent.get((item.notice.key, item.channel)) == _digest(item.notice):
            return False
        if not await self._record(lambda: self._log.planned(item)):
            return False
        self._enqueue(item, 0)
        return True

    def resume(self, item: Outgoing, attempts: int) -> None:
        """Queue a delivery planned before a restart that had made ``attempts`` attempts."""
        self._enqueue(item, attempts)

    async def idle(self) -> None:
        """Wait until every queued message is sent or failed."""
        for queue in list(self._queues.values()):
            await queue.join()

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    # ------------------------------------------------------------------ the queues
    def _enqueue(self, item: Outgoing, attempts: int) -> None:
        queue = self._queues.get(item.channel)
        if queue is None:
            queue = self._queues[item.channel] = asyncio.Queue()
        worker = self._workers.get(item.channel)
        if worker is None or worker.done():
            self._workers[item.channel] = asyncio.get_running_loop().create_task(
                self._work(item.channel, queue), name=f"slack-{item.channel or 'webhook'}")
        queue.put_nowait((item, attempts))

    async def _work(self, channel: str, queue: asyncio.Queue[tuple[Outgoing, int]]) -> None:
        while True:
            item, attempts = await queue.get()
            try:
                await self._deliver(item, attempts)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug, not Slack: say so and keep the channel going
                log.exception("slack delivery crashed", extra={"delivery_id": item.delivery_id})
                with contextlib.suppress(Exception):
                    await self._log.failed(item, attempts + 1, SlackError(
                        "internal", "the sender failed unexpectedly (see the server log)", retryable=False), False)
            finally:
                queue.task_done()

    async def _pace(self, channel: str) -> None:
        wait = self._next_at.get(channel, 0.0) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _deliver(self, item: Outgoing, attempts: int) -> None:
        started = time.monotonic()
        attempt = attempts
        while True:
            attempt += 1
            await self._pace(item.channel)
            self._next_at[item.channel] = time.monotonic() + self.interval
            try:
                posted, edited = await self._attempt(item)
            except SlackError as error:
                retry_in = self._retry_in(error, attempt)
                if not error.retryable or time.monotonic() - started + retry_in > self.give_up_after:
                    await self._record(lambda: self._log.failed(item, attempt, error, error.retryable))
                    return
                self._next_at[item.channel] = max(self._next_at[item.channel], time.monotonic() + retry_in)
                await self._record(lambda: self._log.attempted(item, attempt, error, retry_in))
                continue
            self._remember(item)
            await self._record(lambda: self._log.succeeded(item, attempt, posted, edited))
            return

    async def _attempt(self, item: Outgoing) -> tuple[Posted, bool]:
        connection = self._connect()
        if connection is None:
            raise SlackError("not_configured", "Slack is no longer configured", retryable=False)
        notice = item.notice
        poster = connection.poster
        if notice.edit and poster.can_update:
            ref = await self._record(lambda: self._log.message_ref(notice.key, item.channel))
            if ref is not None and ref.ts:
                return await poster.update(ref.channel, ref.ts, notice.text, notice.blocks), True
        return await poster.post(item.channel, notice.text, notice.blocks), False

    def _retry_in(self, error: SlackError, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after
        base = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
        return base / 2 + random.uniform(0, base / 2)  # jitter: replicas' retries do not line up

    def _remember(self, item: Outgoing) -> None:
        self._sent[(item.notice.key, item.channel)] = _digest(item.notice)
        self._sent.move_to_end((item.notice.key, item.channel))
        while len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)

    async def _record(self, write: Callable[[], Awaitable[T]]) -> T:
        """Write to the delivery log, waiting out a database outage: never send unaccounted."""
        delay = 0.5
        while True:
            try:
                return await write()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("cannot record a Slack delivery; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
