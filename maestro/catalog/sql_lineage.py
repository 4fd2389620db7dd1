"""Output columns of a query and the table columns each derives from, via sqlglot's optimizer.

Private helper of :mod:`maestro.catalog.sql`, the seam behind which sqlglot lives; import that.
It returns plain tuples; ``sql`` wraps them in its public value types.

sqlglot's ``qualify`` resolves every column to its source (expanding stars when ``schemas`` say
what a table holds) and ``sqlglot.lineage.lineage`` walks from an output column down through
CTEs, subqueries and set operations to the table columns at the leaves.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import Node, lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from maestro.catalog.sql_parse import DIALECT, parse, tokenize
from maestro.errors import ValidationFailed

Schemas = dict[str, dict[str, str]]  # '[project.]dataset.table' -> {column: type}
Source = tuple[str | None, str, str, str]  # project, dataset, table, column

# Stands for "no project" while sqlglot qualifies names, which needs one: project ids are made of
# lowercase letters, digits and dashes, so this cannot clash with a real one.
_NO_PROJECT = "_"
# Marks, before sqlglot names them, the select-list expressions BigQuery leaves unnamed.
_ANONYMOUS = "maestro_anonymous"


def output_names(sql: str, default_project: str | None, schemas: Schemas | None) -> list[str]:
    """Output column names, spelled as the select list or else the schema writes them."""
    query, spelling, _ = _qualified_query(sql, default_project, schemas)
    names, anonymous = [], 0
    for select in query.selects:
        if isinstance(select, exp.Alias) and select.this.meta.get(_ANONYMOUS):
            names.append(f"f{anonymous}_")  # BigQuery's name for the n-th unnamed column
            anonymous += 1
        else:
            names.append(spelling.get(select.alias_or_name.lower(), select.alias_or_name))
    return names


def column_sources(
    sql: str, column: str, default_project: str | None, schemas: Schemas | None
) -> list[Source]:
    """The table columns output ``column`` derives from, each once."""
    query, spelling, schema = _qualified_query(sql, default_project, schemas)
    wanted = column.lower()  # sqlglot lowercases column names: BigQuery compares them so
    if wanted not in {select.alias_or_name.lower() for select in query.selects}:
        known = ", ".join(select.alias_or_name for select in query.selects)
        raise ValidationFailed(f"the statement has no output column {column!r} (it has: {known})")
    try:
        root = lineage(wanted, query, schema, dialect=DIALECT, scope=build_scope(query), copy=False)
    except Exception as exc:  # as in _qualified_query: sqlglot's internals, not the caller's bug
        raise ValidationFailed(f"cannot trace column {column!r}: {exc}") from exc
    sources = set()
    for table, name in _leaves(root, wanted, set()):
        project = table.catalog if table.catalog != _NO_PROJECT else None
        sources.add((project or None, table.db, table.name, spelling.get(name.lower(), name)))
    return list(sources)


def _leaves(node: Node, column: str, seen: set[int]) -> Iterator[tuple[exp.Table, str]]:
    """(table, column) for every table leaf below ``node``; ``column`` is the node's column."""
    for child in node.downstream:
        if id(child) in seen:  # lineage shares nodes (and a recursive CTE loops back)
            continue
        seen.add(id(child))
        if isinstance(child.expression, exp.Table) and not child.downstream:
            # A leaf named "*" is a star over a table of unknown schema: the column passes through.
            yield child.expression, column if child.name == "*" else exp.to_column(child.name).name
        elif child.downstream:
            yield from _leaves(child, child.name.rsplit(".", 1)[-1], seen)
        # Any other leaf is a literal, or a column whose table cannot be known without schemas.


def _qualified_query(
    sql: str, default_project: str | None, schemas: Schemas | None
) -> tuple[exp.Query, dict[str, str], MappingSchema]:
    """The single query of ``sql`` qualified by sqlglot, {lowercase column: spelling}, the schema.

    sqlglot lowercases column names; the spelling map lets us hand back the names as the schema
    or the user wrote them.
    """
    statements = parse(tokenize(sql), sql)
    query = statements[0] if len(statements) == 1 else None
    if isinstance(query, (exp.Create, exp.Insert)):  # CREATE TABLE … AS / INSERT … SELECT
        query = query.expression
    if not isinstance(query, exp.Query):
        raise ValidationFailed("column analysis needs exactly one query statement")

    catalog = default_project.lower() if default_project else _NO_PROJECT
    schema, spelling = _schema(schemas or {}, catalog)
    for table in query.find_all(exp.Table):  # project ids are lowercase, as in references
        if table.args.get("catalog"):
            table.set("catalog", exp.to_identifier(table.catalog.lower()))
    for identifier in query.find_all(exp.Identifier):
        spelling.setdefault(identifier.name.lower(), identifier.name)
    try:
        for select in query.selects:
            if not select.alias and not isinstance(select, (exp.Column, exp.Dot, exp.Star)):
                select.meta[_ANONYMOUS] = True  # `SELECT SUM(x)`: BigQuery calls it f0_
            else:
                spelling[select.alias_or_name.lower()] = select.alias_or_name
        qualified = qualify(
            query,
            dialect=DIALECT,
            catalog=catalog,
            schema=schema,
            validate_qualify_columns=False,
            identify=False,
        )
    except Exception as exc:
        # Besides its own errors, sqlglot's optimizer can fail with assorted internal errors on
        # statements it parses but does not fully understand; none of them is the caller's bug.
        raise ValidationFailed(f"cannot resolve the statement's columns: {exc}") from exc
    return qualified, spelling, schema


def _schema(schemas: Schemas, catalog: str) -> tuple[MappingSchema, dict[str, str]]:
    """sqlglot's schema for ``schemas``, and the spelling of their column names."""
    nested: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    spelling: dict[str, str] = {}
    for key, columns in schemas.items():
        parts = key.rsplit(".", 2)  # a domain-scoped project id ("example.com:p") has a dot
        if len(parts) < 2:
            raise ValidationFailed(f"schema key {key!r} is not '[project.]dataset.table'")
        project = parts[0].lower() if len(parts) == 3 else catalog
        nested.setdefault(project, {}).setdefault(parts[-2], {})[parts[-1]] = dict(columns)
        spelling.update((name.lower(), name) for name in columns)
    try:
        return MappingSchema(nested, dialect=DIALECT), spelling
    except SqlglotError as exc:
        raise ValidationFailed(f"invalid schema: {exc}") from exc
