"""Flatten a BigQuery script into the plain statements and expressions sqlglot can parse.

Private helper of :mod:`maestro.catalog.sql`, the seam behind which sqlglot lives; import that.

sqlglot 30 parses ``DECLARE``, ``SET``, ``CREATE TEMP FUNCTION`` and friends, but not BigQuery's
procedural language: ``BEGIN … END``, ``IF … THEN … END IF``, ``LOOP``, ``WHILE``, ``REPEAT``,
``FOR … IN``, ``CASE`` statements, labels and ``EXCEPTION WHEN ERROR THEN`` either raise or fall
back to opaque ``Command`` nodes, which hides every table inside them. For dependency inference
control flow does not matter (a table read on any path is a dependency), so we walk the token
stream once, drop the control keywords and keep what is left as *pieces*: the statements inside
the blocks and the conditions of ``IF``/``ELSEIF``/``WHILE``/``UNTIL``/``CASE`` (conditions may
hold subqueries). A piece is a slice of the original token stream, so a parse error in it is
reported at its true line and column in the script. Example::

    IF (SELECT COUNT(*) FROM ds.a) > 0 THEN      condition  (SELECT COUNT(*) FROM ds.a) > 0
      INSERT ds.b SELECT * FROM ds.a;            statement  INSERT ds.b SELECT * FROM ds.a
    END IF;

``CALL`` and ``EXECUTE IMMEDIATE`` run SQL we cannot see (a procedure body, a string built at run
time): they become *opaque* pieces, which the caller reports rather than silently ignores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlglot.tokens import Token, TokenType

from maestro.catalog.sql_parse import position
from maestro.errors import SqlSyntaxError

PieceKind = Literal["statement", "condition", "opaque"]


@dataclass(frozen=True, slots=True)
class Piece:
    """A statement, a condition or an opaque statement, as tokens of the original script."""

    kind: PieceKind
    tokens: list[Token]

    def text(self, sql: str) -> str:
        """The piece as written in ``sql``."""
        return sql[self.tokens[0].start : self.tokens[-1].end + 1] if self.tokens else ""


@dataclass(frozen=True, slots=True)
class Script:
    """A flattened script: its pieces in order, and how many statements it has."""

    pieces: tuple[Piece, ...]
    statement_count: int


_QUOTED_TYPES = frozenset(
    {
        TokenType.IDENTIFIER,  # `quoted name`
        TokenType.STRING,
        TokenType.RAW_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
    }
)


def _word(token: Token | None) -> str:
    """The upper-cased keyword a token spells, or '' for quoted names, strings and punctuation."""
    if token is None or token.token_type in _QUOTED_TYPES:
        return ""
    text = token.text
    return text.upper() if text[:1].isalpha() or text[:1] == "_" else ""


# Constructs closed by END; ELSEIF/ELSE/WHEN/UNTIL continue the innermost one.
_BLOCKS = frozenset({"BEGIN", "IF", "LOOP", "WHILE", "REPEAT", "FOR", "CASE"})
# Statements that only steer control flow and read nothing.
_JUMPS = frozenset({"BREAK", "LEAVE", "CONTINUE", "ITERATE", "RETURN"})
_OPAQUE = frozenset({"CALL", "EXECUTE"})


def flatten(tokens: list[Token], sql: str) -> Script:
    """Split a script's tokens into pieces sqlglot can parse one by one.

    >>> from maestro.catalog.sql_parse import tokenize
    >>> sql = "IF (SELECT COUNT(*) FROM ds.a) > 0 THEN INSERT ds.b SELECT 1; END IF"
    >>> script = flatten(tokenize(sql), sql)
    >>> [(piece.kind, piece.text(sql)) for piece in script.pieces], script.statement_count
    ([('condition', '(SELECT COUNT(*) FROM ds.a) > 0'), ('statement', 'INSERT ds.b SELECT 1')], 2)
    """
    return _Flattener(tokens, sql).run()


class _Flattener:
    """One pass over the tokens, always positioned at the start of a statement."""

    def __init__(self, tokens: list[Token], sql: str) -> None:
        self.tokens = tokens
        self.kinds = [token.token_type for token in tokens]
        self.sql = sql
        self.i = 0
        self.pieces: list[Piece] = []
        self.count = 0
        self.open_blocks: list[Token] = []

    def run(self) -> Script:
        while self.i < len(self.tokens):
            self._statement()
        if self.open_blocks:
            opener = self.open_blocks[-1]
            raise self._error(opener, f"{opener.text.upper()} is never closed by END")
        return Script(tuple(self.pieces), self.count)

    # -- one statement (or one control keyword) at the current position -----------------------

    def _statement(self) -> None:
        token = self.tokens[self.i]
        word = _word(token)
        if token.token_type is TokenType.SEMICOLON:
            self.i += 1
        elif word and self._type_at(self.i + 1) is TokenType.COLON:
            self.i += 2  # a label, as in `outer: LOOP`
        elif word == "BEGIN":
            if _word(self._at(self.i + 1)) == "TRANSACTION" or self._type_at(self.i + 1) in (
                TokenType.SEMICOLON,
                None,
            ):
                self.count += 1  # BEGIN [TRANSACTION]: transaction control reads nothing
                self._take_statement()
            else:
                self._open(token)
        elif word == "END":
            self._end(token)
        elif word == "EXCEPTION":
            self.i += 1
            self._expect("WHEN", "ERROR", "THEN")
        elif word in ("IF", "WHILE"):
            self._open(token)
            self._condition(token, "THEN" if word == "IF" else "DO")
        elif word == "CASE":
            self._open(token)
            if _word(self._at(self.i)) != "WHEN":
                self._condition(token, "WHEN", consume=False)  # CASE expression WHEN value THEN
        elif word in ("ELSEIF", "WHEN"):
            self.i += 1
            self._condition(token, "THEN")
        elif word == "UNTIL":
            self.i += 1
            self._condition(token, "END", consume=False)
        elif word in ("LOOP", "REPEAT"):
            self._open(token)
        elif word == "ELSE":
            self.i += 1
        elif word == "FOR":
            self._for(token)
        elif word in _JUMPS:
            self.count += 1
            self._take_statement()
        elif word == "RAISE":
            self.count += 1
            self._raise()
        elif word in _OPAQUE:
            self.count += 1
            self.pieces.append(Piece("opaque", self._take_statement()))
        elif self._is_procedure_header():
            # CREATE PROCEDURE name(…) BEGIN … END: the name is a routine and the parameters are
            # types, so the header reads nothing; the body is analysed like any BEGIN block.
            self.count += 1
            self._take_statement(stop_at_begin=True)
        else:
            self.count += 1
            self.pieces.append(Piece("statement", self._take_statement()))

    def _open(self, token: Token) -> None:
        self.count += 1
        self.open_blocks.append(token)
        self.i += 1

    def _end(self, token: Token) -> None:
        if not self.open_blocks:
            raise self._error(token, "END without a block to close")
        self.open_blocks.pop()
        self.i += 1
        if _word(self._at(self.i)) in _BLOCKS - {"BEGIN"}:
            self.i += 1  # END IF, END LOOP …
        if _word(self._at(self.i)) and self._type_at(self.i + 1) in (TokenType.SEMICOLON, None):
            self.i += 1  # a closing label: END LOOP outer;
        if self._type_at(self.i) is TokenType.SEMICOLON:
            self.i += 1

    def _for(self, token: Token) -> None:
        # FOR row IN (query) DO … END FOR: the query is read once, the variable is not a table.
        self._open(token)
        self.i += 1  # the loop variable
        self._expect("IN")
        start = self.i
        end = self._find(token, "DO")
        self.pieces.append(Piece("statement", self.tokens[start:end]))
        self.i = end + 1

    def _raise(self) -> None:
        # RAISE USING MESSAGE = expression: the message may be computed from a subquery.
        tokens = self._take_statement()
        words = [_word(t) for t in tokens[:4]]
        if words[1:3] == ["USING", "MESSAGE"] and len(tokens) > 4:
            self.pieces.append(Piece("condition", tokens[4:]))

    def _condition(self, opener: Token, terminator: str, *, consume: bool = True) -> None:
        start = self.i
        end = self._find(opener, terminator)
        if end == start:
            raise self._error(opener, f"{opener.text.upper()} needs a condition")
        self.pieces.append(Piece("condition", self.tokens[start:end]))
        self.i = end + 1 if consume else end

    # -- scanning helpers ------------------------------------------------------------------------

    def _find(self, opener: Token, terminator: str) -> int:
        """Index of ``terminator`` at nesting depth 0 (outside parentheses and CASE … END)."""
        depth = 0
        for j in range(self.i, len(self.tokens)):
            token = self.tokens[j]
            kind = token.token_type
            if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
                depth += 1
            elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
                depth -= 1
            elif depth == 0 and kind is TokenType.SEMICOLON:
                break
            elif kind is TokenType.CASE:
                depth += 1
            elif kind is TokenType.END and depth > 0:
                depth -= 1
            elif depth == 0 and _word(token) == terminator:
                return j
        raise self._error(opener, f"{opener.text.upper()} without {terminator}")

    def _take_statement(self, *, stop_at_begin: bool = False) -> list[Token]:
        """The tokens up to the next ';' (consumed, not returned), or up to a BEGIN if asked.

        A ';' can only end a statement (strings and comments are single tokens), so the search
        is a plain index lookup: most scripts are one long SELECT and this is its hot path.
        """
        start = self.i
        try:
            end = self.kinds.index(TokenType.SEMICOLON, start)
        except ValueError:
            end = len(self.tokens)
        if stop_at_begin:
            end = next((j for j in range(start, end) if _word(self.tokens[j]) == "BEGIN"), end)
        at_semicolon = end < len(self.tokens) and self.kinds[end] is TokenType.SEMICOLON
        self.i = end + 1 if at_semicolon else end
        return self.tokens[start:end]

    def _is_procedure_header(self) -> bool:
        # CREATE [OR REPLACE] [TEMP] PROCEDURE [IF NOT EXISTS] name(…) [OPTIONS(…)] BEGIN
        for token in self.tokens[self.i : self.i + 8]:
            if token.token_type is TokenType.PROCEDURE:
                return _word(self.tokens[self.i]) == "CREATE"
            if token.token_type is TokenType.L_PAREN:
                break
        return False

    def _expect(self, *words: str) -> None:
        for word in words:
            token = self._at(self.i)
            if _word(token) != word:
                raise self._error(token or self.tokens[-1], f"expected {word}")
            self.i += 1

    def _at(self, index: int) -> Token | None:
        return self.tokens[index] if index < len(self.tokens) else None

    def _type_at(self, index: int) -> TokenType | None:
        token = self._at(index)
        return token.token_type if token is not None else None

    def _error(self, token: Token, message: str) -> SqlSyntaxError:
        line, column = position(self.sql, token.start)
        return SqlSyntaxError(message, line, column)
