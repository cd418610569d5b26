"""Syntax tree -> one Python closure per node, built once per expression.

Every closure takes the event and returns a CESQL value (``str`` / ``int`` / ``bool``) or
raises ``CesqlEvaluationError``. Evaluation is fail-fast (spec 4.1): the first error
ends it, and the expression's value is then the zero value of the root's type, unless
the root itself is the function call that failed and returned a value of its own
(``ABS(-2147483648)`` is ``2147483647`` with a math error). Exceptions cost nothing on
the path without errors, which is the path that matters.

Work is moved to compile time wherever the static type allows: a cast is only emitted
where an operand's type can differ from the parameter's, constant sub-expressions are
folded, constants are cast once, and the IN sets of literals become hash sets.

Casting follows spec 3.7: unambiguous operators cast both operands to their parameter
types; ``=``, ``!=`` and ``<>`` (defined for every type) cast the left operand to the
right one's type; ``IN`` casts the set values to the left operand's type.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from filters.base import EventView, attribute_string
from filters.cesql import nodes
from filters.cesql.errors import MISSING_ATTRIBUTE, MISSING_FUNCTION, CesqlEvaluationError
from filters.cesql.functions import DEFAULT_FUNCTIONS, FunctionRegistry
from filters.cesql.like import compile_like
from filters.cesql.parser import parse
from filters.cesql.types import CAST_TO, INT_MAX, INT_MIN, NAMES, ZERO, math_error, to_int, wrap_int32

Evaluator = Callable[[EventView], Any]

#: ``EventView.cache`` key of the per-event attribute values, shared by every CESQL trigger.
CACHE_KEY = "cesql"

_NO_CONSTANT = object()
_MISSING = object()


class AttributeValues(dict):
    """An event's attributes as CESQL values, converted on first use and then kept.

    Strings and booleans stay as they are, 32-bit integers are Integers, anything else
    (timestamps, URIs held as objects, binary, out-of-range integers) is a String in
    its canonical CloudEvents form (spec 3.2). Absent attributes are remembered too.
    """

    __slots__ = ("attributes",)

    def __init__(self, attributes: Any) -> None:
        super().__init__()
        self.attributes = attributes

    def __missing__(self, name: str) -> Any:
        value = self.attributes.get(name)
        kind = type(value)
        if value is None:
            converted = _MISSING
        elif kind is str or kind is bool or (kind is int and INT_MIN <= value <= INT_MAX):
            converted = value
        else:
            converted = attribute_string(value)
        self[name] = converted
        return converted


def attribute_values(event: EventView) -> AttributeValues:
    values = event.cache.get(CACHE_KEY)
    if values is None:
        values = event.cache[CACHE_KEY] = AttributeValues(event.attributes)
    return values


class Result(NamedTuple):
    """What an evaluation gives: always a value, and the error if one occurred."""

    value: Any
    error: CesqlEvaluationError | None


@dataclass(frozen=True)
class _Code:
    fn: Evaluator
    type: Any  # str / int / bool, or None when only known at run time (attributes)
    constant: Any = _NO_CONSTANT

    @property
    def is_constant(self) -> bool:
        return self.constant is not _NO_CONSTANT


class CompiledExpression:
    """A parsed and compiled CESQL expression; ``evaluate`` may be called from many events."""

    def __init__(self, source: str, tree: nodes.Node, functions: FunctionRegistry) -> None:
        self.source = source
        self.tree = tree
        code = _Compiler(functions).compile(tree)
        self.type = code.type
        self.type_name = NAMES[code.type]
        #: The raw closure: returns the value or raises CesqlEvaluationError.
        self.fn = code.fn
        self._zero = ZERO[code.type]

    def evaluate(self, event: EventView) -> Result:
        try:
            return Result(self.fn(event), None)
        except CesqlEvaluationError as exc:
            return Result(self.value_on_error(exc), exc)

    def value_on_error(self, exc: CesqlEvaluationError) -> Any:
        """The expression's value when evaluation stopped with ``exc``."""
        return exc.value if exc.origin is self.tree else self._zero

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


