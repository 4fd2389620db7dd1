"""UI read performance: every page rendered server-side on a large catalog, p50/p95 per page.

Generates 10,000 tables (with their ``TableCreated`` events, so history reads the log), 100,000
runs with 1,000,000 jobs (10 tables each, in ``runs``, ``run_tables``, ``jobs`` and
``cost_jobs``, spread over a year; their per-day sums in ``cost_daily``, as the costs projection
keeps them) straight into the read models with ``generate_series``, then starts the real app
on a local port and requests each page ``--requests`` times, one at a time, as an administrator
with an API token (pages take the API's credentials). Target: p95 <= 300 ms for every page
(issue 11). The baseline, in the same process: ``GET /api/v1/me`` (the
authentication every page also does, plus one small query).

    python -m bench.bench_ui [--tables 10000] [--runs 100000] [--jobs-per-run 10] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import bench_database, percentile
from maestro.events import Metadata
from maestro.http.app import create_app
from maestro.projections.cost_rollup import SUMS_OF_JOBS
from maestro.runtime import open_runtime
from maestro.settings import Settings

TARGET_MS = 300.0
SYSTEM = Metadata(actor="system:bench")

GENERATE = """
INSERT INTO groups (group_id, name, created_at) SELECT 'g' || i, 'group ' || i, now() FROM generate_series(1, 20) i;
INSERT INTO catalog_frequencies (frequency_id, name, spec, version, updated_at)
  SELECT 'f' || i, 'every ' || i || 'h', jsonb_build_object('name', 'every ' || i || 'h', 'period', i * 3600), 1, now()
  FROM generate_series(1, 5) i;
CREATE TEMP TABLE gen_tables AS
  SELECT 't' || i AS table_id, 'ds' || (i % 50) AS dataset, 'table_' || i AS name,
         jsonb_build_object('dataset', 'ds' || (i % 50), 'name', 'table_' || i, 'kind', 'summary',
           'query', 'SELECT ' || i || ' AS n, name FROM ds' || ((i + 7) % 50) || '.source_' || (i % 300),
           'description', 'generated table number ' || i, 'write_disposition', 'replace', 'legacy_sql', false,
           'frequency_id', 'f' || (1 + i % 5), 'group_id', 'g' || (1 + i % 20), 'owner_id', 'bench-admin',
           'timezone', 'UTC', 'max_attempts', 3) AS spec,
         now() - (i || ' minutes')::interval AS at, nextval('events_position_seq') AS position
  FROM generate_series(1, {tables}) i;
INSERT INTO catalog_tables (table_id, project, dataset, name, kind, spec, version, deleted, created_at, created_by,
                            updated_at, updated_by, last_position, number)
  SELECT table_id, NULL, dataset, name, 'summary', spec, 1, false, at, 'user:bench-admin', at, 'user:bench-admin', 0,
         position
  FROM gen_tables;
INSERT INTO events (position, stream_id, version, type, data, metadata, occurred_at)
  SELECT position, 'table-' || table_id, 1, 'TableCreated',
         jsonb_build_object('table_id', table_id, 'spec', spec), '{{"actor": "user:bench-admin"}}', at
  FROM gen_tables;
INSERT INTO runs (run_id, frequency_id, slot, trigger, status, workers, planned_at, planned_by, finished_at, counts)
  SELECT 'r' || i, 'f' || (1 + i % 5), now() - (i * 5 || ' minutes')::interval, 'schedule',
         CASE WHEN i % 37 = 0 THEN 'failed' ELSE 'succeeded' END, NULL,
         now() - (i * 5 || ' minutes')::interval, 'system:scheduler', now() - (i * 5 - 3 || ' minutes')::interval,
         '{{"succeeded": {per_run}}}'
  FROM generate_series(1, {runs}) i;
INSERT INTO run_tables (run_id, table_id, name, priority, parents, config, owner_id, group_id, state, job_id, attempt, updated_at)
  SELECT 'r' || r, 't' || (1 + (r * {per_run} + k) % {tables}), 'ds.table_' || (1 + (r * {per_run} + k) % {tables}),
         {per_run} - k, CASE WHEN k > 0 THEN ARRAY['t' || (1 + (r * {per_run} + k - 1) % {tables})] ELSE ARRAY[]::text[] END,
         '{{}}', 'bench-admin', 'g1', 'succeeded', 'j' || r || '_' || k, 1, now()
  FROM generate_series(1, {runs}) r, generate_series(0, {per_run} - 1) k;
INSERT INTO jobs (job_id, run_id, table_id, attempt, kind, state, config, owner_id, group_id, planned_at, submitted_at,
                  finished_at, statistics)
  SELECT 'j' || r || '_' || k, 'r' || r, 't' || (1 + (r * {per_run} + k) % {tables}), 1, 'query',
         CASE WHEN r % 37 = 0 AND k = 0 THEN 'failed' ELSE 'succeeded' END, '{{}}', 'bench-admin', 'g' || (1 + r % 20),
         now() - (r * 5 || ' minutes')::interval + (k * 10 || ' seconds')::interval,
         now() - (r * 5 || ' minutes')::interval + (k * 10 + 1 || ' seconds')::interval,
         now() - (r * 5 || ' minutes')::interval + (k * 10 + 9 || ' seconds')::interval,
         jsonb_build_object('total_bytes_billed', (r * 7919 + k * 104729) % 50000000000,
                            'total_bytes_processed', (r * 7919 + k * 104729) % 50000000000, 'total_slot_ms', 1000)
  FROM generate_series(1, {runs}) r, generate_series(0, {per_run} - 1) k;
