"""celpy's lark parse tree -> a small expression IR, with static analysis.

The IR keeps exactly what celpy's ``Evaluator`` distinguishes. Anything this compiler does
not handle raises :class:`Unsupported` with the reason (the trigger then uses celpy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lark
from celpy import celtypes
from celpy.evaluation import Activation as CelpyActivation
from celpy.evaluation import CELEvalError, Evaluator

from filters.cel_compiler import runtime as rt


class Unsupported(Exception):
    """The expression uses something the compiler does not handle; the message says what."""


# ---- nodes ---------------------------------------------------------------------------


class Node:
    __slots__ = ()
    children: tuple = ()


@dataclass(eq=False)
class Const(Node):
    value: Any


@dataclass(eq=False)
class ErrConst(Node):
    """A sub-expression that always evaluates to a CEL error value."""

    message: str


@dataclass(eq=False)
class Ident(Node):
    name: str


@dataclass(eq=False)
class Var(Node):
    """A macro variable (a Python local in the generated code)."""

    name: str
    pyname: str


@dataclass(eq=False)
class Field(Node):
    obj: Node
    name: str


@dataclass(eq=False)
class Index(Node):
    obj: Node
    key: Node


@dataclass(eq=False)
class Call(Node):
    name: str
    args: list


@dataclass(eq=False)
class Method(Node):
    obj: Node
    name: str
    args: list


@dataclass(eq=False)
class Macro(Node):
    kind: str  # all, exists, exists_one, map, filter
    recv: Node
    var: str
    pyname: str
    body: Node


@dataclass(eq=False)
class And(Node):
    items: list


@dataclass(eq=False)
class Or(Node):
    items: list


@dataclass(eq=False)
class Cond(Node):
    cond: Node
    then: Node
    other: Node


@dataclass(eq=False)
class Not(Node):
    arg: Node


@dataclass(eq=False)
class Neg(Node):
    arg: Node


@dataclass(eq=False)
class Bin(Node):
    op: str
    left: Node
    right: Node


@dataclass(eq=False)
class ListLit(Node):
    items: list


@dataclass(eq=False)
class MapLit(Node):
    pairs: list  # [(key, value), ...]


@dataclass(eq=False)
class Has(Node):
    arg: Node


def children(node: Node) -> list:
    if isinstance(node, (Field,)):
        return [node.obj]
    if isinstance(node, Index):
        return [node.obj, node.key]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Method):
        return [node.obj, *node.args]
    if isinstance(node, Macro):
        return [node.recv, node.body]
    if isinstance(node, (And, Or, ListLit)):
        return list(node.items)
    if isinstance(node, Cond):
        return [node.cond, node.then, node.other]
    if isinstance(node, (Not, Neg, Has)):
        return [node.arg]
    if isinstance(node, Bin):
        return [node.left, node.right]
    if isinstance(node, MapLit):
        return [x for pair in node.pairs for x in pair]
    return []


# ---- building ------------------------------------------------------------------------

_RELATIONS = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
}
_ADDITIONS = {"addition_add": "+", "addition_sub": "-"}
_MULTIPLICATIONS = {"multiplication_mul": "*", "multiplication_div": "/", "multiplication_mod": "%"}
_MACROS = {"all", "exists", "exists_one", "map", "filter"}
_CELPY_EXTENSION_MACROS = {"reduce", "min"}

_LITERAL_EVALUATOR = Evaluator(ast=lark.Tree("literal", []), activation=CelpyActivation())


class Builder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, str]] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # expr : conditionalor ["?" conditionalor ":" expr]
    def build(self, tree: Any) -> Node:
        kind = tree.data
        method = getattr(self, f"b_{kind}", None)
        if method is None:
            raise Unsupported(f"the {kind} construct is not supported")
        return method(tree)

    def b_expr(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        if len(t.children) == 3:
            return Cond(*(self.build(c) for c in t.children))
        raise Unsupported("malformed conditional expression")

    def _chain(self, t, kind):
        items = []
        node = t
        while len(node.children) == 2:  # left recursive: [chain, operand]
            items.append(node.children[1])
            node = node.children[0]
        items.append(node.children[0])
        items.reverse()
        built = [self.build(c) for c in items]
        if len(built) == 1:
            return built[0]
        return And(built) if kind == "and" else Or(built)

    def b_conditionalor(self, t):
        return self._chain(t, "or")

    def b_conditionaland(self, t):
        return self._chain(t, "and")

    def _binary(self, t, ops):
        if len(t.children) == 1:
            return self.build(t.children[0])
        op_tree, right = t.children
        op = ops.get(op_tree.data)
        if op is None or len(op_tree.children) != 1:
            raise Unsupported(f"malformed {t.data}")
        return Bin(op, self.build(op_tree.children[0]), self.build(right))

    def b_relation(self, t):
        return self._binary(t, _RELATIONS)

    def b_addition(self, t):
        return self._binary(t, _ADDITIONS)

    def b_multiplication(self, t):
        return self._binary(t, _MULTIPLICATIONS)

    def b_unary(self, t):
        if len(t.children) == 1:
            return self.build(t.children[0])
        op, arg = t.children
        if op.data == "unary_not":
            return Not(self.build(arg))
        if op.data == "unary_neg":
            return Neg(self.build(arg))
        raise Unsupported("malformed unary")

    def b_member(self, t):
        return self.build(t.children[0])

    def b_member_dot(self, t):
        obj, name = t.children
        return Field(self.build(obj), str(name))

    def b_member_index(self, t):
        obj, key = t.children
        return Index(self.build(obj), self.build(key))

    def b_member_object(self, t):
        raise Unsupported("message construction (protobuf) is not supported")

    def b_member_dot_arg(self, t):
        obj = t.children[0]
        name = str(t.children[1])
        args = list(t.children[2].children) if len(t.children) > 2 else []
        if name in _CELPY_EXTENSION_MACROS:
            raise Unsupported(f"the non-standard {name}() macro is not supported")
        if name in _MACROS:
            if len(args) != 2:
                raise Unsupported(f"the {name}() macro needs exactly 2 arguments")
            recv = self.build(obj)
            var = self._macro_var(args[0])
            pyname = self.fresh("_v")
            self.scopes.append({var: pyname})
            try:
                body = self.build(args[1])
            finally:
                self.scopes.pop()
            return Macro(name, recv, var, pyname, body)
        return Method(self.build(obj), name, [self.build(a) for a in args])

    def _macro_var(self, tree) -> str:
        node = tree
        # expr -> ... -> member -> primary -> ident (parentheses allowed)
        while True:
            if node.data == "paren_expr" or (len(node.children) == 1 and isinstance(node.children[0], lark.Tree)):
                node = node.children[0]
                continue
            break
        if node.data == "ident":
            return str(node.children[0])
        raise Unsupported("a macro variable must be a simple identifier")

    def b_primary(self, t):
        return self.build(t.children[0])

    def b_paren_expr(self, t):
        return self.build(t.children[0])

    def b_dot_ident(self, t):
        raise Unsupported("leading-dot (root scope) names are not supported")

    def b_dot_ident_arg(self, t):
        raise Unsupported("leading-dot (root scope) function calls are not supported")

    def b_ident(self, t):
        name = str(t.children[0])
        if name == "google":
            raise Unsupported("protobuf package names (google...) are not supported")
        for scope in reversed(self.scopes):
            if name in scope:
                return Var(name, scope[name])
        return Ident(name)

    def b_ident_arg(self, t):
        name = str(t.children[0])
        args = list(t.children[1].children) if len(t.children) > 1 else []
        if name in ("has", "dyn"):
            if len(args) != 1:
                raise Unsupported(f"{name}() needs exactly one argument")
            arg = self.build(args[0])
            return Has(arg) if name == "has" else arg
        return Call(name, [self.build(a) for a in args])

    def b_list_lit(self, t):
        if not t.children:
            return ListLit([])
        return ListLit([self.build(c) for c in t.children[0].children])

    def b_map_lit(self, t):
        if not t.children:
            return MapLit([])
        items = [self.build(c) for c in t.children[0].children]
        return MapLit(list(zip(items[0::2], items[1::2])))

    def b_literal(self, t):
        try:
            value = _LITERAL_EVALUATOR.literal(t)
        except Exception as exc:  # celpy raises (not returns) for these: keep celpy
            raise Unsupported(f"literal {t.children!r}: {exc}") from None
        if isinstance(value, CELEvalError):
            return ErrConst(str(value.args[0]) if value.args else "invalid literal")
        return Const(rt.from_celpy(value))


def build(ast: Any) -> Node:
    return Builder().build(ast)


# ---- analysis ------------------------------------------------------------------------

_PURE_UNARY_METHODS = {"size"}


def may_raw(node: Node, memo: dict | None = None) -> bool:
    """Can evaluating ``node`` raise something that ``&&``/``||`` would not absorb?

    In celpy every operand of ``&&``, ``||`` and of strict operators is evaluated, and
    errors are values; but some failures are raised instead (an error in a ``map`` body,
    a macro over a non-iterable value, Python exceptions escaping a function). Where the
    compiled code skips an operand (short-circuit), it must still run such operands.
    """
    if memo is None:
        memo = {}
    key = id(node)
    if key in memo:
        return memo[key]
    result = _may_raw(node, memo)
    memo[key] = result
    return result


def _may_raw(node: Node, memo: dict) -> bool:
    return self_raw(node, memo.get(_INT_MIN, False)) or any(may_raw(c, memo) for c in children(node))


_INT_MIN = "int64-min-possible"
_RELATIONS_OPS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})
_ARITHMETIC_OPS = frozenset({"+", "-", "*", "/", "%"})

INT64_MIN_NOTE = """\
CPython compares a float with a big negative int by negating the int; celpy's
``IntType.__neg__`` raises ValueError for INT64_MIN, and celpy lets that escape (it only
catches TypeError in relations). So a comparison can *raise* when an int operand is
exactly INT64_MIN. Events holding INT64_MIN are evaluated by celpy (see runtime); if the
expression itself can make INT64_MIN (such a constant, int arithmetic, int()), relations
count as raw-prone for that expression."""


def int_min_possible(root: Node) -> bool:
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Const) and _holds_int_min(node.value):
            return True
        if isinstance(node, Neg) or (isinstance(node, Bin) and node.op in _ARITHMETIC_OPS):
            return True
        if isinstance(node, (Call, Method)) and node.name not in _NO_INT_RESULT:
            return True
        stack.extend(children(node))
    return False


_NO_INT_RESULT = frozenset({"size", "startsWith", "endsWith", "contains", "matches", "string", "bool", "bytes", "double", "type", "timestamp", "duration"}) | {
    "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getMonth", "getHours", "getMilliseconds", "getMinutes", "getSeconds",
}


def _holds_int_min(value: Any) -> bool:
    if type(value) is int:
        return value == rt.INT64_MIN
    if type(value) is list:
        return any(_holds_int_min(v) for v in value)
    if type(value) is rt.CelMap:
        return any(_holds_int_min(k) or _holds_int_min(v) for k, v in value.items())
    return type(value) is rt.Opaque


def self_raw(node: Node, int_min: bool = True) -> bool:
    """Can the node itself (not counting its operands) raise past ``&&``/``||``?"""
    if int_min and isinstance(node, Bin) and node.op in _RELATIONS_OPS:
        return True
    if isinstance(node, Macro):
        return True  # iteration over a non-iterable raises; map/filter bodies raise errors
    if isinstance(node, MapLit):
        # an error value inside a map literal is kept in the map by celpy: we use celpy
        return any(not isinstance(x, Const) for pair in node.pairs for x in pair)
    if isinstance(node, (Call, Method)):
        name = node.name
        if name in rt.TIMESTAMP_METHODS:
            # Duration.getX(tz) raises AssertionError; astimezone() can overflow at the
            # extremes. Attributes are converted with those cases excluded (see runtime).
            recv = node.obj if isinstance(node, Method) else (node.args[0] if node.args else None)
            if isinstance(recv, Ident):
                return False
            if isinstance(recv, Const) and type(recv.value) is celtypes.TimestampType:
                return not 2 <= recv.value.year <= 9998
            return True
        if name in ("int", "uint", "bool"):
            return True  # e.g. int(double inf) raises OverflowError in celpy
        if name in ("timestamp", "duration"):
            return True
    return False


def is_const(node: Node) -> bool:
    return isinstance(node, (Const, ErrConst))