def compile_cesql(source: str, functions: FunctionRegistry | None = None) -> CompiledExpression:
    """Parse and compile ``source``; raise ``CesqlParseError`` (with line and column) if it does not parse.

    Functions resolve against ``functions`` (default: the builtins plus those added by
    ``register_function``) now; a call that resolves to nothing is a missingFunction
    error at evaluation, as the spec wants.
    """
    return CompiledExpression(source, parse(source), DEFAULT_FUNCTIONS if functions is None else functions)


# -- helpers ---------------------------------------------------------------------------

def _constant(value: Any) -> _Code:
    return _Code(lambda event: value, type(value), value)


def _raiser(error: CesqlEvaluationError) -> Evaluator:
    """A closure raising a fresh copy of ``error`` (a raised exception keeps its traceback)."""
    kind, message, value = error.kind, error.message, error.value

    def fail(event: EventView) -> Any:
        raise CesqlEvaluationError(kind, message, value)

    return fail


def _cast(code: _Code, target: Any) -> Evaluator:
    """``code`` with its result cast to ``target`` (str / int / bool), cast at compile time if possible."""
    if target is None or code.type is target:
        return code.fn
    cast = CAST_TO[target]
    if code.is_constant:
        try:
            value = cast(code.constant)
        except CesqlEvaluationError as exc:
            return _raiser(exc)
        return lambda event: value
    fn = code.fn

    def cast_value(event: EventView) -> Any:
        value = fn(event)
        return value if type(value) is target else cast(value)

    return cast_value


def _constant_casts(value: Any) -> dict[type, Any]:
    """``value`` cast to each type, or the error that cast raises."""
    out: dict[type, Any] = {}
    for target in (str, int, bool):
        try:
            out[target] = CAST_TO[target](value)
        except CesqlEvaluationError as exc:
            out[target] = exc
    return out


def _divide(x: int, y: int) -> int:
    if y == 0:
        raise math_error("division by zero")
    quotient = abs(x) // abs(y)
    return wrap_int32(quotient if (x < 0) == (y < 0) else -quotient)


def _modulo(x: int, y: int) -> int:
    if y == 0:
        raise math_error("modulo by zero")
    remainder = abs(x) % abs(y)
    return remainder if x >= 0 else -remainder


def _wrapping(op: Callable[[int, int], int]) -> Callable[[int, int], int]:
    def apply(x: int, y: int) -> int:
        result = op(x, y)
        return result if INT_MIN <= result <= INT_MAX else wrap_int32(result)

    return apply


_ARITHMETIC = {
    "+": _wrapping(operator.add),
    "-": _wrapping(operator.sub),
    "*": _wrapping(operator.mul),
    "/": _divide,
    "%": _modulo,
}
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EQUALITY = ("=", "!=", "<>")


