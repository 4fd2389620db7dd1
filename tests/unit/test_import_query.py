"""The import query primitive (maestro.catalog.import_query).

The cases are data: ``tests/fixtures/import_queries/accepted.yaml`` holds ``{name, dialect, sql,
table?, incremental?, limit?, expected: {sql, schema, table, columns, params?, settings?}}`` and
``refused.yaml`` holds ``{name, dialect, sql, error: {code, line, column, message}}``. One test
runs per case, named after it. That the rendered SQL runs, and means what it says, on the real
databases is tested in tests/integration/test_import_sources.py.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from maestro.catalog.import_query import Incremental, parse_import_query
from maestro.errors import ImportQueryRefused, SqlSyntaxError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "import_queries"


def _cases(file: str) -> list[Any]:
    cases = yaml.safe_load((FIXTURES / file).read_text())
    return [pytest.param(case, id=case["name"]) for case in cases]


ACCEPTED = _cases("accepted.yaml")
REFUSED = _cases("refused.yaml")


def test_fixtures_are_distinct_and_cover_both_dialects() -> None:
    for cases in (ACCEPTED, REFUSED):
        names = [case.id for case in cases]
        assert len(names) == len(set(names))
        assert {case.values[0]["dialect"] for case in cases} == {"postgres", "mysql"}
    assert len(REFUSED) >= 40


@pytest.mark.parametrize("case", ACCEPTED)
def test_accepted(case: dict[str, Any]) -> None:
    query = parse_import_query(case["sql"], case["dialect"], table=case.get("table"))
    options = dict(case.get("incremental") or {})
    copy = options.pop("copy", False)
    rendered = query.render(Incremental(**options) if options else None, limit=case.get("limit"), copy=copy)
    expected = case["expected"]
    assert rendered.sql == expected["sql"]
    assert (query.schema, query.table) == (expected["schema"], expected["table"])
    columns = None if query.columns is None else [
        [c.name, c.source] + ([c.cast] if c.cast else []) for c in query.columns
    ]
    assert columns == expected["columns"]
    assert list(rendered.params) == expected.get("params", [])
    assert [list(s) for s in rendered.settings] == expected.get("settings", [])


@pytest.mark.parametrize("case", REFUSED)
def test_refused(case: dict[str, Any]) -> None:
    with pytest.raises(SqlSyntaxError) as raised:
        parse_import_query(case["sql"], case["dialect"])
    error = case["error"]
    assert raised.value.code == error["code"]
    assert (raised.value.line, raised.value.column) == (error["line"], error["column"])
    assert raised.value.message.startswith(error["message"])


def test_refusals_point_at_the_offending_token() -> None:
    sql = "SELECT id\nFROM t\nWHERE id > 0 AND pg_sleep(10) IS NULL"
    with pytest.raises(ImportQueryRefused) as raised:
        parse_import_query(sql, "postgres")
    line, column = raised.value.line, raised.value.column
    assert sql.splitlines()[line - 1][column - 1 :].startswith("pg_sleep")
    assert raised.value.to_dict()["details"] == {"line": 3, "column": 18}


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
@pytest.mark.parametrize("table", ["t; DROP TABLE t", "a.b.c", "t WHERE 1 = 1", "t, u", "(SELECT 1)"])
def test_the_whole_table_form_takes_only_a_name(dialect: str, table: str) -> None:
    with pytest.raises(ImportQueryRefused):
        parse_import_query("", dialect, table=table)


def test_copy_rendering_checks_the_column_type() -> None:
    query = parse_import_query("SELECT id FROM t", "postgres")
    with pytest.raises(ValueError):
        query.render(Incremental("id", after=1, column_type="bigint; DROP TABLE t"), copy=True)
    with pytest.raises(ValueError):
        query.render(Incremental("id", after=1), copy=True)
    ok = query.render(Incremental("ts", after=1, column_type="timestamp with time zone"), copy=True)
    assert ok.sql.endswith("::timestamp with time zone")


def test_watermark_names_are_quoted_never_pasted() -> None:
    query = parse_import_query("SELECT id FROM t", "mysql")
    rendered = query.render(Incremental("id` > 0 OR `1", after=5))
    assert "`id`` > 0 OR ``1` > %s" in rendered.sql
    assert rendered.params == (5,)


@pytest.mark.parametrize(
    "module",
    ["maestro.catalog.import_query", "maestro.adapters.sources.columns", "maestro.adapters.sources.postgres_types"],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0
