"""What a BigQuery statement reads, and where its output columns come from.

This is the one module behind which sqlglot lives (ARCHITECTURE.md, STYLE.md item 7): everything
it returns is a plain frozen value, a string or a Maestro error. Its private helpers are
``sql_script`` (procedural scripts), ``sql_tables`` (which table nodes are reads) and
``legacy_sql`` (the legacy-SQL pre-pass).

>>> analysis = analyze(
...     "SELECT * FROM shop.orders AS o, `acme.crm.customers` AS c WHERE o.cid = c.id",
...     default_project="acme")
>>> sorted(str(ref) for ref in analysis.references)
['acme.crm.customers', 'acme.shop.orders']

Rules, where BigQuery leaves a choice:

* **Case.** BigQuery project ids are lowercase, so projects are normalised to lowercase (also
  ``default_project``). Dataset and table names are case-sensitive in BigQuery (unless a dataset
  was created case-insensitive, which SQL text cannot tell us), so they are kept as written and
  :meth:`TableRef.matches` compares them exactly.
* **Unqualified names.** ``FROM mytable`` names no dataset; BigQuery only accepts it with a
  default dataset, which Maestro never sets. Such a name is a CTE, a temp table of the script, or
  a mistake: it is never a reference, and the mistakes are reported in
  :attr:`Analysis.unqualified` so callers can warn about them.
* **Not references:** CTE names (an inner CTE hides a table of the same unqualified name),
  INFORMATION_SCHEMA views, ``_SESSION`` temp tables, temp tables created by the script, UNNEST
  and correlated array paths, table-valued function names, and the *target* of INSERT, MERGE,
  UPDATE, DELETE, TRUNCATE and CREATE/ALTER/DROP, unless the statement also reads it elsewhere
  (``INSERT ds.t SELECT … FROM ds.t``). ``CREATE VIEW v AS SELECT … FROM t`` reads ``t``;
  ``CREATE TABLE c CLONE t`` and ``LIKE t`` read ``t``. A model in ``ML.PREDICT(MODEL ds.m, …)``
  is kept: it is an object the statement depends on.
* **Wildcards.** ``ds.events_*`` is one reference named ``events_*``; :meth:`TableRef.matches`
  tells which tables it covers.
* **Opaque statements.** ``CALL`` and ``EXECUTE IMMEDIATE`` run SQL the text does not show;
  statements sqlglot can only keep as an opaque command land in :attr:`Analysis.opaque`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.lineage import Node, lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import build_scope
from sqlglot.schema import MappingSchema

from maestro.catalog.legacy_sql import to_standard_sql
from maestro.catalog.sql_script import Piece, flatten, tokenize
from maestro.catalog.sql_tables import read_tables, temp_table_name
from maestro.errors import SqlSyntaxError, ValidationFailed

_DIALECT = Dialect.get_or_raise("bigquery")
# Distinct analyses kept in memory. A statement and its result weigh a few kB: ~10 MB at most.
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table (or wildcard table) a statement refers to.

    >>> events = TableRef("acme", "web", "events_*")
    >>> events.is_wildcard, events.matches("ACME", "web", "events_20240101"), str(events)
    (True, True, 'acme.web.events_*')
    """

    project: str | None  # None only when no default project was given and none was written
    dataset: str
    name: str

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith("*")

    def matches(self, project: str | None, dataset: str, name: str) -> bool:
        """Whether the table ``project.dataset.name`` is this table, or one this wildcard covers.

        Projects compare case-insensitively; a ``None`` project on either side matches any.
        Dataset and table names compare exactly, as BigQuery does.
        """
        if self.project is not None and project is not None and self.project != project.lower():
            return False
        if dataset != self.dataset:
            return False
        return name.startswith(self.name[:-1]) if self.is_wildcard else name == self.name

    def __str__(self) -> str:
        prefix = f"{self.project}." if self.project else ""
        return f"{prefix}{self.dataset}.{self.name}"


