"""The import query: what an import table reads from its source database (PostgreSQL or MySQL).

The original Maestro's primitive, written in the source's own dialect::

    SELECT <select list> FROM [schema.]table [[AS] alias] [WHERE <condition>] [LIMIT n]

* **Select list**: ``*`` (or ``alias.*``) alone, or columns of the table, each optionally renamed
  (``a AS b``) or cast to one of a few types (``CAST(a AS text)``, ``a::bigint``; see
  ``import_rules.CAST_TYPES``). No other expressions: a column's BigQuery type is derived from the
  source catalog's type, which an arbitrary expression does not have. Compute in a summary table.
* **WHERE**: comparisons, AND / OR / NOT, IN (a list), BETWEEN, LIKE, IS [NOT] NULL, arithmetic,
  literals, intervals, casts and an allow-list of harmless functions (``import_rules``).
* **LIMIT**: a non-negative integer.
* An empty query reads the whole table given as ``table``.

Everything else is refused with :class:`~maestro.errors.ImportQueryRefused` at the line and column
of the offending token: joins or several tables, subqueries, CTEs, GROUP BY, HAVING, ORDER BY,
DISTINCT, OFFSET, UNION, window functions, INTO, FOR UPDATE / SHARE, query parameters, a second
statement, and any function not on the allow-list.

Rendering quotes **every** identifier, so no name can inject SQL; unquoted names are first folded as
the source folds them (PostgreSQL: lowercase; MySQL: as written, its column names are
case-insensitive). The importer's predicates bind their values as parameters.

>>> q = parse_import_query("SELECT id, Name AS label FROM shop.Orders WHERE total > 10", "postgres")
>>> q.schema, q.table, [c.name for c in q.columns]
('shop', 'orders', ['id', 'label'])
>>> r = q.render(Incremental("id", after=41), limit=1000)
>>> r.sql
'SELECT "id", "name" AS "label" FROM "shop"."orders" WHERE ("total" > 10) AND "id" > $1 ORDER BY "id" LIMIT 1000'
>>> r.params
(41,)
>>> parse_import_query("", "mysql", table="crm.users").render().sql
'SELECT * FROM `crm`.`users`'
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.tokens import Token, TokenType

from maestro.catalog import import_rules
from maestro.catalog.import_rules import refuse
from maestro.catalog.sql_parse import parse, tokenize
from maestro.errors import ImportQueryRefused

SourceDialect = Literal["postgres", "mysql"]
_DIALECTS = {name: Dialect.get_or_raise(name) for name in ("postgres", "mysql")}
# A catalog type name (pg's format_type output) safe to paste after '::'.
_PG_TYPE = re.compile(r"[a-z][a-z0-9_ ]*(\(\d+(,\d+)?\))?( with(out)? time zone)?(\[\])*")


@dataclass(frozen=True, slots=True)
class SelectedColumn:
    """One output column: its name in BigQuery, the source column it reads, and a cast if any."""

    name: str
    source: str
    cast: str | None = None  # the source type cast to, as the catalog spells it ("numeric(10,2)")
    expression: str = ""  # what to select, rendered and quoted ('"src"', 'CAST("src" AS TEXT)')


@dataclass(frozen=True, slots=True)
class Incremental:
    """The importer's window on ``column``: rows after ``after`` and up to ``up_to``.

    ``after`` is exclusive (``>``) unless ``inclusive`` (``>=``, MySQL's settle window re-reads the
    boundary and de-duplicates it); ``None`` means no bound. For a PostgreSQL COPY, whose statement
    takes no parameters, ``column_type`` (the catalog's type of ``column``) types the bound values.
    """

    column: str
    after: Any = None
    inclusive: bool = False
    up_to: Any = None
    column_type: str | None = None
    # PostgreSQL's late commits: also rows above ``floor`` (and up to ``after``) that the previous
    # import did not load: their inserting transaction is at or above ``loaded_from`` (the previous
    # snapshot's xmin) and not one of ``loaded_xids``. Rows carry 32-bit xids; ``xid_horizon`` (the
    # xmax of the snapshot reading now) gives them their epoch. ``xid_cut``: only rows of
    # transactions below it are read (the rest wait for a later import).
    floor: Any = None
    loaded_from: int | None = None
    loaded_xids: tuple[int, ...] = ()
    xid_horizon: int | None = None
    xid_cut: int | None = None
    # With ``up_to``: also the rows whose column is NULL (a full import reads them; later
    # windows cannot).
    or_null: bool = False


@dataclass(frozen=True, slots=True)
class RenderedQuery:
    """SQL for the source's driver and what to bind.

    PostgreSQL: ``$n`` placeholders for ``params``. MySQL: ``%s`` placeholders, with every literal
    ``%`` doubled, so always pass ``params`` (even empty) to ``cursor.execute``. PostgreSQL COPY
    (``copy=True``): no placeholders; set each of ``settings`` with ``set_config(name, value,
    true)`` in the transaction first, the query reads them back with ``current_setting``.
    """

    sql: str
    params: tuple[Any, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImportQuery:
    """A checked import query; build it with :func:`parse_import_query`."""

    dialect: SourceDialect
    schema: str | None  # None: the connection's default schema (PostgreSQL) or database (MySQL)
    table: str
    columns: tuple[SelectedColumn, ...] | None  # None: every column of the table (``*``)
    where: str | None  # the condition rendered with quoted identifiers
    limit: int | None
    _select: str = field(repr=False)  # "<select list>", rendered
    _from: str = field(repr=False)  # "FROM <table> [AS alias]", rendered

    def quote(self, name: str) -> str:
        """``name`` as a quoted identifier of the source's dialect.

        >>> parse_import_query("", "postgres", table="t").quote('we"ird')
        '"we""ird"'
        """
        return exp.to_identifier(name, quoted=True).sql(dialect=self.dialect)

    @property
    def quoted_table(self) -> str:
        return ".".join(self.quote(part) for part in (self.schema, self.table) if part is not None)

    def render(
        self,
        incremental: Incremental | None = None,
        *,
        limit: int | None = None,
        copy: bool = False,
        select: list[str] | None = None,
    ) -> RenderedQuery:
        """The query with the importer's window and limit (the smaller of it and the query's).

        With a window and a limit, rows are ordered by the window's column, so the rows a limit
        cuts off are the ones after the last one read, never ones before it. ``select`` replaces
        the select list with expressions a reader built from :meth:`quote` and each column's
        ``expression`` (to have the source render a value, e.g. ``ST_AsText(…)``).
        """
        if copy and self.dialect != "postgres":
            raise ValueError("COPY rendering is for PostgreSQL")
        # pymysql fills '%s' with Python's % operator: a literal '%' must be doubled first.
        escape = (lambda text: text.replace("%", "%%")) if self.dialect == "mysql" else str
        conditions = [f"({escape(self.where)})"] if self.where else []
        bounds: list[Any] = []
        if incremental is not None:
            column = self.quote(incremental.column)
            if incremental.floor is not None:
                conditions.append(f"{column} > {self._placeholder(len(bounds) + 1, incremental, copy)}")
                bounds.append(incremental.floor)
            if incremental.after is not None:
                op = ">=" if incremental.inclusive else ">"
                after = f"{column} {op} {self._placeholder(len(bounds) + 1, incremental, copy)}"
                bounds.append(incremental.after)
                if incremental.loaded_from is not None:
                    after = f"({after} OR {_not_loaded(incremental)})"
                conditions.append(after)
            elif incremental.loaded_from is not None:
                conditions.append(_not_loaded(incremental))
            if incremental.xid_cut is not None:
                conditions.append(f"{_xid(incremental)} < {int(incremental.xid_cut)}")
            if incremental.up_to is not None:
                up_to = f"{column} <= {self._placeholder(len(bounds) + 1, incremental, copy)}"
                conditions.append(f"({up_to} OR {column} IS NULL)" if incremental.or_null else up_to)
                bounds.append(incremental.up_to)
        head = f"SELECT {', '.join(select) if select else self._select} {self._from}"
        sql = escape(head) + (" WHERE " + " AND ".join(conditions) if conditions else "")
        limits = [n for n in (self.limit, limit) if n is not None]
        if incremental is not None and limits:
            sql += f" ORDER BY {self.quote(incremental.column)}"
        if limits:
            sql += f" LIMIT {int(min(limits))}"
        if copy:
            settings = tuple((_setting(i), _as_text(v)) for i, v in enumerate(bounds, start=1))
            return RenderedQuery(sql, (), settings)
        return RenderedQuery(sql, tuple(bounds))

    def _placeholder(self, n: int, incremental: Incremental, copy: bool) -> str:
        if self.dialect == "mysql":
            return "%s"
        if not copy:
            return f"${n}"
        column_type = incremental.column_type
        if column_type is None or not _PG_TYPE.fullmatch(column_type):
            raise ValueError(f"COPY needs the column's catalog type, got {column_type!r}")
        return f"current_setting('{_setting(n)}')::{column_type}"


def parse_import_query(sql: str, dialect: SourceDialect, *, table: str | None = None) -> ImportQuery:
    """Check an import query and keep what the importer needs (see the module's rules).

    ``table`` (``[schema.]name``) is read whole when ``sql`` is empty.
    """
    if not sql.strip():
        if table is None or not table.strip():
            raise ImportQueryRefused("an empty import query needs the source table", 1, 1)
        return _whole_table(table, dialect)
    source = _DIALECTS[dialect]
    tokens = tokenize(sql, dialect=source)
    import_rules.check_tokens(tokens, sql)
    trees = parse(tokens, sql, dialect=source)
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        raise refuse(sql, "anything but one SELECT", trees[0] if trees else None)
    select = trees[0]
    for key, value in select.args.items():
        if value and key not in ("expressions", "from_", "where", "limit"):
            what = _CLAUSES.get(key, key.rstrip("_").upper().replace("_", " "))
            raise refuse(sql, what, _first_token(tokens, value) or value)
    select = normalize_identifiers(select, dialect=dialect) if dialect == "postgres" else select
    for node in select.walk():
        # Comments are not rendered back: MySQL runs a comment that starts with '!' as SQL.
        node.comments = None
    schema, name, alias = _from_table(select, sql)
    columns = _select_list(select, sql, dialect, {name.lower(), (alias or name).lower()})
    where = select.args.get("where")
    if where is not None:
        import_rules.check_condition(where.this, dialect, sql)
        _check_qualifiers(where.this, sql, {name.lower(), (alias or name).lower()})
    limit = _limit(select, sql)
    return ImportQuery(
        dialect=dialect, schema=schema, table=name, columns=columns,
        where=where.this.sql(dialect=dialect, identify=True) if where is not None else None,
        limit=limit, _select=_render_list(select, dialect),
        _from=select.args["from_"].sql(dialect=dialect, identify=True),
    )


# Clauses the tokens let through, in the words an error message uses.
_CLAUSES = {
    "joins": "several tables (an import reads one table)",
    "locks": "a locking clause (FOR UPDATE / FOR SHARE)",
    "operation_modifiers": "a SELECT modifier",
}


def _first_token(tokens: list[Token], node: exp.Expr | list[exp.Expr]) -> Token | None:
    """The token that starts a clause sqlglot kept no position for (FOR UPDATE, HIGH_PRIORITY)."""
    first = node[0] if isinstance(node, list) else node
    word = first.sql().split(" ", 1)[0].upper()
    return next((t for t in tokens[1:] if t.text.upper() == word), None)


def _whole_table(table: str, dialect: SourceDialect) -> ImportQuery:
    # Only a name, or two joined by a dot, is pasted into the query (and then checked like any).
    tokens = tokenize(table, dialect=_DIALECTS[dialect])
    names, dots = tokens[0::2], tokens[1::2]
    if (
        not 1 <= len(names) <= 2
        or len(dots) != len(names) - 1
        or any(d.token_type is not TokenType.DOT for d in dots)
        or any(n.token_type not in (TokenType.VAR, TokenType.IDENTIFIER) for n in names)
    ):
        raise ImportQueryRefused(f"the source table {table!r} is not [schema.]name", 1, 1)
    return parse_import_query(f"SELECT * FROM {table}", dialect)


def _from_table(select: exp.Select, sql: str) -> tuple[str | None, str, str | None]:
    from_ = select.args.get("from_")
    if from_ is None:
        raise refuse(sql, "a SELECT without FROM (an import reads one table)")
    table = from_.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise refuse(sql, "a FROM that is not a table", table)
    for key, value in table.args.items():
        if value and key not in ("this", "db", "alias"):
            raise refuse(sql, f"{key.rstrip('_').upper()} on the table", table)
    alias = table.args.get("alias")
    if alias is not None and alias.args.get("columns"):
        raise refuse(sql, "column aliases on the table", alias)
    return table.db or None, table.name, alias.name if alias is not None else None


def _select_list(
    select: exp.Select, sql: str, dialect: SourceDialect, qualifiers: set[str]
) -> tuple[SelectedColumn, ...] | None:
    items = select.expressions
    stars = [i for i in items if isinstance(i, exp.Star) or (isinstance(i, exp.Column) and i.is_star)]
    if stars:
        if len(items) > 1:
            raise refuse(sql, "* together with other columns (name every column, or only *)", items[1])
        _check_qualifiers(items[0], sql, qualifiers)
        return None
    columns: list[SelectedColumn] = []
    seen: set[str] = set()
    for item in items:
        target = item.this if isinstance(item, exp.Alias) else item
        cast = None
        if isinstance(target, exp.Cast) and isinstance(target.this, exp.Column):
            cast = import_rules.cast_type(target, dialect, sql)
            target = target.this
        if not isinstance(target, exp.Column):
            raise refuse(sql, "an expression in the select list (name columns; cast or rename them)", item)
        _check_qualifiers(target, sql, qualifiers)
        name = item.alias if isinstance(item, exp.Alias) else target.name
        if name.lower() in seen:
            raise refuse(sql, f"the output column {name!r} twice (BigQuery names ignore case)", item)
        seen.add(name.lower())
        expression = (item.this if isinstance(item, exp.Alias) else item).sql(dialect=dialect, identify=True)
        columns.append(SelectedColumn(name=name, source=target.name, cast=cast, expression=expression))
    return tuple(columns)


def _check_qualifiers(node: exp.Expr, sql: str, qualifiers: set[str]) -> None:
    for column in node.find_all(exp.Column):
        if column.table and column.table.lower() not in qualifiers:
            raise refuse(sql, f"a column of another table ({column.table})", column)


def _limit(select: exp.Select, sql: str) -> int | None:
    limit = select.args.get("limit")
    if limit is None:
        return None
    value = limit.args.get("expression")
    if not isinstance(limit, exp.Limit) or not isinstance(value, exp.Literal) or not value.is_int:
        raise refuse(sql, "a LIMIT that is not a whole number", limit)
    return int(value.name)


def _render_list(select: exp.Select, dialect: SourceDialect) -> str:
    """The select list with every identifier quoted; a cast gets its column's name back."""
    items = []
    for item in select.expressions:
        if isinstance(item, exp.Cast):
            item = exp.alias_(item.copy(), item.this.name, quoted=True)
        items.append(item.sql(dialect=dialect, identify=True))
    return ", ".join(items)




def _xid(incremental: Incremental) -> str:
    """The row's inserting transaction as a 64-bit xid: its 32-bit ``xmin`` takes the epoch of
    ``xid_horizon``, one less when its low bits are above the horizon's (it is older)."""
    horizon = incremental.xid_horizon
    if horizon is None or horizon < 0:
        raise ValueError(f"an xid horizon is needed, got {horizon!r}")
    base, low = horizon & ~0xFFFFFFFF, horizon & 0xFFFFFFFF
    return (f"(CASE WHEN xmin::text::bigint > {low} THEN {base - (1 << 32)} ELSE {base} END"
            " + xmin::text::bigint)")


def _not_loaded(incremental: Incremental) -> str:
    """The row's transaction is at or above ``loaded_from`` and not among ``loaded_xids`` (a
    constant array: PostgreSQL hashes it for ``<> ALL`` from nine elements on)."""
    condition = f"{_xid(incremental)} >= {int(incremental.loaded_from or 0)}"
    if incremental.loaded_xids:
        listed = ",".join(str(int(x)) for x in incremental.loaded_xids)
        condition += f" AND {_xid(incremental)} <> ALL('{{{listed}}}'::bigint[])"
    return f"({condition})"


def _setting(n: int) -> str:
    return f"maestro.import_bound_{n}"


def _as_text(value: Any) -> str:
    """A bound value as PostgreSQL's input syntax for the column's type reads it."""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return str(value)