INSERT INTO cost_jobs (job_id, table_id, run_id, owner_id, group_id, day, bytes_processed, bytes_billed, slot_ms, finished_at)
  SELECT job_id, table_id, run_id, owner_id, group_id, (finished_at AT TIME ZONE 'UTC')::date,
         (statistics->>'total_bytes_processed')::bigint, (statistics->>'total_bytes_billed')::bigint, 1000, finished_at
  FROM jobs;
INSERT INTO cost_daily (dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs) {rollup};
ANALYZE;
"""


async def _generate(runtime, tables: int, runs: int, per_run: int) -> float:
    t0 = time.perf_counter()
    async with runtime.pool.acquire() as conn:
        await conn.execute(GENERATE.format(tables=tables, runs=runs, per_run=per_run, rollup=SUMS_OF_JOBS))
    return time.perf_counter() - t0


async def _measure(session: aiohttp.ClientSession, url: str, headers: dict[str, str], requests: int) -> list[float]:
    async with session.get(url, headers=headers) as resp:  # warm-up, and a check that it renders
        body = await resp.text()
        if resp.status != 200:
            raise SystemExit(f"{url}: {resp.status} {body[:300]}")
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--jobs-per-run", type=int, default=10)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    async with bench_database() as dsn:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(database_url=dsn, data_dir=Path(tmp), local_stack=False)
            runtime = await open_runtime(settings)
            try:
                await runtime.users.ensure_service_user("bench-admin", "bench admin", SYSTEM, admin=True)
                _, token = await runtime.tokens.create("bench-admin", "bench", SYSTEM)
                seconds = await _generate(runtime, args.tables, args.runs, args.jobs_per_run)
                t0 = time.perf_counter()
                await runtime.catalog.refresh()
                graph_s = time.perf_counter() - t0
                print(f"bench_ui: {args.tables:,} tables, {args.runs:,} runs, {args.runs * args.jobs_per_run:,} jobs "
                      f"generated in {seconds:.1f} s; dependency graph {graph_s:.1f} s")
                await _drive(runtime, token, args.requests, args.tables, args.runs)
            finally:
                await runtime.close()


async def _drive(runtime, token: str, requests: int, tables: int, runs: int) -> None:
    app = create_app(runtime.settings, runtime=runtime)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    html = {"Authorization": f"Bearer {token}", "Accept": "text/html"}
    api = {"Authorization": f"Bearer {token}"}
    pages = [
        ("/tables", "tables, first page"), ("/tables?q=number+4242", "tables, text search"),
        ("/tables?status=failed", "tables, status filter"), ("/tables?group=g3&frequency=f3&sort=-updated", "tables, group+frequency, sort"),
        (f"/tables?offset={tables - 1000}", "tables, a late page"), (f"/tables/t{tables // 2}", "a table (history, jobs, deps)"),
        ("/tables/new", "new table form"), ("/runs", "runs, first page"), ("/runs?status=failed", "runs, failed"),
        (f"/runs?offset={runs - 10000}", "runs, a late page"), (f"/runs/r{runs // 3}", "a run (DAG, Gantt)"),
        ("/costs", "costs by group, 30 days"), ("/costs?by=table", "costs by table, 30 days"),
        ("/costs?by=day&from=2000-01-01", "costs by day, all time"), ("/costs?by=user&from=2000-01-01", "costs by user, all time"),
        ("/costs?by=run", "costs by run, 30 days"), ("/costs?by=table&from=2000-01-01", "costs by table, all time"),
        ("/audit", "audit, newest"), ("/audit?type=TableCreated", "audit, by type"),
        ("/admin/users", "admin: users"), ("/admin/datasets", "admin: datasets"),
        ("/admin/frequencies", "admin: frequencies"), ("/admin/config", "admin: configuration"), ("/tokens", "API tokens"),
    ]
    worst = 0.0
    try:
        async with aiohttp.ClientSession() as session:
            baseline = await _measure(session, f"{base}/api/v1/me", api, requests)
            b95 = percentile(baseline, 95)
            print(f"  {'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'p95/base':>9}")
            print(f"  {'baseline GET /api/v1/me':<34} {statistics.median(baseline):>8.1f} {b95:>8.1f} {1.0:>9.1f}")
            for path, label in pages:
                times = await _measure(session, base + path, html, requests)
                p95 = percentile(times, 95)
                worst = max(worst, p95)
                flag = "" if p95 <= TARGET_MS else "  OVER TARGET"
                print(f"  {label:<34} {statistics.median(times):>8.1f} {p95:>8.1f} {p95 / b95:>9.1f}{flag}")
    finally:
        await runner.cleanup()
    print(f"  worst p95 {worst:.1f} ms (target <= {TARGET_MS:.0f} ms): {'ok' if worst <= TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    asyncio.run(main())
