"""The save check's pure part: a refusal's position moved into the field the user wrote."""

from __future__ import annotations

import doctest

import pytest

from maestro.catalog.import_query import parse_import_query
from maestro.errors import SqlSyntaxError
from maestro.events.catalog import ImportSettings
from maestro.handlers.catalog import import_check
from maestro.handlers.catalog.import_check import _located, _pieces


def test_doctests() -> None:
    failures, _ = doctest.testmod(import_check)
    assert failures == 0


@pytest.mark.parametrize(
    ("settings", "field", "line", "column"),
    [
        # The query as written: positions unchanged.
        ({"query": "SELECT a\nFROM t JOIN u ON true"}, "import.query", 2, 8),
        # The earlier form: the select list, the WHERE (its own lines), the table name.
        ({"source_table": "s.t", "select": "a,\n  lower(b)"}, "import.select", 2, 3),
        ({"source_table": "s.t", "select": "a", "where": "x = 1\n  AND y IN (SELECT 2)"}, "import.where", 2, 13),
        ({"source_table": "s.t", "where": "x ORDER BY y"}, "import.where", 1, 3),
        ({"source_table": "s t"}, "import.source_table", 1, 1),
        ({"select": "a, b + 1"}, "import.select", 1, 4),
    ],
)
def test_a_refusal_points_into_the_field_written(settings: dict, field: str, line: int, column: int) -> None:
    parsed = ImportSettings(source_database="d", **settings)
    sql, table = parsed.query_text("accounts")
    with pytest.raises(SqlSyntaxError) as caught:
        parse_import_query(sql, "postgres", table=table)
    text, pieces = _pieces(parsed, "accounts")
    located = _located(caught.value, text, pieces)
    assert type(located) is type(caught.value)
    assert (located.details["field"], located.line, located.column) == (field, line, column)
    assert located.message.startswith(f"{field}: ") and located.message.endswith(f"(line {line}, column {column})")
