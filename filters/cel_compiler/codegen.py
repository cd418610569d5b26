"""IR -> Python source of one function per expression, exec'd once.

The generated code keeps values native (see ``runtime``), tests exact types inline for
the common cases and calls runtime helpers otherwise. CEL error values are raised
``CelError`` exceptions; ``&&``/``||`` chains evaluate each operand in its own ``try``
(zero cost in CPython 3.11 when nothing is raised) and stop at the first absorbing value:
the specification's ``&&``/``||`` are commutative, ``false`` wins over an error on either
side, so skipping the rest is exact.
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any

from filters.cel_compiler import ir
from filters.cel_compiler import runtime as rt
from filters.cel_compiler import strings_ext
from filters.cel_compiler.ir import (
    And,
    Bin,
    Call,
    Cond,
    Const,
    ErrConst,
    Field,
    Has,
    Ident,
    Index,
    ListLit,
    Macro,
    MapLit,
    Method,
    Neg,
    Node,
    Not,
    Or,
    Unsupported,
)

RETURN = "<return>"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

#: Names every generated function can use.
BASE_GLOBALS: dict[str, Any] = {
    "_CelError": rt.CelError,
    "_CelMap": rt.CelMap,
    "_ABSENT": rt.ABSENT,
    "_DT": datetime.datetime,
    "_NTS": rt.NanoTimestamp,
    "_dt_ge": datetime.datetime.__ge__,
    "_dt_lt": datetime.datetime.__lt__,
    "_activate": rt.activate,
    "_raise": rt.raise_error,
    "_eq": rt.eq,
    "_ne": rt.ne,
    "_lt": rt.lt,
    "_le": rt.le,
    "_gt": rt.gt,
    "_ge": rt.ge,
    "_in": rt.in_,
    "_add": rt.add,
    "_sub": rt.sub,
    "_mul": rt.mul,
    "_div": rt.div,
    "_mod": rt.mod,
    "_neg": rt.neg,
    "_not": rt.not_,
    "_field": rt.field,
    "_has_field": rt.has_field,
    "_index": rt.index,
    "_conv": rt.CONVERSIONS,
    "_nofn": rt.no_function,
    "_size": rt.size,
    "_starts_with": rt.starts_with,
    "_ends_with": rt.ends_with,
    "_contains": rt.contains,
    "_matches": rt.matches,
    "_type_of": rt.type_of,
    "_ts_get": rt.ts_get,
    "_and_rest": rt.and_rest,
    "_or_rest": rt.or_rest,
    "_and_result": rt.and_result,
    "_or_result": rt.or_result,
    "_cond_error": rt.cond_error,
    "_iterate": rt.iterate,
    "_bool_body": rt.bool_body,
    "_make_map": rt.make_map,
    "_qual": rt.qualified,
    "_data": rt.data,
    "_ident": rt.ident,
    "_undeclared": rt.undeclared,
    "_sdata": rt.soft_data,
    "_sfield": rt.soft_field,
    "_NO_PAYLOAD": rt.NO_PAYLOAD,
    "_UNDECLARED_DATA": rt.UNDECLARED_DATA,
    "_cond_result": rt.cond_result,
    "_local_time": rt.local_time,
    "_strx": strings_ext.METHODS,
    "_strf": strings_ext.FUNCTIONS,
    "_str_startswith": str.startswith,
    "_str_endswith": str.endswith,
}

#: timestamp methods whose result is a field of the (UTC or zoned) datetime ``t``
_TS_PARTS = {
    "getHours": "{t}.hour",
    "getMinutes": "{t}.minute",
    "getSeconds": "{t}.second",
    "getMilliseconds": "({t}.microsecond // 1000)",
    "getFullYear": "{t}.year",
    "getMonth": "({t}.month - 1)",
    "getDate": "{t}.day",
    "getDayOfMonth": "({t}.day - 1)",
    "getDayOfWeek": "({t}.isoweekday() % 7)",
}
#: ``t op k``, ``t`` a NanoTimestamp (1-999 ns past its microseconds), ``k`` a plain
#: datetime: what the microseconds decide (``t > k`` exactly when they are ``>= k``).
#: NanoTimestamp's own operators give the same answers; this is datetime's C comparison
#: instead of a Python method: ~220 against ~290 ns per filter call (Go's SDK writes
#: nanosecond times, so this is a common case)
_NANO_VS_PLAIN = {">": "_dt_ge({t}, {k})", ">=": "_dt_ge({t}, {k})", "<": "_dt_lt({t}, {k})", "<=": "_dt_lt({t}, {k})", "==": "False", "!=": "True"}
#: how many operands of a top-level &&/|| the compiled code tests for an error value inline
_INLINE_ERROR_TESTS = 3
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_COMPARE = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_ARITH = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}
#: CEL string method -> (runtime helper, Python for a str operand). ``str.startswith(o, a)``
#: through the descriptor, not ``o.startswith(a)``: the same speed in CPython, ~10% less per
#: call when ``native`` builds the code into C (no attribute lookup on ``o``), and anything
#: but a ``str`` raises ``TypeError``
_STRING_METHODS = {"startsWith": ("_starts_with", "_str_startswith({o}, {a})"), "endsWith": ("_ends_with", "_str_endswith({o}, {a})"),
                   "contains": ("_contains", "({a} in {o})")}


def _hourly_zone(zone_name: str) -> bool:
    """Whether the zone's offsets are kept per hour (``runtime.zone_hours``): an IANA
    zone. A fixed offset (``+05:45``) is added by ``runtime.local_time``'s call, which also
    gives an unknown zone's error."""
    try:
        return type(rt.zone(zone_name)) is not datetime.timedelta
    except rt.CelError:
        return False


