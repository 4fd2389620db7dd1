"""Event store benchmarks: append throughput, replay rate, projection rebuild rate.

Every figure is printed beside a baseline measured in the same process on the same database:
a bare INSERT loop with the same durability (one transaction per batch, synchronous commit), and
a store variant that serializes writers with a table lock (the simple no-skip answer).

    make bench            # or: .venv/bin/python bench/bench_store.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time


from bench.common import bench_database, row, run_for
from maestro.adapters import postgres
from maestro.events import Event, Metadata
from maestro.events.store import ANY_VERSION, EventStore
from maestro.projections import ProjectionRunner
from maestro.projections.streams import StreamsProjection


class BenchRecorded(Event):
    """A realistic small payload: what a job state change carries."""

    table_id: str
    state: str
    bytes_billed: int
    note: str


def _payload(i: int) -> BenchRecorded:
    return BenchRecorded(table_id=f"t{i % 500}", state="succeeded", bytes_billed=i * 1024, note="x" * 40)


PLAIN_DDL = """
CREATE TABLE bench_plain (
    id bigserial PRIMARY KEY, stream_id text NOT NULL, type text NOT NULL,
    data jsonb NOT NULL, metadata jsonb NOT NULL, occurred_at timestamptz NOT NULL DEFAULT now()
)"""

SERIALIZED_FN = """
CREATE FUNCTION events_append_serialized(
    p_stream_id text, p_expected_version integer, p_types text[], p_schema_versions smallint[],
    p_data jsonb[], p_metadata jsonb[], p_occurred_at timestamptz
) RETURNS TABLE (first_position bigint, last_version integer) LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE events IN EXCLUSIVE MODE;  -- every writer waits for the previous commit
    RETURN QUERY SELECT * FROM events_append(p_stream_id, p_expected_version, p_types,
        p_schema_versions, p_data, p_metadata, p_occurred_at);
END; $$"""


async def bench_appends(dsn: str, seconds: float) -> dict[str, float]:
    pool = await postgres.create_pool(dsn, min_size=9, max_size=9)
    await pool.execute(PLAIN_DDL)
    await pool.execute(SERIALIZED_FN)
    store = EventStore(pool)
    meta = Metadata(actor="system:bench")
    meta_json = meta.to_json().decode()
    results: dict[str, float] = {}
    counter = iter(range(10**9))

    for per_tx in (1, 10):
        for writers in (1, 8):
            events = [_payload(i) for i in range(per_tx)]
            payloads = [e.payload_json() for e in events]

            async def plain(w: int) -> int:
                async with pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO bench_plain (stream_id, type, data, metadata) "
                        "SELECT $1, 'BenchRecorded', d, $3::jsonb FROM unnest($2::jsonb[]) AS d",
                        f"table-{w}-{random.randrange(50)}",
                        payloads,
                        meta_json,
                    )
                return per_tx

            async def append(w: int) -> int:
                await store.append(f"table-{w}-{next(counter) % 50}", ANY_VERSION, events, meta)
                return per_tx

            async def serialized(w: int) -> int:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.fetchrow(
                        "SELECT * FROM events_append_serialized($1, -2, $2, $3::smallint[], "
                        "$4::jsonb[], $5::jsonb[], now())",
                        f"table-s{w}-{next(counter) % 50}",
                        ["BenchRecorded"] * per_tx,
                        [1] * per_tx,
                        payloads,
                        [meta_json] * per_tx,
                    )
                return per_tx

            base = await run_for(seconds, writers, plain)
            ours = await run_for(seconds, writers, append)
            ser = await run_for(seconds, writers, serialized)
            label = f"append {per_tx:>2} event(s)/tx, {writers} writer(s)"
            row(label, ours, "events/s", f"baseline INSERT {base:,.0f}/s  ratio {ours / base:.2f}  "
                f"(table-lock store {ser:,.0f}/s)")
            results[f"append_{per_tx}x{writers}"] = ours
            results[f"plain_{per_tx}x{writers}"] = base
            results[f"serialized_{per_tx}x{writers}"] = ser
    await store.close()
    await pool.close()
    return results


async def bench_replay(dsn: str, total: int) -> dict[str, float]:
    pool = await postgres.create_pool(dsn, min_size=2, max_size=4)
    store = EventStore(pool)
    # Top the log up to `total` events quickly with large batches.
    have = await pool.fetchval("SELECT count(*) FROM events")
    meta = Metadata(actor="system:bench")
    i = 0
    while have < total:
        batch = [_payload(i + k) for k in range(500)]
        await store.append(f"table-fill-{i % 2000}", ANY_VERSION, batch, meta)
        have += len(batch)
        i += 500

    results: dict[str, float] = {}

    async def raw_pass() -> float:
        """Baseline: the same rows fetched without decoding."""
        t0, pos, n = time.perf_counter(), 0, 0
        async with pool.acquire() as conn:
            while True:
                rows = await conn.fetch(
                    "SELECT position, stream_id, version, type, schema_version, data::text, "
                    "metadata::text, occurred_at FROM events WHERE position > $1 ORDER BY position LIMIT 5000",
                    pos,
                )
                if not rows:
                    return n / (time.perf_counter() - t0)
                pos, n = rows[-1][0], n + len(rows)

    async def replay_pass() -> tuple[float, int]:
        t0, pos, n = time.perf_counter(), 0, 0
        while True:
            batch = await store.read_all(pos, 5000)
            if not batch:
                return n / (time.perf_counter() - t0), n
            pos, n = batch[-1].position, n + len(batch)

    # The first read of freshly written rows sets their hint bits (writes): a warm-up pass pays
    # that for both. Then the median of three alternating passes of each.
    await raw_pass()
    raws, replays = [], []
    for _ in range(3):
        raws.append(await raw_pass())
        rate, n = await replay_pass()
        replays.append(rate)
    base, rate = sorted(raws)[1], sorted(replays)[1]
    row(f"read_all replay with decoding ({n:,} events, median of 3)", rate, "events/s",
        f"baseline raw fetch {base:,.0f}/s  ratio {rate / base:.2f}")
    results["replay"] = rate
    results["replay_raw"] = base

    runner = ProjectionRunner(store, [StreamsProjection()])
    await runner.prepare()
    t0 = time.perf_counter()
    applied = await runner.rebuild("streams")
    rebuild = applied / (time.perf_counter() - t0)
    row(f"projection rebuild 'streams' ({applied:,} events)", rebuild, "events/s",
        f"ratio to replay {rebuild / rate:.2f}")
    results["rebuild"] = rebuild
    await store.close()
    await pool.close()
    return results


async def bench_startup() -> None:
    import tempfile
    from pathlib import Path

    from maestro.runtime import open_runtime
    from maestro.settings import Settings

    with tempfile.TemporaryDirectory(prefix="maestro-start-") as tmp:
        for label in ("cold (initdb)", "warm (existing data)"):
            t0 = time.perf_counter()
            runtime = await open_runtime(Settings(data_dir=Path(tmp)), follow=False)
            up = time.perf_counter() - t0
            await runtime.close()
            row(f"embedded PostgreSQL up and migrated, {label}", up * 1000, "ms")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0, help="per append measurement")
    parser.add_argument("--events", type=int, default=200_000, help="log size for replay")
    args = parser.parse_args()
    print(f"event store benchmark ({args.seconds:.0f}s per append figure)")
    await bench_startup()
    async with bench_database() as dsn:
        await bench_appends(dsn, args.seconds)
        await bench_replay(dsn, args.events)


if __name__ == "__main__":
    asyncio.run(main())
