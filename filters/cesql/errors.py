"""CESQL errors: one base class, a parse error with a position, an evaluation error with a kind.

The CESQL spec (section 3.3) names the error kinds an engine reports; the TCK checks
them by these exact names, so ``kind`` uses the TCK spelling.
"""
from __future__ import annotations

from typing import Any

from filters.errors import FilterEvaluationError, KnflowError

PARSE = "parse"
MATH = "math"
CAST = "cast"
MISSING_ATTRIBUTE = "missingAttribute"
MISSING_FUNCTION = "missingFunction"
FUNCTION_EVALUATION = "functionEvaluation"
GENERIC = "generic"

KINDS = (PARSE, MATH, CAST, MISSING_ATTRIBUTE, MISSING_FUNCTION, FUNCTION_EVALUATION, GENERIC)


class CesqlError(KnflowError, ValueError):
    """Base class of every CESQL error; ``kind`` is one of ``KINDS``."""

    kind = GENERIC


class CesqlParseError(CesqlError):
    """The expression does not parse; ``line`` and ``column`` are 1-based."""

    kind = PARSE

    def __init__(self, message: str, line: int, column: int) -> None:
        self.message = message
        self.line = line
        self.column = column
        super().__init__(f"at line {line}, column {column}: {message}")


class CesqlEvaluationError(CesqlError, FilterEvaluationError):
    """An error raised while evaluating on one event.

    Evaluation is fail-fast: the first error stops evaluation and the whole expression
    yields the zero value of its type. ``value`` is what the failing node itself returns
    (ABS overflow returns 2147483647, LEFT with a negative length returns its input), which
    is the expression's value when that node is the root. ``origin`` identifies that node.
    """

    def __init__(self, kind: str, message: str, value: Any = None, origin: Any = None) -> None:
        self.kind = kind
        self.message = message
        self.value = value
        self.origin = origin
        super().__init__(f"{kind}: {message}")

    def __reduce__(self):
        return (type(self), (self.kind, self.message, self.value, None))


class CesqlFunctionError(CesqlEvaluationError):
    """Raised by a builtin or user function: ``value`` is the function's return value."""

    def __init__(self, message: str, value: Any = None, kind: str = FUNCTION_EVALUATION) -> None:
        super().__init__(kind, message, value)

    def __reduce__(self):
        return (type(self), (self.message, self.value, self.kind))
