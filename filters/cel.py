"""Our extension dialect ``cel: "<expression>"``: CEL over attributes and payload.

The expression sees every context attribute and extension by name (``type``,
``source``, ``myextension``, ``time`` as a timestamp, ...) plus ``data``: the decoded
JSON payload (integral JSON numbers are ``int``, others ``double``), or the string or
bytes of a non-JSON payload. ``true`` is PASS; ``false``, any other value, and any
evaluation error (no such key, no matching overload, division by zero, ...) are FAIL, and
errors are counted.

The contract is the CEL specification (cel-spec ``langdef.md`` and its conformance
tests). celpy parses every expression; ``filters.cel_compiler`` compiles it once per
trigger into a Python function with the specification's results (``engine ==
"compiled"``). An expression the compiler declines (protobuf messages, celpy's
non-standard macros, ...) is evaluated by celpy instead (``engine == "celpy"``,
``fallback_reason`` says why; ``knflow plan`` shows it), with celpy's semantics. With the
job option ``--cel-native``, the workers build the compiled functions into C
(``build_native``, ``engine == "native"``). Events
are converted once per event and shared by all triggers (``EventView.cache``).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterable

import celpy
from celpy import celtypes

from filters.base import EventView, Explanation, Filter, FilterResult
from filters.errors import FilterSpecError

log = logging.getLogger(__name__)


class _NoCelError(Exception):
    """Stands for the compiler's CelError when the compiler is not importable."""


try:
    from filters.cel_compiler.runtime import CelError as _CelError
except ImportError:  # pragma: no cover - the compiler is optional
    _CelError = _NoCelError

_ENV = celpy.Environment()
_ACTIVATION_KEY = "cel.celpy"


def to_cel(value: Any) -> Any:
    """Convert one attribute or payload value to its celpy value."""
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, (bytes, bytearray)):
        return celtypes.BytesType(bytes(value))
    if isinstance(value, datetime):
        return celtypes.TimestampType(value)
    return celpy.json_to_cel(value)


def celpy_activation(event: EventView) -> dict[str, Any]:
    """The celpy activation of ``event``, built once and cached on the view."""
    activation = event.cache.get(_ACTIVATION_KEY)
    if activation is None:
        activation = {name: to_cel(value) for name, value in event.attributes.items()}
        if event.data is not None:
            activation["data"] = to_cel(event.data)
        event.cache[_ACTIVATION_KEY] = activation
    return activation


def parse_source(expression: str):
    """celpy's parse tree of ``expression`` (backquoted field names made parseable, see
    ``cel_compiler.ir.unquote_fields``); raises ``celpy.CELParseError``."""
    from filters.cel_compiler.ir import unquote_fields

    return _ENV.compile(unquote_fields(expression)[0])


def parse(expression: str, path: str):
    """Parse with celpy; a syntax error names line and column of ``expression``."""
    try:
        return parse_source(expression)
    except celpy.CELParseError as exc:
        line = getattr(exc, "line", None)
        column = getattr(exc, "column", None)
        where = f" at line {line}, column {column}" if line is not None else ""
        detail = str(exc.args[0]).strip() if exc.args else str(exc)
        raise FilterSpecError(path, f"invalid CEL expression{where}: {detail}") from None


class CelFilter(Filter):
    dialect = "cel"

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise FilterSpecError(path, f"must be a CEL expression string, got {type(value).__name__}")
        self.expression = value.strip()
        self.errors = 0
        self.last_error: str | None = None
        self.engine = "none"
        self.fallback_reason = ""
        self._requirements: list[tuple[str, str, str]] = []
        if not self.expression:
            self._evaluate = None
            return
        ast = parse(self.expression, path)
        self._evaluate, self.engine, self.fallback_reason = _compile(ast, self.expression)
        _reject_constant_failures(self._evaluate, path)
        self._requirements = _requirements(ast)

    def requirements(self) -> list[tuple[str, str, str]]:
        """Attribute constraints for the multi-trigger index (conservative; [] is correct).

        ``("exact", attr, literal)``: whenever ``filter()`` does not return FAIL,
        ``event.string(attr) == literal``; ``("prefix", attr, literal)``: it starts with
        ``literal``. Taken from top-level ``&&`` conjuncts ``attr == "literal"`` (either
        order) and ``attr.startsWith("literal")`` on context attributes and extensions.
        """
        return list(self._requirements)

    def error_count(self) -> int:
        return self.errors

    def describe(self) -> str:
        return f"cel: {self.expression}"

    def _result(self, event: EventView) -> tuple[FilterResult, str]:
        if self._evaluate is None:
            return FilterResult.NO_FILTER, "empty expression"
        try:
            value = self._evaluate(event)
        except Exception as exc:  # CEL errors (and any bug) mean FAIL, counted
            return self._failed(exc)
        return self._verdict(value)

    def _failed(self, exc: Exception) -> tuple[FilterResult, str]:
        self.errors += 1
        self.last_error = str(exc)
        return FilterResult.FAIL, f"evaluation error: {exc}"

    def _verdict(self, value: Any) -> tuple[FilterResult, str]:
        if value is True or (isinstance(value, celtypes.BoolType) and bool(value)):
            return FilterResult.PASS, "true"
        if value is False or isinstance(value, celtypes.BoolType):
            return FilterResult.FAIL, "false"
        if isinstance(value, _CelError):  # the compiled code returns an error result
            return self._failed(value)
        self.errors += 1
        self.last_error = f"expression returned {type(value).__name__}, not bool"
        return FilterResult.FAIL, self.last_error

    def fast(self):
        """``filter`` without the explanation tuple: booleans straight to PASS/FAIL."""
        evaluate = self._evaluate
        if evaluate is None:
            return self.filter
        PASS, FAIL = FilterResult.PASS, FilterResult.FAIL
        failed, verdict = self._failed, self._verdict

        def cel(event: EventView) -> FilterResult:
            try:
                value = evaluate(event)
            except Exception as exc:
                return failed(exc)[0]
            if value is True:
                return PASS
            if value is False:
                return FAIL
            return verdict(value)[0]

        return cel

    def filter(self, event: EventView) -> FilterResult:
        return self._result(event)[0]

    def explain(self, event: EventView) -> Explanation:
        result, detail = self._result(event)
        return Explanation(self.describe(), result, f"{detail}; engine={self.engine}")


