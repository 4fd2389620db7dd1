"""Loads on the runner: executing the loads the API plans outside runs, and deleting their sources.

``POST /tables/{id}/load`` (maestro.handlers.runs.uploads) appends a load's ``JobPlanned`` with no
run. The runner's follow loop sees it and executes it like any job (planned before it is sent,
adopted on 409, re-attached by recovery after a crash). When a load whose config says
``delete_source`` has ended -- succeeded or failed: either way the upload is spent -- each source
object is deleted *at the generation that was loaded* and ``LoadSourceDeleted`` is recorded on the
load's stream, once. A crash between the load's end and that record is caught up at the next
start (:func:`resume_deletes`); deleting again is harmless (a generation already gone is
"missing", a newer one under the same name is left in place as "kept").

Import loads (``import_job_id`` set) are driven by their import, which calls
:func:`delete_sources` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from maestro.adapters.gcs import delete_generation
from maestro.errors import ConcurrencyConflict, ConfigurationError, ObjectExists, StorageError, database_unavailable
from maestro.events.imports import LoadSourceDeleted
from maestro.events.model import RecordedEvent
from maestro.events.runs import JobConfig
from maestro.events.store import NO_STREAM

if TYPE_CHECKING:
    from maestro.handlers.runs.runner import Runner

log = logging.getLogger(__name__)
OUTCOMES = ("JobSucceeded", "JobFailed", "JobCancelled")

# Per runner (and per start of it): loads recovery re-attached. The follow loop reads the log
# from a position taken before recovery looked, so it may see their JobPlanned too.
_recovered: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()
# Loads whose sources are being deleted now: one deletion at a time per load.
_deleting: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def standalone(config: JobConfig) -> bool:
    """A load the runner drives itself (not an import's, which its import drives)."""
    return config.kind == "load" and config.import_job_id is None


def note_recovered(runner: Runner, job_ids: list[str]) -> None:
    _recovered[runner] = frozenset(job_ids)


async def on_planned(runner: Runner, recorded: RecordedEvent) -> None:
    """A load planned outside any run: execute it (unless recovery already re-attached it)."""
    planned = recorded.event
    if planned.run_id is not None or not standalone(planned.config):  # type: ignore[attr-defined]
        return
    if planned.job_id in _recovered.get(runner, frozenset()):  # type: ignore[attr-defined]
        return
    runner.spawn_job(
        planned.job_id, None, None, planned.config, submitted=False,  # type: ignore[attr-defined]
        table_id=planned.table_id, planned_at=recorded.occurred_at.timestamp(),  # type: ignore[attr-defined]
    )


async def on_outcome(runner: Runner, recorded: RecordedEvent) -> None:
    """A job ended: if it is a load outside runs that deletes its sources, delete them."""
    ended = recorded.event
    if ended.run_id is not None:  # type: ignore[attr-defined]
        return  # loads outside runs have none; an import's load is its import's business
    row = await runner._db(lambda: runner.pool.fetchrow(
        "SELECT kind, config::text FROM jobs WHERE job_id = $1", ended.job_id))  # type: ignore[attr-defined]
    if row is None or row["kind"] != "load":
        return
    config = JobConfig.model_validate_json(row["config"])
    if standalone(config) and config.delete_source:
        spawn_delete(runner, ended.job_id, ended.table_id, config)  # type: ignore[attr-defined]


async def resume_deletes(runner: Runner) -> None:
    """Start-up: loads that ended with ``delete_source`` but have no ``LoadSourceDeleted`` yet."""
    rows = await runner.pool.fetch(
        "SELECT j.job_id, j.table_id, j.config::text FROM jobs j "
        "WHERE j.kind = 'load' AND j.run_id IS NULL AND j.state IN ('succeeded', 'failed', 'cancelled') "
        "AND (j.config->>'delete_source')::boolean AND j.config->>'import_job_id' IS NULL "
        "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = 'job-' || j.job_id "
        "AND e.type = 'LoadSourceDeleted')"
    )
    for row in rows:
        spawn_delete(runner, row["job_id"], row["table_id"], JobConfig.model_validate_json(row["config"]))
    if rows:
        log.info("deleting the sources of loads that ended before the restart", extra={"loads": len(rows)})


def spawn_delete(runner: Runner, job_id: str, table_id: str, config: JobConfig) -> None:
    busy = _deleting.setdefault(runner, set())
    if job_id in busy:
        return
    busy.add(job_id)

    async def delete() -> None:
        try:
            await delete_sources(runner, job_id, table_id, config)
        except asyncio.CancelledError:
            raise
        except _Stopped:
            pass
        except Exception as exc:
            if database_unavailable(exc):  # nothing recorded: the next start deletes (resume_deletes)
                log.warning("could not delete a load's sources: no database", extra={"job_id": job_id})
                return
            # Never a silent end: the deletion ends in its event, with the reason.
            log.exception("could not delete a load's sources", extra={"job_id": job_id})
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                await _record(runner, LoadSourceDeleted(
                    job_id=job_id, table_id=table_id, uris=list(config.source_uris),
                    errors={uri: f"not deleted: {reason}" for uri in config.source_uris},
                ))
        finally:
            busy.discard(job_id)

    task = asyncio.get_running_loop().create_task(delete(), name=f"delete-sources-{job_id}")
    runner._tasks.add(task)  # cancelled with the runner's other tasks when it stops
    task.add_done_callback(runner._tasks.discard)


async def delete_sources(runner: Runner, job_id: str, table_id: str, config: JobConfig) -> None:
    """Delete a load's source objects at the generations it loaded; record ``LoadSourceDeleted``
    on ``job-<job_id>`` once (a second call after the record does nothing).

    Call it once the load has ended. Cloud Storage unreachable: retried with backoff until the
    runner stops (the next start resumes). A refusal that will not change (no permission) is
    recorded in the event's ``errors``, so it is reported once instead of retried for ever."""
    stream = f"job-{job_id}"
    if await _recorded(runner, stream) is None:
        return
    storage = runner.imports.storage() if runner.imports is not None else None
    if storage is None:
        raise ConfigurationError("no Cloud Storage client in this runner: a load's sources cannot be deleted")
    missing: list[str] = []
    kept: list[str] = []
    errors: dict[str, str] = {}
    generations = config.source_generations
    for index, uri in enumerate(config.source_uris):
        if index >= len(generations):
            errors[uri] = "the load recorded no generation for it: not deleted"
            continue
        generation = generations[index]
        try:
            if not await _retrying(runner, lambda: delete_generation(storage, uri, generation)):
                missing.append(uri)
        except ObjectExists:
            kept.append(uri)
        except StorageError as exc:
            errors[uri] = exc.message
    await _record(runner, LoadSourceDeleted(
        job_id=job_id, table_id=table_id, uris=list(config.source_uris), missing=missing, kept=kept, errors=errors,
    ))


async def _record(runner: Runner, event: LoadSourceDeleted) -> None:
    """Append ``event`` to the load's stream unless one is there already."""
    stream = f"job-{event.job_id}"
    while (version := await _recorded(runner, stream)) is not None:
        try:
            await runner._db(lambda: runner.store.append(stream, version, [event], runner._metadata(stream, event)))
            return
        except ConcurrencyConflict:
            continue  # something landed (our own first try after a blip, or another deleter): look again


async def _recorded(runner: Runner, stream: str) -> int | None:
    """The stream's version, or None when its LoadSourceDeleted is already recorded."""
    events = await runner._db(lambda: runner.store.read(stream))
    if any(e.type == "LoadSourceDeleted" for e in events):
        return None
    return events[-1].version if events else NO_STREAM


class _Stopped(Exception):
    """The runner stops while Cloud Storage is unreachable: nothing is recorded, the next start
    deletes."""


async def _retrying(runner: Runner, call: Callable[[], Awaitable[bool]]) -> bool:
    delay = 0.5
    while True:
        try:
            return await call()
        except StorageError as exc:
            if not exc.retryable:
                raise
            if runner._stop.is_set():
                raise _Stopped() from exc
            log.warning("Cloud Storage call failed; retrying", extra={"error": exc.message, "delay": delay})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runner._stop.wait(), timeout=delay)
            delay = min(delay * 2, 60.0)
