"""The Slack notifier: follows the events that say something to people and plans their messages.

For each event of ``NOTICE_EVENT_TYPES`` it reads the event's context from the read models
(``slack_context``), asks ``slack_notices`` what to say, routes each notice to its channel and plans
one delivery per notice and channel, on ``delivery-<delivery_id_for("slack", "<event id>:<key>:<channel>")>``
with ``NO_STREAM``: a repeat after a crash is a conflict, never a second message. The dispatcher and
the Slack sender (``slack_sender``) make the attempts, in order per channel.

- **Slack not configured** when the event is handled: nothing is planned. The checkpoint still
  moves, so configuring Slack later does not send a backlog of old news (the same as a new
  reactor starting at the head). Slack removed after a message was planned: that delivery fails
  with ``invalid`` and says so.
- **No channel** for a notice (a bot token and no default channel): the delivery is planned and
  failed at once, with the reason.
- **An edit that changes nothing** (a run's message as it already is) is not planned.
- A notice that cannot even be computed (``handle`` keeps failing) is recorded by ``give_up`` as
  a Slack delivery planned and failed, naming the event and the error.
"""

from __future__ import annotations

from collections.abc import Callable

from maestro.errors import ConcurrencyConflict, MaestroError
from maestro.errors_outside import SlackError
from maestro.events.deliveries import DeliveryFailed, DeliveryPlanned, delivery_id_for, delivery_stream
from maestro.events.model import Event, RecordedEvent
from maestro.events.store import NO_STREAM, EventStore
from maestro.handlers.notify.reactor import Reactor
from maestro.handlers.notify.schedule import new_schedule
from maestro.handlers.notify.slack_blocks import Links
from maestro.handlers.notify.slack_context import notice_context
from maestro.handlers.notify.slack_messages import NOTICE_EVENT_TYPES, Notice, slack_notices
from maestro.handlers.notify.slack_routing import Connection
from maestro.handlers.notify.slack_sender import KIND, WEBHOOK_TARGET, SlackPolicy, notice_details

ACTOR = "system:slack"


class SlackNotifier(Reactor):
    name = "slack"
    event_types = tuple(sorted(NOTICE_EVENT_TYPES))
    # One event at a time: plans are made in the log's order, which is the order of each channel.
    concurrency = 1

    def __init__(self, store: EventStore, connect: Callable[[], Connection | None],
                 policy: SlackPolicy = SlackPolicy()) -> None:
        self.store = store
        self.connect = connect
        self.policy = policy

    def _plan(self, recorded: RecordedEvent, notice: Notice | None, target: str, details: dict) -> DeliveryPlanned:
        e = recorded.event
        p = self.policy
        ident = f"{recorded.event_id}:{notice.key}:{target}" if notice is not None else f"{recorded.event_id}:unplanned"
        return DeliveryPlanned(
            delivery_id=delivery_id_for(KIND, ident), kind=KIND, run_id=getattr(e, "run_id", None),
            target=target, caused_by=recorded.event_id, details=details,
            schedule=new_schedule(recorded.occurred_at, initial=p.initial, max_delay=p.max_delay, window=p.window,
                                  timeout=p.timeout),
        )

    async def _append(self, recorded: RecordedEvent, events: list[Event]) -> None:
        plan = events[0]
        assert isinstance(plan, DeliveryPlanned)
        try:
            await self.store.append(delivery_stream(plan.delivery_id), NO_STREAM, events,
                                    recorded.metadata.caused_by(recorded, actor=ACTOR))
        except ConcurrencyConflict:
            pass  # planned before a crash moved the checkpoint: nothing more to do

    async def _unchanged(self, plan: DeliveryPlanned) -> bool:
        """The last message planned with this key in this channel says exactly this already."""
        row = await self.store.pool.fetchrow(
            "SELECT p.data->'details'->>'digest' AS digest, d.state FROM deliveries d "
            "JOIN events p ON p.stream_id = 'delivery-' || d.delivery_id AND p.version = 1 "
            "WHERE d.kind = 'slack' AND d.target = $2 AND ($3::text IS NULL OR d.run_id = $3) "
            "AND p.data->'details'->>'key' = $1 ORDER BY p.position DESC LIMIT 1",
            plan.details["key"], plan.target, plan.run_id)
        return row is not None and row["state"] != "failed" and row["digest"] == plan.details["digest"]

    async def handle(self, recorded: RecordedEvent) -> None:
        connection = self.connect()
        if connection is None:
            return  # Slack is not configured: nothing to plan (module docstring)
        pool = self.store.pool
        ctx = await notice_context(pool, recorded, Links(connection.section.url_prefix or None))
        key = recorded.stream_id if recorded.type == "CostDigestCompiled" else recorded.event_id
        for notice in slack_notices(recorded.event, ctx, key=key):
            try:
                channel = connection.channel_for(notice.route)
            except SlackError as error:
                plan = self._plan(recorded, notice, "(no channel)", notice_details(notice, ""))
                await self._append(recorded, [plan, DeliveryFailed(
                    delivery_id=plan.delivery_id, run_id=plan.run_id, reason="invalid", message=error.message)])
                continue
            plan = self._plan(recorded, notice, channel or WEBHOOK_TARGET, notice_details(notice, channel))
            if notice.edit and await self._unchanged(plan):
                continue
            await self._append(recorded, [plan])

    async def give_up(self, recorded: RecordedEvent, error: BaseException) -> None:
        reason = error.message if isinstance(error, MaestroError) else f"{type(error).__name__}: {error}"[:300]
        plan = self._plan(recorded, None, "(unknown)", {"event": recorded.type})
        await self._append(recorded, [plan, DeliveryFailed(
            delivery_id=plan.delivery_id, run_id=plan.run_id, reason="invalid",
            message=f"the Slack message about {recorded.type} {recorded.event_id} could not be made: {reason}")])
