"""Reading the cost read model: totals by table, user, group, run or day, each item named for people
(the table's ``dataset.name``, the user's name or email, the group's name, the run's frequency),
used by ``GET /api/v1/costs`` and the cost digests.

Ranges are whole UTC days, so every answer is a sum of the per-day sums (``cost_daily``,
maestro/projections/cost_rollup.py), never of the job rows: the same numbers as summing
``cost_jobs``, from far fewer rows (tests/integration/test_cost_rollup.py compares the two).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

TIB = 2**40
# Each ``by``: the rollup dimension holding it, and its key there (group and day are coarser than
# the owner x group x day rows, so they sum those).
KEYS = {
    "user": ("user", "key"), "group": ("user", "group_id"), "day": ("user", "day::text"),
    "table": ("table", "key"), "run": ("run", "key"),
}
# The name of each key, from the read models that hold it (an id that no longer resolves, say a
# deleted group, keeps its id and a null name).
_NAMES = {
    "table": "(SELECT t.dataset || '.' || t.name FROM catalog_tables t WHERE t.table_id = c.key)",
    "user": "(SELECT coalesce(u.name, u.email, u.user_id) FROM users u WHERE u.user_id = c.key)",
    "group": "(SELECT g.name FROM groups g WHERE g.group_id = c.key)",
    "run": "(SELECT r.frequency_id FROM runs r WHERE r.run_id = c.key)",
    "day": "NULL::text",
}


def usd(bytes_billed: int, price_per_tib: float) -> float:
    return round(bytes_billed / TIB * price_per_tib, 6)


async def cost_items(
    pool: Any, by: str, *, start: dt.date | None, end: dt.date | None, group_id: str | None = None,
    price_per_tib: float, limit: int | None = None,
) -> list[dict[str, Any]]:
    """One item per ``by`` key over the UTC days ``start``..``end`` (inclusive; None: open), the
    most billed first."""
    dimension, key = KEYS[by]
    sql = (
        f"WITH c AS (SELECT {key} AS key, sum(bytes_billed)::bigint AS bytes_billed, "
        "sum(bytes_processed)::bigint AS bytes_processed, sum(slot_ms)::bigint AS slot_ms, sum(jobs)::bigint AS jobs "
        "FROM cost_daily WHERE dimension = $1 AND day BETWEEN $2 AND $3 "
        "AND ($4::text IS NULL OR group_id = $4) GROUP BY 1) "
        f"SELECT c.*, {_NAMES[by]} AS name FROM c ORDER BY bytes_billed DESC, key LIMIT $5"
    )
    # The plan is made for the range asked: a prepared statement's generic plan guesses a few rows
    # for any range, and for "all time" sorted a million of them on disk (4x the custom plan's
    # time). Open ends are the widest dates (asyncpg sends them as -infinity and infinity).
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        rows = await conn.fetch(sql, dimension, start or dt.date.min, end or dt.date.max, group_id, limit)
    return [
        {
            by: r["key"], "name": r["name"], "bytes_billed": r["bytes_billed"],
            "bytes_processed": r["bytes_processed"], "slot_ms": r["slot_ms"], "jobs": r["jobs"],
            "usd": usd(r["bytes_billed"], price_per_tib),
        }
        for r in rows
    ]


async def cost_total(pool: Any, *, start: dt.date, end: dt.date, group_id: str | None) -> int:
    """Bytes billed over the days ``start``..``end`` (inclusive), for one group or all."""
    return int(await pool.fetchval(
        "SELECT coalesce(sum(bytes_billed), 0)::bigint FROM cost_daily WHERE dimension = 'user' AND day BETWEEN $1 AND $2 "
        "AND ($3::text IS NULL OR group_id = $3)",
        start, end, group_id,
    ))
