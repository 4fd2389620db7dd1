"""Wake-ups for tailing readers: at once for appends made in this process, by NOTIFY for other
processes' appends, and by polling as the fallback a lost notification falls back to.

NOTIFY is sent *after* an append commits, coalesced to at most one per ``NOTIFY_INTERVAL``:
inside the append's transaction it would take PostgreSQL's global notify lock at every commit and
serialize writers, and on two cores a NOTIFY per append cost a third of the append rate
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "maestro_events"
NOTIFY_INTERVAL = 0.005  # seconds between NOTIFYs to other processes, at most


class Signals:
    def __init__(self, pool: asyncpg.Pool, listen_dsn: str | None, poll_interval: float) -> None:
        self.pool = pool
        self._listen_dsn = listen_dsn
        self.poll_interval = poll_interval
        self._wakeups: set[asyncio.Event] = set()
        self._notify_pending = asyncio.Event()
        self._notifier_task: asyncio.Task[None] | None = None
        self._listener_conn: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._closed = False

    def appended(self) -> None:
        """An append through this process committed: wake our readers, tell the others soon."""
        self._wake_local()
        self._notify_pending.set()
        if self._notifier_task is None and not self._closed:
            self._notifier_task = asyncio.get_running_loop().create_task(self._notify_loop())

    async def register(self) -> asyncio.Event:
        """A wake-up event for one reader (set on any append seen), listening if we can."""
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        await self._ensure_listener()
        return wakeup

    def unregister(self, wakeup: asyncio.Event) -> None:
        self._wakeups.discard(wakeup)

    def _wake_local(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()

    async def _ensure_listener(self) -> None:
        if self._listen_dsn is None or self._listener_conn is not None or self._closed:
            return
        if self._listener_task is None:
            # One connect at a time, owned here (not by whichever subscriber asked), so that
            # close() can always find and close it, even mid-connect.
            self._listener_task = asyncio.get_running_loop().create_task(self._connect_listener())
        await asyncio.shield(self._listener_task)

    async def _connect_listener(self) -> None:
        try:
            conn = await asyncpg.connect(self._listen_dsn)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_listener_lost)
            if self._closed:
                await conn.close()
                return
            self._listener_conn = conn
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("event listener unavailable, polling only", extra={"error": str(exc)})
        finally:
            self._listener_task = None

    def _on_notify(self, *_args: Any) -> None:
        self._wake_local()

    def _on_listener_lost(self, *_args: Any) -> None:
        # Polling keeps subscribers going; the next register() reconnects.
        self._listener_conn = None

    async def _notify_loop(self) -> None:
        while not self._closed:
            await self._notify_pending.wait()
            self._notify_pending.clear()
            try:
                await self.pool.execute(f"NOTIFY {NOTIFY_CHANNEL}")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("NOTIFY failed; readers will poll", extra={"error": str(exc)})
                await asyncio.sleep(self.poll_interval)
            await asyncio.sleep(NOTIFY_INTERVAL)

    async def close(self) -> None:
        self._closed = True
        if self._listener_task is not None:
            with contextlib.suppress(Exception):
                await self._listener_task
        if self._notifier_task is not None:
            self._notifier_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._notifier_task
            self._notifier_task = None
        if self._listener_conn is not None:
            with contextlib.suppress(Exception):
                await self._listener_conn.close()
            self._listener_conn = None
        self._wake_local()


async def wait_for_wakeup(event: asyncio.Event, timeout: float, stop: asyncio.Event | None) -> bool:
    """Wait for ``event`` (True) or the timeout (False); return early when ``stop`` is set."""
    waiters: list[Awaitable[Any]] = [event.wait()]
    if stop is not None:
        waiters.append(stop.wait())
    tasks = [asyncio.ensure_future(w) for w in waiters]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done) and event.is_set()
