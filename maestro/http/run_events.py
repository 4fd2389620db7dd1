"""A run's state changes as Server-Sent Events, with an end.

An open stream costs a connection, a subscription and a task, and lives until something ends it;
before, nothing did. Now a stream ends:

- at the run's end (``RunFinished``). A client that asks to resume past it (``Last-Event-ID``
  at or after the run's last event) gets ``204 No Content``, which tells an ``EventSource`` to
  stop reconnecting; otherwise it would wait forever for events that cannot come;
- after ``sse_max_lifetime`` seconds: the first frame's ``retry:`` tells the client how soon to
  reconnect, and ``Last-Event-ID`` resumes where it was;
- when the caller's standing fails: every ``sse_recheck_interval`` seconds the token or session
  is verified again (revoked, expired, ended, user disabled: the stream ends, audited), and a
  keep-alive comment is written, so a client that went away is noticed within that interval even
  when the run is quiet (writing to a closed connection is the only reliable sign);
- and nobody holds more than ``sse_streams_per_user`` at once in a process (429 ``too_many_streams``).

Extract file names are left out of job events for callers the ``extract`` rule would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from maestro.errors import CredentialsRefused, NotFound, TooManyStreams
from maestro.events.deliveries import DELIVERY_EVENTS as STEP_EVENTS
from maestro.events.model import RecordedEvent
from maestro.handlers.notify.steps import last_step_position, open_steps
from maestro.handlers.people.principal import Principal
from maestro.http.auth import principal, recheck
from maestro.http.extract_rule import unreadable_extracts
from maestro.http.keys import RUNTIME, SETTINGS
from maestro.http.validation import INT64_MAX

# A run ends at RunFinished, or at RunSkipped for a scheduled slot that never ran (overlap).
RUN_ENDS = ("RunFinished", "RunSkipped")
RUN_EVENT_TYPES = [
    "RunQueued", "RunPlanned", "RunCancelRequested", "RunRetryRequested", *RUN_ENDS,
    "JobPlanned", "JobSubmitted", "JobSucceeded", "JobFailed", "JobCancelled", "JobSkipped",
    # an import's phases and progress (rows read, bytes written)
    "ImportStarted", "ImportProgress", "ImportUploaded", "ImportSchemaChanged",
    # the steps after a table's job (callbacks, exports): they may go on after the run's end
    *STEP_EVENTS,
]
RETRY_MS = 3000  # how soon a client reconnects after a stream's lifetime ends


class StreamSlots:
    """Open streams per user in this process, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, user_id: str) -> int:
        return self._open.get(user_id, 0)

    @contextlib.contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        if self.open(user_id) >= self.limit:
            raise TooManyStreams(f"you already have {self.limit} event streams open (the most allowed); "
                                 "close one first", limit=self.limit)
        self._open[user_id] = self.open(user_id) + 1
        try:
            yield
        finally:
            self._open[user_id] -= 1
            if not self._open[user_id]:
                del self._open[user_id]


STREAM_SLOTS = web.AppKey("stream_slots", StreamSlots)


class _Redactor:
    """Drops ``destination_uris`` from job events of tables whose extracts the caller may not have."""

    def __init__(self, pool: Any, who: Principal) -> None:
        self.pool, self.who = pool, who
        self._hidden: dict[str, bool] = {}

    def refresh(self, who: Principal) -> None:
        self.who, self._hidden = who, {}  # groups may have changed

    async def data(self, event: RecordedEvent) -> dict[str, Any]:
        data = event.event.model_dump(mode="json", exclude={"tables"} if event.type == "RunPlanned" else None)
        table_id = data.get("table_id")
        if isinstance(table_id, str):
            if table_id not in self._hidden:
                self._hidden[table_id] = bool(await unreadable_extracts(self.pool, self.who, [table_id]))
            if self._hidden[table_id]:
                data.pop("destination_uris", None)
                data.pop("details", None)  # a callback's plan names the extract's files
                if isinstance(data.get("config"), dict):
                    data["config"].pop("destination_uris", None)
        return {"type": event.type, "stream_id": event.stream_id, "at": event.occurred_at.isoformat(), **data}


async def run_events(request: web.Request) -> web.StreamResponse:
    """State changes of one run as Server-Sent Events, from the start (or Last-Event-ID)."""
    run_id = request.match_info["run_id"]
    runtime = request.app[RUNTIME]
    row = await runtime.pool.fetchrow(
        "SELECT min(position) AS first, max(position) AS last, "
        "(array_agg(type ORDER BY version DESC))[1] AS last_type FROM events WHERE stream_id = $1",
        f"run-{run_id}",
    )
    if row["first"] is None:
        raise NotFound(f"no run {run_id!r}")
    start = row["first"] - 1
    last = request.headers.get("Last-Event-ID", "")
    # Only an id we could have sent (an event position) counts; anything else replays from the start.
    if last.isascii() and last.isdigit() and int(last) <= INT64_MAX:
        start = max(start, int(last))
    if row["last_type"] in RUN_ENDS and start >= max(row["last"], await last_step_position(runtime.pool, run_id) or 0) \
            and not await open_steps(runtime.pool, run_id):
        return web.Response(status=204)  # the run and its steps are over and the client has seen all of it
    who = principal(request)
    with request.app[STREAM_SLOTS].hold(who.user_id):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client went away: nothing to tell it
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await _follow(request, response, run_id, start, _Redactor(runtime.pool, who))
            await response.write_eof()
    return response


async def _follow(
    request: web.Request, response: web.StreamResponse, run_id: str, start: int, redactor: _Redactor
) -> None:
    runtime = request.app[RUNTIME]
    settings = request.app[SETTINGS]  # the app's own: tests and embedders may differ from the runtime's
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.sse_max_lifetime
    next_check = loop.time() + settings.sse_recheck_interval
    batches: asyncio.Queue[list[RecordedEvent]] = asyncio.Queue(maxsize=1)  # a slow client slows the pump
    stop = asyncio.Event()

    async def pump() -> None:
        async for batch in runtime.store.subscribe_batches(start, types=RUN_EVENT_TYPES, stop=stop):
            await batches.put(batch)

    pumping = asyncio.create_task(pump())
    get: asyncio.Future[list[RecordedEvent]] | None = None
    ended = False  # the run's end was sent: the stream goes on only while steps are open
    try:
        while True:
            now = loop.time()
            if now >= deadline:
                return  # the client reconnects after RETRY_MS with Last-Event-ID
            if now >= next_check:
                try:
                    redactor.refresh(await recheck(request))
                except CredentialsRefused:
                    return
                await response.write(b": keep-alive\n\n")  # raises once the client is gone
                next_check = now + settings.sse_recheck_interval
                if ended and not await open_steps(runtime.pool, run_id):
                    return  # a step that was due is no longer (never planned): no event would say so
                continue
            if get is None:
                get = asyncio.ensure_future(batches.get())
            await asyncio.wait({get, pumping}, timeout=min(deadline, next_check) - now,
                               return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                batch, get = get.result(), None
                for event in batch:
                    if getattr(event.event, "run_id", None) != run_id:
                        continue
                    data = orjson.dumps(await redactor.data(event)).decode()
                    await response.write(f"id: {event.position}\nevent: {event.type}\ndata: {data}\n\n".encode())
                    ended = ended or event.type in RUN_ENDS
                if ended and not await open_steps(runtime.pool, run_id):
                    return
            elif pumping.done():
                pumping.result()  # the subscription failed: let the error surface
                return
    finally:
        stop.set()
        for task in (get, pumping):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (get, pumping) if t is not None), return_exceptions=True)
