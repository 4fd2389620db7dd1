"""What a BigQuery statement reads, and where its output columns come from.

This is the one module behind which sqlglot lives (ARCHITECTURE.md, STYLE.md item 7): everything
it returns is a plain frozen value, a string or a Maestro error. Its private helpers, which no
other module imports, are ``sql_parse`` (tokens, parsing, error positions), ``sql_script``
(procedural scripts), ``sql_tables`` (which table nodes are reads), ``sql_lineage`` (columns)
and ``legacy_sql`` (the legacy-SQL pre-pass).

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
* **Legacy SQL** (``legacy_sql=True``) is first rewritten to standard SQL naming the same tables
  (``[project:dataset.table]``, ``TABLE_DATE_RANGE`` …; see ``legacy_sql``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlglot import exp

from maestro.catalog.legacy_sql import to_standard_sql
from maestro.catalog.sql_lineage import Schemas, column_sources, output_names
from maestro.catalog.sql_parse import DIALECT, parse, tokenize
from maestro.catalog.sql_script import Piece, flatten
from maestro.catalog.sql_tables import read_tables, temp_table_name

# Distinct analyses kept in memory: enough for a 10,000-table catalog to be re-resolved (after
# another replica wrote) without re-parsing. A statement and its result weigh a few kB: ~25 MB.
_CACHE_SIZE = 10_000


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
            opaque.append(piece.text(sql))
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
    depend on itself. Wildcards are kept even when they cover the table, since the other tables
    they cover are real dependencies: whoever expands a wildcard skips the table itself.

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
    parser = DIALECT.parser()
    for piece in pieces:
        if piece.kind == "opaque":
            yield piece, None
            continue
        for tree in parse(piece.tokens, sql, parser=parser, condition=piece.kind == "condition"):
            yield piece, tree


# -- columns -------------------------------------------------------------------------------------


def output_columns(
    sql: str, *, default_project: str | None = None, schemas: Schemas | None = None
) -> list[str]:
    """Names of the columns a query returns; a star over a table of unknown schema stays ``*``.

    ``schemas`` maps ``project.dataset.table`` (or ``dataset.table``) to ``{column: type}``.
    Names are spelled as the select list writes them, else as the schema does; unnamed
    expressions get BigQuery's names ``f0_``, ``f1_``… Raises ValidationFailed unless ``sql`` is
    one query (``CREATE TABLE … AS`` and ``INSERT … SELECT`` count as their query).

    >>> output_columns("SELECT o.*, SUM(x), y AS Total FROM ds.o AS o GROUP BY 1",
    ...                schemas={"ds.o": {"Id": "INT64", "x": "INT64"}})
    ['Id', 'x', 'f0_', 'Total']
    """
    return output_names(sql, default_project, schemas)


def column_lineage(
    sql: str, column: str, *, default_project: str | None = None, schemas: Schemas | None = None
) -> list[ColumnSource]:
    """The table columns that output ``column`` of a query derives from, through CTEs,
    subqueries and expressions (``a + b`` has two sources, ``COUNT(*)`` none), sorted.

    Without ``schemas``, a column qualified by its table or read from a single table is still
    traced; an unqualified column of a join can only be attributed with schemas and is left out,
    and an unqualified column in a subquery may be correlated, which sqlglot refuses to guess
    (ValidationFailed). An unknown ``column`` raises ValidationFailed naming it.

    >>> column_lineage("WITH o AS (SELECT id, net + tax AS gross FROM shop.orders) "
    ...                "SELECT SUM(gross) AS revenue FROM o", "revenue", default_project="acme")
    [ColumnSource(table=TableRef(project='acme', dataset='shop', name='orders'), column='net'), \
ColumnSource(table=TableRef(project='acme', dataset='shop', name='orders'), column='tax')]
    """
    sources = [
        ColumnSource(TableRef(project, dataset, name), source_column)
        for project, dataset, name, source_column in column_sources(
            sql, column, default_project, schemas
        )
    ]
    return sorted(sources, key=lambda source: (str(source.table), source.column))