def _typed_text(test: str, expr: str, slow: str) -> str:
    return f"(({expr}) if {test} else {slow})"


class Gen:
    def __init__(self, consts: dict[str, Any], indent: int = 1, qualified: bool = False) -> None:
        self.qualified = qualified  # resolve a.b.c as the longest declared name (see generate)
        self.lines: list[str] = []
        self.indent = indent
        self.consts = consts  # shared global namespace entries (name -> value)
        self.ntmp = 0
        self.literals: set[str] = set()
        self.soft: set[int] = set()  # ids of nodes whose consumer takes an error value
        self.produces: set[int] = set()  # ... and that may give one (see mark)
        #: (type test, Python operation, slow path) of the last typed fast path written
        #: (typed(); see _jump)
        self.typed_parts: tuple[str, str, str] | None = None

    # ---- error values (see mark)
    def mark(self, node: Node, soft: bool) -> bool:
        """Mark where an error may be a *value* instead of a raised ``CelError`` (raising
        and catching costs ~0.5-1 us, more than a whole evaluation): ``soft`` nodes are
        those whose consumer handles a ``CelError`` value (an &&/|| operand, an all/exists
        body, a ternary's condition, the result), and nodes that pass it on test their
        operand's type before any operation anyway (``x > 1.0 if type(x) is float else
        ...``), so only their slow path checks for an error value. The sources of error
        values are a missing ``data`` and a missing map key (``m.f``), the errors of
        filters on events that lack a field. Returns whether ``node`` may give one."""
        gives = False
        if isinstance(node, (And, Or)):
            for c in node.items:
                self.mark(c, True)
        elif isinstance(node, Cond):
            self.mark(node.cond, True)
            self.mark(node.then, soft)
            self.mark(node.other, soft)
            gives = soft
        elif isinstance(node, Ident):
            gives = soft and node.name == "data" and not self.qualified
        elif isinstance(node, Field):
            self.mark(node.obj, soft)
            gives = soft and not self.qualified
        elif isinstance(node, Bin) and (node.op in _COMPARE or node.op == "in") and isinstance(node.left, Const) != isinstance(node.right, Const):
            const_left = isinstance(node.left, Const)
            gives = self.mark(node.left, soft and not const_left)
            gives = self.mark(node.right, soft and const_left) or gives
        elif isinstance(node, Method) and self._soft_method(node):
            gives = self.mark(node.obj, soft)
            for a in node.args:
                self.mark(a, False)
        elif isinstance(node, Call) and node.name == "size" and len(node.args) == 1:
            gives = self.mark(node.args[0], soft)
        elif isinstance(node, Not):
            gives = self.mark(node.arg, soft)
        elif isinstance(node, Has):
            gives = self.mark(node.arg.obj, soft)
        elif isinstance(node, Macro):
            # an error value of the range is the macro's value (a missing data.tags)
            gives = self.mark(node.recv, soft)
            if node.pred is not None:
                self.mark(node.pred, False)
            self.mark(node.body, node.kind in ("all", "exists"))
        else:
            for c in ir.children(node):
                self.mark(c, False)
        if soft:
            self.soft.add(id(node))
        if gives:
            self.produces.add(id(node))
        return gives

    @staticmethod
    def _soft_method(node: Method) -> bool:
        name, args = node.name, node.args
        if name == "size":
            return not args
        if name in _STRING_METHODS:
            return len(args) == 1 and isinstance(args[0], Const) and type(args[0].value) is str
        if name == "matches":
            return len(args) == 1 and isinstance(args[0], Const) and type(args[0].value) is str and rt.regex(args[0].value) is not None
        return False

    def typed(self, test: str, expr: str, slow: str) -> str:
        """``((expr) if test else slow)``: a bool computed by Python where ``test`` (a type
        test binding the operand) says Python's operation is CEL's; recorded for
        :meth:`_jump`."""
        self.typed_parts = (test, expr, slow)
        return _typed_text(test, expr, slow)

    def slow(self, operand: Node, name: str, expr: str) -> str:
        """A slow path ``expr`` on ``name`` (``operand``'s value): an error value passes."""
        if id(operand) in self.produces:
            return f"({name} if isinstance({name}, _CelError) else {expr})"
        return expr

    # ---- helpers
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def tmp(self) -> str:
        self.ntmp += 1
        return f"_t{self.ntmp}"

    def const(self, value: Any) -> str:
        t = type(value)
        if value is None or t is bool or t is int or t is str or t is bytes or (t is float and math.isfinite(value) and float(repr(value)) == value):
            text = repr(value)
            if t is int or t is float:
                text = f"({text})" if text.startswith("-") else text
            self.literals.add(text)
            return text
        name = f"_K{len(self.consts)}"
        self.consts[name] = value
        return name

    def simple(self, expr: str) -> bool:
        """A local name or a literal: evaluating it cannot fail nor depend on order."""
        return bool(_NAME.match(expr)) or expr in self.literals

    def assign(self, target: str, expr: str) -> None:
        if target == RETURN:
            self.emit(f"return {expr}")
        else:
            self.emit(f"{target} = {expr}")

    def bind(self, expr: str) -> tuple[str, str]:
        """(expression that evaluates ``expr`` once into a name, that name)."""
        if _NAME.match(expr) and expr not in ("True", "False", "None"):
            return expr, expr
        t = self.tmp()
        return f"({t} := {expr})", t

    # ---- statements
    def gen_into(self, node: Node, target: str) -> None:
        if isinstance(node, (And, Or)):
            return self.gen_chain(node, target)
        if isinstance(node, Cond):
            return self.gen_cond(node, target)
        if isinstance(node, Has):
            return self.gen_has(node, target)
        if isinstance(node, Macro):
            return self.gen_macro(node, target)
        if isinstance(node, MapLit):
            return self.gen_map(node, target)
        self.assign(target, self.gen_expr(node))

    def gen_try(self, node: Node, target: str, handler: list[str]) -> None:
        self.emit("try:")
        self.indent += 1
        self.gen_into(node, target)
        self.indent -= 1
        self.emit("except _CelError as _e:")
        for line in handler:
            self.emit("    " + line)
        self.emit("except KeyError as _e:")  # a missing variable (see generate)
        self.emit("    _e = _undeclared(_e)")
        for line in handler:
            self.emit("    " + line)

    def gen_chain(self, node: Node, target: str) -> None:
        is_and = isinstance(node, And)
        stop, unit = ("False", "True") if is_and else ("True", "False")
        items = node.items
        temps = [self.tmp() for _ in items]
        levels = 0
        for i, (c, t) in enumerate(zip(items, temps)):
            if target == RETURN and self._jump(c, t, stop, unit):
                continue
            self.gen_try(c, t, [f"{t} = _e"])
            if target == RETURN:
                self.emit(f"if {t} is {stop}:")
                self.emit(f"    return {stop}")
                continue
            self.emit(f"if {t} is {stop}:")
            self.indent += 1
            self.assign(target, stop)
            self.indent -= 1
            self.emit("else:")
            self.indent += 1
            levels += 1
        all_unit = " and ".join(f"{t} is {unit}" for t in temps)
        self.emit(f"if {all_unit}:")
        self.indent += 1
        self.assign(target, unit)
        self.indent -= 1
        self.emit("else:")
        self.indent += 1
        if target == RETURN:  # the whole expression's error: returned, not raised
            # the first error value among the operands, tested inline (two calls less on an
            # event that lacks a field), else the function says which error or type error
            result = f"{'_and_result' if is_and else '_or_result'}({', '.join(temps)})"
            for t in reversed(temps[:_INLINE_ERROR_TESTS]):
                result = f"{t} if isinstance({t}, _CelError) else {result}"
            self.assign(target, result)
        else:
            self.assign(target, f"{'_and_rest' if is_and else '_or_rest'}({', '.join(temps)})")
        self.indent -= 1
        self.indent -= levels

    def _jump(self, node: Node, t: str, stop: str, unit: str) -> bool:
        """An &&/|| operand that compares with a constant as a conditional return:
        ``x == "lit"`` (``!=``, or a number Python compares as CEL does, see
        ``_compare_fast``), or ``x > 10.0`` behind its type test (``if type(x) is float:
        if not x > 10.0: return False``). CPython then compares in its specialised
        compare-and-jump, without the operand's value stored and tested again (~13 ns per
        operand); so is a string method's (``s.startsWith("x")``, ``!s.endsWith("x")``).
        Returns whether it did."""
        if not (isinstance(node, Bin) and node.op in _COMPARE or isinstance(node, (Method, Not))):
            return False
        if self._jump_attribute_method(node, t, stop, unit):
            return True
        mark = len(self.lines)
        self.typed_parts = None
        if isinstance(node, Bin):
            a, b = self.operands([node.left, node.right])
            fast = self._compare_fast(node, a, b)
            plain = fast == f"({a} {node.op} {b})" and node.op in ("==", "!=")
        else:  # s.startsWith("x"), !s.endsWith("x")
            fast, plain = self.gen_expr(node), False
        parts = self.typed_parts
        if len(self.lines) != mark or not (plain or (parts is not None and fast == _typed_text(*parts))):
            del self.lines[mark:]
            return False
        self.emit("try:")
        if plain:
            returns_when = node.op if stop == "True" else ("!=" if node.op == "==" else "==")
            self.emit(f"    if {a} {returns_when} {b}:")
            self.emit(f"        return {stop}")
            self.emit(f"    {t} = {unit}")  # after the return: the early exit skips it
        else:
            test, expr, slow = parts
            self.emit(f"    if {test}:")
            self.emit(f"        if {'' if stop == 'True' else 'not '}({expr}):")
            self.emit(f"            return {stop}")
            self.emit(f"        {t} = {unit}")
            self.emit("    else:")
            self._slow_operand(t, slow, stop, "        ")
        self._operand_errors(t)
        return True

    def _slow_operand(self, t: str, slow: str, stop: str, indent: str) -> None:
        """A jumping operand's slow path: its value, and the early return it may still make."""
        self.emit(f"{indent}{t} = {slow}")
        self.emit(f"{indent}if {t} is {stop}:")
        self.emit(f"{indent}    return {stop}")

    def _operand_errors(self, t: str) -> None:
        """The handlers closing an operand's ``try``: its error is its value."""
        self.emit("except _CelError as _e:")
        self.emit(f"    {t} = _e")
        self.emit("except KeyError as _e:")
        self.emit(f"    {t} = _undeclared(_e)")

    def _jump_attribute_method(self, node: Node, t: str, stop: str, unit: str) -> bool:
        """``type.startsWith("x")`` or ``!source.endsWith("/test")`` on an attribute, as
        :meth:`_jump` writes it but without the type test before the call (~13 ns per
        operand): ``str``'s method raises ``TypeError`` for any other value, and an
        attribute is never an error value, so that exception means CEL's no-overload
        error, which the slow path then gives. Returns whether it did."""
        negated = isinstance(node, Not)
        m = node.arg if negated else node
        if not (isinstance(m, Method) and m.name in ("startsWith", "endsWith") and len(m.args) == 1
                and isinstance(m.args[0], Const) and type(m.args[0].value) is str
                and isinstance(m.obj, Ident) and m.obj.name != "data" and not self.qualified):
            return False
        helper, fast = _STRING_METHODS[m.name]
        o, a = self.gen_expr(m.obj), self.const(m.args[0].value)
        slow = f"{helper}({o}, {a})"
        returns_when = "" if (stop == "True") != negated else "not "
        self.emit("try:")
        self.emit("    try:")
        self.emit(f"        if {returns_when}{fast.format(o=o, a=a)}:")
        self.emit(f"            return {stop}")
        self.emit(f"        {t} = {unit}")
        self.emit("    except TypeError:  # not a string")
        self._slow_operand(t, f"_not({slow})" if negated else slow, stop, "        ")
        self._operand_errors(t)
        return True

    def gen_cond(self, node: Cond, target: str) -> None:
        c = self.tmp()
        self.gen_into(node.cond, c)
        self.emit(f"if {c} is True:")
        self.indent += 1
        self.gen_into(node.then, target)
        self.indent -= 1
        self.emit(f"elif {c} is False:")
        self.indent += 1
        self.gen_into(node.other, target)
        self.indent -= 1
        self.emit("else:")
        self.indent += 1
        if id(node) in self.soft:  # the condition's error value, tested inline, else a type error
            self.assign(target, f"{c} if isinstance({c}, _CelError) else _cond_result({c})")
        else:
            self.emit(f"_cond_error({c})")
            if target != RETURN:
                self.emit(f"{target} = None")
        self.indent -= 1

    def gen_has(self, node: Has, target: str) -> None:
        arg = node.arg  # a Field (ir.Builder checks)
        o = self.gen_expr(arg.obj)
        bound, name = self.bind(o)
        k = self.const(arg.name)
        self.assign(target, f"({k} in {name}) if type({bound}) is _CelMap else {self.slow(arg.obj, name, f'_has_field({name}, {k})')}")

    def gen_macro(self, node: Macro, target: str) -> None:
        r = self.tmp()
        self.gen_into(node.recv, r)
        if id(node.recv) not in self.produces:
            return self._gen_macro_loop(node, target, r)
        self.emit(f"if isinstance({r}, _CelError):")  # the range's error value is the macro's
        self.indent += 1
        self.assign(target, r)
        self.indent -= 1
        self.emit("else:")
        self.indent += 1
        self._gen_macro_loop(node, target, r)
        self.indent -= 1

    def _gen_macro_loop(self, node: Macro, target: str, r: str) -> None:
        it = self.tmp()
        self.emit(f"{it} = {r} if (type({r}) is list or type({r}) is _CelMap) else _iterate({r})")
        v = node.pyname
        b = self.tmp()
        if node.kind in ("all", "exists"):
            # false (all) / true (exists) wins over errors; else the first error; a
            # non-boolean is an error too
            stop, unit = ("False", "True") if node.kind == "all" else ("True", "False")
            found, other = self.tmp(), self.tmp()
            self.emit(f"{found} = False")
            self.emit(f"{other} = None")
            self.emit(f"for {v} in {it}:")
            self.indent += 1
            self.gen_try(node.body, b, [f"{b} = _e"])
            self.emit(f"if {b} is {stop}:")
            self.emit(f"    {found} = True")
            self.emit("    break")
            self.emit(f"if {b} is not {unit} and {other} is None:")
            self.emit(f"    {other} = {b}")
            self.indent -= 1
            self.emit(f"if {found}:")
            self.indent += 1
            self.assign(target, stop)
            self.indent -= 1
            self.emit(f"elif {other} is None:")
            self.indent += 1
            self.assign(target, unit)
            self.indent -= 1
            self.emit("else:")
            self.indent += 1
            rest = "_and_rest" if node.kind == "all" else "_or_rest"
            self.assign(target, f"{rest}({other})")
            self.indent -= 1
            return
        if node.kind == "exists_one":
            count = self.tmp()
            self.emit(f"{count} = 0")
            self.emit(f"for {v} in {it}:")
            self.indent += 1
            self.gen_into(node.body, b)
            self.emit(f"if {b} is True:")
            self.emit(f"    {count} += 1")
            self.emit(f"elif {b} is not False:")
            self.emit(f"    _bool_body({b}, 'exists_one')")
            self.indent -= 1
            self.assign(target, f"{count} == 1")
            return
        out = self.tmp()
        self.emit(f"{out} = []")
        self.emit(f"for {v} in {it}:")
        self.indent += 1
        if node.kind == "filter":
            self.gen_into(node.body, b)
            self.emit(f"if {b} is True:")
            self.emit(f"    {out}.append({v})")
            self.emit(f"elif {b} is not False:")
            self.emit(f"    _bool_body({b}, 'filter')")
        else:
            if node.pred is not None:
                p = self.tmp()
                self.gen_into(node.pred, p)
                self.emit(f"if {p} is not True:")
                self.emit(f"    if {p} is False: continue")
                self.emit(f"    _bool_body({p}, 'map')")
            self.gen_into(node.body, b)
            self.emit(f"{out}.append({b})")
        self.indent -= 1
        self.assign(target, out)

    def gen_map(self, node: MapLit, target: str) -> None:
        exprs = self.operands([x for pair in node.pairs for x in pair])
        pairs = [f"({k}, {v})" for k, v in zip(exprs[0::2], exprs[1::2])]
        keys = [k for k, _ in node.pairs]
        if all(isinstance(k, Const) and type(k.value) is str for k in keys) and len({k.value for k in keys}) == len(keys):
            self.assign(target, f"_CelMap(({', '.join(pairs)}{',' if len(pairs) == 1 else ''}))")
        else:
            self.assign(target, f"_make_map({', '.join(pairs)})")

    # ---- operands
    def operands(self, nodes: list) -> list[str]:
        """Expressions for ``nodes``, evaluated left to right (statements hoisted)."""
        exprs: list[str] = []
        for n in nodes:
            mark = len(self.lines)
            e = self.gen_expr(n)
            if len(self.lines) > mark and exprs:
                new = self.lines[mark:]
                del self.lines[mark:]
                for i, pe in enumerate(exprs):
                    if not self.simple(pe):
                        t = self.tmp()
                        self.emit(f"{t} = {pe}")
                        exprs[i] = t
                self.lines.extend(new)
            exprs.append(e)
        return exprs

    # ---- expressions
    def gen_expr(self, node: Node) -> str:
        if isinstance(node, (And, Or, Cond, Has, Macro, MapLit)):
            t = self.tmp()
            self.gen_into(node, t)
            return t
        method = getattr(self, f"e_{type(node).__name__}")
        return method(node)

    def e_Const(self, node: Const) -> str:
        return self.const(node.value)

    def e_ErrConst(self, node: ErrConst) -> str:
        return f"_raise({self.const(node.message)})"

    def e_Ident(self, node: Ident) -> str:
        name = node.name
        if name in rt.TYPE_IDENTS and name != "type":  # an event's view always has 'type'
            return f"_ident(A, {name!r})"
        if name == "data" and not self.qualified:
            t = self.tmp()
            fn = "_sdata" if id(node) in self.produces else "_data"
            return f"({t} if type(({t} := A['data'])) is _CelMap else {fn}(A, {t}))"
        return f"A[{name!r}]"

    def e_Var(self, node: ir.Var) -> str:
        return node.pyname

    def e_Field(self, node: Field) -> str:
        if self.qualified:
            parts, root = [node.name], node.obj
            while isinstance(root, Field):
                parts.append(root.name)
                root = root.obj
            if isinstance(root, Ident):
                parts.append(root.name)
                return f"_qual(A, {tuple(reversed(parts))!r})"
        k = self.const(node.name)
        if id(node) in self.produces:  # a missing key is an error value
            missing = self.const(rt.NoSuchKey(node.name))
            if isinstance(node.obj, Ident) and node.obj.name == "data":  # data.f: one type test
                t = self.tmp()
                return (f"({t}.get({k}, {missing}) if type(({t} := A['data'])) is _CelMap else "
                        f"(_UNDECLARED_DATA if {t} is _NO_PAYLOAD else _sfield(_sdata(A, {t}), {k})))")
            bound, name = self.bind(self.gen_expr(node.obj))
            return f"({name}.get({k}, {missing}) if type({bound}) is _CelMap else {self.slow(node.obj, name, f'_field({name}, {k})')})"
        if isinstance(node.obj, Ident) and node.obj.name == "data":  # data.f: one type test
            t = self.tmp()
            return f"({self.key(t, k, '_field')} if type(({t} := A['data'])) is _CelMap else _field(_data(A, {t}), {k}))"
        o = self.gen_expr(node.obj)
        bound, name = self.bind(o)
        return f"({self.key(name, k, '_field')} if type({bound}) is _CelMap else _field({name}, {k}))"

    def key(self, m: str, k: str, fn: str) -> str:
        """``m[k]`` of the map ``m``, a missing key raised by ``fn(m, k)`` (``_field`` or
        ``_index``): maps are plain dicts, whose ``KeyError`` would read as a missing
        variable (see ``runtime.CelMap``)."""
        v = self.tmp()
        return f"({v} if ({v} := {m}.get({k}, _ABSENT)) is not _ABSENT else {fn}({m}, {k}))"

    def e_Index(self, node: Index) -> str:
        o, k = self.operands([node.obj, node.key])
        if isinstance(node.key, Const) and type(node.key.value) is str:
            bound, name = self.bind(o)
            return f"({self.key(name, k, '_index')} if type({bound}) is _CelMap else _index({name}, {k}))"
        return f"_index({o}, {k})"

    def e_Not(self, node: Not) -> str:
        arg = node.arg
        if isinstance(arg, Method) and arg.name in _STRING_METHODS and len(arg.args) == 1 and isinstance(arg.args[0], Const) and type(arg.args[0].value) is str:
            # !s.endsWith("x"): the string fast path's bool negated inline
            helper, fast = _STRING_METHODS[arg.name]
            o, a = self.operands([arg.obj, arg.args[0]])
            bound, obj = self.bind(o)
            slow = self.slow(arg.obj, obj, f"{helper}({obj}, {a})")
            if id(arg) in self.produces:  # an error value passes
                t = self.tmp()
                slow = f"({t} if isinstance(({t} := {slow}), _CelError) else _not({t}))"
            else:
                slow = f"_not({slow})"
            return self.typed(f"type({bound}) is str", f"not {fast.format(o=obj, a=a)}", slow)
        bound, name = self.bind(self.gen_expr(node.arg))
        return f"(({name} is False) if type({bound}) is bool else {self.slow(node.arg, name, f'_not({name})')})"

    def e_Neg(self, node: Neg) -> str:
        return f"_neg({self.gen_expr(node.arg)})"

    def e_ListLit(self, node: ListLit) -> str:
        return "[" + ", ".join(self.operands(node.items)) + "]"

    def e_Bin(self, node: Bin) -> str:
        a, b = self.operands([node.left, node.right])
        op = node.op
        if op in _COMPARE:
            fn = _COMPARE[op]
            fast = self._compare_fast(node, a, b)
            if fast:
                return fast
            for operand, expr in ((node.left, a), (node.right, b)):
                if id(operand) in self.produces:
                    bound, name = self.bind(expr)
                    call = f"{fn}({name}, {b})" if operand is node.left else f"{fn}({a}, {name})"
                    return f"({name} if isinstance({bound}, _CelError) else {call})"
            return f"{fn}({a}, {b})"
        if op == "in":
            right = node.right
            if isinstance(right, Const) and type(right.value) is list and right.value:
                kinds = {type(x) for x in right.value}
                if kinds in ({str}, {int}):
                    (kind,) = kinds
                    fs = self.const(frozenset(right.value))
                    bound, name = self.bind(a)
                    return f"(({name} in {fs}) if type({bound}) is {kind.__name__} else {self.slow(node.left, name, f'_in({name}, {b})')})"
            for operand, expr in ((node.left, a), (node.right, b)):
                if id(operand) in self.produces:
                    bound, name = self.bind(expr)
                    call = f"_in({name}, {b})" if operand is node.left else f"_in({a}, {name})"
                    return f"({name} if isinstance({bound}, _CelError) else {call})"
            return f"_in({a}, {b})"
        return f"{_ARITH[op]}({a}, {b})"

    def _compare_fast(self, node: Bin, a: str, b: str) -> str | None:
        op = node.op
        fn = _COMPARE[op]
        left, right = node.left, node.right
        if isinstance(right, Const) and not isinstance(left, Const):
            k, other, const_right, onode = right.value, a, True, left
        elif isinstance(left, Const) and not isinstance(right, Const):
            k, other, const_right, onode = left.value, b, False, right
        else:
            return None
        kt = type(k)
        if kt is datetime.datetime or kt is rt.NanoTimestamp:
            # Python compares timestamps as CEL does, nanoseconds too (rt.NanoTimestamp);
            # an event time with nanoseconds against a plain constant: see _NANO_VS_PLAIN
            bound, name = self.bind(other)
            kexpr = b if const_right else a
            expr = f"{name} {op} {kexpr}" if const_right else f"{kexpr} {op} {name}"
            slow = self.slow(onode, name, f"{fn}({name}, {kexpr})" if const_right else f"{fn}({kexpr}, {name})")
            if kt is rt.NanoTimestamp:
                return f"(({expr}) if (type({bound}) is _DT or type({name}) is _NTS) else {slow})"
            nano = _NANO_VS_PLAIN[op if const_right else _FLIP[op]].format(t=name, k=kexpr)
            return f"(({expr}) if type({bound}) is _DT else ({nano} if type({name}) is _NTS else {slow}))"
        if kt not in (str, int, float, bool):
            return None
        if op in ("==", "!=") and (kt is str or (kt in (int, float) and k not in (0, 1) and abs(k) <= 2**53)) and id(onode) not in self.produces:
            # Python's == is CEL's heterogeneous equality here: a string equals only an
            # equal string; a number other than 0 and 1 (which equal False and True in
            # Python) within 2^53 equals exactly the ints, uints and doubles CEL says
            # (NaN nothing); lists, maps, null, bytes, timestamps are never equal
            return f"({a} {op} {b})"
        if kt is bool and op not in ("==", "!="):
            return None
        types = [kt.__name__]
        if kt is int and abs(k) <= 2**53:
            # Python compares a double with an int exactly, the specification converts the
            # int to a double: the same for ints a double holds exactly (|k| <= 2^53)
            types.append("float")
        bound, name = self.bind(other)
        test = f"type({bound}) is {types[0]}"
        if len(types) == 2:
            test = f"({test} or type({name}) is {types[1]})"
        kexpr = b if const_right else a
        expr = f"{name} {op} {kexpr}" if const_right else f"{kexpr} {op} {name}"
        slow = f"{fn}({name}, {kexpr})" if const_right else f"{fn}({kexpr}, {name})"
        return self.typed(test, expr, self.slow(onode, name, slow))

    def e_Call(self, node: Call) -> str:
        name = node.name
        args = self.operands(node.args)
        n = len(args)
        if name == "size" and n == 1:
            bound, obj = self.bind(args[0])
            return f"(len({obj}) if type({bound}) is str or type({obj}) is list else {self.slow(node.args[0], obj, f'_size({obj})')})"
        if name == "type" and n == 1:
            return f"_type_of({args[0]})"
        if name in rt.TIMESTAMP_METHODS and n in (1, 2):
            return f"_ts_get({name!r}, {', '.join(args)})"
        if name in _STRING_METHODS and n == 2:
            return f"{_STRING_METHODS[name][0]}({args[0]}, {args[1]})"
        if name == "matches" and n == 2:
            return f"_matches({args[0]}, {args[1]})"
        if name in rt.CONVERSIONS and n == 1:
            return f"_conv[{name!r}]({args[0]})"
        return f"_nofn({', '.join([repr(name)] + args)})"

    def local_time(self, ts: str, zone_name: str, zone_arg: str, key: str | None = None) -> str:
        """``ts`` (a timestamp) in the time zone ``zone_name``: the zone's offset for the
        hour read inline from ``runtime.zone_hours`` (with ``runtime.local_time``'s key, or
        ``key``: a name it is bound to when ``ts`` is a datetime), else
        ``runtime.local_time`` (an hour not seen yet, a NanoTimestamp, an unknown zone's
        error). ~100 ns less than the call."""
        if not _hourly_zone(zone_name):
            return f"_local_time({ts}, {zone_arg})"
        hours, offset = self.const(rt.zone_hours(zone_name)), self.tmp()
        key = key or f"{ts}.toordinal() * 24 + {ts}.hour"
        return f"(({ts} + {offset}) if type({ts}) is _DT and ({offset} := {hours}.get({key})) is not None else _local_time({ts}, {zone_arg}))"

    def local_field(self, name: str, ts: str, zone_name: str, zone_arg: str) -> str | None:
        """The getter ``name`` (hours and coarser) of ``ts`` in the time zone ``zone_name``,
        read from ``runtime.zone_hour_fields`` for an hour whose offset is a whole number of
        hours, else by ``local_time``'s path (with the hour's key computed once); ``None``
        for a getter or zone it does not serve (minutes, fixed offsets)."""
        if name not in rt.HOUR_FIELDS or not _hourly_zone(zone_name):
            return None
        fields, found, key = self.const(rt.zone_hour_fields(zone_name)), self.tmp(), self.tmp()
        local = self.local_time(ts, zone_name, zone_arg, key)
        return (f"({found}[{rt.HOUR_FIELDS[name]}] if type({ts}) is _DT and "
                f"({found} := {fields}.get(({key} := {ts}.toordinal() * 24 + {ts}.hour))) is not None "
                f"else {_TS_PARTS[name].format(t=local)})")

    def e_Method(self, node: Method) -> str:
        name = node.name
        if isinstance(node.obj, Ident) and node.obj.name == "strings" and name in strings_ext.FUNCTIONS:
            return f"_strf[{name!r}]({', '.join(self.operands(node.args))})"  # strings.quote(...)
        o, *args = self.operands([node.obj, *node.args])
        n = len(args)
        if name == "size" and n == 0:
            bound, obj = self.bind(o)
            return f"(len({obj}) if type({bound}) is str or type({obj}) is list else {self.slow(node.obj, obj, f'_size({obj})')})"
        if name in _STRING_METHODS and n == 1:
            helper, fast = _STRING_METHODS[name]
            if isinstance(node.args[0], Const) and type(node.args[0].value) is str:
                bound, obj = self.bind(o)
                return self.typed(f"type({bound}) is str", fast.format(o=obj, a=args[0]),
                                  self.slow(node.obj, obj, f"{helper}({obj}, {args[0]})"))
            return f"{helper}({o}, {args[0]})"
        if name == "matches" and n == 1:
            arg = node.args[0]
            if isinstance(arg, Const) and type(arg.value) is str and rt.regex(arg.value) is not None:
                regex = self.const(rt.regex(arg.value))
                bound, obj = self.bind(o)
                return f"({regex}.search({obj}) if type({bound}) is str else {self.slow(node.obj, obj, f'_matches({obj}, {args[0]})')})"
            return f"_matches({o}, {args[0]})"
        if name in _TS_PARTS and (n == 0 or (n == 1 and isinstance(node.args[0], Const) and type(node.args[0].value) is str)):
            # a timestamp's field read inline (the event's time is always a UTC datetime, a
            # NanoTimestamp with nanoseconds); with a time zone, by the zone's offset kept
            # per hour (runtime.local_time)
            bound, ts = self.bind(o)
            part = None if n == 0 else self.local_field(name, ts, node.args[0].value, args[0])
            if part is None:
                t = ts if n == 0 else self.local_time(ts, node.args[0].value, args[0])
                part = _TS_PARTS[name].format(t=t)
            return f"({part} if (type({bound}) is _DT or type({ts}) is _NTS) else _ts_get({', '.join([repr(name), ts] + args)}))"
        if name in rt.TIMESTAMP_METHODS and n in (0, 1):
            return f"_ts_get({name!r}, {', '.join([o] + args)})"
        if name in strings_ext.METHODS:
            return f"_strx[{name!r}]({', '.join([o] + args)})"
        return f"_nofn({', '.join([repr(name), o] + args)})"


