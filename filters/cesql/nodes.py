"""The CESQL syntax tree: what the parser builds and the compiler (and ``requirements``) read.

Parentheses leave no node: ``(a AND b)`` is the ``AND`` node itself. ``start`` is the
offset of the node's first character in the expression, for messages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True)
class Literal:
    value: Any  # str, int or bool
    start: int = 0


@dataclass(frozen=True)
class Attribute:
    name: str  # lower case
    start: int = 0


@dataclass(frozen=True)
class Exists:
    name: str
    start: int = 0


@dataclass(frozen=True)
class Unary:
    op: str  # "NOT" or "-"
    operand: "Node"
    start: int = 0


@dataclass(frozen=True)
class Binary:
    op: str  # AND OR XOR = != <> < <= > >= + - * / %
    left: "Node"
    right: "Node"
    start: int = 0


@dataclass(frozen=True)
class Like:
    operand: "Node"
    pattern: str
    negated: bool = False
    start: int = 0


@dataclass(frozen=True)
class In:
    operand: "Node"
    items: tuple["Node", ...]
    negated: bool = False
    start: int = 0


@dataclass(frozen=True)
class Call:
    name: str  # upper case
    args: tuple["Node", ...]
    start: int = 0


Node = Union[Literal, Attribute, Exists, Unary, Binary, Like, In, Call]
