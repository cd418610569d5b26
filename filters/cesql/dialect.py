"""The Subscriptions API ``cesql`` dialect: a trigger filter holding one CESQL expression.

Knative semantics: an empty expression is NO_FILTER; an expression that does not parse
is rejected when the trigger is compiled; on an event, ``true`` is PASS and everything
else is FAIL: ``false``, a non-Boolean value, and any evaluation error (which is also
counted, as the CESQL spec says a filter must not pass an event when errors occur).
"""
from __future__ import annotations

import logging
from typing import Any

from filters.base import EventView, Explanation, Filter, FilterResult
from filters.cesql import nodes
from filters.cesql.compiler import CompiledExpression, compile_cesql
from filters.cesql.errors import CesqlEvaluationError, CesqlParseError
from filters.cesql.functions import FunctionRegistry
from filters.cesql.like import parse_pattern
from filters.cesql.types import parse_int32, type_name
from filters.errors import FilterSpecError

log = logging.getLogger(__name__)

_PASS = FilterResult.PASS
_FAIL = FilterResult.FAIL


class CesqlFilter(Filter):
    dialect = "cesql"

    def __init__(self, value: Any, path: str, functions: FunctionRegistry | None = None) -> None:
        if not isinstance(value, str):
            raise FilterSpecError(path, f"must be a CESQL expression string, got {type(value).__name__}")
        self.expression = value.strip()
        self.errors = 0
        self.last_error: str | None = None
        self.compiled: CompiledExpression | None = None
        self._fn = None
        if not self.expression:
            return
        try:
            # Parse the text as written, so that line and column point into the user's YAML value.
            self.compiled = compile_cesql(value, functions)
        except CesqlParseError as exc:
            raise FilterSpecError(path, f"invalid CESQL expression at line {exc.line}, column {exc.column}: {exc.message}") from None
        self._fn = self.compiled.fn
        if self.compiled.type not in (bool, None):
            log.warning("%s: CESQL expression %r yields a %s, so it never passes", path, self.expression, self.compiled.type_name)

    def error_count(self) -> int:
        return self.errors

    def describe(self) -> str:
        return f"cesql: {self.expression}"

    def filter(self, event: EventView) -> FilterResult:
        fn = self._fn
        if fn is None:
            return FilterResult.NO_FILTER
        try:
            value = fn(event)
        except CesqlEvaluationError as exc:
            self.errors += 1
            self.last_error = str(exc)
            return _FAIL
        except Exception as exc:  # a bug in the engine must not stop the job: FAIL, counted, logged
            self.errors += 1
            self.last_error = f"internal error: {exc!r}"
            log.exception("CESQL %r failed on an event", self.expression)
            return _FAIL
        if value is True:
            return _PASS
        if value is not False:
            self.errors += 1
            self.last_error = f"expression returned {type_name(value)} {value!r}, not a Boolean"
        return _FAIL

    def explain(self, event: EventView) -> Explanation:
        """Like ``filter`` (errors are not counted), with the value or the error as detail."""
        if self.compiled is None:
            return Explanation(self.describe(), FilterResult.NO_FILTER, "empty expression")
        try:
            value, error = self.compiled.evaluate(event)
        except Exception as exc:
            return Explanation(self.describe(), _FAIL, f"internal error: {exc!r}")
        if error is not None:
            return Explanation(self.describe(), _FAIL, f"{error.kind} error: {error.message} (value {value!r})")
        if value is True:
            return Explanation(self.describe(), _PASS, "true")
        if value is False:
            return Explanation(self.describe(), _FAIL, "false")
        return Explanation(self.describe(), _FAIL, f"{type_name(value)} {value!r}, not a Boolean")

    def requirements(self) -> list[tuple[str, str, Any]]:
        """Conditions on ``event.string(attr)`` that hold whenever ``filter()`` does not FAIL.

        Read from the top-level AND conjuncts only (a non-FAIL result means every
        conjunct evaluated to true without error), and only from shapes that are
        exactly string tests on the canonical string form:

        - ``attr = 'v'`` casts ``attr`` to String: ``("exact", attr, "v")``;
        - ``'v' = attr`` casts ``'v'`` to ``attr``'s type, so only when ``'v'`` is the
          one spelling of its Integer / Boolean value (not ``'05'``, not ``'TRUE'``);
        - ``attr LIKE 'v%'`` with no other wildcard and no escape: ``("prefix", attr, "v")``;
        - ``attr IN ('v', ...)`` with such string literals only: ``("in", attr, (...))``.
        """
        if self.compiled is None:
            return []
        out: list[tuple[str, str, Any]] = []
        for conjunct in _conjuncts(self.compiled.tree):
            requirement = _requirement(conjunct)
            if requirement is not None:
                out.append(requirement)
        return out


def _conjuncts(node: nodes.Node) -> list[nodes.Node]:
    if isinstance(node, nodes.Binary) and node.op == "AND":
        return _conjuncts(node.left) + _conjuncts(node.right)
    return [node]


def _is_string(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Literal) and type(node.value) is str


def _one_spelling(text: str) -> bool:
    """True when casting ``text`` to Integer or Boolean cannot equal a value spelt differently."""
    number = parse_int32(text)
    if number is not None and str(number) != text:
        return False
    return text.lower() not in ("true", "false") or text in ("true", "false")


def _requirement(node: nodes.Node) -> tuple[str, str, Any] | None:
    if isinstance(node, nodes.Binary) and node.op == "=":
        left, right = node.left, node.right
        if isinstance(left, nodes.Attribute) and _is_string(right):
            return ("exact", left.name, right.value)
        if isinstance(right, nodes.Attribute) and _is_string(left) and _one_spelling(left.value):
            return ("exact", right.name, left.value)
        return None
    if isinstance(node, nodes.Like) and not node.negated and isinstance(node.operand, nodes.Attribute):
        if "\\" in node.pattern:
            return None
        prefix = parse_pattern(node.pattern).prefix
        return None if prefix is None else ("prefix", node.operand.name, prefix)
    if isinstance(node, nodes.In) and not node.negated and isinstance(node.operand, nodes.Attribute):
        if all(_is_string(item) and _one_spelling(item.value) for item in node.items):
            return ("in", node.operand.name, tuple(item.value for item in node.items))
    return None
