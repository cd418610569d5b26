"""A CEL compiler for trigger filters: celpy's parse tree -> one Python function.

``compile_expression(ast, expression)`` returns ``evaluate(event) -> value`` with the CEL
specification's results (see ``runtime``; checked against the cel-spec conformance files
and, by a differential test, against cel-cpp through ``cel-expr-python``):

* ``True``/``False`` for CEL booleans, other native values otherwise;
* for a CEL error, a :class:`CelError` (its message in the specification's terms),
  raised, or returned when it is the result of a top-level ``&&``/``||`` (raising costs
  about 0.5 us; callers test ``isinstance(result, CelError)``).

Events are converted once (``event.cel``) and shared by all compiled
triggers. ``evaluate.constant_errors`` lists the messages of the sub-expressions that
are an error whatever the event (constant folding found them: ``size(1)``, ``int('x')``,
``1.e3``, which CEL reads as field ``e3`` of the int ``1``), and ``evaluate.constant`` is
the value of an expression that does not depend on the event (else ``NOT_CONSTANT``):
``CelFilter`` rejects such filters when the manifest loads. What the compiler does not handle raises :class:`Unsupported` at compile time
(``CelFilter`` then evaluates that expression with celpy and says so).
"""
from __future__ import annotations

from typing import Any, Callable

from filters.cel_compiler import codegen, ir
from filters.cel_compiler import runtime as rt
from filters.cel_compiler.ir import Unsupported
from filters.cel_compiler.requirements import requirements
from filters.cel_compiler.runtime import CelError

__all__ = ["NOT_CONSTANT", "CelError", "Unsupported", "compile_expression", "requirements"]


def compile_expression(ast: Any, expression: str = "", *, fold: bool = True) -> Callable[[Any], Any]:
    """Compile celpy's parse tree of ``expression`` into ``evaluate(event)``.

    ``evaluate.evaluate_values(values)`` evaluates on a mapping of names to CEL values (as
    ``runtime`` represents them; tests use it). ``fold=False`` keeps constant
    sub-expressions for run time (tests use it to exercise the run-time paths on
    constant-only conformance expressions).
    """
    try:
        node = ir.build(ast, ir.unquote_fields(expression)[1])
        if fold:
            node = codegen.fold(node)
        src, event_src, consts = codegen.generate(node)
        namespace = dict(codegen.BASE_GLOBALS)
        namespace.update(consts)
        exec(compile(src, "<cel " + ascii(expression[:60]) + ">", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise Unsupported(f"expression too deeply nested for the compiler ({type(exc).__name__})") from None
    evaluate = namespace["_cel_event"]
    body = namespace["_cel_activation"]
    qualified = namespace["_cel_qualified"]

    def evaluate_values(values: Any) -> Any:
        act = rt.Activation(values)
        if any("." in name for name in act):
            return qualified(act)
        return body(act)

    evaluate.source = src
    evaluate.event_source = event_src  # ``_cel_event`` alone, and its constants: for ``native``
    evaluate.consts = consts
    evaluate.expression = expression
    evaluate.evaluate_values = evaluate_values
    evaluate.constant_errors = tuple(n.message for n in ir.walk(node) if isinstance(n, ir.ErrConst))
    evaluate.constant = node.value if isinstance(node, ir.Const) else NOT_CONSTANT
    return evaluate


#: ``evaluate.constant`` of an expression whose value depends on the event.
NOT_CONSTANT = object()