# ---- constant folding ----------------------------------------------------------------

_FOLDABLE = (Field, Index, Call, Method, Bin, Not, Neg, ListLit, MapLit, Cond, And, Or, Has)


def fold(node: Node) -> Node:
    """Evaluate sub-expressions without identifiers once, at compile time."""
    if isinstance(node, Field):
        node.obj = fold(node.obj)
    elif isinstance(node, Index):
        node.obj, node.key = fold(node.obj), fold(node.key)
    elif isinstance(node, Call):
        node.args = [fold(a) for a in node.args]
    elif isinstance(node, Method):
        node.obj = fold(node.obj)
        node.args = [fold(a) for a in node.args]
    elif isinstance(node, Macro):
        node.recv, node.body = fold(node.recv), fold(node.body)
        if node.pred is not None:
            node.pred = fold(node.pred)
    elif isinstance(node, (And, Or, ListLit)):
        node.items = [fold(x) for x in node.items]
    elif isinstance(node, Cond):
        node.cond, node.then, node.other = fold(node.cond), fold(node.then), fold(node.other)
    elif isinstance(node, Has):
        node.arg.obj = fold(node.arg.obj)
    elif isinstance(node, (Not, Neg)):
        node.arg = fold(node.arg)
    elif isinstance(node, Bin):
        node.left, node.right = fold(node.left), fold(node.right)
    elif isinstance(node, MapLit):
        node.pairs = [(fold(k), fold(v)) for k, v in node.pairs]
    if isinstance(node, _FOLDABLE) and all(ir.is_const(c) for c in ir.children(node)):
        try:
            fn = compile_body(node)
            value = fn(rt.Activation())
        except rt.CelError as exc:
            return ErrConst(str(exc) or "error")
        if isinstance(value, rt.CelError):  # a top-level &&/|| returns its error
            return ErrConst(str(value) or "error")
        return Const(value)
    return node


