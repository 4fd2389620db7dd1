"""The per-day cost sums: the reports read ``cost_daily`` and answer exactly what summing the job
rows answered, for every ``by``, range and group; the sums follow the log incrementally as a
rebuild makes them; a database migrated with cost history gets the same sums."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maestro.adapters import postgres
from maestro.events import Metadata
from maestro.events.runs import JobCancelled, JobConfig, JobFailed, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import ANY_VERSION, EventStore
from maestro.projections import ProjectionRunner
from maestro.projections.cost_queries import KEYS, cost_items, cost_total
from maestro.projections.cost_rollup import SUMS_OF_JOBS
from maestro.projections.costs import CostsProjection

ME = Metadata(actor="system:tests")
DAY0 = dt.date(2026, 3, 9)
PRICE = 6.25
COLUMNS = {"user": "owner_id", "group": "group_id", "table": "table_id", "run": "run_id", "day": "day::text"}

# What GET /api/v1/costs summed before the rollup: every job row of the range. The reference.
RAW_ITEMS = (
    "SELECT {key} AS key, sum(bytes_billed)::bigint AS bytes_billed, sum(bytes_processed)::bigint AS bytes_processed, "
    "sum(slot_ms)::bigint AS slot_ms, count(*) AS jobs FROM cost_jobs WHERE day IS NOT NULL "
    "AND ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2) "
    "AND ($3::text IS NULL OR group_id = $3) GROUP BY 1 ORDER BY bytes_billed DESC, key"
)
FIELDS = ("bytes_billed", "bytes_processed", "slot_ms", "jobs")


def _with_database(dsn: str, database: str) -> str:
    # Not conftest's own helper: with tests/browser collected too, "conftest" is that one.
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def _stats(billed: int, day: int, hour: int) -> JobStatistics:
    ended = dt.datetime.combine(DAY0 + dt.timedelta(days=day), dt.time(hour), tzinfo=dt.timezone.utc)
    return JobStatistics(total_bytes_billed=billed, total_bytes_processed=billed + 7, total_slot_ms=billed % 1000 + 1,
                         ended=ended)


# One job: who it is billed to, then 0-2 outcomes (a second one replaces the first's figures,
# possibly on another day); some outcomes carry no statistics, some jobs were never planned here.
outcome_st = st.tuples(
    st.sampled_from(["succeeded", "failed", "cancelled", "failed-no-stats"]),
    st.integers(0, 2**45), st.integers(0, 3), st.sampled_from([0, 23]),
)
job_st = st.fixed_dictionaries({
    "planned": st.sampled_from([True, True, True, False]),
    "table": st.sampled_from(["t1", "t2", "t3"]),
    "run": st.sampled_from(["r1", "r2", None]),
    "owner": st.sampled_from(["ann", "bob", "", None]),
    "group": st.sampled_from(["g1", "g2", "", None]),
    "outcomes": st.lists(outcome_st, max_size=2),
})
chunks_st = st.lists(st.integers(1, 7), min_size=1, max_size=6)


def _events(job_id: str, job: dict) -> list:
    events: list = []
    if job["planned"]:
        events.append(JobPlanned(job_id=job_id, run_id=job["run"], table_id=job["table"],
                                 config=JobConfig(project="p", query="SELECT 1"), owner_id=job["owner"],
                                 group_id=job["group"]))
    for kind, billed, day, hour in job["outcomes"]:
        ids = {"job_id": job_id, "run_id": job["run"], "table_id": job["table"]}
        stats = _stats(billed, day, hour)
        if kind == "succeeded":
            events.append(JobSucceeded(**ids, statistics=stats))
        elif kind == "cancelled":
            events.append(JobCancelled(**ids, statistics=stats))
        else:
            events.append(JobFailed(**ids, reason="invalidQuery", message="x", retryable=False,
                                    statistics=None if kind == "failed-no-stats" else stats))
    return events


async def _rows(pool, sql: str) -> list[tuple]:
    return sorted((tuple(r) for r in await pool.fetch(sql)), key=repr)


async def _daily(pool) -> list[tuple]:
    return await _rows(pool, "SELECT dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs FROM cost_daily")


RANGES = [
    (None, None), (DAY0, DAY0), (DAY0 + dt.timedelta(days=1), None), (None, DAY0 + dt.timedelta(days=2)),
    (DAY0 + dt.timedelta(days=1), DAY0 + dt.timedelta(days=3)), (DAY0 + dt.timedelta(days=10), None),
]


async def _assert_reports_match_raw(pool) -> int:
    """Every ``by`` x range x group: the rollup's items and totals are the raw rows' own. Returns
    how many non-empty answers were compared (so a test can tell it compared something)."""
    compared = 0
    for by in KEYS:
        for start, end in RANGES:
            for group in (None, "g1", "", "nobody"):
                items = await cost_items(pool, by, start=start, end=end, group_id=group, price_per_tib=PRICE)
                raw = await pool.fetch(RAW_ITEMS.format(key=COLUMNS[by]), start, end, group)
                assert [(i[by], *(i[f] for f in FIELDS)) for i in items] == [tuple(r) for r in raw], (by, start, end, group)
                compared += bool(items)
    for start, end in RANGES[1:]:
        for group in (None, "g2"):
            raw_total = await pool.fetchval(
                "SELECT coalesce(sum(bytes_billed), 0) FROM cost_jobs WHERE day BETWEEN $1 AND $2 "
                "AND ($3::text IS NULL OR group_id = $3)", start or dt.date.min, end or dt.date.max, group)
            assert await cost_total(pool, start=start or dt.date.min, end=end or dt.date.max, group_id=group) == raw_total
    return compared


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.lists(job_st, min_size=1, max_size=14), chunks=chunks_st, seed=st.integers(0, 2**16))
def test_rollup_answers_as_the_raw_rows_and_rebuilds_identically(pg_admin_dsn: str, pg_template: str, jobs, chunks, seed) -> None:
    async def scenario() -> None:
        name = f"maestro_c_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(pg_admin_dsn)
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
        await admin.close()
        pool = await postgres.create_pool(_with_database(pg_admin_dsn, name), min_size=1, max_size=3)
        try:
            store = EventStore(pool)
            runner = ProjectionRunner(store, [CostsProjection()])
            await runner.prepare()
            # The jobs' events interleaved (each job's in order), appended a few at a time and
            # applied in batches of arbitrary sizes between appends.
            rng = random.Random(seed)
            queues = [_events(f"j{n}", job) for n, job in enumerate(jobs)]
            sizes = iter(chunks * 50)
            while any(queues):
                n = rng.choice([i for i, q in enumerate(queues) if q])
                await store.append(f"job-j{n}", ANY_VERSION, [queues[n].pop(0)], ME)
                if rng.random() < 0.4:
                    await runner.catch_up("costs", batch_size=next(sizes))
            await runner.catch_up("costs", batch_size=next(sizes))

            incremental = {"jobs": await _rows(pool, "SELECT * FROM cost_jobs"), "daily": await _daily(pool)}
            assert incremental["daily"] == await _rows(pool, SUMS_OF_JOBS)
            await _assert_reports_match_raw(pool)
            await runner.rebuild("costs")
            assert {"jobs": await _rows(pool, "SELECT * FROM cost_jobs"), "daily": await _daily(pool)} == incremental
            await store.close()
        finally:
            await pool.close()
            admin = await asyncpg.connect(pg_admin_dsn)
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()

    asyncio.run(scenario())


async def _generate(runtime, count: int) -> None:
    rng = random.Random(11)
    for n in range(count):
        job = {"planned": True, "table": f"t{rng.randint(1, 12)}", "run": rng.choice(["r1", "r2", "r3", None]),
               "owner": rng.choice(["ann", "bob", "cy", None]), "group": rng.choice(["g1", "g2", None]),
               "outcomes": [(rng.choice(["succeeded", "failed", "cancelled"]), rng.randint(0, 2**42),
                             rng.randint(0, 5), rng.choice([0, 12, 23])) for _ in range(rng.choice([1, 1, 1, 2]))]}
        await runtime.store.append(f"job-j{n}", ANY_VERSION, _events(f"j{n}", job), ME)
    await runtime.projections.catch_up("costs")


async def test_the_api_answers_as_summing_the_job_rows(client, runtime) -> None:
    """GET /api/v1/costs, JSON and CSV, for every ``by`` and range, against the raw aggregation."""
    await _generate(runtime, 150)
    pool = runtime.pool
    assert await _assert_reports_match_raw(pool) > 0
    for by in KEYS:
        for start, end in RANGES:
            params = {"by": by, **({"from": start.isoformat()} if start else {}), **({"to": end.isoformat()} if end else {})}
            body = await (await client.get("/api/v1/costs", params=params)).json()
            raw = await pool.fetch(RAW_ITEMS.format(key=COLUMNS[by]), start, end, None)
            assert [(i[by], *(i[f] for f in FIELDS)) for i in body["items"]] == [tuple(r) for r in raw]
            assert body["total"]["bytes_billed"] == sum(r["bytes_billed"] for r in raw)
            assert body["total"]["slot_ms"] == sum(r["slot_ms"] for r in raw)
            csv_text = await (await client.get("/api/v1/costs", params=params, headers={"Accept": "text/csv"})).text()
            assert len(csv_text.splitlines()) == 1 + len(raw)


async def test_a_database_migrated_with_cost_history_gets_the_projections_sums(runtime, fresh_database, tmp_path: Path) -> None:
    """sql/016 sums the rows a database already had: the same rows the projection keeps."""
    await _generate(runtime, 60)
    jobs = await runtime.pool.fetch("SELECT * FROM cost_jobs")
    expected = await _daily(runtime.pool)
    assert expected

    before = tmp_path / "sql"
    before.mkdir()
    for migration in sorted(postgres.SQL_DIR.glob("[0-9]*.sql")):
        if migration.name < "016":
            shutil.copy(migration, before / migration.name)
    conn = await asyncpg.connect(fresh_database[0])
    try:
        await postgres.migrate(conn, before)
        await conn.copy_records_to_table("cost_jobs", records=[tuple(r) for r in jobs], columns=list(jobs[0].keys()))
        assert "016_cost_rollup" in await postgres.migrate(conn)
        migrated = await conn.fetch(
            "SELECT dimension, day, key, group_id, bytes_processed, bytes_billed, slot_ms, jobs FROM cost_daily")
        assert sorted((tuple(r) for r in migrated), key=repr) == expected
    finally:
        await conn.close()
