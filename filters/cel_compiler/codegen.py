"""IR -> Python source of one function per expression, exec'd once.

The generated code keeps values native (see ``runtime``), tests exact types inline for
the common cases and calls runtime helpers otherwise. CEL error values are raised
``CelError`` exceptions; ``&&``/``||`` chains evaluate each operand in its own ``try``
(zero cost in CPython 3.11 when nothing is raised) and combine the results like celpy's
left fold of ``logical_and``/``logical_or``, stopping at the first absorbing value unless
a later operand could raise something celpy would not absorb (see ``ir.may_raw``), in
which case that operand is still "probed".
"""
from __future__ import annotations

import datetime
import math
import re
from typing import Any

from celpy.evaluation import base_functions

from filters.cel_compiler import ir
from filters.cel_compiler import runtime as rt
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
    "_Propagating": rt.Propagating,
    "_Fallback": rt.Fallback,
    "_CelMap": rt.CelMap,
    "_BoolType": rt.BoolType,
    "_TimestampType": rt.TimestampType,
    "_Activation": rt.Activation,
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
    "_call": rt.call,
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
    "_cond_error": rt.cond_error,
    "_iterate": rt.iterate,
    "_make_map": rt.make_map,
    "_check": rt.check_error,
}

_COMPARE = {"==": "_eq", "!=": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_ARITH = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}
_STRING_METHODS = {"startsWith": ("_starts_with", "{o}.startswith({a})"), "endsWith": ("_ends_with", "{o}.endswith({a})"), "contains": ("_contains", "({a} in {o})")}