@dataclass(frozen=True, slots=True)
class Analysis:
    """What a statement or script reads."""

    references: frozenset[TableRef]
    statement_count: int  # compound statements (IF, LOOP, BEGIN … END) count once, plus their body
    unqualified: frozenset[str] = frozenset()  # names read without a dataset (see module doc)
    opaque: tuple[str, ...] = ()  # statements whose reads cannot be seen, as written


@dataclass(frozen=True, slots=True)
class ColumnSource:
    """A column of a table that an output column derives from."""

    table: TableRef
    column: str


def analyze(sql: str, *, default_project: str | None = None, legacy_sql: bool = False) -> Analysis:
    """The tables ``sql`` (a statement or a script) reads; see the module doc for the rules.

    Raises SqlSyntaxError (1-based line and column of the offending token) when it does not parse.
    Results are cached: a catalog re-analyses the same definitions often.

    >>> analyze("WITH r AS (SELECT * FROM raw.hits) SELECT * FROM r JOIN mytable USING (id)")
    Analysis(references=frozenset({TableRef(project=None, dataset='raw', name='hits')}), \
statement_count=1, unqualified=frozenset({'mytable'}), opaque=())
    """
    return _analyze(sql, default_project.lower() if default_project else None, legacy_sql)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _analyze(sql: str, default_project: str | None, legacy_sql: bool) -> Analysis:
    if legacy_sql:
        sql = to_standard_sql(sql)
    script = flatten(tokenize(sql), sql)
    references: set[TableRef] = set()
    unqualified: set[str] = set()
    temp_tables: set[str] = set()
    opaque: list[str] = []
    for piece, tree in _parse(script.pieces, sql):
        if tree is None or isinstance(tree, exp.Command):
            opaque.append(_text(piece, sql))
            continue
        if temp_table := temp_table_name(tree):
            temp_tables.add(temp_table)
        for table in read_tables(tree):
            if table.db:
                project = table.catalog.lower() or default_project
                references.add(TableRef(project, table.db, table.name))
            else:
                unqualified.add(table.name)
    return Analysis(
        references=frozenset(references),
        statement_count=script.statement_count,
        unqualified=frozenset(unqualified - temp_tables),
        opaque=tuple(opaque),
    )


def self_reference_free(
    refs: Iterable[TableRef], project: str | None, dataset: str, name: str
) -> frozenset[TableRef]:
    """``refs`` without the table ``project.dataset.name`` itself.

    A table that appends to itself (``INSERT``/``WRITE_APPEND`` reading its own rows) does not
    depend on itself. Wildcards are kept even when they cover the table: the other tables they
    cover are real dependencies.

    >>> refs = {TableRef("acme", "web", "daily"), TableRef("acme", "web", "hits")}
    >>> sorted(str(ref) for ref in self_reference_free(refs, "acme", "web", "daily"))
    ['acme.web.hits']
    """
    return frozenset(
        ref for ref in refs if ref.is_wildcard or not ref.matches(project, dataset, name)
    )


# The only table spellings the original accepted: [proj:ds.t], [ds.t], `proj.ds.t`, `ds.t`.
_NAIVE_SPEC = re.compile(r"\[(?:([\w.:-]+):)?(\w+)\.(\w+)\]|`(?:([\w-]+)\.)?(\w+)\.(\w+)`")


def naive_references(sql: str) -> set[str]:
    """BASELINE ONLY: the original Maestro's regex inference, for benchmarks to compare against.

    Do not use it for anything else. Like ``model/sql.go`` it strips comments (even inside
    strings), splits on whitespace, parentheses, ';' and ',', and takes the token after
    FROM/JOIN/TABLE_DATE_RANGE when it is a quoted name. So it misses unquoted ``ds.t`` and the
    second table of a comma join, and mistakes a CTE quoted like a table for one.

    >>> sorted(naive_references("SELECT * FROM `ds.a`, `ds.b` JOIN ds.c ON TRUE"))
    ['ds.a']
    """
    text = re.sub(r"/\*.*?\*/|(?:--|#)[^\n]*", " ", sql, flags=re.S)
    words = [word for word in re.split(r"[\s(),;]+", text) if word]
    found = set()
    for keyword, candidate in zip(words, words[1:], strict=False):
        if keyword.upper() in ("FROM", "JOIN", "TABLE_DATE_RANGE"):
            if match := _NAIVE_SPEC.fullmatch(candidate):
                found.add(".".join(part for part in match.groups() if part))
    return found


