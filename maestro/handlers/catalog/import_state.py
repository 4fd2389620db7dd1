"""An import table's manual re-import (a command) and its state for people (a read).

A re-import is a :class:`~maestro.events.imports.ReimportRequested` on the table's ``import-<id>``
stream. The importer (maestro.handlers.runs.imports) makes an import full when the latest request
is newer than the plan of the import whose load last succeeded; "pending" here is that same rule,
so the state says what the next import will do (an import that failed after the request leaves
it pending). The state is read-only SQL over the ``jobs`` read model and the log, nothing cached:
the watermark is the one recorded with the latest successful load of an import (its
``JobSucceeded``, else the load's planned configuration), the last import is the latest import
job whatever its state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from maestro.errors import Conflict
from maestro.events.catalog import ImportSettings
from maestro.events.imports import ReimportRequested, import_stream
from maestro.events.model import Metadata
from maestro.events.store import ANY_VERSION, EventStore
from maestro.handlers.catalog.service import CatalogService, TableView


def _settings(view: TableView) -> ImportSettings:
    if view.spec.get("kind") != "import" or not isinstance(view.spec.get("import"), dict):
        raise Conflict(f"table {view.table_id} is a {view.spec.get('kind', 'summary')} table, not an import table",
                       kind=view.spec.get("kind", "summary"))
    return ImportSettings.model_validate(view.spec["import"])


async def request_reimport(
    store: EventStore, catalog: CatalogService, table_id: str, reason: str, actor: Metadata
) -> dict[str, Any]:
    """Record that the table's next import reads everything (404 unknown, 409 not a live import)."""
    view = await catalog.get_table(table_id)
    _settings(view)
    if view.deleted:
        raise Conflict(f"table {table_id} is deleted; restore it first")
    event = ReimportRequested(table_id=table_id, reason=reason)
    result = await store.append(import_stream(table_id), ANY_VERSION, [event], actor)
    recorded = result.events[0]
    return {"reason": reason, "requested_at": recorded.occurred_at.isoformat(),
            "requested_by": actor.actor, "position": recorded.position}


_LAST_IMPORT = """
SELECT job_id, run_id, state, attempt, planned_at, finished_at, error, reason, progress::text AS progress
FROM jobs WHERE table_id = $1 AND kind = 'import'
ORDER BY planned_at DESC, job_id DESC
LIMIT 1
"""

# The latest successful load of an import of this table (jobs_table_kind), with the watermark its
# JobSucceeded recorded (where the watermark advances) and the one its plan carried.
_LAST_LOAD = """
SELECT j.job_id, j.config->>'import_job_id' AS import_job_id, j.finished_at,
       j.config->'watermark' AS planned, i.planned_at AS import_planned_at,
       (SELECT e.data->'watermark' FROM events e
        WHERE e.stream_id = 'job-' || j.job_id AND e.type = 'JobSucceeded'
        ORDER BY e.version DESC LIMIT 1) AS recorded
FROM jobs j
LEFT JOIN jobs i ON i.job_id = j.config->>'import_job_id'
WHERE j.table_id = $1 AND j.kind = 'load' AND j.state = 'succeeded' AND j.config->>'import_job_id' IS NOT NULL
ORDER BY j.finished_at DESC, j.job_id DESC
LIMIT 1
"""

_LAST_REQUEST = """
SELECT data->>'reason' AS reason, metadata->>'actor' AS actor, occurred_at
FROM events WHERE stream_id = $1 AND type = 'ReimportRequested'
ORDER BY version DESC LIMIT 1
"""


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


async def import_state(catalog: CatalogService, table_id: str) -> dict[str, Any]:
    """Mode, column, watermark, last import and pending re-import of an import table (nulls when
    nothing ran yet). 404 for an unknown table, 409 for one that is not an import table."""
    view = await catalog.get_table(table_id)
    settings = _settings(view)
    pool = catalog.pool
    last = await pool.fetchrow(_LAST_IMPORT, table_id)
    load = await pool.fetchrow(_LAST_LOAD, table_id)
    request = await pool.fetchrow(_LAST_REQUEST, import_stream(table_id))

    watermark = None
    if load is not None:
        recorded = _json(load["recorded"]) or _json(load["planned"])
        if recorded:
            watermark = {
                "column": recorded.get("column"), "value": recorded.get("value"),
                "load_job_id": load["job_id"], "import_job_id": load["import_job_id"],
                "loaded_at": _iso(load["finished_at"]),
            }
    last_import = None
    if last is not None:
        progress = _json(last["progress"]) or {}
        last_import = {
            "job_id": last["job_id"], "run_id": last["run_id"], "state": last["state"],
            "attempt": last["attempt"],
            # Rows loaded once the load succeeded, else rows read so far.
            "rows": progress.get("loaded_rows", progress.get("rows")),
            "full": progress.get("full"), "phase": progress.get("phase"),
            "planned_at": _iso(last["planned_at"]), "finished_at": _iso(last["finished_at"]),
            "error": last["error"], "reason": last["reason"],
        }
    pending = None
    honoured = load["import_planned_at"] if load is not None else None
    if request is not None and (honoured is None or request["occurred_at"] > honoured):
        pending = {"reason": request["reason"], "requested_by": request["actor"],
                   "requested_at": _iso(request["occurred_at"])}
    return {
        "id": table_id,
        "source_database": settings.source_database,
        "mode": "incremental" if settings.incremental else "full",
        "column": settings.id_column,
        "watermark": watermark,
        "last_import": last_import,
        "reimport_requested": pending,
    }
