"""CEL literal tokens -> values, by the specification's lexical rules (langdef.md, "Syntax").

celpy's parser finds the tokens; their values are decoded here: int64 / uint64 (decimal or
0x hex), doubles, strings and bytes with every escape of the specification (``\\a \\b \\f
\\n \\r \\t \\v \\\\ \\? \\" \\' \\```, ``\\x``/``\\X`` + 2 hex digits, 3 octal digits,
``\\u`` + 4 and ``\\U`` + 8 hex digits), raw (``r``) and triple-quoted forms.
"""
from __future__ import annotations

import re
from typing import Any

from filters.cel_compiler.runtime import INT64_MAX, INT64_MIN, UINT64_MAX, Uint


class LiteralError(ValueError):
    """A literal the specification rejects (out of range, bad escape)."""


_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "?": "?", '"': '"', "'": "'", "`": "`"}
_ESCAPE = re.compile(r"\\(?:([abfnrtv\\?\"'`])|[xX]([0-9a-fA-F]{2})|([0-3][0-7]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|(.|\n|\Z))")


def _unescape(body: str, is_bytes: bool) -> Any:
    out: list = []
    pos = 0
    for m in _ESCAPE.finditer(body):
        chunk = body[pos : m.start()]
        out.append(chunk.encode("utf-8") if is_bytes else chunk)
        pos = m.end()
        simple, hx, octal, u4, u8, bad = m.groups()
        if simple is not None:
            c = _SIMPLE[simple]
            out.append(c.encode() if is_bytes else c)
        elif hx is not None or octal is not None:
            n = int(hx, 16) if hx is not None else int(octal, 8)
            out.append(bytes([n]) if is_bytes else chr(n))
        elif u4 is not None or u8 is not None:
            n = int(u4 or u8, 16)
            if is_bytes:
                raise LiteralError("\\u and \\U escapes are not allowed in bytes literals")
            if 0xD800 <= n <= 0xDFFF or n > 0x10FFFF:
                raise LiteralError(f"invalid code point in escape: {m.group()!r}")
            out.append(chr(n))
        else:
            raise LiteralError(f"invalid escape sequence {m.group()!r}")
    tail = body[pos:]
    out.append(tail.encode("utf-8") if is_bytes else tail)
    return b"".join(out) if is_bytes else "".join(out)


def _quoted(text: str) -> Any:
    prefix = ""
    while text[:1] in ("r", "R", "b", "B"):
        prefix += text[0].lower()
        text = text[1:]
    quote = text[:3] if text[:3] in ('"""', "'''") else text[:1]
    body = text[len(quote) : len(text) - len(quote)]
    is_bytes = "b" in prefix
    if "r" in prefix:
        return body.encode("utf-8") if is_bytes else body
    return _unescape(body, is_bytes)


def literal(kind: str, text: str) -> Any:
    """The value of one literal token (celpy's token type names)."""
    if kind == "INT_LIT":
        neg = text.startswith("-")
        digits = text.lstrip("+-")
        value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits)
        value = -value if neg else value
        if not INT64_MIN <= value <= INT64_MAX:
            raise LiteralError(f"int literal out of range: {text}")
        return value
    if kind == "UINT_LIT":
        digits = text[:-1]
        value = int(digits, 16) if digits[:2].lower() == "0x" else int(digits)
        if value > UINT64_MAX:
            raise LiteralError(f"uint literal out of range: {text}")
        return Uint(value)
    if kind == "FLOAT_LIT":
        return float(text)
    if kind in ("STRING_LIT", "MLSTRING_LIT", "BYTES_LIT", "MLBYTES_LIT"):
        return _quoted(text)
    if kind == "BOOL_LIT":
        return text == "true"
    if kind == "NULL_LIT":
        return None
    raise LiteralError(f"unknown literal {kind} {text!r}")
