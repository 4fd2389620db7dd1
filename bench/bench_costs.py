"""The costs projection with its per-day rollup: what keeping ``cost_daily`` costs the writes, and
what it saves the reads.

Appends the jobs of ``--tables`` tables run hourly for ``--days`` days (a ``JobPlanned`` and a
``JobSucceeded`` each, a tenth of them with a second outcome a day later), 20 owners, 5 groups,
then:

- writes: rebuilds the ``costs`` projection (cost_jobs + cost_daily) from the log, events/s,
  against the ``streams`` projection (one upsert per event) over the same log as the baseline;
- reads: ``cost_items`` for every ``by`` over all time (from ``cost_daily``) against summing the
  job rows (``cost_jobs``, what the reports did before the rollup), median of ``--reads``.

    python -m bench.bench_costs [--tables 100] [--days 30] [--reads 15]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time

from bench.common import bench_database
from maestro.adapters import postgres
from maestro.events import Metadata
from maestro.events.runs import JobConfig, JobPlanned, JobStatistics, JobSucceeded
from maestro.events.store import ANY_VERSION, EventStore
from maestro.projections import ProjectionRunner
from maestro.projections.cost_queries import _NAMES as NAMES
from maestro.projections.cost_queries import KEYS, cost_items
from maestro.projections.costs import CostsProjection
from maestro.projections.streams import StreamsProjection

ME = Metadata(actor="system:bench")
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
RAW = {"user": "owner_id", "group": "group_id", "table": "table_id", "run": "run_id", "day": "day::text"}


def _job(rng: random.Random, n: int, tables: int) -> list:
    """Job ``n``: every table runs hourly, each run (an hour) has one job per table; a table has one
    owner and one group. A tenth of the jobs get a second outcome, a day later (a moved job)."""
    hour, table = divmod(n, tables)
    planned = JobPlanned(job_id=f"j{n}", run_id=f"r{hour}", table_id=f"t{table}",
                         config=JobConfig(project="p", query="SELECT 1"), owner_id=f"u{table % 20}",
                         group_id=f"g{table % 5}")
    events: list = [planned]
    ended = START + dt.timedelta(hours=hour, minutes=rng.randint(0, 59))
    for again in range(2 if n % 10 == 0 else 1):
        stats = JobStatistics(total_bytes_billed=rng.randint(0, 2**40), total_bytes_processed=rng.randint(0, 2**40),
                              total_slot_ms=rng.randint(0, 10**6), ended=ended + dt.timedelta(days=again))
        events.append(JobSucceeded(job_id=planned.job_id, run_id=planned.run_id, table_id=planned.table_id,
                                   statistics=stats))
    return events


async def _median_ms(reads: int, op) -> float:
    times = []
    for _ in range(reads):
        t0 = time.perf_counter()
        await op()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--reads", type=int, default=15)
    args = parser.parse_args()
    async with bench_database() as dsn:
        pool = await postgres.create_pool(dsn, min_size=1, max_size=4)
        store = EventStore(pool)
        try:
            rng = random.Random(7)
            jobs = args.tables * 24 * args.days
            for first in range(0, jobs, 200):
                batch = [e for n in range(first, min(first + 200, jobs)) for e in _job(rng, n, args.tables)]
                await store.append(f"jobs-{first}", ANY_VERSION, batch, ME)
            runner = ProjectionRunner(store, [CostsProjection(), StreamsProjection()])
            await runner.prepare()
            rates = {}
            for name in ("streams", "costs", "streams", "costs"):  # alternated: the machine is shared
                t0 = time.perf_counter()
                events = await runner.rebuild(name)
                rates.setdefault(name, []).append(events / (time.perf_counter() - t0))
            for table in ("cost_jobs", "cost_daily"):
                await pool.execute(f"VACUUM ANALYZE {table}")
            daily = await pool.fetchval("SELECT count(*) FROM cost_daily")
            print(f"bench_costs: {jobs:,} jobs, {events:,} cost events; cost_daily {daily:,} rows")
            base, costs = max(rates["streams"]), max(rates["costs"])
            print(f"  rebuild, events/s: streams (baseline) {base:,.0f}; costs with rollup {costs:,.0f} "
                  f"({costs / base:.2f}x the baseline)")
            print(f"  {'by, all time':<14} {'raw ms':>8} {'rollup ms':>10} {'speed-up':>9}")
            for by in KEYS:
                # The query cost_items ran before the rollup (names included), over all time.
                raw_sql = (f"WITH c AS (SELECT {RAW[by]} AS key, sum(bytes_billed)::bigint AS bytes_billed, "
                           "sum(bytes_processed)::bigint, sum(slot_ms)::bigint, count(*) FROM cost_jobs "
                           f"WHERE day IS NOT NULL GROUP BY 1) SELECT c.*, {NAMES[by]} AS name FROM c "
                           "ORDER BY bytes_billed DESC, key")
                raw = await _median_ms(args.reads, lambda sql=raw_sql: pool.fetch(sql))
                rolled = await _median_ms(args.reads, lambda by=by: cost_items(
                    pool, by, start=None, end=None, price_per_tib=6.25))
                print(f"  {by:<14} {raw:>8.1f} {rolled:>10.1f} {raw / rolled:>8.1f}x")
        finally:
            await store.close()
            await pool.close()


if __name__ == "__main__":
    asyncio.run(main())
