"""Rewrite BigQuery legacy SQL into standard SQL that sqlglot can parse, for reference finding.

Private helper of :mod:`maestro.catalog.sql`, the seam behind which sqlglot lives; import that.

sqlglot has no legacy-SQL dialect. Legacy queries differ from standard ones mostly in how they
name tables, so this small pre-pass rewrites exactly those differences and leaves the rest to the
BigQuery parser:

========================================  ==================================================
legacy                                    rewritten to
========================================  ==================================================
``[project:dataset.table]``               ```project.dataset.table``` (same length)
``[dataset.table]``, ``[column name]``    ```dataset.table```, ```column name```
``[dataset.table@-3600000]`` (decorator)  ```dataset.table```  (time/partition decorators)
``TABLE_DATE_RANGE([ds.prefix], a, b)``   ```ds.prefix*```  (also ``TABLE_DATE_RANGE_STRICT``)
``TABLE_QUERY([ds], 'expr')``             ```ds.*```, or ```ds.prefix*``` when the whole
                                          filter is one ``REGEXP_MATCH(table_id, r'^prefix…')``
                                          or ``table_id LIKE 'prefix%'`` test
``FLATTEN(source, field)``                ``source``
``JOIN EACH``, ``GROUP EACH BY``          ``JOIN``, ``GROUP BY``
``x CONTAINS 'a'``                        ``x LIKE 'a'`` (an operator sqlglot lacks)
``agg(x) WITHIN RECORD``, ``IGNORE CASE`` dropped
``DATE_ADD(t, n, 'DAY')``, ``POSITION(f)`` renamed (``DATE_AD_``, ``POSITIO_``), since
                                          sqlglot checks the standard signatures of those names
========================================  ==================================================

The rewrite only serves reference finding: the output need not mean what the input meant, only
name the same tables. Every replacement keeps the line and column of everything after it (shorter
replacements are padded with spaces, newlines inside a replaced call are kept), so syntax errors
point at the user's text. ``OMIT RECORD IF`` is not rewritten and reports a syntax error.
"""

from __future__ import annotations

import re

from sqlglot.tokens import Token, TokenType

from maestro.catalog.sql_parse import tokenize

_QUOTED = (TokenType.IDENTIFIER, TokenType.STRING)
_WILDCARD_CALLS = frozenset({"TABLE_DATE_RANGE", "TABLE_DATE_RANGE_STRICT", "TABLE_QUERY"})
# Legacy functions whose standard namesakes sqlglot parses with a different signature.
_RENAMED_CALLS = frozenset({"DATE_ADD", "POSITION"})
# TABLE_QUERY filters whose tables we can name by a prefix; any other filter means "any table".
# The lookahead keeps a quantified last character (`^events_?`) out of the prefix.
_PREFIX_FILTERS = (
    re.compile(
        r"""\s*REGEXP_MATCH\(\s*table_id\s*,\s*"""
        r"""r?(['"])\^(?P<prefix>\w+)(?![?*{])[^'"|]*\1\s*\)\s*""",
        re.I,
    ),
    re.compile(r"""\s*table_id\s+LIKE\s+(['"])(?P<prefix>\w+)%\1\s*""", re.I),
)


def to_standard_sql(sql: str) -> str:
    """Standard SQL naming the same tables as the legacy SQL ``sql``.

    >>> to_standard_sql("SELECT a FROM [my-proj:web.visits] JOIN EACH [web.users] ON x = y")
    'SELECT a FROM `my-proj.web.visits` JOIN      `web.users` ON x = y'
    >>> to_standard_sql("SELECT * FROM TABLE_DATE_RANGE([logs.day_], NOW(), NOW())").rstrip()
    'SELECT * FROM `logs.day_*`'
    """
    text = list(sql)  # one slot per original character, so token offsets stay valid
    tokens = tokenize(sql)
    brackets = _rewrite_brackets(sql, tokens, text)
    _rewrite_words(sql, tokens, text, brackets)
    return "".join(text)


