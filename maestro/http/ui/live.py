"""``GET /ui/live/runs``: the runs list's live feed, as Server-Sent Events.

The API's stream (``/api/v1/runs/{id}/events``) follows one run; a list needs every run, so this
follows the log for run-level events from now on, and for each batch sends one ``runs`` event
with the current row of every run it touched (read from the runs read model, which is updated in
the same transaction as the event: never behind it). The page updates those rows in place and
adds new runs at the top.

It ends like the API's stream does: after ``sse_max_lifetime`` (the browser reconnects after
``retry``), when the caller's token or session stops being valid (checked every
``sse_recheck_interval``, with a keep-alive that notices a gone client), and it counts against
the caller's open streams (``sse_streams_per_user``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiohttp import web

from maestro.errors import CredentialsRefused
from maestro.events.model import RecordedEvent
from maestro.http.auth import principal, recheck
from maestro.http.keys import RUNTIME, SETTINGS
from maestro.http.routing import Route, routes
from maestro.http.run_events import RETRY_MS, STREAM_SLOTS
from maestro.http.ui.render import _when

RUN_LEVEL = ["RunQueued", "RunPlanned", "RunCancelRequested", "RunRetryRequested", "RunFinished", "RunSkipped",
             "JobSucceeded", "JobFailed"]  # job ends change a run's counts


async def run_rows(pool: Any, run_ids: list[str]) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT run_id, frequency_id, (SELECT name FROM catalog_frequencies f WHERE f.frequency_id = r.frequency_id) AS frequency, "
        "trigger, status, planned_at, finished_at, cancel_requested, counts::text "
        "FROM runs r WHERE run_id = ANY($1) ORDER BY planned_at",
        run_ids,
    )
    return [
        {
            "id": r["run_id"], "frequency": r["frequency"] or r["frequency_id"], "trigger": r["trigger"],
            "status": r["status"], "planned_at": _when(r["planned_at"]),
            "finished_at": _when(r["finished_at"]) if r["finished_at"] else None,
            "counts": ", ".join(f"{k}: {v}" for k, v in sorted(orjson.loads(r["counts"]).items())),
        }
        for r in rows
    ]


async def live_runs(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    settings = request.app[SETTINGS]
    who = principal(request)
    start = await runtime.store.head_position()
    with request.app[STREAM_SLOTS].hold(who.user_id):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            await _follow(request, response, start, settings)
            await response.write_eof()
    return response


async def _follow(request: web.Request, response: web.StreamResponse, start: int, settings: Any) -> None:
    runtime = request.app[RUNTIME]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.sse_max_lifetime
    next_check = loop.time() + settings.sse_recheck_interval
    batches: asyncio.Queue[list[RecordedEvent]] = asyncio.Queue(maxsize=1)
    stop = asyncio.Event()

    async def pump() -> None:
        async for batch in runtime.store.subscribe_batches(start, types=RUN_LEVEL, stop=stop):
            await batches.put(batch)

    pumping = asyncio.create_task(pump())
    get: asyncio.Future[list[RecordedEvent]] | None = None
    try:
        while True:
            now = loop.time()
            if now >= deadline:
                return
            if now >= next_check:
                try:
                    await recheck(request)
                except CredentialsRefused:
                    return
                await response.write(b": keep-alive\n\n")
                next_check = now + settings.sse_recheck_interval
                continue
            if get is None:
                get = asyncio.ensure_future(batches.get())
            await asyncio.wait({get, pumping}, timeout=min(deadline, next_check) - now,
                               return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                batch, get = get.result(), None
                run_ids = sorted({r for e in batch if isinstance(r := getattr(e.event, "run_id", None), str)})
                if run_ids:
                    rows = await run_rows(runtime.pool, run_ids)
                    data = orjson.dumps(rows).decode()
                    await response.write(f"id: {batch[-1].position}\nevent: runs\ndata: {data}\n\n".encode())
            elif pumping.done():
                pumping.result()
                return
    finally:
        stop.set()
        for task in (get, pumping):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (get, pumping) if t is not None), return_exceptions=True)


ROUTES = routes(
    Route("GET", "/ui/live/runs", live_runs, "The runs list's live feed (Server-Sent Events)", rule="read", tag="ui",
          content_type="text/event-stream"),
)
