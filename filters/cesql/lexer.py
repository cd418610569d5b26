"""Tokens of a CESQL expression (spec section 2, and the reference grammar's lexer rules).

Keywords are case-insensitive; attribute names are folded to lower case (CloudEvents
attribute names are lower case, so ``EXISTS SOURCE`` names ``source``) and function
names to upper case. Integer literals are unsigned here: the parser folds a sign that
touches the digits, so that ``-2147483648`` is a valid literal while ``4 - 1`` still
subtracts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from filters.cesql.errors import CesqlParseError

KEYWORDS = frozenset({"AND", "OR", "XOR", "NOT", "LIKE", "EXISTS", "IN", "TRUE", "FALSE"})

# Token kinds. Operators and keywords use their own text (upper case) as kind.
INT = "integer"
STRING = "string"
WORD = "identifier"  # letters and digits: an attribute, or a function name before '('
FUNC = "function name"  # letters and underscores: only valid before '('
EOF = "end of expression"

_OPERATORS = ("!=", "<>", ">=", "<=", "(", ")", ",", "*", "/", "%", "+", "-", "=", "<", ">")
_SPACE = " \t\r\n"
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # as written
    value: Any  # int for INT, unescaped str for STRING, folded name for WORD / FUNC
    start: int  # offset of the first character
    end: int  # offset after the last character


def position(source: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of ``offset`` in ``source``."""
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column


def error_at(source: str, offset: int, message: str) -> CesqlParseError:
    line, column = position(source, offset)
    return CesqlParseError(message, line, column)


def _string(source: str, start: int) -> tuple[str, int]:
    """Scan the quoted literal at ``start``; return (value, end offset).

    Inside a literal a backslash pairs with the next character and a doubled quote
    stands for one quote (as the reference lexer accepts). Only the quote escapes are
    replaced: ``\\'`` in a '...' literal is ``'``; every other backslash pair stays as
    written, so LIKE patterns keep their ``\\%`` and ``\\_`` escapes.
    """
    quote = source[start]
    out: list[str] = []
    i = start + 1
    n = len(source)
    while i < n:
        char = source[i]
        if char == "\\" and i + 1 < n:
            nxt = source[i + 1]
            out.append(nxt if nxt == quote else char + nxt)
            i += 2
        elif char == quote:
            if i + 1 < n and source[i + 1] == quote:
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise error_at(source, start, f"unterminated string literal starting with {quote}")


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(source)
    while i < n:
        char = source[i]
        if char in _SPACE:
            i += 1
            continue
        if char in "'\"":
            value, end = _string(source, i)
            tokens.append(Token(STRING, source[i:end], value, i, end))
            i = end
            continue
        if char in _WORD_CHARS:
            end = i
            while end < n and source[end] in _WORD_CHARS:
                end += 1
            tokens.append(_word(source, i, end))
            i = end
            continue
        for op in _OPERATORS:
            if source.startswith(op, i):
                tokens.append(Token(op, op, op, i, i + len(op)))
                i += len(op)
                break
        else:
            raise error_at(source, i, f"unexpected character {char!r}")
    tokens.append(Token(EOF, "", None, n, n))
    return tokens


def _word(source: str, start: int, end: int) -> Token:
    text = source[start:end]
    if text.isdigit():
        return Token(INT, text, int(text), start, end)
    if "_" in text:
        if text[0] not in _LETTERS or any(c.isdigit() for c in text):
            raise error_at(source, start, f"invalid name {text!r}: attribute names hold letters and digits, function names letters and '_'")
        return Token(FUNC, text, text.upper(), start, end)
    upper = text.upper()
    if upper in KEYWORDS:
        return Token(upper, text, upper, start, end)
    return Token(WORD, text, text.lower(), start, end)