class Gen:
    def __init__(self, consts: dict[str, Any], indent: int = 1, int_min: bool = True) -> None:
        self.lines: list[str] = []
        self.indent = indent
        self.consts = consts  # shared global namespace entries (name -> value)
        self.ntmp = 0
        self.memo: dict = {ir._INT_MIN: int_min}
        self.literals: set[str] = set()

    # ---- helpers
    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def tmp(self) -> str:
        self.ntmp += 1
        return f"_t{self.ntmp}"

    def may_raw(self, node: Node) -> bool:
        return ir.may_raw(node, self.memo)

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

    def gen_chain(self, node: Node, target: str) -> None:
        is_and = isinstance(node, And)
        stop, unit = ("False", "True") if is_and else ("True", "False")
        items = node.items
        temps = [self.tmp() for _ in items]
        raw = [self.may_raw(c) for c in items]
        levels = 0
        for i, (c, t) in enumerate(zip(items, temps)):
            self.gen_try(c, t, [f"{t} = _e"])
            if not is_and and i < len(items) - 1:
                # celpy: bool(3) || true is BoolType(3 or 1), not true
                self.emit(f"if type({t}) is _BoolType:")
                self.emit("    raise _Fallback('boolean with a numeric value')")
            rest = [items[j] for j in range(i + 1, len(items)) if raw[j]]
            if target == RETURN and not rest:
                self.emit(f"if {t} is {stop}:")
                self.emit(f"    return {stop}")
                continue
            self.emit(f"if {t} is {stop}:")
            self.indent += 1
            for r in rest:
                self.gen_probe(r)
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
        self.assign(target, f"{'_and_rest' if is_and else '_or_rest'}({', '.join(temps)})")
        self.indent -= 1
        self.indent -= levels

    def gen_cond(self, node: Cond, target: str) -> None:
        raw_a, raw_b = self.may_raw(node.then), self.may_raw(node.other)
        c = self.tmp()
        if raw_a or raw_b:
            self.gen_try(node.cond, c, [f"{c} = _e"])
        else:
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
        if raw_a or raw_b:
            # celpy evaluates the branch picked by Python truthiness, then fails
            self.emit(f"if {c}:")
            self.indent += 1
            self.gen_probe_full(node.then) if raw_a else self.emit("pass")
            self.indent -= 1
            self.emit("else:")
            self.indent += 1
            self.gen_probe_full(node.other) if raw_b else self.emit("pass")
            self.indent -= 1
        self.emit(f"_cond_error({c})")
        if target != RETURN:
            self.emit(f"{target} = None")
        self.indent -= 1

    def gen_has(self, node: Has, target: str) -> None:
        arg = node.arg
        self.emit("try:")
        self.indent += 1
        if isinstance(arg, ir.Field):
            o = self.gen_expr(arg.obj)
            bound, name = self.bind(o)
            k = self.const(arg.name)
            self.assign(target, f"({k} in {name}) if type({bound}) is _CelMap else _has_field({name}, {k})")
        else:
            t = self.tmp()
            self.gen_into(arg, t)
            self.assign(target, "True")
        self.indent -= 1
        self.emit("except _CelError:")
        self.indent += 1
        self.assign(target, "False")
        self.indent -= 1

    def gen_macro(self, node: Macro, target: str) -> None:
        r = self.tmp()
        self.gen_into(node.recv, r)  # an error receiver is the result (celpy returns it)
        it = self.tmp()
        self.emit(f"{it} = {r} if (type({r}) is list or type({r}) is _CelMap) else _iterate({r})")
        v = node.pyname
        b = self.tmp()
        if node.kind in ("all", "exists"):
            stop, unit = ("False", "True") if node.kind == "all" else ("True", "False")
            found, n, other = self.tmp(), self.tmp(), self.tmp()
            self.emit(f"{found} = False")
            self.emit(f"{n} = 0")
            self.emit(f"{other} = None")
            self.emit(f"for {v} in {it}:")
            self.indent += 1
            self.gen_try(node.body, b, [f"{b} = _e"])
            self.emit("except _Propagating as _e:")
            self.emit(f"    {b} = _e.error")
            self.emit(f"if {b} is {stop}:")
            self.emit(f"    {found} = True")
            if not self.may_raw(node.body):
                self.emit("    break")
            self.emit(f"elif {b} is not {unit}:")
            if node.kind == "exists":
                self.emit(f"    if type({b}) is _BoolType: raise _Fallback('boolean with a numeric value')")
            self.emit(f"    {n} += 1")
            self.emit(f"    {other} = {b}")
            self.indent -= 1
            self.emit(f"if {found}:")
            self.indent += 1
            self.assign(target, stop)
            self.indent -= 1
            self.emit(f"elif {n} == 0:")
            self.indent += 1
            self.assign(target, unit)
            self.indent -= 1
            self.emit("else:")
            self.indent += 1
            rest = "_and_rest" if node.kind == "all" else "_or_rest"
            self.assign(target, f"{rest}({other}) if {n} == 1 else {rest}({other}, {other})")
            self.indent -= 1
            return
        propagate = ["raise _Propagating(_e) from None"]
        if node.kind == "exists_one":
            count = self.tmp()
            self.emit(f"{count} = 0")
            self.emit(f"for {v} in {it}:")
            self.indent += 1
            self.gen_try(node.body, b, propagate)
            self.emit(f"if {b}:")
            self.emit(f"    {count} += 1")
            self.indent -= 1
            self.assign(target, f"{count} == 1")
            return
        out = self.tmp()
        self.emit(f"{out} = []")
        self.emit(f"for {v} in {it}:")
        self.indent += 1
        self.gen_try(node.body, b, propagate)
        if node.kind == "filter":
            self.emit(f"if {b}:")
            self.emit(f"    {out}.append({v})")
        else:
            self.emit(f"{out}.append({b})")
        self.indent -= 1
        self.assign(target, out)

    def gen_map(self, node: MapLit, target: str) -> None:
        # celpy keeps error values inside map literals: let celpy handle those events
        exprs = []
        for x in (x for pair in node.pairs for x in pair):
            if isinstance(x, Const):
                exprs.append(self.const(x.value))
            else:
                t = self.tmp()
                self.emit("try:")
                self.indent += 1
                self.gen_into(x, t)
                self.indent -= 1
                self.emit("except _CelError:")
                self.emit("    raise _Fallback('error value in a map literal') from None")
                exprs.append(t)
        pairs = [f"({k}, {v})" for k, v in zip(exprs[0::2], exprs[1::2])]
        keys = [k for k, _ in node.pairs]
        if all(isinstance(k, Const) and type(k.value) is str for k in keys) and len({k.value for k in keys}) == len(keys):
            self.assign(target, f"_CelMap(({', '.join(pairs)}{',' if len(pairs) == 1 else ''}))")
        else:
            self.assign(target, f"_make_map({', '.join(pairs)})")

    def gen_probe_full(self, node: Node) -> None:
        t = self.tmp()
        self.gen_try(node, t, ["pass"])

    def gen_probe(self, node: Node) -> None:
        """Run what of ``node`` could raise something celpy would not absorb."""
        if not self.may_raw(node):
            return
        if isinstance(node, Macro) and node.kind in ("all", "exists") and not self.may_raw(node.body):
            r = self.tmp()
            self.gen_try(node.recv, r, ["pass"])
            self.emit("else:")
            self.emit(f"    if not (type({r}) is list or type({r}) is _CelMap): _iterate({r})")
            return
        if isinstance(node, Cond) or ir.self_raw(node, self.memo[ir._INT_MIN]):
            return self.gen_probe_full(node)
        for child in ir.children(node):
            self.gen_probe(child)

    # ---- operands
    def operands(self, nodes: list) -> list[str]:
        if any(self.may_raw(n) for n in nodes[1:]):
            temps = []
            for n in nodes:
                t = self.tmp()
                self.gen_try(n, t, [f"{t} = _e"])
                temps.append(t)
            self.emit(f"_check({', '.join(temps)})")
            return temps
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
        return f"A[{node.name!r}]"

    def e_Var(self, node: ir.Var) -> str:
        return node.pyname

    def e_Field(self, node: Field) -> str:
        o = self.gen_expr(node.obj)
        bound, name = self.bind(o)
        k = self.const(node.name)
        return f"({name}[{k}] if type({bound}) is _CelMap else _field({name}, {k}))"

    def e_Index(self, node: Index) -> str:
        o, k = self.operands([node.obj, node.key])
        if isinstance(node.key, Const) and type(node.key.value) is str:
            bound, name = self.bind(o)
            return f"({name}[{k}] if type({bound}) is _CelMap else _index({name}, {k}))"
        return f"_index({o}, {k})"

    def e_Not(self, node: Not) -> str:
        bound, name = self.bind(self.gen_expr(node.arg))
        return f"(({name} is False) if type({bound}) is bool else _not({name}))"

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
            return fast or f"{fn}({a}, {b})"
        if op == "in":
            right = node.right
            if isinstance(right, Const) and type(right.value) is list and right.value:
                kinds = {type(x) for x in right.value}
                if kinds in ({str}, {int}):
                    (kind,) = kinds
                    fs = self.const(frozenset(right.value))
                    bound, name = self.bind(a)
                    return f"(({name} in {fs}) if type({bound}) is {kind.__name__} else _in({name}, {b}))"
            return f"_in({a}, {b})"
        return f"{_ARITH[op]}({a}, {b})"

    def _compare_fast(self, node: Bin, a: str, b: str) -> str | None:
        op = node.op
        fn = _COMPARE[op]
        left, right = node.left, node.right
        if isinstance(right, Const) and not isinstance(left, Const):
            k, other, const_right = right.value, a, True
        elif isinstance(left, Const) and not isinstance(right, Const):
            k, other, const_right = left.value, b, False
        else:
            return None
        kt = type(k)
        if kt is rt.TimestampType:
            # compare instants against the same instant in datetime.timezone.utc: when the
            # event's time is UTC too (the usual case) no tzinfo code runs
            utc = datetime.datetime(k.year, k.month, k.day, k.hour, k.minute, k.second, k.microsecond, k.tzinfo, fold=k.fold).astimezone(datetime.timezone.utc)
            kutc = self.const(utc)
            bound, name = self.bind(other)
            expr = f"{name} {op} {kutc}" if const_right else f"{kutc} {op} {name}"
            kexpr = b if const_right else a
            slow = f"{fn}({name}, {kexpr})" if const_right else f"{fn}({kexpr}, {name})"
            return f"(({expr}) if type({bound}) is _TimestampType else {slow})"
        if kt not in (str, int, float, bool):
            return None
        if op in ("==", "!="):
            types = [kt]
        elif kt is str:
            types = [str]
        elif kt is bool:
            return None
        elif kt is int:
            # float < int works in celpy (float.__lt__), int < float is an error; see
            # runtime.lt about INT64_MIN
            types = ["int", "float"] if const_right and k != rt.INT64_MIN else ["int"]
        else:  # float constant
            types = ["float"]
        types = [t if isinstance(t, str) else t.__name__ for t in types]
        bound, name = self.bind(other)
        test = f"type({bound}) is {types[0]}"
        if len(types) == 2:
            test = f"({test} or type({name}) is {types[1]})"
        kexpr = b if const_right else a
        pyop = op
        expr = f"{name} {pyop} {kexpr}" if const_right else f"{kexpr} {pyop} {name}"
        slow = f"{fn}({name}, {kexpr})" if const_right else f"{fn}({kexpr}, {name})"
        return f"(({expr}) if {test} else {slow})"

    def e_Call(self, node: Call) -> str:
        name = node.name
        args = self.operands(node.args)
        n = len(args)
        if name == "size" and n == 1:
            return f"_size({args[0]})"
        if name == "type" and n == 1:
            return f"_type_of({args[0]})"
        if name in rt.TIMESTAMP_METHODS and n in (1, 2):
            return f"_ts_get({name!r}, {', '.join(args)})"
        if name in _STRING_METHODS and n == 2:
            return f"{_STRING_METHODS[name][0]}({args[0]}, {args[1]})"
        if name == "matches" and n == 2:
            return f"_matches({args[0]}, {args[1]})"
        fn = base_functions.get(name)
        if fn is None:
            return f"_nofn({', '.join([repr(name)] + args)})"
        return f"_call({', '.join([self.const(fn)] + args)})"

    def e_Method(self, node: Method) -> str:
        name = node.name
        o, *args = self.operands([node.obj, *node.args])
        n = len(args)
        if name == "size" and n == 0:
            return f"_size({o})"
        if name in _STRING_METHODS and n == 1:
            helper, fast = _STRING_METHODS[name]
            if isinstance(node.args[0], Const) and type(node.args[0].value) is str:
                bound, obj = self.bind(o)
                return f"({fast.format(o=obj, a=args[0])} if type({bound}) is str else {helper}({obj}, {args[0]}))"
            return f"{helper}({o}, {args[0]})"
        if name == "matches" and n == 1:
            arg = node.args[0]
            if isinstance(arg, Const) and type(arg.value) is str and rt.regex(arg.value) is not None:
                regex = self.const(rt.regex(arg.value))
                bound, obj = self.bind(o)
                return f"({regex}.search({obj}) if type({bound}) is str else _matches({obj}, {args[0]}))"
            return f"_matches({o}, {args[0]})"
        if name in rt.TIMESTAMP_METHODS and n in (0, 1):
            return f"_ts_get({name!r}, {', '.join([o] + args)})"
        fn = base_functions.get(name)
        if fn is None:
            return f"_nofn({', '.join([repr(name), o] + args)})"
        return f"_call({', '.join([self.const(fn), o] + args)})"


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
    elif isinstance(node, (And, Or, ListLit)):
        node.items = [fold(x) for x in node.items]
    elif isinstance(node, Cond):
        node.cond, node.then, node.other = fold(node.cond), fold(node.then), fold(node.other)
    elif isinstance(node, (Not, Neg, Has)):
        node.arg = fold(node.arg)
    elif isinstance(node, Bin):
        node.left, node.right = fold(node.left), fold(node.right)
    elif isinstance(node, MapLit):
        node.pairs = [(fold(k), fold(v)) for k, v in node.pairs]
    if isinstance(node, _FOLDABLE) and all(ir.is_const(c) for c in ir.children(node)):
        if isinstance(node, MapLit) and any(isinstance(c, ErrConst) for c in ir.children(node)):
            return node  # celpy keeps the error inside the map
        try:
            fn = compile_body(node)
            value = fn(rt.Activation())
        except rt.CelError as exc:
            return ErrConst(str(exc.args[0]) if exc.args else "error")
        except Exception:  # raised by celpy (not an error value): keep it at run time
            return node
        return Const(value)
    return node


