"""The audit trail: refusals are recorded as events; the audit query reads the whole log.

Every change in Maestro is already an event with its actor, so "who did what, when" needs no
second record. What the log would otherwise miss are the attempts that changed nothing: denied
logins, rejected tokens and sessions, forbidden actions.

Two hazards shape how they are written. The log is undeletable, so a refusal an attacker can
repeat at will must not be one event per request: those are *counted* (:meth:`AuditLog.count`)
and one event per key (e.g. principal and route) and minute carries the count. And an audit
event must never be dropped: appends go to ``audit-<day>-<process>``, a stream only this process
writes, one append at a time, so they cannot conflict (``ANY_VERSION`` appends to a shared stream
collide on its next version); when the database cannot take one, it waits in memory and a
background writer retries it until it lands. ``close`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import orjson

from maestro.errors import ConcurrencyConflict
from maestro.events.model import Event, Metadata, RawEvent, now
from maestro.events.store import ANY_VERSION, EventStore

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"
WINDOW = dt.timedelta(minutes=1)
RETRY_SECONDS = (0.5, 1, 2, 5, 10, 30)  # the writer's backoff while the database is away
CLOSE_ATTEMPTS = 3

# (count, first, last) -> the event recording that many refusals between first and last.
Summary = Callable[[int, dt.datetime, dt.datetime], Event]


def audit_stream(at: dt.datetime, process: str) -> str:
    return f"audit-{at.astimezone(dt.timezone.utc).date().isoformat()}-{process}"


def normalize_actor(actor: str) -> str:
    """``u123`` and ``user:u123`` name the same actor; ``system:...`` and ``anonymous`` stay."""
    return actor if ":" in actor or actor == ANONYMOUS else f"user:{actor}"


@dataclass
class _Tally:
    summary: Summary
    actor: str
    count: int
    first: dt.datetime
    last: dt.datetime


class AuditLog:
    def __init__(self, store: EventStore, *, clock: Callable[[], dt.datetime] = now) -> None:
        self.store = store
        self.clock = clock
        self.process = secrets.token_hex(4)
        self._lock = asyncio.Lock()  # one append at a time: this process's stream never conflicts
        self._outbox: deque[tuple[Event, str, dt.datetime]] = deque()
        self._tallies: dict[tuple[Hashable, ...], _Tally] = {}
        self._writer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ writing
    async def record(self, event: Event, actor: str = ANONYMOUS) -> None:
        """Append a refusal now. Never raises: failing to audit must not turn a 401 into a 500;
        an event the database cannot take now is kept and appended later."""
        at = self.clock()
        if not await self._append(event, actor, at):
            self._outbox.append((event, actor, at))
            self._start_writer()

    def count(self, key: tuple[Hashable, ...], actor: str, summary: Summary) -> None:
        """One more refusal of ``key`` by ``actor``; one event per key and minute records how many."""
        at = self.clock()
        window = at.replace(second=0, microsecond=0)
        tally = self._tallies.get((window, actor, *key))
        if tally is None:
            self._tallies[(window, actor, *key)] = _Tally(summary, actor, 1, at, at)
        else:
            tally.count += 1
            tally.last = at
        self._start_writer()

    async def flush(self, *, everything: bool = True) -> bool:
        """Append the counted refusals (only of minutes that are over unless ``everything``) and
        whatever waits; True when nothing is left waiting."""
        horizon = self.clock() - WINDOW
        for key in [k for k in self._tallies if everything or k[0] <= horizon]:
            tally = self._tallies.pop(key)
            self._outbox.append((tally.summary(tally.count, tally.first, tally.last), tally.actor, tally.first))
        while self._outbox:
            event, actor, at = self._outbox[0]
            if not await self._append(event, actor, at):
                return False
            self._outbox.popleft()
        return True

    async def _append(self, event: Event, actor: str, at: dt.datetime) -> bool:
        async with self._lock:
            while True:
                try:
                    await self.store.append(audit_stream(at, self.process), ANY_VERSION, [event],
                                            Metadata(actor=actor), occurred_at=at)
                    return True
                except ConcurrencyConflict:
                    continue  # only another writer of this process's stream could cause it: go again
                except Exception as exc:  # noqa: BLE001 - the database is away: keep it for later
                    log.warning("could not record an audit event yet; will retry",
                                extra={"type": event.type_name(), "error": str(exc)})
                    return False

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_forever())

    async def _write_forever(self) -> None:
        failures = 0
        while self._tallies or self._outbox:
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)] if failures else 1.0)
            failures = 0 if await self.flush(everything=False) else failures + 1

    async def close(self) -> None:
        """Stop the writer and append everything still counted or waiting."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for attempt in range(CLOSE_ATTEMPTS):
            if await self.flush():
                return
            await asyncio.sleep(RETRY_SECONDS[attempt])
        log.error("audit events could not be recorded before shutdown: the database is unreachable",
                  extra={"events": len(self._outbox)})

    # ------------------------------------------------------------------ reading
    async def query(
        self,
        *,
        actor: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        types: Sequence[str] = (),
        after: int = 0,
        limit: int = 100,
    ) -> list[RawEvent]:
        """Events in position order matching every filter given (``until`` is exclusive).

        Only events at or below the store's safe position are read: an append that took a lower
        position may still be in flight, and a client that pages on from the last position it
        saw would never see that event once it commits (docs/event-store.md).
        """
        # The bound first, in its own statement; the read is the next one (a newer snapshot).
        bound = await self.store.head_position()
        rows = await self.store.pool.fetch(
            "SELECT position, stream_id, version, type, schema_version, data::text, metadata::text, occurred_at "
            "FROM events WHERE position > $1 AND position <= $7 "
            "AND ($2::text IS NULL OR metadata->>'actor' = $2) "
            "AND ($3::timestamptz IS NULL OR occurred_at >= $3) "
            "AND ($4::timestamptz IS NULL OR occurred_at < $4) "
            "AND (cardinality($5::text[]) = 0 OR type = ANY($5)) "
            "ORDER BY position LIMIT $6",
            after, normalize_actor(actor) if actor else None, since, until, list(types), limit, bound,
        )
        return [
            RawEvent(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), orjson.loads(r[6]), r[7]) for r in rows
        ]
