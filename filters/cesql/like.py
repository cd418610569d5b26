"""LIKE patterns (spec 3.4.3) compiled once into a ``str -> bool`` matcher.

``%`` matches any run of characters (newlines too), ``_`` exactly one character, and
``\\%`` / ``\\_`` / ``\\\\`` the character itself; a backslash before anything else is a
literal backslash (so ``'ab\\c' LIKE 'ab\\c'`` holds, as the TCK requires).

No backtracking regex: the pattern is split at ``%`` into fixed-length pieces, and the
pieces are matched left to right, each at its leftmost possible place. For ``%``-separated
fixed-length pieces the leftmost choice is always safe, so a match costs at most input
length x pattern length (a regex with several ``.*`` can take polynomial time in the
input, and RE2's Python binding costs ~10 us a call). The common shapes (exact, prefix,
suffix, contains) are plain ``str`` methods. Every matcher returns a real ``bool``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

#: One piece: its characters, with None standing for ``_``.
Piece = tuple


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: the pieces between ``%`` signs (``len(pieces) - 1`` of them)."""

    pieces: tuple[Piece, ...]

    @property
    def literal(self) -> str | None:
        """The one literal string this pattern matches, if it has no wildcard at all."""
        if len(self.pieces) == 1 and None not in self.pieces[0]:
            return "".join(self.pieces[0])
        return None

    @property
    def prefix(self) -> str | None:
        """``p`` when the pattern is exactly ``p%`` (one trailing ``%``, nothing else)."""
        if len(self.pieces) == 2 and not self.pieces[1] and None not in self.pieces[0]:
            return "".join(self.pieces[0])
        return None


def parse_pattern(pattern: str) -> Pattern:
    pieces: list[Piece] = []
    current: list[str | None] = []
    i = 0
    n = len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n and pattern[i + 1] in "%_\\":
            current.append(pattern[i + 1])
            i += 2
            continue
        if char == "%":
            pieces.append(tuple(current))
            current = []
        elif char == "_":
            current.append(None)
        else:
            current.append(char)
        i += 1
    pieces.append(tuple(current))
    return Pattern(tuple(pieces))


def _piece_regex(piece: Piece) -> "re.Pattern[str]":
    """A fixed-length regex for a piece holding ``_``: no quantifiers, so no backtracking."""
    return re.compile("".join("." if c is None else re.escape(c) for c in piece), re.DOTALL)


class _Piece:
    """Match one fixed-length piece at a place, or find its leftmost place."""

    __slots__ = ("size", "text", "regex")

    def __init__(self, piece: Piece) -> None:
        self.size = len(piece)
        if None in piece:
            self.text = None
            self.regex = _piece_regex(piece)
        else:
            self.text = "".join(piece)
            self.regex = None

    def at(self, value: str, pos: int) -> bool:
        if self.text is not None:
            return value.startswith(self.text, pos)
        return self.regex.match(value, pos, pos + self.size) is not None

    def find(self, value: str, pos: int, end: int) -> int:
        if self.text is not None:
            return value.find(self.text, pos, end)
        found = self.regex.search(value, pos, end)
        return -1 if found is None else found.start()


def compile_like(pattern: str) -> Callable[[str], bool]:
    """The matcher of ``pattern`` (already unquoted), for ``x LIKE pattern``."""
    parsed = parse_pattern(pattern)
    pieces = parsed.pieces
    literal = parsed.literal
    if literal is not None:
        return literal.__eq__
    if len(pieces) == 1:  # no '%', some '_': the whole value is one fixed-length piece
        only = _Piece(pieces[0])
        size = only.size
        return lambda value: len(value) == size and only.at(value, 0)
    first, *middle, last = (_Piece(p) for p in pieces)
    if not middle and first.text is not None and last.text is not None:
        head, tail = first.text, last.text
        if not tail:
            return lambda value: value.startswith(head)
        if not head:
            return lambda value: value.endswith(tail)
        size = len(head) + len(tail)
        return lambda value: len(value) >= size and value.startswith(head) and value.endswith(tail)
    if len(middle) == 1 and not first.size and not last.size and middle[0].text is not None:
        needle = middle[0].text
        return lambda value: needle in value

    def match(value: str) -> bool:
        end = len(value) - last.size
        if end < first.size or not first.at(value, 0) or not last.at(value, end):
            return False
        pos = first.size
        for piece in middle:
            if not piece.size:
                continue
            found = piece.find(value, pos, end)
            if found < 0:
                return False
            pos = found + piece.size
        return True

    return match
