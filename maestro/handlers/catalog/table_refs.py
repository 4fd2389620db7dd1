"""A table named the ways people and old clients name it: its integer number, its id, or
``dataset.name``.

Every table has a number (``catalog_tables.number``: the log position of its ``TableCreated``,
sql/014_table_numbers.sql): the original Maestro's clients address tables by integers and format
them as integers. A reference of digits is a number first and an id second (ids are 16 hex digits
and may, rarely, be all digits); ``dataset.name`` (or ``project.dataset.name``) is the live table
of that name.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import orjson

from maestro.errors import NotFound

_NAME = re.compile(r"(?:[a-z][a-z0-9-]{4,28}[a-z0-9]\.)?([A-Za-z0-9_]+)\.([\w\- ]+)")
_COLUMNS = "table_id, number, project, dataset, name, kind, deleted, spec::text AS spec, created_at"


@dataclass(frozen=True, slots=True)
class TableRef:
    table_id: str
    number: int
    dataset: str
    name: str
    kind: str
    deleted: bool
    spec: dict[str, Any]
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.table_id, "number": self.number, "dataset": self.dataset, "name": self.name,
            "kind": self.kind, "deleted": self.deleted,
        }


def _ref(row: Any) -> TableRef:
    return TableRef(row["table_id"], row["number"], row["dataset"], row["name"], row["kind"], row["deleted"],
                    orjson.loads(row["spec"]), row["created_at"])


async def find(pool: Any, ref: str | int) -> TableRef | None:
    """The table ``ref`` names, or None."""
    text = str(ref).strip()
    if text.isascii() and text.isdigit() and len(text) <= 18:  # within bigint ("¹" is a digit to Python)
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM catalog_tables WHERE number = $1", int(text))
        if row is not None:
            return _ref(row)
    if (named := _NAME.fullmatch(text)) is not None:
        row = await pool.fetchrow(
            f"SELECT {_COLUMNS} FROM catalog_tables WHERE dataset = $1 AND name = $2 AND NOT deleted",
            named.group(1), named.group(2),
        )
        if row is not None:
            return _ref(row)
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM catalog_tables WHERE table_id = $1", text)
    return _ref(row) if row is not None else None


async def resolve(pool: Any, ref: str | int) -> TableRef:
    """Like :func:`find`; an unknown reference is a 404 naming it."""
    found = await find(pool, ref)
    if found is None:
        raise NotFound(f"no table {str(ref)!r} (give its number, its id, or dataset.name)")
    return found


async def live_tables(pool: Any) -> list[TableRef]:
    """Every live table, by number."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM catalog_tables WHERE NOT deleted ORDER BY number")
    return [_ref(r) for r in rows]
