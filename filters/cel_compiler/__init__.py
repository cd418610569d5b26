"""A CEL compiler for trigger filters: celpy's parse tree -> one Python function.

``compile_expression(ast, expression)`` returns ``evaluate(event) -> value`` with exactly
celpy's results (celpy is the reference, quirks included; see ``runtime``):

* ``True``/``False`` for CEL booleans, other native values otherwise;
* a raised exception for a CEL error (``CelError``) or for anything celpy itself raises.

Events are converted once (``event.cache["cel.compiled"]``) and shared by all compiled
triggers. What the compiler does not handle raises :class:`Unsupported` at compile time;
rare run-time situations (a macro over a non-iterable value, an error value kept inside
a map literal, events with exotic attribute values) are evaluated by celpy.
"""
from __future__ import annotations

from typing import Any, Callable

from filters.cel_compiler import codegen, ir
from filters.cel_compiler import runtime as rt
from filters.cel_compiler.ir import Unsupported
from filters.cel_compiler.requirements import requirements
from filters.cel_compiler.runtime import CelError

__all__ = ["CelError", "Unsupported", "compile_expression", "requirements"]


class _CelpyProgram:
    """The celpy fallback of one expression, built on first use."""

    def __init__(self, ast: Any) -> None:
        self.ast = ast
        self.program = None
        self.stats = {"celpy": 0}  # how often celpy evaluated this expression

    def evaluate_values(self, values: Any) -> Any:
        import celpy

        from filters.cel import _ENV

        if self.program is None:
            self.program = _ENV.program(self.ast)
        self.stats["celpy"] += 1
        result = self.program.evaluate(values)
        if isinstance(result, celpy.CELEvalError):
            raise result
        return result

    def evaluate_event(self, event: Any) -> Any:
        from filters.cel import celpy_activation

        result = self.evaluate_values(celpy_activation(event))
        try:
            return rt.from_celpy(result)
        except rt.CelError:
            return rt.Opaque(result)


def compile_expression(ast: Any, expression: str = "", *, fold: bool = True) -> Callable[[Any], Any]:
    """Compile celpy's parse tree of ``expression`` into ``evaluate(event)``.

    ``fold=False`` keeps constant sub-expressions for run time (tests use it to exercise
    the run-time paths on constant-only conformance expressions).
    """
    try:
        node = ir.build(ast)
        if fold:
            node = codegen.fold(node)
        src, consts = codegen.generate(node)
        namespace = dict(codegen.BASE_GLOBALS)
        namespace.update(consts)
        fallback = _CelpyProgram(ast)
        namespace["_celpy_event"] = fallback.evaluate_event
        exec(compile(src, "<cel " + ascii(expression[:60]) + ">", "exec"), namespace)
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise Unsupported(f"expression too deeply nested for the compiler ({type(exc).__name__})") from None
    evaluate = namespace["_cel_event"]
    body = namespace["_cel_activation"]

    def evaluate_celpy_values(values: Any) -> Any:
        """Evaluate on a celpy activation (name -> celpy value); result as a celpy value."""
        act = rt.activation_from_celpy(values)
        if act is rt.CELPY_ONLY:
            return fallback.evaluate_values(values)
        try:
            return rt.to_celpy(body(act))
        except rt.Fallback:
            return fallback.evaluate_values(values)

    evaluate.source = src
    evaluate.expression = expression
    evaluate.evaluate_celpy_values = evaluate_celpy_values
    evaluate.stats = fallback.stats
    return evaluate
