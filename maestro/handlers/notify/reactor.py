"""Reactors: followers of the log that act on the outside world, each from its own checkpoint.

A reactor is a name (its checkpoint in ``reactor_checkpoints``), the event types it follows, and
an idempotent ``handle(event)``. The :class:`ReactorHost` runs every reactor while this process
leads (``maestro.services``), each in its own task:

- it reads the reactor's checkpoint (a new reactor starts at the log's safe head, or at the
  beginning when it asks to), calls ``resume()`` — the reactor re-reads its unfinished work from
  its events — then follows the log from the checkpoint, moving it after each batch;
- exactly once per event: handling is idempotent (a reactor records what it decides on a stream
  whose id derives from the event, so a repeat after a crash between the work and the checkpoint
  gets a concurrency conflict, not a second side effect) and the checkpoint is never moved past
  an event that was not handled;
- a database outage (or any failure) marks ``reactor:<name>`` down in ``/healthz`` and the loop
  subscribes again from the checkpoint with backoff; ``kill -9`` is the same as an outage; a
  replica that finds another one leading shows its reactors as ``standby``, not down;
- an event whose handling keeps failing for another reason is retried ``attempts`` times, then
  handed to ``give_up(event, error)``, which must record the failure as an event (nothing fails
  silently) — the reactor moves on instead of stopping on one bad event.

Adding a reactor (docs/reactors.md)::

    class SlackNotifier(Reactor):
        name = "slack"
        event_types = ("RunFinished",)

        async def handle(self, event):
            ...  # plan a delivery on delivery-<delivery_id_for("slack", event.event_id)>

    host.add(SlackNotifier(...))
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar, Literal

from maestro.errors import MaestroError, database_unavailable
from maestro.events.model import RecordedEvent
from maestro.events.store import EventStore
from maestro.health import Health

log = logging.getLogger(__name__)


class Reactor(abc.ABC):
    """Base of every reactor; subclasses set ``name`` and ``event_types`` and write ``handle``."""

    name: ClassVar[str]
    event_types: ClassVar[Sequence[str]]
    # Where a reactor that has no checkpoint yet starts: at the head (only what happens from now
    # on: a callback reactor added to a running Maestro does not call back for last year's
    # extracts), or at the beginning of the log.
    start_at: ClassVar[Literal["head", "beginning"]] = "head"
    # Handling one event is tried this many times (with backoff) before give_up.
    attempts: ClassVar[int] = 5
    # Events of one batch handled at once, at most. Above 1 the reactor says its events are
    # independent (each decides on its own stream); the checkpoint still moves only after the
    # whole batch, so a crash repeats the batch, which idempotent handling absorbs.
    concurrency: ClassVar[int] = 1

    async def resume(self) -> None:
        """Before following: re-read unfinished work (pending deliveries) from the log."""

    @abc.abstractmethod
    async def handle(self, event: RecordedEvent) -> None:
        """React to one event. Must be idempotent: it may be called again after a crash."""

    async def give_up(self, event: RecordedEvent, error: BaseException) -> None:
        """``handle`` kept failing (not a database outage): record that as an event. The default
        only logs; reactors that own a stream for the event record a failure there."""
        log.error("reactor gave up on an event", extra={"reactor": self.name, "event": event.event_id,
                                                         "error": str(error)})

    async def stop(self) -> None:
        """Stop background work (this process no longer leads)."""


class ReactorHost:
    """Runs reactors while started; ``stop`` ends them all (leadership lost, shutdown)."""

    def __init__(self, store: EventStore, health: Health, reactors: Sequence[Reactor] = (), *,
                 batch_size: int = 200, retry_delay: float = 0.5, max_delay: float = 30.0) -> None:
        self.store = store
        self.health = health
        self.reactors: dict[str, Reactor] = {}
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_delay = max_delay
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        for reactor in reactors:
            self.add(reactor)

    def add(self, reactor: Reactor) -> None:
        if reactor.name in self.reactors:
            raise ValueError(f"a reactor named {reactor.name!r} is already registered")
        self.reactors[reactor.name] = reactor
        if self.running:
            self._spawn(reactor)

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        self._stop.clear()
        for reactor in self.reactors.values():
            if reactor.name not in self._tasks:
                self._spawn(reactor)

    def _spawn(self, reactor: Reactor) -> None:
        self.health.set(component(reactor), "starting")
        self._tasks[reactor.name] = asyncio.get_running_loop().create_task(
            self._run(reactor), name=f"reactor:{reactor.name}")

    async def stop(self, why: str | None = None) -> None:
        """Stop every reactor. ``why`` given (leadership or the database lost): each stays in
        ``/healthz`` as down for that reason until :meth:`standby` or it runs again; None
        (shutdown): forgotten."""
        self._stop.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        for reactor in self.reactors.values():
            with contextlib.suppress(Exception):
                await reactor.stop()
            if why is None:
                self.health.forget(component(reactor))
            else:
                self.health.down(component(reactor), why)

    def standby(self, why: str) -> None:
        """This process is a healthy standby (another replica holds the lock and runs the
        reactors): say so in ``/healthz`` instead of the ``down`` a step-down left — a load
        balancer or a liveness probe must not pull or restart a replica for not leading."""
        if self.running:
            return
        for reactor in self.reactors.values():
            self.health.set(component(reactor), "standby", why)

    # ---------------------------------------------------------------- following
    async def _run(self, reactor: Reactor) -> None:
        name = component(reactor)
        delay = self.retry_delay
        while not self._stop.is_set():
            try:
                position = await self.checkpoint(reactor)
                await reactor.resume()
                async for batch in self.store.subscribe_batches(
                    position, types=list(reactor.event_types), batch_size=self.batch_size, stop=self._stop,
                    on_read=lambda: self.health.ok(name),
                ):
                    await self._handle_batch(reactor, batch)
                    await self._save(reactor, batch[-1].position)
                    delay = self.retry_delay
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an outage, or a bug: say so, then start over from the checkpoint
                self.health.down(name, exc)
                log.warning("reactor stopped following; resuming from its checkpoint",
                            extra={"reactor": reactor.name, "error": _describe(exc)},
                            exc_info=not database_unavailable(exc))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                delay = min(delay * 2, self.max_delay)

    async def _handle_batch(self, reactor: Reactor, batch: Sequence[RecordedEvent]) -> None:
        if reactor.concurrency <= 1 or len(batch) == 1:
            for event in batch:
                await self._handle(reactor, event)
            return
        slots = asyncio.Semaphore(reactor.concurrency)

        async def one(event: RecordedEvent) -> None:
            async with slots:
                await self._handle(reactor, event)

        # Every task ends before the first error is raised: none is left running unawaited.
        results = await asyncio.gather(*(one(e) for e in batch), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _handle(self, reactor: Reactor, event: RecordedEvent) -> None:
        delay = self.retry_delay
        for attempt in range(1, reactor.attempts + 1):
            try:
                await reactor.handle(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if database_unavailable(exc):
                    raise  # nothing can be recorded now: re-subscribe from the checkpoint later
                if attempt == reactor.attempts:
                    log.exception("reactor cannot handle an event; giving up on it",
                                  extra={"reactor": reactor.name, "event": event.event_id})
                    await reactor.give_up(event, exc)  # a database error here re-subscribes
                    return
                log.warning("reactor failed to handle an event; retrying",
                            extra={"reactor": reactor.name, "event": event.event_id, "error": _describe(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)

    async def checkpoint(self, reactor: Reactor) -> int:
        """The reactor's checkpoint, created at the head (or 0) the first time."""
        position = await self.store.pool.fetchval(
            "SELECT position FROM reactor_checkpoints WHERE name = $1", reactor.name)
        if position is not None:
            return position
        start = await self.store.head_position() if reactor.start_at == "head" else 0
        await self.store.pool.execute(
            "INSERT INTO reactor_checkpoints (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            reactor.name, start,
        )
        return await self.store.pool.fetchval("SELECT position FROM reactor_checkpoints WHERE name = $1", reactor.name)

    async def _save(self, reactor: Reactor, position: int) -> None:
        # greatest(): a replica that led before us and is still finishing a batch never moves it back.
        await self.store.pool.execute(
            "UPDATE reactor_checkpoints SET position = greatest(position, $2), updated_at = now() WHERE name = $1",
            reactor.name, position,
        )


def component(reactor: Reactor) -> str:
    return f"reactor:{reactor.name}"


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, MaestroError) else f"{type(exc).__name__}: {exc}"[:300]
