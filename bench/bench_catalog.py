"""Catalog benchmarks: ``maestro apply`` of a 2,000-table folder, dependency re-inference, edits.

A deterministic generator writes 2,000 realistic BigQuery statements across 20 datasets into a
temporary folder in the ``maestro apply`` layout: CTEs, joins (comma joins too), window functions,
QUALIFY, aggregates, UNION ALL, subqueries, UNNEST, unquoted and backticked names, wildcard tables.
Table ``i`` reads 1-4 tables among the ~150 before it (so the DAG is deep and acyclic) and
sometimes an external source. Then, into a fresh database:

* ``apply``: read the folder, plan, execute (the whole ``maestro apply`` minus click), and a second
  apply of the same folder (a no-op);
* ``re-infer``: ``DependencyState.build`` from every catalog row, with a cold and a warm
  ``analyze`` cache;
* ``edit``: 200 ``CatalogService.update_table`` calls that add or remove a reference (through the
  service, not HTTP);
* the original Maestro's regex inference (``naive_references``) against ours on the same SQL.

Targets: apply <= 15 s, re-infer <= 3 s, edit p50 <= 30 ms.

    .venv/bin/python -m bench.bench_catalog [--tables 2000] [--concurrency 1 4 8] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from bench.common import bench_database, percentile

DATASETS = [
    "events", "crm", "shop", "web", "ads", "finance", "product", "support", "marketing", "ops",
    "stg_crm", "stg_shop", "stg_web", "int_users", "int_orders", "mart_sales", "mart_growth",
    "mart_finance", "reporting", "exports",
]
PROJECT = "maestro-local"  # the default project: `maestro-local.ds.t` resolves like ds.t
NOUNS = [
    "orders", "users", "sessions", "pageviews", "payments", "refunds", "campaigns", "clicks",
    "tickets", "products", "inventory", "subscriptions", "invoices", "signups", "visits",
]
EXTERNAL = [
    "`raw-warehouse.salesforce.accounts`", "`raw-warehouse.stripe.charges`",
    "raw_ga.ga_sessions_*", "`raw-warehouse.zendesk.tickets`", "raw_app.events_2024*",
]
EVENT_SHARDS = 120  # events.daily_0000 ... : roots that other tables read through events.daily_*


def table_names(count: int) -> list[tuple[str, str]]:
    names = []
    for i in range(count):
        if i < EVENT_SHARDS:
            names.append(("events", f"daily_{i:04d}"))
        else:
            dataset = DATASETS[1 + (i * 7) % (len(DATASETS) - 1)]
            names.append((dataset, f"{NOUNS[i % len(NOUNS)]}_{i:04d}"))
    return names


def spell(rng: random.Random, dataset: str, name: str) -> str:
    """A table name as people write it: unquoted, backticked, with or without the project."""
    choice = rng.random()
    if choice < 0.40:
        return f"{dataset}.{name}"
    if choice < 0.70:
        return f"`{dataset}.{name}`"
    if choice < 0.90:
        return f"`{PROJECT}.{dataset}.{name}`"
    return f"`{dataset}`.`{name}`"


def statement(rng: random.Random, i: int, parents: list[str]) -> str:
    """One realistic statement reading ``parents`` (already spelled)."""
    a, rest = parents[0], parents[1:]
    b = rest[0] if rest else a
    extra = rest[1:]
    kind = i % 8
    if kind == 0:
        joins = "".join(
            f"\n  LEFT JOIN {t} AS j{k} ON j{k}.user_id = e.user_id" for k, t in enumerate(extra)
        )
        sql = f"""WITH base AS (
  SELECT user_id, DATE(created_at) AS day, amount
  FROM {a}
  WHERE DATE(created_at) >= DATE_SUB(CURRENT_DATE(), INTERVAL 30 DAY)
), enriched AS (
  SELECT b.*, c.country
  FROM base AS b
  LEFT JOIN {b} AS c USING (user_id)
)
SELECT e.day, e.country, SUM(e.amount) AS revenue, COUNT(DISTINCT e.user_id) AS users
FROM enriched AS e{joins}
GROUP BY e.day, e.country
"""
    elif kind == 1:
        others = "".join(f", {t} AS c{k}" for k, t in enumerate(extra))
        sql = f"""SELECT o.order_id, item.sku, item.quantity * p.price AS line_total
