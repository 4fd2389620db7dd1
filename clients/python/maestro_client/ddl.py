"""A PostgreSQL ``CREATE TABLE`` matching a BigQuery schema, to load a table's extracts into.

REQUIRED columns become NOT NULL; REPEATED ones arrays; RECORD/STRUCT and JSON columns jsonb
(PostgreSQL has no anonymous structs); names are quoted where PostgreSQL would fold or reject them.

>>> from maestro_client.models import Column
>>> print(pg_create_table("orders", [Column("id", "INT64", "REQUIRED"), Column("Note", "STRING", "NULLABLE")]))
CREATE TABLE orders (
    id bigint NOT NULL,
    "Note" text
);
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from maestro_client.models import Column

PG_TYPES = {
    "STRING": "text", "BYTES": "bytea",
    "INTEGER": "bigint", "INT64": "bigint",
    "FLOAT": "double precision", "FLOAT64": "double precision",
    "NUMERIC": "numeric", "BIGNUMERIC": "numeric", "DECIMAL": "numeric", "BIGDECIMAL": "numeric",
    "BOOLEAN": "boolean", "BOOL": "boolean",
    "TIMESTAMP": "timestamp with time zone", "DATETIME": "timestamp", "DATE": "date", "TIME": "time",
    "GEOGRAPHY": "text", "INTERVAL": "interval",
    "JSON": "jsonb", "RECORD": "jsonb", "STRUCT": "jsonb",
}
_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*")
# Words PostgreSQL reserves that a column might well be called.
_RESERVED = frozenset(
    "all analyse analyze and any array as asc asymmetric both case cast check collate column constraint create "
    "current_date current_time current_timestamp current_user default deferrable desc distinct do else end except "
    "false fetch for foreign from grant group having in initially intersect into lateral leading limit localtime "
    "localtimestamp not null offset on only or order placing primary references returning select session_user some "
    "symmetric table then to trailing true union unique user using variadic when where window with".split()
)


def quote_identifier(name: str) -> str:
    if _PLAIN.fullmatch(name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def _qualified(name: str) -> str:
    return ".".join(quote_identifier(part) for part in name.split("."))


def pg_create_table(name: str, columns: Sequence[Column], if_not_exists: bool = False) -> str:
    """``name`` may be ``schema.table``."""
    if not columns:
        raise ValueError("the table has no columns")
    lines = []
    for c in columns:
        pg_type = PG_TYPES.get(c.type.upper())
        if pg_type is None:
            raise ValueError(f"column {c.name}: no PostgreSQL type for BigQuery's {c.type}")
        if c.mode == "REPEATED":
            pg_type += "[]"
        lines.append(f"    {quote_identifier(c.name)} {pg_type}{' NOT NULL' if c.mode == 'REQUIRED' else ''}")
    head = f"CREATE TABLE {'IF NOT EXISTS ' if if_not_exists else ''}{_qualified(name)} ("
    return head + "\n" + ",\n".join(lines) + "\n);"
