"""Run pages: the list (live: ``maestro.http.ui.live``), and one run with its DAG, Gantt and errors.

Retry and cancel are buttons calling the API (``POST /api/v1/runs/{id}/retry`` / ``cancel``:
administrators, by the API's rule). A run's cost is the sum of its jobs' billed bytes
(``cost_jobs``), at the configured price.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from maestro.errors import NotFound, ValidationFailed
from maestro.events.model import now
from maestro.http import legacy
from maestro.http.keys import RUNTIME
from maestro.http.routing import Route, routes
from maestro.http.ui import svg
from maestro.http.ui.render import Pager, page
from maestro.projections.cost_queries import usd

PAGE = 50


class RunFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "skipped"] | None = None
    frequency: str | None = Field(None, max_length=200)
    trigger: str | None = Field(None, max_length=50)
    offset: int = Field(0, ge=0, le=10_000_000)


# The page first, then each shown run's cost: a cost subquery beside the window count would run
# for every row up to the offset (90,000 of them on a late page).
LIST_SQL = f"""
WITH page AS (
  SELECT r.run_id, r.frequency_id, r.trigger, r.status, r.planned_at, r.finished_at, r.cancel_requested,
         r.counts::text AS counts, r.reason, count(*) OVER () AS total
  FROM runs r
  WHERE ($1::text IS NULL OR r.status = $1) AND ($2::text IS NULL OR r.frequency_id = $2)
    AND ($3::text IS NULL OR r.trigger = $3)
  ORDER BY r.planned_at DESC, r.run_id
  OFFSET $4 LIMIT {PAGE}
)
SELECT page.*, f.name AS frequency,
       (SELECT COALESCE(sum(c.bytes_billed), 0)::bigint FROM cost_jobs c WHERE c.run_id = page.run_id) AS billed
FROM page LEFT JOIN catalog_frequencies f USING (frequency_id)
ORDER BY page.planned_at DESC, page.run_id
"""


def _counts(text: str) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(orjson.loads(text).items()))


async def runs_page(request: web.Request) -> web.Response:
    try:
        f = RunFilters.model_validate({k: v for k, v in request.query.items() if v != ""})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValidationFailed(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    runtime = request.app[RUNTIME]
    price = runtime.config.price_per_tib
    rows = await runtime.pool.fetch(LIST_SQL, f.status, f.frequency, f.trigger, f.offset)
    runs = [{**dict(r), "counts": _counts(r["counts"]), "usd": usd(r["billed"], price)} for r in rows]
    frequencies = await runtime.pool.fetch("SELECT frequency_id, name FROM catalog_frequencies ORDER BY name")
    unfiltered_first_page = f.offset == 0 and f.status is None and f.frequency is None and f.trigger is None
    return page(request, "runs.html", title="Runs", runs=runs, f=f, pager=Pager(request, rows[0]["total"] if rows else 0, f.offset, PAGE),
                frequencies=[(r[0], r[1]) for r in frequencies], insert_new=unfiltered_first_page)


async def run_page(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    run_id = request.match_info["run_id"]
    run = await runtime.pool.fetchrow(
        "SELECT r.*, r.counts::text AS counts_text, f.name AS frequency FROM runs r "
        "LEFT JOIN catalog_frequencies f USING (frequency_id) WHERE r.run_id = $1", run_id,
    )
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    tables = [dict(t) for t in await runtime.pool.fetch(
        "SELECT table_id, name, priority, parents, state, job_id, attempt, error, updated_at "
        "FROM run_tables WHERE run_id = $1 ORDER BY priority DESC, name", run_id,
    )]
    names = {t["table_id"]: t["name"] for t in tables}
    jobs: list[dict[str, Any]] = [dict(j) for j in await runtime.pool.fetch(
        "SELECT job_id, table_id, kind, state, attempt, planned_at, submitted_at, finished_at, error, "
        "COALESCE((statistics->>'total_bytes_billed')::bigint, 0) AS billed FROM jobs "
        "WHERE run_id = $1 ORDER BY planned_at, job_id", run_id,
    )]
    price = runtime.config.price_per_tib
    for j in jobs:
        j["name"] = names.get(j["table_id"], j["table_id"])
        j["usd"] = usd(j["billed"], price)
    return page(
        request, "run.html", title=f"Run {run_id}", run=dict(run), counts=_counts(run["counts_text"]),
        tables=tables, jobs=jobs, dag=svg.dag(tables), gantt=svg.gantt(jobs, now()),
        skipped=orjson.loads(run["skipped"]) if isinstance(run["skipped"], str) else run["skipped"],
        total_usd=usd(sum(j["billed"] for j in jobs), price), too_large=len(tables) > svg.MAX_NODES,
    )


ROUTES = routes(
    Route("GET", "/runs", legacy.negotiated(runs_page, legacy.list_runs),
          "Page: runs (with X-Api-Token: the original API's JSON list)", rule="read", tag="ui", content_type="text/html"),
    Route("GET", "/runs/{run_id}", run_page, "Page: one run", rule="read", tag="ui", content_type="text/html"),
)
