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

    .venv/bin/python -m bench.bench_catalog [--tables 2000] [--edits 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

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
    if rng.random() < 0.15:
        sql = sql.rstrip("\n") + f"\nUNION ALL\nSELECT * FROM {rng.choice(EXTERNAL)} LIMIT 0\n"
    return sql


def generate(count: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """``count`` (dataset, name, sql), each reading 1-4 earlier tables (shards read raw data)."""
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
        else:
            low = max(0, i - 150)
            parents = rng.sample(range(low, i), min(rng.randint(1, 4), i - low))
            spelled = [spell(rng, *names[p]) for p in parents]
            sql = statement(rng, i, spelled)
        out.append((dataset, name, sql))
    return out


def write_folder(root: Path, statements: list[tuple[str, str, str]]) -> None:
    for i, (dataset, name, sql) in enumerate(statements):
        folder = root / dataset
        folder.mkdir(exist_ok=True)
        if i % 10 == 0:
            header = f"/*---\ndescription: generated table {i}\nlabels:\n  team: t{i % 5}\n---*/\n"
        else:
            header = ""
        (folder / f"{name}.sql").write_text(header + sql)
