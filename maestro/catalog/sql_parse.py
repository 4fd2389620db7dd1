"""Tokenize and parse SQL with sqlglot, turning its errors into SqlSyntaxError.

Private helper of :mod:`maestro.catalog.sql` and :mod:`maestro.catalog.import_query`, the seams
behind which sqlglot lives; import those. BigQuery unless a ``dialect`` is given (import queries
are written in the source database's dialect). Positions are 1-based and point at the first
character of the offending token.
"""

from __future__ import annotations

import operator
import re

from sqlglot import exp
from sqlglot.dialects.bigquery import BigQuery
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.parser import Parser
from sqlglot.tokens import Token, TokenType

from maestro.errors import SqlSyntaxError

DIALECT = Dialect.get_or_raise("bigquery")


class _Tokenizer(BigQuery.Tokenizer):
    # BigQuery's tokenizer swallows everything after a "command" keyword at the start of a
    # statement (BEGIN, LOOP, WHILE, CALL, EXECUTE …) into one string token, up to the next ';'.
    # That hides a BEGIN block's first statement from the parser; sql_script wants real tokens.
    COMMANDS: set[TokenType] = set()


def position(sql: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset.

    >>> position("SELECT 1\\nFROM t", 9)
    (2, 1)
    """
    line_start = sql.rfind("\n", 0, offset) + 1
    return sql.count("\n", 0, offset) + 1, offset - line_start + 1


def tokenize(sql: str, *, dialect: Dialect = DIALECT) -> list[Token]:
    """Tokens of ``sql``; an unterminated string or comment raises SqlSyntaxError."""
    tokenizer = _Tokenizer() if dialect is DIALECT else dialect.tokenizer()
    try:
        return tokenizer.tokenize(sql)
    except TokenError as exc:
        # sqlglot's TokenError only carries a context window, not the position: find it ourselves.
        offset = _unterminated_at(sql)
        if offset is None:
            raise SqlSyntaxError(f"the SQL cannot be split into tokens: {exc}") from exc
        line, column = position(sql, offset)
        raise SqlSyntaxError("unterminated string, quoted name or comment", line, column) from exc


def parse(
    tokens: list[Token],
    sql: str,
    *,
    parser: Parser | None = None,
    condition: bool = False,
    dialect: Dialect = DIALECT,
) -> list[exp.Expr]:
    """The statements (or, with ``condition``, the one expression) that ``tokens`` spell.

    ``sql`` is the text the tokens come from, for error positions. Pass a ``parser`` to reuse one
    across the pieces of a script (a parser is not thread-safe: one per call of ours).
    """
    parser = parser or dialect.parser()
    if dialect is DIALECT:
        tokens = _table_arguments(tokens)
    try:
        if condition:
            trees = parser.parse_into(exp.Condition, tokens, sql)
        else:
            trees = parser.parse(tokens, sql)
    except ParseError as exc:
        raise _syntax_error(exc) from exc
    except Exception as exc:
        # sqlglot's compiled parser occasionally fails on malformed input with an internal
        # error instead of a ParseError (a TypeError for a call cut off at the end of the text).
        # It is still the user's SQL that does not parse: say so, where the statement ends.
        line, column = position(sql, tokens[-1].start) if tokens else (None, None)
        raise SqlSyntaxError("the statement is incomplete or malformed", line, column) from exc
    return [tree for tree in trees if tree is not None]  # None stands for an empty statement


def _table_arguments(tokens: list[Token]) -> list[Token]:
    """Rewrite ``f(TABLE ds.t)`` and ``f(MODEL ds.m)`` arguments as ``f((SELECT * FROM ds.t))``.

    BigQuery passes tables and models to table-valued functions with a keyword; sqlglot 30
    accepts that only for the few functions it models (``ML.PREDICT``, ``VECTOR_SEARCH`` …) and
    rejects the rest (``APPENDS``, ``CHANGES``, ``ML.EVALUATE``, ``ML.TRAINING_INFO`` …). A
    subquery over the same path parses everywhere and reads the same object. Only a bare path
    right after '(' or ',' and right before ',' or ')' is rewritten, so a column named ``model``
    is left alone.
    """
    if _ARGUMENT_KEYWORDS.isdisjoint(map(_token_type, tokens)):  # the common case, at C speed
        return tokens
    result: list[Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        end = i + 1
        if (
            token.token_type in _ARGUMENT_KEYWORDS
            and result
            and result[-1].token_type in (TokenType.L_PAREN, TokenType.COMMA)
        ):
            while end < len(tokens) and _in_path(tokens[end], first=end == i + 1):
                end += 1
        if (
            end > i + 1
            and end < len(tokens)
            and tokens[end].token_type in (TokenType.COMMA, TokenType.R_PAREN)
        ):
            result += [_like(token, kind, text) for kind, text in _SUBQUERY_HEAD]
            result += tokens[i + 1 : end]
            result.append(_like(token, TokenType.R_PAREN, ")"))
        else:
            result.append(token)
            end = i + 1
        i = end
    return result


_ARGUMENT_KEYWORDS = frozenset({TokenType.TABLE, TokenType.MODEL})
_token_type = operator.attrgetter("token_type")
_SUBQUERY_HEAD = (
    (TokenType.L_PAREN, "("),
    (TokenType.SELECT, "SELECT"),
    (TokenType.STAR, "*"),
    (TokenType.FROM, "FROM"),
)


def _in_path(token: Token, *, first: bool) -> bool:
    """Whether ``token`` can be part of a table path (`my-proj`.ds.t), or start one."""
    if token.token_type is TokenType.IDENTIFIER:
        return True
    if not first and token.token_type in (TokenType.DOT, TokenType.DASH, TokenType.NUMBER):
        return True
    return token.text[:1].isalpha() or token.text[:1] == "_"


def _like(token: Token, kind: TokenType, text: str) -> Token:
    """A synthetic token at ``token``'s position, so errors still point at the user's text."""
    return Token(kind, text, token.line, token.col, token.start, token.end)


def _syntax_error(exc: ParseError) -> SqlSyntaxError:
    error = exc.errors[0] if exc.errors else {}
    line, column = error.get("line"), error.get("col")
    highlight = error.get("highlight") or ""
    # sqlglot reports the column where the offending token ends; editors want where it starts.
    if column is not None and "\n" not in highlight:
        column = max(1, column - len(highlight) + 1)
    message = error.get("description") or str(exc).splitlines()[0]
    message = _CLASS_REPR.sub(r"\1", _TOKEN_REPR.sub(_token_text, message))
    return SqlSyntaxError(message, line, column)


# sqlglot writes some tokens and classes into its messages as their repr ("but got <Token
# token_type: …>", "missing for <class 'sqlglot.expressions.query.Where'>"): keep the names.
_TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: .*?>")
_CLASS_REPR = re.compile(r"<class '(?:\w+\.)*(\w+)'>")


def _token_text(match: re.Match[str]) -> str:
    return "the end of the statement" if match[1] == "SENTINEL" else repr(match[2])


def _unterminated_at(sql: str) -> int | None:
    """Offset of the first quote or comment opener that is never closed (None if none is)."""
    i, size = 0, len(sql)
    while i < size:
        if sql.startswith(("--", "#"), i):
            i = sql.find("\n", i)
            i = size if i < 0 else i
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                return i
            i = end + 2
        elif sql[i] in "'\"`":
            delimiter = sql[i] * 3 if sql.startswith(sql[i] * 3, i) else sql[i]
            j = i + len(delimiter)
            while j < size and not sql.startswith(delimiter, j):
                j += 2 if sql[j] == "\\" else 1
            if j >= size:
                return i
            i = j + len(delimiter)
        else:
            i += 1
    return None
