"""The ``extract`` rule: who may have a table's extracted data.

The catalog is shared: every enabled user reads every table's SQL, as in the original. The data a
table extracts to Cloud Storage is not: its files -- signed URLs, and the ``gs://`` names that say
where they are -- go to administrators and members of the table's group, and to every enabled
user only when the table says ``extract.shared: true``. A table in no group is the
administrators' unless shared. Routes that merely list jobs or stream a run's events stay
``read`` and leave the file names out for the tables this rule would refuse
(:func:`unreadable_extracts`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from maestro.handlers.people.principal import Principal
from maestro.http.keys import RUNTIME

# Live or deleted: a deleted table's old extracts are still its group's.
_READERS = (
    "SELECT table_id, spec->>'group_id' AS group_id, "
    "coalesce((spec->'extract'->>'shared')::boolean, false) AS shared "
    "FROM catalog_tables WHERE table_id = ANY($1)"
)


def _problem(row: Any, who: Principal) -> str | None:
    if row["shared"] or who.admin:
        return None
    if row["group_id"] is None:
        return "the table belongs to no group and its extracts are not shared: only administrators may have them"
    if not who.member_of(row["group_id"]):
        return f"its extracts are for the table's group {row['group_id']!r}, which you are not in"
    return None


async def unreadable_extracts(pool: Any, who: Principal, table_ids: Iterable[str]) -> set[str]:
    """The tables among ``table_ids`` whose extracted files ``who`` may not have."""
    if who.admin:
        return set()
    rows = await pool.fetch(_READERS, sorted(set(table_ids)))
    return {r["table_id"] for r in rows if _problem(r, who) is not None}


async def extract_problem(request: web.Request, who: Principal) -> str | None:
    """Why ``who`` may not have the extract of the table in the path, or None when they may."""
    table_id = request.match_info.get("table_id")
    if table_id is None:
        return "the route names no table"
    if who.admin:
        return None
    row = await request.app[RUNTIME].pool.fetchrow(_READERS, [table_id])
    return _problem(row, who) if row is not None else None  # unknown: the handler answers 404