def _rewrite_brackets(sql: str, tokens: list[Token], text: list[str]) -> dict[int, tuple[int, str]]:
    """Backtick every ``[…]`` name in place; return {opening offset: (closing offset, path)}."""
    spans: dict[int, tuple[int, str]] = {}
    opener: Token | None = None
    for token in tokens:
        if token.token_type is TokenType.L_BRACKET:
            opener = token
        elif token.token_type is TokenType.R_BRACKET and opener is not None:
            inner = sql[opener.start + 1 : token.start]
            # Decorators (@time, $partition) select a snapshot or partition of the same table.
            name = re.split(r"[@$]", inner, maxsplit=1)[0].strip()
            project, colon, rest = name.rpartition(":")
            path = f"{project}.{rest}" if colon else name
            spans[opener.start] = (token.end, path)
            _replace(text, opener.start, token.end + 1, f"`{path}`")
            opener = None
    return spans


def _rewrite_words(
    sql: str, tokens: list[Token], text: list[str], brackets: dict[int, tuple[int, str]]
) -> None:
    skip_until = -1
    for index, token in enumerate(tokens):
        if token.start <= skip_until or token.token_type in _QUOTED:
            continue
        if token.start in brackets:  # a name: its words are not keywords
            skip_until = brackets[token.start][0]
            continue
        word = token.text.upper()
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        calls = following is not None and following.token_type is TokenType.L_PAREN
        if word in _WILDCARD_CALLS and calls:
            args, close = _call_arguments(tokens, index + 1)
            table = _wildcard(word, args, sql, brackets)
            if table is not None:
                _replace(text, token.start, close.end + 1, table)
                skip_until = close.end
        elif word == "FLATTEN" and calls:
            args, close = _call_arguments(tokens, index + 1)
            if args:
                source = "".join(text[args[0][0].start : args[0][-1].end + 1])
                _replace(text, token.start, close.end + 1, source)
                skip_until = close.end
        elif word in _RENAMED_CALLS and calls:
            _replace(text, token.start, token.end + 1, word[:-1] + "_")
        elif word == "EACH" and index and tokens[index - 1].text.upper() in ("JOIN", "GROUP"):
            _replace(text, token.start, token.end + 1, "")
        elif word == "CONTAINS":
            _replace(text, token.start, token.end + 1, "LIKE")
        elif following is not None and (
            word == "WITHIN" or (word == "IGNORE" and following.text.upper() == "CASE")
        ):
            _replace(text, token.start, following.end + 1, "")
            skip_until = following.end


def _call_arguments(tokens: list[Token], open_index: int) -> tuple[list[list[Token]], Token]:
    """The top-level arguments of the call whose '(' is at ``open_index``, and its ')' token."""
    args: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[open_index:]:
        kind = token.token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            if depth == 1:
                continue
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth -= 1
            if depth == 0:
                return [arg for arg in args if arg], token
        elif kind is TokenType.COMMA and depth == 1:
            args.append([])
            continue
        args[-1].append(token)
    # Unbalanced: leave the call alone and let the parser report the error where it is.
    return [], tokens[-1]


def _wildcard(
    call: str, args: list[list[Token]], sql: str, brackets: dict[int, tuple[int, str]]
) -> str | None:
    """```dataset.prefix*``` for a TABLE_DATE_RANGE or TABLE_QUERY call; None if unreadable."""
    if not args:
        return None
    first = args[0]
    bracketed = brackets.get(first[0].start)
    path = bracketed[1] if bracketed else sql[first[0].start : first[-1].end + 1].strip("`'\" ")
    if call == "TABLE_QUERY":
        prefix = ""
        if len(args) > 1 and len(args[1]) == 1 and args[1][0].token_type is TokenType.STRING:
            matches = (pattern.fullmatch(args[1][0].text) for pattern in _PREFIX_FILTERS)
            prefix = next((m["prefix"] for m in matches if m), "")
        path = f"{path}.{prefix}"
    return f"`{path}*`"


def _replace(text: list[str], start: int, end: int, replacement: str) -> None:
    """Replace ``text[start:end]``, keeping the line and column of everything after it.

    The replacement goes on the span's first line; the span's newlines are kept and the rest is
    padded with spaces. Replacements never grow a single-line span.
    """
    span = "".join(text[start:end])
    newlines = span.count("\n")
    if newlines:
        new = replacement + "\n" * newlines + " " * len(span.rsplit("\n", 1)[1])
    else:
        new = replacement.ljust(len(span))
    text[start:end] = [new] + [""] * (end - start - 1)
