"""Which ``exp.Table`` nodes of a parsed BigQuery statement are tables the statement reads.

Private helper of :mod:`maestro.catalog.sql`, the seam behind which sqlglot lives; import that.

sqlglot gives every name in table position an ``exp.Table`` node: real tables, but also CTE names,
the target of an INSERT/MERGE/CREATE, a rename target, a table-valued function's name, a
correlated array path (``FROM t, t.items``) and INFORMATION_SCHEMA views. These rules tell them
apart. We walk *all* Table nodes of the tree rather than only the query scopes that
``sqlglot.optimizer.scope.traverse_scope`` builds, because scopes only exist for queries: a table
read in a DECLARE default, a temp function body, a CLONE source or an ML function argument has
no scope, yet it is a dependency all the same.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlglot import exp

# Statements whose `this` is the object they create, change or write into.
_WRITING_STATEMENTS = (exp.DDL, exp.DML, exp.Alter, exp.LoadData)


def read_tables(statement: exp.Expr) -> Iterator[exp.Table]:
    """Yield the Table nodes of ``statement`` that name a table it reads.

    >>> import sqlglot
    >>> tree = sqlglot.parse_one(
    ...     "INSERT ds.t WITH c AS (SELECT * FROM ds.a) SELECT * FROM c JOIN ds.b USING (id)",
    ...     read="bigquery")
    >>> [table.sql("bigquery") for table in read_tables(tree)]
    ['ds.b', 'ds.a']
    """
    written = {id(table) for table in written_tables(statement)}
    for table in statement.find_all(exp.Table):
        if (
            id(table) not in written
            # A table-valued function's name (`ds.tvf(1)`, `ML.PREDICT(…)`) is a routine; its
            # arguments are walked on their own. Four-part paths are not BigQuery tables.
            and isinstance(table.this, exp.Identifier)
            and table.name
            and not is_system_view(table)
            and not isinstance(table.parent, exp.Reference)  # FOREIGN KEY … REFERENCES t
            and not _is_cte_name(table)
            and not _is_correlated_path(table)
        ):
            yield table


def written_tables(statement: exp.Expr) -> list[exp.Table]:
    """The tables a DDL/DML statement creates, changes or writes into (its targets)."""
    if isinstance(statement, exp.TruncateTable):
        return [table for table in statement.expressions if isinstance(table, exp.Table)]
    if isinstance(statement, exp.Drop):  # DROP TABLE a, b
        tables = statement.args.get("tables") or []
        return [table for table in tables if isinstance(table, exp.Table)]
    if not isinstance(statement, _WRITING_STATEMENTS):
        return []
    target = statement.this
    # INSERT t (a, b) and CREATE TABLE t (a INT64) wrap the name in a Schema; CREATE FUNCTION
    # and CREATE PROCEDURE in a UserDefinedFunction.
    while isinstance(target, (exp.Schema, exp.UserDefinedFunction)):
        target = target.this
    targets = [target] if isinstance(target, exp.Table) else []
    for action in statement.args.get("actions") or []:  # ALTER TABLE t RENAME TO u
        if isinstance(action, exp.AlterRename):
            targets.extend(action.find_all(exp.Table))
    return targets


def temp_table_name(statement: exp.Expr) -> str | None:
    """The name a ``CREATE TEMP TABLE`` statement creates, else None."""
    if isinstance(statement, exp.Create) and statement.kind == "TABLE":
        properties = statement.args.get("properties")
        if properties and any(isinstance(p, exp.TemporaryProperty) for p in properties.expressions):
            targets = written_tables(statement)
            return targets[0].name if targets else None
    return None


def is_system_view(table: exp.Table) -> bool:
    """INFORMATION_SCHEMA views and ``_SESSION.t`` temp tables are not catalog tables.

    sqlglot folds ``INFORMATION_SCHEMA.X`` into one name (``ds.INFORMATION_SCHEMA.TABLES`` has
    db ``ds`` and name ``INFORMATION_SCHEMA.TABLES``); region qualifiers such as ``region-us``
    land in db.
    """
    return table.name.upper().startswith("INFORMATION_SCHEMA.") or any(
        part.name.upper() in ("INFORMATION_SCHEMA", "_SESSION") for part in table.parts[:-1]
    )


def _is_cte_name(table: exp.Table) -> bool:
    """Whether an unqualified name refers to a CTE visible where it is used.

    In BigQuery a CTE sees the CTEs defined before it in the same WITH, and with RECURSIVE also
    itself and the ones after it; the query body sees all of them, and so do nested subqueries.
    An inner CTE shadows an outer table or CTE of the same name. CTE names, like aliases, are
    case-insensitive.
    """
    if table.args.get("db"):
        return False
    name = table.name.lower()
    child: exp.Expr = table
    node = table.parent
    while node is not None:
        if isinstance(node, exp.With):
            # We come from one of this WITH's CTEs (`child`).
            position = next(
                (i for i, cte in enumerate(node.expressions) if cte is child), len(node.expressions)
            )
            visible = node.expressions if node.recursive else node.expressions[:position]
            if any(cte.alias.lower() == name for cte in visible):
                return True
        else:
            with_ = node.args.get("with_")
            if isinstance(with_, exp.With) and with_ is not child:
                if any(cte.alias.lower() == name for cte in with_.expressions):
                    return True
        child, node = node, node.parent
    return False


def _is_correlated_path(table: exp.Table) -> bool:
    """Whether ``x.items`` in ``FROM ds.t AS x JOIN x.items`` is an array path, not a table.

    BigQuery resolves the first part of a path in FROM against the range variables before it.
    sqlglot already turns comma and ON-less joins of such paths into UNNEST; this catches the
    remaining form, a join with an ON clause.
    """
    if not table.args.get("db") or table.args.get("catalog"):
        return False
    join = table.parent
    select = join.parent if isinstance(join, exp.Join) else None
    if not isinstance(select, exp.Select) or not isinstance(select.args.get("from_"), exp.From):
        return False
    before = [select.args["from_"].this]
    for other in select.args.get("joins") or []:
        if other is join:
            break
        before.append(other.this)
    first = table.db.lower()
    return any(source.alias_or_name.lower() == first for source in before)
