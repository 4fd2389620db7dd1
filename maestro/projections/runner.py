"""Running projections: inline registration, asynchronous followers, rebuilds and status."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from maestro.errors import MaestroError, NotFound
from maestro.events.model import RecordedEvent
from maestro.events.store import INLINE_PROJECTION_LOCK, Connection, EventStore
from maestro.health import Health
from maestro.projections.base import Projection

log = logging.getLogger(__name__)

REBUILD_BATCH = 5000


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    mode: str
    position: int
    lag: int
    rebuilt_at: dt.datetime | None
    updated_at: dt.datetime | None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "mode": self.mode,
            "position": self.position,
            "lag": self.lag,
            "rebuilt_at": self.rebuilt_at.isoformat() if self.rebuilt_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


class ProjectionRunner:
    def __init__(
        self, store: EventStore, projections: Sequence[Projection], *, health: Health | None = None
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            raise ValueError(f"projection names must be unique: {names}")
        self.store = store
        self.projections = {p.name: p for p in projections}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.errors: dict[str, str] = {}
        self.health = health or Health()
        for p in projections:
            if p.mode == "inline":
                store.add_inline_projection(p)
                for constraint, message in p.unique_messages.items():
                    store.translate_unique_violation(constraint, message)

    def get(self, name: str) -> Projection:
        try:
            return self.projections[name]
        except KeyError:
            raise NotFound(f"no projection named {name!r}; known: {sorted(self.projections)}") from None

    async def prepare(self) -> None:
        """Register checkpoints; build any inline projection that has never been built.

        An inline projection added in a new release has no checkpoint row yet: it must catch up
        with the whole log before requests read it.
        """
        for p in self.projections.values():
            created = await self.store.pool.fetchval(
                "INSERT INTO projection_checkpoints (name, mode) VALUES ($1, $2) "
                "ON CONFLICT (name) DO NOTHING RETURNING true",
                p.name,
                p.mode,
            )
            if created and p.mode == "inline":
                await self.rebuild(p.name)

    # ---------------------------------------------------------------- rebuild
    async def rebuild(self, name: str) -> int:
        """Empty the projection's tables and replay the whole log into them, in one transaction.

        Readers see the old state until the rebuild commits. For an inline projection the append
        lock is held exclusively, so no event can slip in between the replay and the switch.
        Returns the number of events applied.
        """
        projection = self.get(name)
        types = _types(projection)
        applied = 0
        async with self.store.pool.acquire() as conn, conn.transaction():
            inline = projection.mode == "inline"
            if inline:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", INLINE_PROJECTION_LOCK)
            await conn.execute(
                "INSERT INTO projection_checkpoints (name, mode) VALUES ($1, $2) "
                "ON CONFLICT (name) DO NOTHING",
                projection.name,
                projection.mode,
            )
            await conn.execute(
                "SELECT 1 FROM projection_checkpoints WHERE name = $1 FOR UPDATE", projection.name
            )
            await projection.reset(conn)
            position = 0
            while True:
                batch = await self.store.read_all(position, REBUILD_BATCH, types, conn=conn)
                if not batch:
                    break
                await projection.apply(conn, batch)
                applied += len(batch)
                position = batch[-1].position
            if inline:
                position = max(position, await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
            await conn.execute(
                "UPDATE projection_checkpoints SET position = $2, rebuilt_at = now(), "
                "updated_at = now() WHERE name = $1",
                projection.name,
                position,
            )
        log.info("projection rebuilt", extra={"projection": name, "events": applied})
        return applied

    # ---------------------------------------------------------------- async followers
    async def catch_up(self, name: str, *, batch_size: int = 1000) -> int:
        """Apply everything available now to one async projection; return events applied."""
        projection = self.get(name)
        total = 0
        while True:
            applied = await self._apply_next(projection, batch_size)
            if applied == 0:
                return total
            total += applied

    async def _apply_next(self, projection: Projection, batch_size: int) -> int:
        types = _types(projection)
        async with self.store.pool.acquire() as conn, conn.transaction():
            # The row lock makes replicas take turns; each re-reads the checkpoint under it.
            position = await conn.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
                projection.name,
            )
            batch = await self.store.read_all(position, batch_size, types)
            if not batch:
                return 0
            await projection.apply(conn, batch)
            await _save_checkpoint(conn, projection.name, batch[-1].position)
        return len(batch)

    async def _follow(self, projection: Projection) -> None:
        types = _types(projection)
        component = f"projection:{projection.name}"

        def alive() -> None:
            self.health.ok(component)

        delay = 0.5
        while not self._stop.is_set():
            try:
                # From the checkpoint every time: after an outage it says what was applied.
                position = await self.store.pool.fetchval(
                    "SELECT position FROM projection_checkpoints WHERE name = $1", projection.name
                )
                async for batch in self.store.subscribe_batches(
                    position, types=types, stop=self._stop, on_read=alive
                ):
                    position = await self._apply_batch(projection, batch, position)
                    self.errors.pop(projection.name, None)
                    delay = 0.5
                    if position < batch[-1].position:
                        break  # the checkpoint moved back (a rebuild): subscribe again from it
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following; the status endpoint shows the error
                # Shown to any user (GET /api/v1/projections): our own message, never a driver's.
                self.errors[projection.name] = (
                    exc.message if isinstance(exc, MaestroError) else f"{type(exc).__name__}; see the server log"
                )
                self.health.down(component, exc)
                log.exception("projection failed", extra={"projection": projection.name})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)

    async def _apply_batch(
        self, projection: Projection, batch: Sequence[RecordedEvent], since: int
    ) -> int:
        """Apply a batch read after ``since``, unless the checkpoint says otherwise.

        The checkpoint, read under a row lock, is the authority: another replica may have applied
        part of the batch (skip it), or a rebuild may have moved the checkpoint back (read again).
        Returns the checkpoint after the call.
        """
        async with self.store.pool.acquire() as conn, conn.transaction():
            checkpoint = await conn.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE",
                projection.name,
            )
            if checkpoint < since:
                fresh = await self.store.read_all(checkpoint, REBUILD_BATCH, _types(projection))
                batch = [e for e in fresh if e.position <= batch[-1].position]
            else:
                batch = [e for e in batch if e.position > checkpoint]
            if not batch:
                return checkpoint
            await projection.apply(conn, batch)
            await _save_checkpoint(conn, projection.name, batch[-1].position)
            return batch[-1].position

    def start(self) -> None:
        """Follow every async projection in the background."""
        self._stop.clear()
        loop = asyncio.get_running_loop()
        for p in self.projections.values():
            if p.mode == "async":
                self._tasks.append(loop.create_task(self._follow(p), name=f"projection:{p.name}"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    # ---------------------------------------------------------------- status
    async def status(self) -> list[ProjectionStatus]:
        rows = {
            r["name"]: r
            for r in await self.store.pool.fetch(
                "SELECT name, mode, position, rebuilt_at, updated_at FROM projection_checkpoints"
            )
        }
        head = await self.store.last_position()
        result = []
        for p in self.projections.values():
            row = rows.get(p.name)
            position = row["position"] if row else 0
            if p.mode == "inline" and row is not None:
                lag, position = 0, head  # updated in the append's own transaction
            elif p.event_types is None:
                lag = max(head - position, 0)
            else:
                lag = await self.store.pool.fetchval(
                    "SELECT count(*) FROM events WHERE position > $1 AND type = ANY($2)",
                    position,
                    sorted(p.event_types),
                )
            result.append(
                ProjectionStatus(
                    name=p.name,
                    mode=p.mode,
                    position=position,
                    lag=lag,
                    rebuilt_at=row["rebuilt_at"] if row else None,
                    updated_at=row["updated_at"] if row else None,
                )
            )
        return result


def _types(projection: Projection) -> list[str] | None:
    return sorted(projection.event_types) if projection.event_types is not None else None


async def _save_checkpoint(conn: Connection, name: str, position: int) -> None:
    await conn.execute(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
        name,
        position,
    )