def compile_body(node: Node) -> Any:
    consts: dict[str, Any] = {}
    g = Gen(consts, indent=1)
    g.mark(node, True)
    g.gen_into(node, RETURN)
    src = "def _body(A):\n" + "\n".join(g.lines) + "\n"
    namespace = dict(BASE_GLOBALS)
    namespace.update(consts)
    exec(compile(src, "<cel-fold>", "exec"), namespace)
    return namespace["_body"]


def generate(node: Node) -> tuple[str, str, dict[str, Any]]:
    """Python source defining ``_cel_event(event)``, ``_cel_activation(A)`` and
    ``_cel_qualified(A)``; the source of ``_cel_event`` alone (what ``native`` builds into
    C); the constants they read (``_K0``, ``_K1``, ...).

    ``_cel_qualified`` resolves ``a.b.c`` as the specification asks when variable names
    may contain dots (the longest declared prefix ``a.b.c``, ``a.b`` or ``a`` wins). An
    event's variables are CloudEvents attribute names, which never contain a dot, so
    events use the plain form; the qualified one serves ``evaluate_values``.
    """
    consts: dict[str, Any] = {}
    g = Gen(consts, indent=2)
    g.mark(node, True)
    g.gen_into(node, RETURN)
    body = "\n".join(g.lines)
    q = Gen(consts, indent=2, qualified=True)
    q.mark(node, True)
    q.gen_into(node, RETURN)
    qualified = "\n".join(q.lines)
    # an event's view is a plain dict: a missing variable raises KeyError, which
    # &&/||/all/exists catch next to CelError and anything else reports as Undeclared
    undeclared = """\
    except KeyError as _e:
        raise _undeclared(_e) from None"""
    event = f"""\
def _cel_event(event):
    A = event.cel
    if A is None:
        A = _activate(event)
    try:
{body}
{undeclared}
"""
    src = f"""\
{event}

def _cel_activation(A):
    try:
{body}
{undeclared}


def _cel_qualified(A):
    try:
{qualified}
{undeclared}
"""
    return src, event, consts


__all__ = ["Unsupported", "fold", "generate", "BASE_GLOBALS"]