class _Compiler:
    def __init__(self, functions: FunctionRegistry) -> None:
        self.functions = functions

    def compile(self, node: nodes.Node) -> _Code:
        return getattr(self, "_" + type(node).__name__.lower())(node)

    @staticmethod
    def _fold(code: _Code, *operands: _Code) -> _Code:
        """Evaluate now when every operand is a constant and evaluation raises nothing."""
        if code.is_constant or not all(o.is_constant for o in operands):
            return code
        try:
            return _constant(code.fn(None))  # constant closures never look at the event
        except CesqlEvaluationError:
            return code  # keep the error for evaluation time, where it is reported

    # -- leaves ----------------------------------------------------------------------
    def _literal(self, node: nodes.Literal) -> _Code:
        return _constant(node.value)

    def _attribute(self, node: nodes.Attribute) -> _Code:
        name = node.name
        message = f"missing attribute {name!r}"

        def attribute(event: EventView) -> Any:
            values = event.cache.get(CACHE_KEY)
            if values is None:
                values = event.cache[CACHE_KEY] = AttributeValues(event.attributes)
            value = values[name]
            if value is _MISSING:
                raise CesqlEvaluationError(MISSING_ATTRIBUTE, message, False)
            return value

        return _Code(attribute, None)

    def _exists(self, node: nodes.Exists) -> _Code:
        name = node.name
        return _Code(lambda event: event.attributes.get(name) is not None, bool)

    # -- operators -------------------------------------------------------------------
    def _unary(self, node: nodes.Unary) -> _Code:
        operand = self.compile(node.operand)
        if node.op == "NOT":
            value = _cast(operand, bool)
            return self._fold(_Code(lambda event: not value(event), bool), operand)
        number = _cast(operand, int)
        return self._fold(_Code(lambda event: wrap_int32(-number(event)), int), operand)

    def _binary(self, node: nodes.Binary) -> _Code:
        left = self.compile(node.left)
        right = self.compile(node.right)
        op = node.op
        if op in ("AND", "OR", "XOR"):
            code = self._logic(op, left, right)
        elif op in _EQUALITY:
            code = self._equality(op != "=", left, right)
        elif op in _ORDER:
            code = self._integers(_ORDER[op], bool, left, right)
        else:
            code = self._integers(_ARITHMETIC[op], int, left, right)
        return self._fold(code, left, right)

    @staticmethod
    def _logic(op: str, left: _Code, right: _Code) -> _Code:
        lhs, rhs = _cast(left, bool), _cast(right, bool)
        if op == "AND":  # short-circuit: a false left operand hides the right one's errors
            return _Code(lambda event: lhs(event) and rhs(event), bool)
        if op == "OR":
            return _Code(lambda event: lhs(event) or rhs(event), bool)
        return _Code(lambda event: lhs(event) is not rhs(event), bool)

    @staticmethod
    def _integers(op: Callable[[int, int], Any], result: type, left: _Code, right: _Code) -> _Code:
        """An Integer x Integer operator: both operands evaluated, then both cast."""
        if right.is_constant and right.type is int:
            lfn, constant = left.fn, right.constant

            def with_constant(event: EventView) -> Any:
                x = lfn(event)
                return op(x if type(x) is int else to_int(x), constant)

            return _Code(with_constant, result)
        if left.type is int and right.type is int:
            lhs, rhs = left.fn, right.fn
            return _Code(lambda event: op(lhs(event), rhs(event)), result)
        lfn, rfn = left.fn, right.fn

        def apply(event: EventView) -> Any:
            x = lfn(event)
            y = rfn(event)
            return op(x if type(x) is int else to_int(x), y if type(y) is int else to_int(y))

        return _Code(apply, result)

    @staticmethod
    def _equality(negate: bool, left: _Code, right: _Code) -> _Code:
        """``=`` / ``!=``: the left operand is cast to the type the right one has at run time."""
        lfn, rfn = left.fn, right.fn
        if right.is_constant:
            target, constant = right.type, right.constant
            if left.type is target or left.is_constant:
                lhs = _cast(left, target)
                if negate:
                    return _Code(lambda event: lhs(event) != constant, bool)
                return _Code(lambda event: lhs(event) == constant, bool)
            cast = CAST_TO[target]

            def equal_constant(event: EventView) -> bool:
                x = lfn(event)
                if type(x) is not target:
                    x = cast(x)
                return (x != constant) if negate else (x == constant)

            return _Code(equal_constant, bool)
        if left.is_constant:
            casts = _constant_casts(left.constant)

            def equal_to_constant(event: EventView) -> bool:
                y = rfn(event)
                x = casts[type(y)]
                if type(x) is CesqlEvaluationError:
                    raise CesqlEvaluationError(x.kind, x.message, False)
                return (x != y) if negate else (x == y)

            return _Code(equal_to_constant, bool)
        if left.type is not None and left.type is right.type:
            if negate:
                return _Code(lambda event: lfn(event) != rfn(event), bool)
            return _Code(lambda event: lfn(event) == rfn(event), bool)

        def equal(event: EventView) -> bool:
            x = lfn(event)
            y = rfn(event)
            target = type(y)
            if type(x) is not target:
                x = CAST_TO[target](x)
            return (x != y) if negate else (x == y)

        return _Code(equal, bool)

    def _like(self, node: nodes.Like) -> _Code:
        operand = self.compile(node.operand)
        matches = compile_like(node.pattern)
        fn, negated = operand.fn, node.negated
        if operand.type is not str:
            fn = _cast(operand, str)

        def like(event: EventView) -> bool:
            return matches(fn(event)) is not negated

        return self._fold(_Code(like, bool), operand)

    def _in(self, node: nodes.In) -> _Code:
        operand = self.compile(node.operand)
        items = [self.compile(item) for item in node.items]
        negated = node.negated
        value = operand.fn
        if all(item.is_constant for item in items):
            tables = {target: self._constant_set(target, items) for target in (str, int, bool)}

            def in_constants(event: EventView) -> bool:
                x = value(event)
                members, failure = tables[type(x)]
                if x in members:
                    return not negated
                if failure is not None:
                    raise CesqlEvaluationError(failure.kind, failure.message, False)
                return negated

            return self._fold(_Code(in_constants, bool), operand)
        item_fns = [item.fn for item in items]

        def in_values(event: EventView) -> bool:
            x = value(event)
            ys = [fn(event) for fn in item_fns]  # the whole set is evaluated, then compared
            target = type(x)
            cast = CAST_TO[target]
            for y in ys:
                if type(y) is not target:
                    y = cast(y)
                if y == x:
                    return not negated
            return negated

        return _Code(in_values, bool)

    @staticmethod
    def _constant_set(target: type, items: list[_Code]) -> tuple[frozenset, CesqlEvaluationError | None]:
        """The constant set values cast to ``target``, up to the first one that does not cast."""
        members = []
        for item in items:
            try:
                members.append(CAST_TO[target](item.constant))
            except CesqlEvaluationError as exc:
                return frozenset(members), exc
        return frozenset(members), None

    # -- functions -------------------------------------------------------------------
    def _call(self, node: nodes.Call) -> _Code:
        function = self.functions.resolve(node.name, len(node.args))
        if function is None:
            arities = sorted({f.arity for f in self.functions.definitions(node.name)})
            known = f" (defined with {', '.join(arities)} arguments)" if arities else ""
            message = f"no function {node.name} with {len(node.args)} arguments{known}"

            def missing(event: EventView) -> Any:
                raise CesqlEvaluationError(MISSING_FUNCTION, message, False, node)

            return _Code(missing, bool)
        args = [self.compile(arg) for arg in node.args]
        casts = [_cast(arg, function.param_type(i)) for i, arg in enumerate(args)]
        fn = function.fn
        if len(casts) == 0:
            def call(event: EventView) -> Any:
                try:
                    return fn()
                except CesqlEvaluationError as exc:
                    exc.origin = node
                    raise
        elif len(casts) == 1:
            (only,) = casts

            def call(event: EventView) -> Any:
                x = only(event)
                try:
                    return fn(x)
                except CesqlEvaluationError as exc:
                    exc.origin = node
                    raise
        else:
            def call(event: EventView) -> Any:
                values = [cast(event) for cast in casts]
                try:
                    return fn(*values)
                except CesqlEvaluationError as exc:
                    exc.origin = node
                    raise

        code = _Code(call, function.returns)
        return self._fold(code, *args) if function.builtin else code


__all__ = ["CACHE_KEY", "AttributeValues", "CompiledExpression", "Result", "attribute_values", "compile_cesql"]