def _parse(pieces: Iterable[Piece], sql: str) -> Iterator[tuple[Piece, exp.Expr | None]]:
    """Parse each piece of a flattened script; opaque pieces yield None."""
    parser = _DIALECT.parser()
    for piece in pieces:
        if piece.kind == "opaque":
            yield piece, None
            continue
        try:
            if piece.kind == "condition":
                trees = parser.parse_into(exp.Condition, piece.tokens, sql)
            else:
                trees = parser.parse(piece.tokens, sql)
        except ParseError as exc:
            raise _syntax_error(exc) from exc
        for tree in trees:
            if tree is not None:  # sqlglot's placeholder for an empty statement
                yield piece, tree


def _syntax_error(exc: ParseError) -> SqlSyntaxError:
    error = exc.errors[0] if exc.errors else {}
    line, column = error.get("line"), error.get("col")
    highlight = error.get("highlight") or ""
    # sqlglot reports the column where the offending token ends; editors want where it starts.
    if column is not None and "\n" not in highlight:
        column = max(1, column - len(highlight) + 1)
    message = error.get("description") or str(exc).splitlines()[0]
    return SqlSyntaxError(message, line, column)


def _text(piece: Piece, sql: str) -> str:
    return sql[piece.tokens[0].start : piece.tokens[-1].end + 1] if piece.tokens else ""


# -- column lineage ------------------------------------------------------------------------------

# Stands for "no project" while sqlglot qualifies names, which needs one: project ids are made of
# lowercase letters, digits and dashes, so this cannot clash with a real one.
_NO_PROJECT = "_"
_ANONYMOUS = re.compile(r"_col_\d+")