def cel_filters(roots: Iterable[Filter]) -> list[CelFilter]:
    """The ``cel:`` filters in these filter trees, in manifest order."""
    out, pending = [], list(roots)[::-1]
    while pending:
        node = pending.pop()
        if isinstance(node, CelFilter):
            out.append(node)
        pending.extend(reversed(node.children()))
    return out


def build_native(filters: Iterable[Filter]) -> int:
    """Make the compiled CEL filters in these filter trees evaluate with their C build
    (``cel_compiler.native``: the same generated code, built into one extension module;
    ``engine`` becomes ``"native"``). Returns how many were built; raises
    ``NativeBuildError`` (nothing changed) when the module cannot be built. Call it before
    anything takes ``fast()`` callables from the filters: they keep the function they saw."""
    from filters.cel_compiler import native

    nodes = [node for node in cel_filters(filters) if node.engine == "compiled"]
    built = native.build([node._evaluate for node in nodes])
    for node, evaluate in zip(nodes, built):
        node._evaluate, node.engine = evaluate, "native"
    return len(nodes)


def _reject_constant_failures(evaluate: Any, path: str) -> None:
    """Refuse a filter that is wrong whatever the event, when the manifest loads (as a CEL
    type checker would) rather than by failing every event: a part of it that is an error
    for every event (``size(1)``, ``int('x')``, ``1.e3`` - field ``e3`` of the int ``1`` in
    CEL's grammar), or a constant that is not a bool. The compiler's constant folding
    finds them; a constant ``true``/``false`` is allowed."""
    errors = getattr(evaluate, "constant_errors", ())
    if errors:
        raise FilterSpecError(path, f"a part of it is an error for every event ({errors[0]}): the filter "
                                    "fails wherever that part is evaluated")
    if not hasattr(evaluate, "constant"):  # celpy's evaluation
        return
    from filters.cel_compiler import NOT_CONSTANT
    from filters.cel_compiler.runtime import kind

    constant = evaluate.constant
    if constant is not NOT_CONSTANT and not isinstance(constant, bool):
        value = "null" if constant is None else f"{kind(constant)} {constant!r}"
        raise FilterSpecError(path, f"evaluates to {value} for every event, not to a bool: the trigger could never match")


def _requirements(ast) -> list[tuple[str, str, str]]:
    try:
        from filters.cel_compiler import requirements
    except ImportError:
        return []
    try:
        return requirements(ast)
    except Exception:  # analysis must never break a filter: no requirements is correct
        log.exception("requirements() failed for a CEL expression")
        return []


def _compile(ast, expression: str):
    """Return (evaluate(event) -> value, engine name, why not compiled)."""
    reason = ""
    try:
        from filters import cel_compiler  # the fast path; optional
    except ImportError:
        cel_compiler = None
        reason = "compiler not available"
    if cel_compiler is not None:
        try:
            return cel_compiler.compile_expression(ast, expression), "compiled", ""
        except cel_compiler.Unsupported as exc:
            reason = str(exc)
        except Exception as exc:  # a compiler bug must not reject a valid trigger
            log.exception("CEL compiler failed on %r; using celpy", expression)
            reason = f"compiler error: {exc!r}"
    program = _ENV.program(ast)

    def evaluate(event: EventView) -> Any:
        result = program.evaluate(celpy_activation(event))
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result

    return evaluate, "celpy", reason
