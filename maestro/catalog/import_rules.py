"""What an import query may contain: an allow-list, checked on sqlglot's tokens and tree.

Private helper of :mod:`maestro.catalog.import_query`; import that. Everything not listed here is
refused with the line and column of the offending token. An allow-list rather than a deny-list:
a source database has hundreds of functions that write, sleep, lock or read files (``pg_sleep``,
``set_config``, ``nextval``, ``lo_import``, ``dblink``, ``LOAD_FILE``, ``SLEEP``, ``BENCHMARK``,
``GET_LOCK`` …) and new ones arrive with every release; listing the harmless ones cannot miss one.
Each allowed function is rendered back by sqlglot, and the integration tests run every one of them
on the real databases, because a rendering that changes meaning (MySQL's ``UTC_DATE()`` comes back
as ``CURRENT_DATE AT TIME ZONE 'UTC'``) would be as bad as a refusal missed.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from maestro.catalog.sql_parse import position
from maestro.errors import ImportQueryRefused

# Keywords refused wherever they appear, found on the tokens so the error points at the keyword
# itself (sqlglot's tree does not keep a position for a JOIN or an ORDER BY).
REFUSED_KEYWORDS: dict[TokenType, str] = {
    TokenType.JOIN: "a JOIN (an import reads one table)",
    TokenType.CROSS: "a JOIN (an import reads one table)",
    TokenType.NATURAL: "a JOIN (an import reads one table)",
    TokenType.STRAIGHT_JOIN: "a JOIN (an import reads one table)",
    TokenType.LATERAL: "LATERAL (an import reads one table)",
    TokenType.WITH: "a WITH clause (CTE)",
    TokenType.GROUP_BY: "GROUP BY",
    TokenType.HAVING: "HAVING",
    TokenType.ORDER_BY: "ORDER BY (the importer orders rows itself when it must)",
    TokenType.UNION: "UNION",
    TokenType.INTERSECT: "INTERSECT",
    TokenType.EXCEPT: "EXCEPT",
    TokenType.INTO: "INTO",
    TokenType.OVER: "a window function",
    TokenType.WINDOW: "a window function",
    TokenType.QUALIFY: "QUALIFY",
    TokenType.DISTINCT: "DISTINCT",
    TokenType.OFFSET: "OFFSET",
    TokenType.FETCH: "FETCH (use LIMIT)",
    TokenType.LOCK: "a locking clause",
    TokenType.TABLE_SAMPLE: "TABLESAMPLE",
    TokenType.RETURNING: "RETURNING",
    TokenType.PLACEHOLDER: "a query parameter",
    TokenType.PARAMETER: "a query parameter",
}

_LOCK_WORDS = frozenset({"UPDATE", "SHARE", "NO", "KEY"})  # FOR UPDATE, FOR NO KEY UPDATE …

# Nodes any condition may contain, in both dialects.
_EXPRESSIONS: frozenset[type[exp.Expr]] = frozenset({
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Tuple,
    exp.And, exp.Or, exp.Not, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.Is, exp.In, exp.Between, exp.Like, exp.Escape,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg,
    exp.Cast, exp.DataType, exp.DataTypeParam, exp.Interval, exp.Var,
})

# Harmless functions: pure, no side effects, no access to anything but their arguments.
_FUNCTIONS: dict[str, frozenset[type[exp.Expr]]] = {
    "common": frozenset({
        exp.Lower, exp.Upper, exp.Length, exp.Trim, exp.Coalesce, exp.Nullif, exp.Abs, exp.Round,
        exp.Floor, exp.Ceil, exp.Greatest, exp.Least, exp.CurrentDate, exp.CurrentTimestamp,
        exp.Extract, exp.Left, exp.Right, exp.Replace,
    }),
    "postgres": frozenset({
        exp.ILike, exp.DPipe, exp.RegexpLike, exp.TimestampTrunc, exp.Localtimestamp, exp.Any,
        exp.Array,
    }),
    "mysql": frozenset({exp.NullSafeEQ, exp.IntDiv, exp.DateAdd, exp.DateSub}),
}
# Functions sqlglot does not model (an ``Anonymous`` node), allowed by name.
_ANONYMOUS: dict[str, frozenset[str]] = {"postgres": frozenset(), "mysql": frozenset({"now"})}

# Where a bare keyword (a Var) may stand: a unit of time.
_VAR_PARENTS = (exp.Interval, exp.Extract, exp.TimestampTrunc, exp.DateAdd, exp.DateSub)

# Cast targets, as each source's catalog spells the type (pg's format_type, MySQL's COLUMN_TYPE),
# so a cast column maps to BigQuery exactly like a stored column of that type.
CAST_TYPES: dict[str, dict[exp.DType, str]] = {
    "postgres": {
        exp.DType.TEXT: "text", exp.DType.VARCHAR: "character varying", exp.DType.CHAR: "character",
        exp.DType.BIGINT: "bigint", exp.DType.INT: "integer", exp.DType.SMALLINT: "smallint",
        exp.DType.DECIMAL: "numeric", exp.DType.DOUBLE: "double precision", exp.DType.FLOAT: "real",
        exp.DType.BOOLEAN: "boolean", exp.DType.DATE: "date",
        exp.DType.TIMESTAMP: "timestamp without time zone",
        exp.DType.TIMESTAMPTZ: "timestamp with time zone", exp.DType.JSON: "json",
        exp.DType.JSONB: "jsonb", exp.DType.UUID: "uuid", exp.DType.VARBINARY: "bytea",
    },
    "mysql": {
        exp.DType.CHAR: "longtext", exp.DType.BIGINT: "bigint", exp.DType.UBIGINT: "bigint unsigned",
        exp.DType.DECIMAL: "decimal", exp.DType.DOUBLE: "double", exp.DType.DATE: "date",
        exp.DType.DATETIME: "datetime", exp.DType.BINARY: "longblob",
    },
}
# Types whose parameters are kept: numeric(p,s) decides NUMERIC / BIGNUMERIC, varchar(n) its size.
_PARAMETERIZED = frozenset({"numeric", "decimal", "character varying", "character"})


def refuse(sql: str, what: str, at: exp.Expr | Token | list[exp.Expr] | None = None) -> ImportQueryRefused:
    """The error for ``what`` found at a node or token (the start of the query when unknown)."""
    offset = _offset(at) if at is not None else None
    line, column = position(sql, offset) if offset is not None else (1, 1)
    return ImportQueryRefused(f"an import query cannot contain {what}", line, column)


def check_tokens(tokens: list[Token], sql: str) -> None:
    """Refuse the keywords no import query may use, a second statement and a subquery."""
    for i, token in enumerate(tokens):
        kind = token.token_type
        if kind in REFUSED_KEYWORDS:
            raise refuse(sql, REFUSED_KEYWORDS[kind], token)
        if kind is TokenType.FOR and i + 1 < len(tokens) and tokens[i + 1].text.upper() in _LOCK_WORDS:
            raise refuse(sql, "a locking clause (FOR UPDATE / FOR SHARE)", token)
        if kind is TokenType.SELECT and i > 0:
            raise refuse(sql, "a subquery", token)
        if kind is TokenType.SEMICOLON and any(t.token_type is not TokenType.SEMICOLON for t in tokens[i:]):
            raise refuse(sql, "a second statement", tokens[i + 1])


def check_condition(node: exp.Expr, dialect: str, sql: str) -> None:
    """Refuse anything in a WHERE condition (or a select item) that is not on the allow-list."""
    allowed = _EXPRESSIONS | _FUNCTIONS["common"] | _FUNCTIONS[dialect]
    for child in node.walk():
        if isinstance(child, exp.Anonymous):
            if child.name.lower() not in _ANONYMOUS[dialect]:
                raise refuse(sql, f"the function {child.name}() (not on the allow-list)", child)
        elif isinstance(child, exp.Select | exp.Subquery | exp.Exists):
            raise refuse(sql, "a subquery", child)
        elif type(child) not in allowed:
            name = type(child).__name__
            what = f"the function {name.upper()}() (not on the allow-list)" if isinstance(child, exp.Func) else name
            raise refuse(sql, what, child)
        elif isinstance(child, exp.Var) and not isinstance(child.parent, _VAR_PARENTS):
            raise refuse(sql, f"the keyword {child.name}", child)
        elif isinstance(child, exp.Cast):
            cast_type(child, dialect, sql)
        elif isinstance(child, exp.Column) and (child.args.get("db") or child.args.get("catalog")):
            raise refuse(sql, "a column of another schema or database", child)


def cast_type(cast: exp.Cast, dialect: str, sql: str) -> str:
    """The catalog spelling of a cast's target type, or a refusal for a type not on the list."""
    to = cast.args["to"]
    name = CAST_TYPES[dialect].get(to.this)
    if name is None:
        raise refuse(sql, f"a cast to {to.sql(dialect=dialect)} (allowed: {_cast_names(dialect)})", cast)
    params = [p.this for p in to.expressions if isinstance(p, exp.DataTypeParam)]
    if len(params) != len(to.expressions) or not all(p.is_int for p in params):
        raise refuse(sql, f"a cast to {to.sql(dialect=dialect)}", cast)
    if name == "decimal" and not params:
        return "decimal(10,0)"  # MySQL's CAST(x AS DECIMAL) is DECIMAL(10,0)
    if params and name in _PARAMETERIZED:
        return f"{name}({','.join(p.name for p in params)})"
    return name


def _cast_names(dialect: str) -> str:
    return ", ".join(sorted({name.upper() for name in CAST_TYPES[dialect].values()}))


def _offset(at: exp.Expr | Token | list[exp.Expr]) -> int | None:
    """Where a token or node starts in the text: the first position sqlglot kept beneath it."""
    if isinstance(at, Token):
        return at.start
    nodes = at if isinstance(at, list) else [at]
    starts = [node.meta["start"] for top in nodes for node in top.walk() if "start" in node.meta]
    return min(starts, default=None)
