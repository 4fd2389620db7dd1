"""Dependency inference and column lineage (maestro.catalog.sql).

The reference cases are data: every ``tests/fixtures/sql_refs/*.yaml`` file holds a list of
``{name, sql, default_project?, legacy_sql?, expected: [...]}`` cases (optionally also
``unqualified`` and ``statement_count``), or ``{name, sql, error: {line, column}}`` for SQL that
must not parse. One test runs per case, named after it.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from maestro.catalog.legacy_sql import to_standard_sql
from maestro.catalog.sql import (
    Analysis,
    ColumnSource,
    TableRef,
    analyze,
    column_lineage,
    naive_references,
    output_columns,
    self_reference_free,
)
from maestro.errors import SqlSyntaxError, ValidationFailed

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sql_refs"


def _load_cases() -> list[Any]:
    cases = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()):
            cases.append(pytest.param(case, id=f"{path.stem}/{case['name']}"))
    return cases


CASES = _load_cases()


def test_fixture_files_hold_enough_distinct_cases() -> None:
    names = [case.id for case in CASES]
    assert len(names) == len(set(names)), "case names must be unique within a file"
    assert len(names) >= 70


@pytest.mark.parametrize("case", CASES)
def test_references(case: dict[str, Any]) -> None:
    options = {
        "default_project": case.get("default_project"),
        "legacy_sql": case.get("legacy_sql", False),
    }
    if "error" in case:
        with pytest.raises(SqlSyntaxError) as raised:
            analyze(case["sql"], **options)
        assert (raised.value.line, raised.value.column) == (
            case["error"]["line"],
            case["error"]["column"],
        ), raised.value.message
        return
    analysis = analyze(case["sql"], **options)
    assert sorted(str(ref) for ref in analysis.references) == sorted(case["expected"])
    if "unqualified" in case:
        assert sorted(analysis.unqualified) == sorted(case["unqualified"])
    if "statement_count" in case:
        assert analysis.statement_count == case["statement_count"]


# -- syntax errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "line", "column"),
    [
        ("SELECT a,\n  b\nFROM ds.t\nWHERE (a = 1", 4, 12),  # no ')': at the last token
        ("SELECT *\nFROM ds.t\nWHERE a = = 1", 3, 11),
        ("SELECT 1;\nSELECT *\n  FROM ds.t\n  JOIN ON x", 4, 8),
        ("SELECT 'abc\nFROM ds.t", 1, 8),  # unterminated string: where it opens
        ("SELECT 1 /* never\nclosed", 1, 10),
        ("IF TRUE THEN\n  SELECT 1;\n", 1, 1),  # IF is never closed by END IF
        ("BEGIN\n  SELECT 1;\nEND;\nEND IF;", 4, 1),
    ],
)
def test_syntax_error_position(sql: str, line: int, column: int) -> None:
    with pytest.raises(SqlSyntaxError) as raised:
        analyze(sql)
    assert (raised.value.line, raised.value.column) == (line, column), raised.value.message
    assert raised.value.to_dict()["details"] == {"line": line, "column": column}


def test_syntax_error_is_a_validation_error_with_a_message() -> None:
    with pytest.raises(ValidationFailed, match=r"line 1, column 15"):
        analyze("SELECT * FROM (")


# -- TableRef ------------------------------------------------------------------------------------


def test_wildcard_matches_every_table_with_the_prefix() -> None:
    events = TableRef("acme", "web", "events_*")
    assert events.is_wildcard
    assert events.matches("acme", "web", "events_20240101")
    assert events.matches("ACME", "web", "events_intraday_20240101")  # project ids are lowercase
    assert not events.matches("acme", "web", "event_20240101")
    assert not events.matches("acme", "Web", "events_20240101")  # datasets are case-sensitive
    assert not events.matches("other", "web", "events_20240101")


def test_plain_table_matches_only_itself() -> None:
    ref = TableRef("acme", "web", "Events")
    assert not ref.is_wildcard
    assert ref.matches("acme", "web", "Events")
    assert not ref.matches("acme", "web", "events")
    assert not ref.matches("acme", "web", "Events_2024")


def test_unknown_project_matches_any_project() -> None:
    assert TableRef(None, "web", "hits").matches("acme", "web", "hits")
    assert TableRef("acme", "web", "hits").matches(None, "web", "hits")
    assert str(TableRef(None, "web", "hits")) == "web.hits"


def test_self_reference_free_drops_only_the_table_itself() -> None:
    refs = analyze(
        "INSERT web.daily SELECT * FROM web.hits WHERE d > (SELECT MAX(d) FROM web.daily)",
        default_project="acme",
    ).references
    assert sorted(map(str, refs)) == ["acme.web.daily", "acme.web.hits"]
    assert self_reference_free(refs, "acme", "web", "daily") == {TableRef("acme", "web", "hits")}


def test_self_reference_free_keeps_a_wildcard_covering_the_table() -> None:
    refs = {TableRef("acme", "web", "events_*")}
    assert self_reference_free(refs, "acme", "web", "events_summary") == refs


# -- caching -------------------------------------------------------------------------------------


def test_cached_analysis_is_equal_and_keyed_by_every_option() -> None:
    sql = "SELECT * FROM shop.orders JOIN `other.shop.customers` USING (id)"
    first = analyze(sql, default_project="acme")
    assert analyze(sql, default_project="acme") == first
    assert analyze(sql, default_project="ACME") == first  # the project is normalised first
    assert analyze(sql) != first
    assert analyze(sql, default_project="acme", legacy_sql=True) == first
    assert isinstance(first, Analysis) and first.statement_count == 1


def test_analysis_is_immutable() -> None:
    analysis = analyze("SELECT 1 FROM ds.t")
    with pytest.raises(AttributeError):
        analysis.references = frozenset()  # type: ignore[misc]


def test_analysis_reports_what_it_cannot_see() -> None:
    analysis = analyze("CALL ops.refresh(1); EXECUTE IMMEDIATE FORMAT('SELECT * FROM %s', t)")
    assert analysis.references == frozenset()
    assert analysis.opaque == (
        "CALL ops.refresh(1)",
        "EXECUTE IMMEDIATE FORMAT('SELECT * FROM %s', t)",
    )
    assert analysis.statement_count == 2


# -- legacy SQL pre-pass -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("legacy", "standard"),
    [
        ("SELECT a FROM [p-1:ds.t]", "SELECT a FROM `p-1.ds.t`"),
        ("SELECT [my field] FROM [ds.t@-3600000]", "SELECT `my field` FROM `ds.t`          "),
        ("SELECT a FROM t GROUP EACH BY a", "SELECT a FROM t GROUP      BY a"),
        ("SELECT '[ds.t]' FROM x -- [ds.u]", "SELECT '[ds.t]' FROM x -- [ds.u]"),
        ("SELECT * FROM TABLE_QUERY([ds], 'table_id LIKE \"ev_%\"')", "SELECT * FROM `ds.ev_*`"),
        ("SELECT * FROM TABLE_QUERY(ds, 'LENGTH(table_id) > 3')", "SELECT * FROM `ds.*`"),
        ("SELECT * FROM FLATTEN([ds.t], tags)", "SELECT * FROM `ds.t`"),
    ],
)
def test_legacy_rewrite(legacy: str, standard: str) -> None:
    rewritten = to_standard_sql(legacy)
    assert rewritten.rstrip() == standard.rstrip()


def test_legacy_rewrite_keeps_positions_after_a_multiline_call() -> None:
    legacy = "SELECT *\nFROM TABLE_DATE_RANGE([ds.day_],\n    NOW(), NOW()) WHERE x = = 1"
    rewritten = to_standard_sql(legacy)
    assert rewritten.splitlines()[2].index("WHERE") == legacy.splitlines()[2].index("WHERE")
    with pytest.raises(SqlSyntaxError) as raised:
        analyze(legacy, legacy_sql=True)
    assert (raised.value.line, raised.value.column) == (3, 29)


# -- the original's naive baseline ---------------------------------------------------------------


def test_naive_baseline_misses_what_the_original_missed() -> None:
    sql = "SELECT * FROM `ds.a`, `ds.b` JOIN ds.c ON TRUE JOIN `p.ds.d` ON TRUE"
    assert naive_references(sql) == {"ds.a", "p.ds.d"}
    assert {str(ref) for ref in analyze(sql).references} == {"ds.a", "ds.b", "ds.c", "p.ds.d"}
    legacy = "SELECT * FROM [p:ds.a] JOIN EACH ds.b ON x = y"
    assert naive_references(legacy) == {"p.ds.a"}
    assert {str(ref) for ref in analyze(legacy, legacy_sql=True).references} == {"p.ds.a", "ds.b"}


# -- output columns and lineage ------------------------------------------------------------------

ORDERS = {
    "acme.shop.orders": {"id": "INT64", "CustomerId": "INT64", "net": "NUMERIC", "tax": "NUMERIC"},
    "shop.customers": {"id": "INT64", "Name": "STRING", "country": "STRING"},
}


def test_output_columns_expand_stars_with_schemas() -> None:
    sql = """
        SELECT o.*, c.Name AS customer, net + tax
        FROM shop.orders o JOIN shop.customers c ON c.id = o.CustomerId
    """
    assert output_columns(sql, default_project="acme", schemas=ORDERS) == [
        "id",
        "CustomerId",
        "net",
        "tax",
        "customer",
        "f0_",
    ]


def test_output_columns_keep_a_star_over_an_unknown_schema() -> None:
    assert output_columns("SELECT *, 1 AS one FROM ds.unknown") == ["*", "one"]


def test_output_columns_of_a_set_operation_and_a_ctas() -> None:
    union = "SELECT a, b AS B2 FROM ds.x UNION ALL SELECT c, d FROM ds.y"
    assert output_columns(union) == ["a", "B2"]
    assert output_columns("CREATE TABLE ds.t AS SELECT 1 AS n, 'x' AS s") == ["n", "s"]


def test_output_columns_need_one_query() -> None:
    with pytest.raises(ValidationFailed, match="exactly one query"):
        output_columns("SELECT 1; SELECT 2")
    with pytest.raises(ValidationFailed, match="exactly one query"):
        output_columns("DELETE FROM ds.t WHERE TRUE")


def _sources(*pairs: str) -> list[ColumnSource]:
    result = []
    for pair in pairs:
        table, column = pair.rsplit(".", 1)
        project, dataset, name = table.split(".")
        result.append(ColumnSource(TableRef(project or None, dataset, name), column))
    return result


def test_lineage_through_a_join_with_schemas() -> None:
    sql = """
        SELECT c.country, SUM(o.net + o.tax) AS gross, COUNT(*) AS orders
        FROM shop.orders AS o JOIN shop.customers AS c ON c.id = o.CustomerId
        GROUP BY c.country
    """
    options = {"default_project": "acme", "schemas": ORDERS}
    assert column_lineage(sql, "gross", **options) == _sources(
        "acme.shop.orders.net", "acme.shop.orders.tax"
    )
    assert column_lineage(sql, "country", **options) == _sources("acme.shop.customers.country")
    assert column_lineage(sql, "orders", **options) == []  # COUNT(*) reads no column


def test_lineage_resolves_unqualified_join_columns_only_with_schemas() -> None:
    sql = "SELECT Name, net FROM shop.orders JOIN shop.customers ON customers.id = CustomerId"
    assert column_lineage(sql, "name", default_project="acme", schemas=ORDERS) == _sources(
        "acme.shop.customers.Name"
    )
    assert column_lineage(sql, "net", default_project="acme") == []  # which table? unknown


def test_lineage_through_ctes_and_subqueries_without_schemas() -> None:
    sql = """
        WITH daily AS (
          SELECT DATE(p.created_at) AS day, p.amount * fx.rate AS amount_usd
          FROM `Acme.shop.Payments` AS p JOIN finance.fx AS fx ON fx.currency = p.currency
        )
        SELECT day, SUM(amount_usd) AS usd,
               (SELECT MAX(l.limit_usd) FROM finance.limits AS l) AS cap
        FROM daily GROUP BY day
    """
    assert column_lineage(sql, "usd") == _sources(
        "acme.shop.Payments.amount", ".finance.fx.rate"
    )
    assert column_lineage(sql, "day") == _sources("acme.shop.Payments.created_at")
    assert column_lineage(sql, "cap") == _sources(".finance.limits.limit_usd")


def test_lineage_of_a_subquery_column_that_could_be_correlated_needs_schemas() -> None:
    # Without the schema of ds.limits, `cap` might be a column of the outer query's ds.t.
    sql = "SELECT id, (SELECT MAX(cap) FROM ds.limits) AS top FROM ds.t"
    with pytest.raises(ValidationFailed, match="missing source schemas"):
        column_lineage(sql, "top")
    schemas = {"ds.limits": {"cap": "INT64"}, "ds.t": {"id": "INT64"}}
    assert column_lineage(sql, "top", schemas=schemas) == _sources(".ds.limits.cap")


def test_lineage_through_a_star_of_unknown_schema() -> None:
    sql = "WITH c AS (SELECT * FROM ds.events) SELECT user_id FROM c"
    assert column_lineage(sql, "user_id", default_project="p") == _sources("p.ds.events.user_id")


def test_lineage_of_a_union_collects_every_branch() -> None:
    sql = "SELECT id FROM ds.web UNION ALL SELECT user_id FROM ds.app"
    assert column_lineage(sql, "id") == _sources(".ds.app.user_id", ".ds.web.id")


def test_lineage_of_an_unknown_column_names_it() -> None:
    with pytest.raises(ValidationFailed, match="no output column 'missing'"):
        column_lineage("SELECT a FROM ds.t", "missing")


@pytest.mark.parametrize(
    "module", ["sql", "sql_parse", "sql_script", "sql_tables", "sql_lineage", "legacy_sql"]
)
def test_docstring_examples(module: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(f"maestro.catalog.{module}"))
    assert failures == 0