def compile_body(node: Node) -> Any:
    consts: dict[str, Any] = {}
    g = Gen(consts, indent=1, int_min=ir.int_min_possible(node))
    g.gen_into(node, RETURN)
    src = "def _body(A):\n" + "\n".join(g.lines) + "\n"
    namespace = dict(BASE_GLOBALS)
    namespace.update(consts)
    exec(compile(src, "<cel-fold>", "exec"), namespace)
    return namespace["_body"]


def generate(node: Node) -> tuple[str, dict[str, Any]]:
    """Python source defining ``_cel_event(event)`` and ``_cel_activation(A)``."""
    consts: dict[str, Any] = {}
    g = Gen(consts, indent=2, int_min=ir.int_min_possible(node))
    g.gen_into(node, RETURN)
    body = "\n".join(g.lines)
    src = f"""\
def _cel_event(event):
    try:
        A = event.cache[{rt.CACHE_KEY!r}]
    except KeyError:
        A = _activate(event)
    if A.__class__ is not _Activation:
        return _celpy_event(event)
    try:
{body}
    except _Fallback:
        return _celpy_event(event)
    except _Propagating as _p:
        raise _p.error from None


def _cel_activation(A):
    try:
{body}
    except _Propagating as _p:
        raise _p.error from None
"""
    return src, consts


__all__ = ["Unsupported", "fold", "generate", "BASE_GLOBALS"]
