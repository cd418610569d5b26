"""CloudEvents SQL (CESQL v1) for trigger filters: ``cesql: "<expression>"``.

Modules, in pipeline order: ``lexer`` -> ``parser`` (syntax tree in ``nodes``) ->
``compiler`` (closures; casts in ``types``, LIKE in ``like``, functions in
``functions``) -> ``dialect`` (the ``CesqlFilter`` trigger filter).

Public API:

- ``CesqlFilter(value, path)``: the filter dialect (PASS only on ``true``).
- ``compile_cesql(expression, functions=None) -> CompiledExpression``;
  ``.evaluate(event) -> Result(value, error)`` gives the spec's value-plus-error pair.
- ``register_function(name, params, fn, returns=..., variadic=..., registry=None)`` and
  ``FunctionRegistry`` for user-defined functions.
- ``CesqlError`` (base; ``kind`` is the spec's error kind), ``CesqlParseError`` (``line``,
  ``column``), ``CesqlEvaluationError`` (``value``), ``CesqlFunctionError``.
"""
from filters.cesql.compiler import CACHE_KEY, CompiledExpression, Result, compile_cesql
from filters.cesql.dialect import CesqlFilter
from filters.cesql.errors import KINDS, CesqlError, CesqlEvaluationError, CesqlFunctionError, CesqlParseError
from filters.cesql.functions import ANY, BUILTINS, DEFAULT_FUNCTIONS, Function, FunctionRegistry, register_function

__all__ = [
    "ANY",
    "BUILTINS",
    "CACHE_KEY",
    "CesqlError",
    "CesqlEvaluationError",
    "CesqlFilter",
    "CesqlFunctionError",
    "CesqlParseError",
    "CompiledExpression",
    "DEFAULT_FUNCTIONS",
    "Function",
    "FunctionRegistry",
    "KINDS",
    "Result",
    "compile_cesql",
    "register_function",
]
