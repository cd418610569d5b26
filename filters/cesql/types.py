"""The CESQL type system on Python values, and its casts (spec sections 3.1 and 3.7).

CESQL values are plain Python ``str`` (String), ``int`` (Integer, 32-bit signed) and
``bool`` (Boolean). ``bool`` subclasses ``int`` in Python, so every type test here is
``type(v) is T``, never ``isinstance``. A static type of ``None`` means "not known before
evaluation" (an attribute reference).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from filters.cesql.errors import CAST, MATH, CesqlEvaluationError

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1

#: The spec's zero values, returned alongside errors.
ZERO: dict[Any, Any] = {str: "", int: 0, bool: False, None: False}

#: How the spec names the types (error messages, explanations).
NAMES: dict[Any, str] = {str: "String", int: "Integer", bool: "Boolean", None: "Any"}

_INTEGER = re.compile(r"[+-]?[0-9]+")


def type_name(value: Any) -> str:
    return NAMES.get(type(value), type(value).__name__)


def wrap_int32(value: int) -> int:
    """Two's-complement wrap, as the reference engine's int32 arithmetic does on overflow."""
    if INT_MIN <= value <= INT_MAX:
        return value
    return ((value - INT_MIN) & 0xFFFFFFFF) + INT_MIN


def parse_int32(text: str) -> int | None:
    """``text`` as a base-10 32-bit integer with an optional sign, or None (no spaces, ASCII digits)."""
    if not _INTEGER.fullmatch(text):
        return None
    value = int(text)
    return value if INT_MIN <= value <= INT_MAX else None


def to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return value
    if kind is bool:
        return 1 if value else 0
    if kind is str:
        parsed = parse_int32(value)
        if parsed is None:
            raise CesqlEvaluationError(CAST, f"cannot cast String {value!r} to Integer", 0)
        return parsed
    raise CesqlEvaluationError(CAST, f"cannot cast {type_name(value)} to Integer", 0)


def to_bool(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        return value
    if kind is str:
        lowered = value.lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        raise CesqlEvaluationError(CAST, f"cannot cast String {value!r} to Boolean", False)
    if kind is int:
        return value != 0
    raise CesqlEvaluationError(CAST, f"cannot cast {type_name(value)} to Boolean", False)


def to_str(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    raise CesqlEvaluationError(CAST, f"cannot cast {type_name(value)} to String", "")


def identity(value: Any) -> Any:
    return value


#: Cast to a static type; ``None`` (Any) casts nothing.
CAST_TO: dict[Any, Callable[[Any], Any]] = {int: to_int, bool: to_bool, str: to_str, None: identity}


def math_error(message: str) -> CesqlEvaluationError:
    return CesqlEvaluationError(MATH, message, 0)