FROM {a} AS o, UNNEST(o.items) AS item, {b} AS p{others}
WHERE p.sku = item.sku AND o.status != 'cancelled'
"""
    elif kind == 2:
        sql = f"""SELECT * EXCEPT (rn)
FROM (
  SELECT s.*, ROW_NUMBER() OVER (PARTITION BY s.id ORDER BY s.updated_at DESC) AS rn
  FROM {a} AS s
)
WHERE rn = 1
"""
        for t in rest:
            sql += f"  AND id NOT IN (SELECT id FROM {t} WHERE deleted)\n"
    elif kind == 3:
        union = "\nUNION ALL\n".join(
            f"SELECT '{k}' AS source, id, amount, created_at FROM {t}" for k, t in enumerate(parents)
        )
        sql = f"-- every source, deduplicated\n{union}\n"
    elif kind == 4:
        filters = "".join(f"\n  AND user_id IN (SELECT user_id FROM {t})" for t in rest)
        sql = f"""SELECT user_id, event_date,
  SUM(revenue) OVER (PARTITION BY user_id ORDER BY event_date
                     ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS revenue_7d
FROM {a}
WHERE TRUE{filters}
QUALIFY ROW_NUMBER() OVER (PARTITION BY user_id, event_date ORDER BY loaded_at DESC) = 1
"""
    elif kind == 5:
        joins = "".join(f"\nJOIN {t} x{k} ON x{k}.user_id = d.user_id" for k, t in enumerate(extra))
        sql = f"""SELECT FORMAT_DATE('%Y-%m', d.day) AS month, d.channel,
  APPROX_COUNT_DISTINCT(d.user_id) AS users,
  SUM(IF(d.converted, 1, 0)) / NULLIF(COUNT(*), 0) AS conversion
FROM {a} d
JOIN {b} ch ON ch.channel_id = d.channel_id{joins}
WHERE d.day BETWEEN '2024-01-01' AND CURRENT_DATE()
GROUP BY 1, 2
HAVING users > 10
"""
    elif kind == 6:
        filters = "".join(f"\n  AND x.id IN (SELECT id FROM {t})" for t in rest)
        sql = f"""SELECT _TABLE_SUFFIX AS shard, COUNT(*) AS hits, ANY_VALUE(x.campaign) AS campaign
FROM `events.daily_*` AS e
CROSS JOIN {a} AS x
WHERE _TABLE_SUFFIX BETWEEN '0000' AND '0099'{filters}
GROUP BY shard
"""
    else:
        ctes = ",\n".join(f"  s{k} AS (SELECT id, value FROM {t})" for k, t in enumerate(parents))
        selects = " FULL OUTER JOIN ".join(
            f"s{k}" if k == 0 else f"s{k} USING (id)" for k in range(len(parents))
        )
        sql = f"""WITH
{ctes}
SELECT id, STRUCT(s0.value AS first_value) AS detail, ARRAY_LENGTH([1, 2, 3]) AS n
FROM {selects}
"""
    return sql


class Table(NamedTuple):
    dataset: str
    name: str
    sql: str
    parents: frozenset[int]  # indices of the catalog tables it reads (wildcards expanded)
    references: int  # distinct tables it names: catalog parents, a wildcard, outside sources


def generate(count: int, seed: int = 7) -> list[Table]:
    """``count`` tables, each reading 1-4 of the 150 before it (shards read raw data only)."""
    rng = random.Random(seed)
    names = table_names(count)
    out = []
    for i, (dataset, name) in enumerate(names):
        if i < EVENT_SHARDS:
            sql = (
                "SELECT event_id, user_id, event_name, TIMESTAMP_MICROS(event_ts) AS at\n"
                f"FROM `raw-warehouse.app.events_{i:04d}`\n"
                "WHERE event_name IS NOT NULL\n"
            )
            out.append(Table(dataset, name, sql, frozenset(), 1))  # reads one raw table
            continue
        low = max(0, i - 150)
        parents = set(rng.sample(range(low, i), min(rng.randint(1, 4), i - low)))
        sql = statement(rng, i, [spell(rng, *names[p]) for p in sorted(parents, reverse=True)])
        references = len(parents)
        if "events.daily_*" in sql:
            parents |= set(range(EVENT_SHARDS))
            references += 1
        if rng.random() < 0.15:
            sql = sql.rstrip("\n") + f"\nUNION ALL\nSELECT * FROM {rng.choice(EXTERNAL)} LIMIT 0\n"
            references += 1
        out.append(Table(dataset, name, sql, frozenset(parents), references))
    return out


def write_folder(root: Path, tables: list[Table]) -> None:
    for i, (dataset, name, sql, _, _) in enumerate(tables):
        folder = root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        if i % 10 == 0:
            header = f"/*---\ndescription: generated table {i}\nlabels:\n  team: t{i % 5}\n---*/\n"
        else:
            header = ""
        (folder / f"{name}.sql").write_text(header + sql)


# ------------------------------------------------------------------------------------ measuring
def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def clear_analysis_cache() -> None:
    from maestro.catalog import sql

    sql._analyze.cache_clear()  # analyze() is a thin wrapper over this lru_cache


async def open_catalog(dsn: str, data_dir: Path):  # -> Runtime
    from maestro.runtime import open_runtime
    from maestro.settings import Settings

    return await open_runtime(Settings(database_url=dsn, data_dir=data_dir), follow=False)


async def bench_apply(
    tables: list[Table], folder: Path, data_dir: Path, concurrency: int, edits: int
) -> dict:
    """``maestro apply`` end to end into a fresh database, cold analysis cache, then a re-apply."""
    from maestro.events.model import Metadata
    from maestro.handlers.catalog import apply
    from maestro.handlers.catalog.folder import read_folder

    actor = Metadata(actor="cli:bench")
    async with bench_database() as dsn:
        runtime = await open_catalog(dsn, data_dir)
        try:
            clear_analysis_cache()
            t0 = time.perf_counter()
            specs = read_folder(folder, default_project=runtime.settings.project)
            t1 = time.perf_counter()
            plan = apply.plan(specs, await apply.load_rows(runtime.catalog), prune=False)
            t2 = time.perf_counter()
            report = await apply.execute(plan, runtime.catalog, actor, concurrency=concurrency)
            t3 = time.perf_counter()
            total = t3 - t0
            print(f"  apply {len(tables):,} tables (concurrency {concurrency}): {total:6.2f} s "
                  f"(read+check {t1 - t0:.2f}, plan {t2 - t1:.2f}, execute {t3 - t2:.2f}; "
                  f"{report.events:,} events)   target <= 15 s: {'ok' if total <= 15 else 'MISSED'}")
            t0 = time.perf_counter()
            specs = read_folder(folder, default_project=runtime.settings.project)
            again = await apply.execute(
                apply.plan(specs, await apply.load_rows(runtime.catalog), prune=True),
                runtime.catalog, actor,
            )
            assert not again.plan.has_changes and again.events == 0
            print(f"  re-apply, nothing to do (warm cache): {time.perf_counter() - t0:6.2f} s")
            check_graph(tables, runtime.catalog, report.created)
            reinfer = await bench_reinfer(runtime)
            edited = await bench_edits(runtime, tables, report.created, edits)
        finally:
            await runtime.close()
    return {"apply": total, **reinfer, **edited}


async def bench_baseline_creates(tables: list[Table], data_dir: Path) -> float:
    """Baseline: the same creates one by one through CatalogService.create_table."""
    from maestro.events.catalog import TableSpec
    from maestro.events.model import Metadata

    actor = Metadata(actor="cli:bench")
    async with bench_database() as dsn:
        runtime = await open_catalog(dsn, data_dir)
        try:
            clear_analysis_cache()
            t0 = time.perf_counter()
            for t in tables:
                await runtime.catalog.create_table(
                    TableSpec(dataset=t.dataset, name=t.name, query=t.sql.rstrip()), actor
                )
            return time.perf_counter() - t0
        finally:
            await runtime.close()


async def bench_cli(folder: Path, data_dir: Path) -> float:
    """``maestro apply DIR`` as a user runs it: a new process (imports, runtime, output)."""
    import subprocess
    import sys

    async with bench_database() as dsn:
        command = [
            sys.executable, "-c", "from maestro.cli_catalog import apply_command; apply_command()",
            str(folder), "--database-url", dsn, "--data-dir", str(data_dir),
        ]
        t0 = time.perf_counter()
        done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    print(f"  maestro apply in a new process, end to end:              {seconds:6.2f} s "
          f"({done.stdout.strip().splitlines()[-1]})")
    return seconds


def check_graph(tables: list[Table], catalog, created: dict[str, str]) -> None:
    """The inferred graph is exactly the generated one."""
    ids = [created[f"{t.dataset}.{t.name}"] for t in tables]
    wrong = sum(
        catalog.deps.graph.parents(ids[i]) != {ids[p] for p in t.parents} for i, t in enumerate(tables)
    )
    edges = len(catalog.deps.graph.edges())
    print(f"  inferred graph: {edges:,} edges; tables whose parents differ from the generator's: {wrong}")
    assert wrong == 0


async def bench_reinfer(runtime) -> dict:
    """DependencyState.build from every catalog row (what refresh() does), cold and warm cache."""
    from maestro.handlers.catalog.dependencies import DependencyState

    rows = await runtime.pool.fetch("SELECT table_id, spec::text FROM catalog_tables WHERE NOT deleted")
    import orjson

    specs = [(r["table_id"], orjson.loads(r["spec"])) for r in rows]
    catalog = runtime.catalog
    results = {}
    for label in ("cold", "warm"):
        if label == "cold":
            clear_analysis_cache()
        t0 = time.perf_counter()
        state = DependencyState.build(
            [catalog._entry(tid, spec) for tid, spec in specs], catalog.default_project
        )
        seconds = time.perf_counter() - t0
        results[f"reinfer_{label}"] = seconds
        target = f"   target <= 3 s: {'ok' if seconds <= 3 else 'MISSED'}" if label == "cold" else ""
        print(f"  re-infer {len(specs):,} tables, {label} analyze cache: {seconds * 1000:8.1f} ms{target}")
    assert len(state.graph.edges()) == len(catalog.deps.graph.edges())
    return results


async def bench_edits(runtime, tables: list[Table], created: dict[str, str], count: int = 200) -> dict:
    """Edits through CatalogService.update_table, then the same through the HTTP API."""
    from aiohttp.test_utils import TestClient, TestServer

    from maestro.events.model import Metadata
    from maestro.http.app import create_app

    actor = Metadata(actor="user:bench")
    extended: dict[int, str] = {}  # tables whose query carries an extra reference right now
    results = await _edits(runtime, tables, created, count, "service", extended,
                           lambda tid, q: runtime.catalog.update_table(tid, {"query": q}, actor))
    _, token = await runtime.tokens.create("bench", "bench", actor, admin=True)
    app = create_app(runtime.settings, runtime=runtime)
    async with TestClient(TestServer(app), headers={"Authorization": f"Bearer {token}"}) as client:

        async def patch(table_id: str, query: str) -> None:
            resp = await client.patch(f"/api/v1/tables/{table_id}", json={"query": query})
            assert resp.status == 200, await resp.text()
            await resp.read()

        http = await _edits(runtime, tables, created, count, "HTTP PATCH", extended, patch, seed=12)
    return {**results, "http_edit_p50": http["edit_p50"], "http_edit_p95": http["edit_p95"]}


async def _edits(runtime, tables, created, count, label, extended, edit, seed: int = 11) -> dict:
    """Each edit adds or removes a reference, so it parses, re-resolves and cycle-checks."""
    from maestro.events.model import Metadata

    rng = random.Random(seed)
    actor = Metadata(actor="user:bench")
    catalog = runtime.catalog
    times = []
    for _ in range(count):
        i = rng.randrange(EVENT_SHARDS + 10, len(tables))
        table_id = created[f"{tables[i].dataset}.{tables[i].name}"]
        before = len(catalog.deps.graph.parents(table_id))
        if i in extended:  # remove the reference added earlier
            query, expected = tables[i].sql.rstrip(), before - 1
            del extended[i]
        else:
            p = rng.choice([p for p in range(i - 100, i) if p not in tables[i].parents])
            extra = f"{tables[p].dataset}.{tables[p].name}"
            query = f"SELECT q.*, x.flag\nFROM (\n{tables[i].sql.rstrip()}\n) AS q\nLEFT JOIN {extra} AS x ON TRUE"
            expected = before + 1
            extended[i] = query
        t0 = time.perf_counter()
        await edit(table_id, query)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(catalog.deps.graph.parents(table_id)) == expected
    p50, p95 = percentile(times, 50), percentile(times, 95)
    print(f"  edit ({label}, adds/removes a reference) x{count}: p50 {p50:6.1f} ms   "
          f"p95 {p95:6.1f} ms   max {max(times):6.1f} ms   target p50 <= 30 ms: "
          f"{'ok' if p50 <= 30 else 'MISSED'}")
    if label != "service":
        return {"edit_p50": p50, "edit_p95": p95}
    # The worst case: a table many others read through a wildcard (events.daily_*). Every edit of
    # it, even of its description, re-resolves all those readers.
    shard = created[f"{tables[5].dataset}.{tables[5].name}"]
    readers = len(catalog.deps.graph.children(shard))
    shard_times = []
    for k in range(20):
        t0 = time.perf_counter()
        await catalog.update_table(shard, {"description": f"edit {k}"}, actor)
        shard_times.append((time.perf_counter() - t0) * 1000)
    print(f"  edit of the description of a table {readers} others read via a wildcard x20: "
          f"p50 {percentile(shard_times, 50):6.1f} ms   max {max(shard_times):6.1f} ms")
    return {"edit_p50": p50, "edit_p95": p95, "wildcard_edit_p50": percentile(shard_times, 50)}


def bench_naive(tables: list[Table]) -> None:
    """Our inference against the original's regex, on the same statements, with the truth."""
    from maestro.catalog.sql import analyze, naive_references

    clear_analysis_cache()
    t0 = time.perf_counter()
    ours = [analyze(t.sql, default_project=PROJECT).references for t in tables]
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = [naive_references(t.sql) for t in tables]
    naive_s = time.perf_counter() - t0
    truth = [t.references for t in tables]
    found_ours = sum(len(r) for r in ours)
    found_naive = sum(len(r) for r in naive)
    exact_ours = sum(len(r) == n for r, n in zip(ours, truth, strict=True))
    exact_naive = sum(len(r) == n for r, n in zip(naive, truth, strict=True))
    missed_all = sum(not r for r in naive)
    n = len(tables)
    print(f"  references found: ours {found_ours:,}, naive regex {found_naive:,}, truth {sum(truth):,} "
          f"(naive/ours {found_naive / found_ours:.2f})")
    print(f"  statements with exactly the right references: ours {exact_ours:,}/{n:,}, "
          f"naive {exact_naive:,}/{n:,}; naive finds nothing at all in {missed_all:,}")
    print(f"  time per statement: ours (cold cache) {ours_s / n * 1000:.2f} ms, "
          f"naive {naive_s / n * 1000:.3f} ms (ratio {ours_s / naive_s:.0f}x)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", type=int, default=2000)
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[4])
    parser.add_argument("--no-baseline", action="store_true", help="skip the create_table baseline")
    args = parser.parse_args()
    print(f"catalog benchmark: {args.tables:,} tables, {os.cpu_count()} cores, {load()}")
    tables = generate(args.tables)
    with tempfile.TemporaryDirectory(prefix="maestro-bench-catalog-") as tmp:
        folder = Path(tmp) / "repo"
        write_folder(folder, tables)
        results = {}
        for concurrency in args.concurrency:
            results = await bench_apply(tables, folder, Path(tmp) / "data", concurrency, args.edits)
        await bench_cli(folder, Path(tmp) / "data")
        if not args.no_baseline:
            baseline = await bench_baseline_creates(tables, Path(tmp) / "data")
            print(f"  baseline: the same creates one by one through create_table: {baseline:6.2f} s "
                  f"(apply is {baseline / results['apply']:.1f}x faster)")
    bench_naive(tables)
    print(f"done, {load()}")


if __name__ == "__main__":
    asyncio.run(main())
