"""The event store: the only writer of the ``events`` table.

``append`` adds events to one stream with optimistic concurrency; ``read`` reads one stream;
``read_all`` and ``subscribe`` tail the whole log by position. Readers never skip an event that
commits late with a lower position: see the comment at the top of ``sql/001_event_store.sql`` and
``docs/event-store.md`` for the mechanism (in-flight positions marked by transaction-level advisory
locks, a safe bound below them) and the measurements that chose it over a writer lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from maestro.errors import (
    ConcurrencyConflict,
    Conflict,
    DatabaseUnavailable,
    MaestroError,
    database_unavailable,
)
from maestro.events.model import Event, Metadata, RawEvent, RecordedEvent, now
from maestro.events.rows import ANY_VERSION, NO_STREAM, decode_row, expected_label, raw_row, recorded_rows

__all__ = ["ANY_VERSION", "NO_STREAM", "AppendResult", "EventStore"]
from maestro.events.signals import Signals, wait_for_wakeup

log = logging.getLogger(__name__)

# Appends hold this advisory lock in shared mode so that rebuilding an inline projection (which
# takes it exclusively) sees a log that does not move under it.
INLINE_PROJECTION_LOCK = 7283002

_APPEND = (
    "SELECT first_position, last_version FROM "
    "events_append($1, $2, $3, $4::smallint[], $5::jsonb[], $6::jsonb[], $7)"
)
_READ_COLUMNS = (
    "position, stream_id, version, type, schema_version, data::text, metadata::text, occurred_at"
)
# Below this bound no append is in flight; see sql/001_event_store.sql. It must be computed in a
# statement before the one that reads (a later snapshot), never inside a REPEATABLE READ reader.
_SAFE_POSITION = "SELECT events_safe_position()"


class Connection(Protocol):
    async def execute(self, query: str, *args: Any) -> str: ...
    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


class InlineProjection(Protocol):
    """What the store needs of a projection updated inside the append's transaction."""

    name: str

    def handles(self, type_name: str) -> bool: ...
    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None: ...


@dataclass(frozen=True, slots=True)
class AppendResult:
    stream_id: str
    first_position: int
    last_position: int
    version: int
    events: tuple[RecordedEvent, ...]


AppendListener = Callable[[AppendResult], None]


class EventStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        listen_dsn: str | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self._listen_dsn = listen_dsn
        self.poll_interval = poll_interval
        self._inline: list[InlineProjection] = []
        self._unique_messages: dict[str, str] = {}
        self._append_listeners: list[AppendListener] = []
        self.signals = Signals(pool, listen_dsn, poll_interval)

    # ---------------------------------------------------------------- configuration
    def add_inline_projection(self, projection: InlineProjection) -> None:
        self._inline.append(projection)

    @property
    def inline_projections(self) -> tuple[InlineProjection, ...]:
        return tuple(self._inline)

    def translate_unique_violation(self, constraint: str, message: str) -> None:
        """A unique index of a read model (``constraint``) means ``message`` when violated."""
        self._unique_messages[constraint] = message

    def on_append(self, listener: AppendListener) -> None:
        """Call ``listener`` after every successful append made through this store."""
        self._append_listeners.append(listener)

    # ---------------------------------------------------------------- writing
    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        metadata: Metadata | Sequence[Metadata],
        *,
        occurred_at: dt.datetime | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` if it is at ``expected_version``.

        ``expected_version`` is the stream's current version, :data:`NO_STREAM` or
        :data:`ANY_VERSION`. A mismatch raises :class:`ConcurrencyConflict` and writes nothing.
        Inline projections are updated in the same transaction.
        """
        if not events:
            raise ValueError("append needs at least one event")
        metas = [metadata] * len(events) if isinstance(metadata, Metadata) else list(metadata)
        if len(metas) != len(events):
            raise ValueError("one metadata per event, or a single one for all")
        occurred_at = occurred_at or now()
        types = [e.type_name() for e in events]
        payloads = [e.payload_json() for e in events]
        meta_json = [m.to_json().decode() for m in metas]
        schema_versions = [type(e).schema_version for e in events]
        inline = [p for p in self._inline if any(p.handles(t) for t in types)]

        args = (stream_id, expected_version, types, schema_versions, payloads, meta_json, occurred_at)
        try:
            async with self.pool.acquire() as conn:
                if not inline:
                    # One statement is its own transaction: one round trip, no BEGIN/COMMIT.
                    row = await conn.fetchrow(_APPEND, *args)
                    recorded = recorded_rows(row, stream_id, events, types, metas, occurred_at)
                else:
                    async with conn.transaction():
                        # Shared: appends run side by side; a rebuild takes it exclusively.
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock_shared($1)", INLINE_PROJECTION_LOCK
                        )
                        row = await conn.fetchrow(_APPEND, *args)
                        recorded = recorded_rows(row, stream_id, events, types, metas, occurred_at)
                        for projection in inline:
                            mine = [r for r in recorded if projection.handles(r.type)]
                            await projection.apply(conn, mine)
        except asyncpg.PostgresError as exc:
            if database_unavailable(exc):
                raise DatabaseUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from exc
            raise await self._translate(exc, stream_id, expected_version) from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            # The commit may or may not have happened: a retry of the same append then finds the
            # stream moved (ConcurrencyConflict), which callers of fixed versions treat as "landed".
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}") from exc

        result = AppendResult(
            stream_id=stream_id,
            first_position=recorded[0].position,
            last_position=recorded[-1].position,
            version=recorded[-1].version,
            events=recorded,
        )
        for listener in self._append_listeners:
            listener(result)
        self.signals.appended()
        return result

    async def _translate(
        self, exc: asyncpg.PostgresError, stream_id: str, expected_version: int
    ) -> MaestroError:
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == "MA409":
            return ConcurrencyConflict(stream_id, expected_label(expected_version), int(exc.detail))
        if isinstance(exc, asyncpg.UniqueViolationError):
            if exc.constraint_name == "events_pkey":
                actual = await self.stream_version(stream_id)
                return ConcurrencyConflict(stream_id, expected_label(expected_version), actual)
            message = self._unique_messages.get(exc.constraint_name or "")
            if message is not None:
                return Conflict(message)
        # The driver's text (SQL, constraint names, values) stays in the chained cause, for the log.
        return MaestroError("event store error")

    # ---------------------------------------------------------------- reading
    async def stream_version(self, stream_id: str) -> int | None:
        """The stream's current version, or None when it does not exist."""
        return await self.pool.fetchval(
            "SELECT max(version) FROM events WHERE stream_id = $1", stream_id
        )

    async def read(
        self, stream_id: str, after_version: int | None = None, *, until: dt.datetime | None = None
    ) -> list[RecordedEvent]:
        """Every event of one stream in version order (optionally only those up to ``until``)."""
        rows = await self.pool.fetch(
            f"SELECT {_READ_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 "
            "AND ($3::timestamptz IS NULL OR occurred_at <= $3) ORDER BY version",
            stream_id,
            after_version or 0,
            until,
        )
        return [decode_row(r) for r in rows]

    async def read_raw_stream(
        self, stream_id: str, after_version: int = 0, limit: int = 100
    ) -> list[RawEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_READ_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2 "
            "ORDER BY version LIMIT $3",
            stream_id,
            after_version,
            limit,
        )
        return [raw_row(r) for r in rows]

    async def read_all(
        self,
        after_position: int = 0,
        limit: int = 1000,
        types: Sequence[str] | None = None,
        *,
        conn: Connection | None = None,
    ) -> list[RecordedEvent]:
        """Committed events after ``after_position`` in position order, decoded.

        Only events below the safe bound are returned (no append with a lower position is still
        in flight), so a later call never finds an event with a lower position than one already
        returned.
        """
        rows = await self._read_all_rows(after_position, limit, types, conn)
        return [decode_row(r) for r in rows]

    async def read_all_raw(
        self,
        after_position: int = 0,
        limit: int = 1000,
        types: Sequence[str] | None = None,
    ) -> list[RawEvent]:
        """Like :meth:`read_all` without decoding: for audit views and unknown event types."""
        rows = await self._read_all_rows(after_position, limit, types, None)
        return [raw_row(r) for r in rows]

    async def _read_all_rows(
        self,
        after_position: int,
        limit: int,
        types: Sequence[str] | None,
        conn: Connection | None,
    ) -> list[Any]:
        if conn is None:
            async with self.pool.acquire() as own:
                return await self._read_all_rows(after_position, limit, types, own)
        bound = await conn.fetchval(_SAFE_POSITION)
        if bound <= after_position:
            return []
        if types:
            return await conn.fetch(
                f"SELECT {_READ_COLUMNS} FROM events WHERE position > $1 AND position <= $4 "
                "AND type = ANY($3) ORDER BY position LIMIT $2",
                after_position,
                limit,
                list(types),
                bound,
            )
        return await conn.fetch(
            f"SELECT {_READ_COLUMNS} FROM events WHERE position > $1 AND position <= $3 "
            "ORDER BY position LIMIT $2",
            after_position,
            limit,
            bound,
        )

    async def head_position(self) -> int:
        """The position below which every event that will ever commit has committed."""
        return await self.pool.fetchval(_SAFE_POSITION)

    async def last_position(self) -> int:
        """The highest committed position (for lag figures)."""
        value = await self.pool.fetchval("SELECT max(position) FROM events")
        return value or 0

    # ---------------------------------------------------------------- tailing
    async def subscribe(
        self,
        after_position: int = 0,
        *,
        types: Sequence[str] | None = None,
        batch_size: int = 1000,
        stop: asyncio.Event | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> AsyncIterator[RecordedEvent]:
        """Catch up from the log, then follow it live.

        Wakes on appends made in this process at once, on NOTIFY from other processes, and
        otherwise polls every ``poll_interval`` seconds, so a lost notification only delays.
        """
        async for batch in self.subscribe_batches(
            after_position, types=types, batch_size=batch_size, stop=stop, on_read=on_read
        ):
            for event in batch:
                yield event

    async def subscribe_batches(
        self,
        after_position: int = 0,
        *,
        types: Sequence[str] | None = None,
        batch_size: int = 1000,
        stop: asyncio.Event | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Like :meth:`subscribe`, a batch at a time. ``on_read`` is called after every read of
        the log that worked (also the empty ones): a follower's proof of life for its health."""
        wakeup = await self.signals.register()
        position = after_position
        # After a wake-up that found nothing (an append with a lower position was still in
        # flight), look again soon rather than a whole poll interval later.
        retry = 0.0
        try:
            while stop is None or not stop.is_set():
                wakeup.clear()
                batch = await self.read_all(position, batch_size, types)
                if on_read is not None:
                    on_read()
                if batch:
                    position = batch[-1].position
                    retry = 0.0
                    yield batch
                    if len(batch) == batch_size:
                        continue
                timeout = self.poll_interval if retry == 0.0 else retry
                woke = await wait_for_wakeup(wakeup, timeout, stop)
                if woke:
                    retry = 0.002 if retry == 0.0 else min(retry * 2, self.poll_interval)
                else:
                    retry = 0.0 if retry == 0.0 else min(retry * 2, self.poll_interval)
        finally:
            self.signals.unregister(wakeup)

    async def close(self) -> None:
        await self.signals.close()