def output_columns(
    sql: str,
    *,
    default_project: str | None = None,
    schemas: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Names of the columns a query returns; a star over a table of unknown schema stays ``*``.

    ``schemas`` maps ``project.dataset.table`` (or ``dataset.table``) to ``{column: type}``.
    Names are spelled as the select list writes them, else as the schema does; unnamed
    expressions get BigQuery's names ``f0_``, ``f1_``…

    >>> output_columns("SELECT o.*, SUM(x), y AS Total FROM ds.o AS o GROUP BY 1",
    ...                schemas={"ds.o": {"Id": "INT64", "x": "INT64"}})
    ['Id', 'x', 'f0_', 'Total']
    """
    query, spelling, _ = _qualified_query(sql, default_project, schemas)
    names, anonymous = [], 0
    for select in query.selects:
        name = select.alias_or_name
        if _ANONYMOUS.fullmatch(name) and name not in spelling:
            name, anonymous = f"f{anonymous}_", anonymous + 1
        names.append(spelling.get(name.lower(), name))
    return names


def column_lineage(
    sql: str,
    column: str,
    *,
    default_project: str | None = None,
    schemas: dict[str, dict[str, str]] | None = None,
) -> list[ColumnSource]:
    """The table columns that output ``column`` of the query derives from, through CTEs,
    subqueries and expressions (``a + b`` has two sources, ``COUNT(*)`` none).

    Without ``schemas`` a column qualified by its table, or read from a single table, is still
    traced; an unqualified column of a join can only be attributed with schemas, and is left out.

    >>> column_lineage("WITH o AS (SELECT id, net + tax AS gross FROM shop.orders) "
    ...                "SELECT SUM(gross) AS revenue FROM o", "revenue", default_project="acme")
    [ColumnSource(table=TableRef(project='acme', dataset='shop', name='orders'), column='net'), \
ColumnSource(table=TableRef(project='acme', dataset='shop', name='orders'), column='tax')]
    """
    query, spelling, schema = _qualified_query(sql, default_project, schemas)
    if column.lower() not in {select.alias_or_name.lower() for select in query.selects}:
        known = ", ".join(select.alias_or_name for select in query.selects)
        raise ValidationFailed(f"the statement has no output column {column!r} (it has: {known})")
    scope = build_scope(query)
    try:
        root = lineage(column.lower(), query, schema, dialect=_DIALECT, scope=scope, copy=False)
    except SqlglotError as exc:
        raise ValidationFailed(f"cannot trace column {column!r}: {exc}") from exc
    sources = {
        ColumnSource(_table_ref(table), spelling.get(name.lower(), name))
        for table, name in _leaves(root, column.lower())
    }
    return sorted(sources, key=lambda source: (str(source.table), source.column))


def _leaves(node: Node, column: str) -> Iterator[tuple[exp.Table, str]]:
    """(table, column) for every table leaf below ``node``; ``column`` is the node's column."""
    for child in node.downstream:
        if isinstance(child.expression, exp.Table) and not child.downstream:
            # A leaf named "*" is a star over a table of unknown schema: the column passes through.
            name = column if child.name == "*" else exp.to_column(child.name).name
            yield child.expression, name
        elif not child.downstream:
            continue  # a literal, or a column whose table cannot be known without schemas
        else:
            yield from _leaves(child, child.name.rsplit(".", 1)[-1])


def _table_ref(table: exp.Table) -> TableRef:
    project = table.catalog if table.catalog != _NO_PROJECT else None
    return TableRef(project or None, table.db, table.name)


def _qualified_query(
    sql: str, default_project: str | None, schemas: dict[str, dict[str, str]] | None
) -> tuple[exp.Query, dict[str, str], MappingSchema]:
    """The single query of ``sql`` qualified by sqlglot, {lowercase column: spelling}, the schema.

    sqlglot lowercases column names (BigQuery compares them case-insensitively); the spelling
    map lets us hand back the names as the user wrote them.
    """
    try:
        statements = [tree for tree in _DIALECT.parser().parse(tokenize(sql), sql) if tree]
    except ParseError as exc:
        raise _syntax_error(exc) from exc
    query = statements[0] if len(statements) == 1 else None
    if isinstance(query, (exp.Create, exp.Insert)):  # CREATE TABLE … AS / INSERT … SELECT
        query = query.expression
    if not isinstance(query, exp.Query):
        raise ValidationFailed("column analysis needs exactly one query statement")

    catalog = default_project.lower() if default_project else _NO_PROJECT
    nested: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    spelling: dict[str, str] = {}
    for key, columns in (schemas or {}).items():
        *project, dataset, table = key.rsplit(".", 2)
        nested.setdefault(project[0].lower() if project else catalog, {}).setdefault(dataset, {})[
            table
        ] = dict(columns)
        spelling.update((name.lower(), name) for name in columns)
    for identifier in query.find_all(exp.Identifier):
        spelling.setdefault(identifier.name.lower(), identifier.name)
    spelling.update((name.lower(), name) for name in query.named_selects if name != "*")
    for table in query.find_all(exp.Table):  # projects are lowercase (see the module doc)
        if table.args.get("catalog"):
            table.set("catalog", exp.to_identifier(table.catalog.lower()))

    try:
        schema = MappingSchema(nested, dialect=_DIALECT)
        qualified = qualify(
            query,
            dialect=_DIALECT,
            catalog=catalog,
            schema=schema,
            validate_qualify_columns=False,
            identify=False,
        )
    except SqlglotError as exc:
        raise ValidationFailed(f"cannot resolve the statement's columns: {exc}") from exc
    return qualified, spelling, schema
