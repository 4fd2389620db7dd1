"""The tables list as one SQL query: filters, text search, sort and a page, with each table's status.

A table's status is that of its newest job (``running`` while planned or submitted, else its
state), ``never run`` without one. It is read with one index probe per table shown
(``jobs_table``: table_id, planned_at DESC) — and per table filtered on, when filtering by
status, which is why that filter is the one measured separately in bench/bench_ui.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

STATUSES = ("running", "succeeded", "failed", "cancelled", "never run")
SORTS = {
    "name": "t.dataset, t.name, t.table_id",
    "-updated": "t.updated_at DESC, t.table_id",
    "kind": "t.kind, t.dataset, t.name, t.table_id",
    "-created": "t.created_at DESC, t.table_id",
}
PAGE = 50


class TableFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    q: str | None = Field(None, max_length=200, description="in name, description and SQL")
    kind: Literal["summary", "import", "external"] | None = None
    dataset: str | None = Field(None, max_length=1024)
    group: str | None = Field(None, max_length=200)
    frequency: str | None = Field(None, max_length=200)
    status: Literal["running", "succeeded", "failed", "cancelled", "never run"] | None = None
    owner: str | None = Field(None, max_length=200)
    deleted: bool = False
    sort: Literal["name", "-updated", "kind", "-created"] = "name"
    offset: int = Field(0, ge=0, le=10_000_000)

    @classmethod
    def from_query(cls, query: Any) -> TableFilters:
        """Empty form fields are "no filter" (a GET form sends every field, filled or not)."""
        return cls.model_validate({k: v for k, v in query.items() if v != ""})


# The newest job's state; a planned or submitted job means the table is running.
_STATUS = (
    "COALESCE((SELECT CASE WHEN j.state IN ('planned', 'submitted') THEN 'running' ELSE j.state END "
    "FROM jobs j WHERE j.table_id = t.table_id ORDER BY j.planned_at DESC LIMIT 1), 'never run')"
)

# The page first, then each shown table's status (unless filtering on it): beside the window
# count, the status subquery would run for every row up to the offset.
LIST_SQL = f"""
WITH page AS (
  SELECT t.table_id, t.dataset, t.name, t.kind, t.deleted, t.updated_at, t.updated_by,
         t.spec->>'description' AS description, t.spec->>'group_id' AS group_id,
         t.spec->>'owner_id' AS owner_id, t.spec->>'frequency_id' AS frequency_id,
         t.spec->>'write_disposition' AS write_disposition, t.created_at, count(*) OVER () AS total
  FROM catalog_tables t
  WHERE t.deleted = $1
    AND ($2::text IS NULL OR t.kind = $2)
    AND ($3::text IS NULL OR t.dataset = $3)
    AND ($4::text IS NULL OR t.spec->>'group_id' = $4)
    AND ($5::text IS NULL OR t.spec->>'frequency_id' = $5)
    AND ($6::text IS NULL OR t.spec->>'owner_id' = $6)
    AND ($7::text IS NULL OR t.name ILIKE $7 OR t.spec->>'description' ILIKE $7 OR t.spec->>'query' ILIKE $7)
    AND ($8::text IS NULL OR {_STATUS} = $8)
  ORDER BY {{order}}
  OFFSET $9 LIMIT {PAGE}
)
SELECT t.*, {_STATUS} AS status FROM page t ORDER BY {{order}}
"""


def _like(text: str | None) -> str | None:
    if not text:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_tables(pool: Any, f: TableFilters) -> tuple[list[dict[str, Any]], int]:
    rows = await pool.fetch(
        LIST_SQL.format(order=SORTS[f.sort]),
        f.deleted, f.kind, f.dataset, f.group, f.frequency, f.owner, _like(f.q), f.status, f.offset,
    )
    return [dict(r) for r in rows], (rows[0]["total"] if rows else 0)


async def choices(pool: Any) -> dict[str, list[tuple[str, str]]]:
    """What the filter and form selects offer: (value, label) pairs."""
    groups = await pool.fetch("SELECT group_id, name FROM groups ORDER BY lower(name)")
    frequencies = await pool.fetch("SELECT frequency_id, name FROM catalog_frequencies ORDER BY name")
    datasets = await pool.fetch(
        "SELECT dataset FROM catalog_datasets UNION SELECT DISTINCT dataset FROM catalog_tables WHERE NOT deleted ORDER BY 1"
    )
    owners = await pool.fetch(
        "SELECT u.user_id, COALESCE(u.email, u.name, u.user_id) AS label FROM users u ORDER BY 2"
    )
    return {
        "groups": [(r[0], r[1]) for r in groups],
        "frequencies": [(r[0], r[1]) for r in frequencies],
        "datasets": [(r[0], r[0]) for r in datasets],
        "owners": [(r[0], r[1]) for r in owners],
    }
