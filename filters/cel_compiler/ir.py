"""celpy's lark parse tree -> a small expression IR.

celpy stays the parser only; literals are decoded here by the specification's rules
(``literals``). Anything this compiler does not handle raises :class:`Unsupported` with
the reason (the trigger then uses celpy).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import lark

from filters.cel_compiler.literals import LiteralError, literal


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
    pred: Any = None  # map(x, pred, body): the filter of the three-argument form


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
        return [node.recv, node.body] + ([node.pred] if node.pred is not None else [])
    if isinstance(node, (And, Or, ListLit)):
        return list(node.items)
    if isinstance(node, Cond):
        return [node.cond, node.then, node.other]
    if isinstance(node, Has):
        return [node.arg.obj]  # has(a.f): the field is tested, not evaluated
    if isinstance(node, (Not, Neg)):
        return [node.arg]
    if isinstance(node, Bin):
        return [node.left, node.right]
    if isinstance(node, MapLit):
        return [x for pair in node.pairs for x in pair]
    return []


def walk(node: Node):
    """``node`` and every node below it, parents first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


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


class Builder:
    def __init__(self, quoted: dict[str, str] | None = None) -> None:
        self.scopes: list[dict[str, str]] = []
        self.counter = 0
        self.quoted = quoted or {}  # placeholder identifier -> backquoted field name

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
        """``!x``, ``-x``. A run of one operator written together (``!!x``, ``- -x``; not
        ``!(!x)``) counts as the reference parsers (cel-go, cel-cpp) count it: an even run
        is ``x`` itself, whatever its type (``!!"a"`` is ``"a"``), an odd run one operator."""
        if len(t.children) == 1:
            return self.build(t.children[0])
        op, arg = t.children
        if op.data not in ("unary_not", "unary_neg"):
            raise Unsupported("malformed unary")
        run = 1
        while arg.data == "unary" and len(arg.children) == 2 and arg.children[0].data == op.data:
            run += 1
            arg = arg.children[1]
        inner = self.build(arg)
        if run % 2 == 0:
            return inner
        return Not(inner) if op.data == "unary_not" else Neg(inner)

    def b_member(self, t):
        return self.build(t.children[0])

    def b_member_dot(self, t):
        obj, name = t.children
        name = str(name)
        return Field(self.build(obj), self.quoted.get(name, name))

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
            if len(args) != 2 and not (name == "map" and len(args) == 3):
                raise Unsupported(f"the {name}() macro needs exactly 2 arguments")
            recv = self.build(obj)
            var = self._macro_var(args[0])
            pyname = self.fresh("_v")
            self.scopes.append({var: pyname})
            try:
                body = self.build(args[-1])
                pred = self.build(args[1]) if len(args) == 3 else None
            finally:
                self.scopes.pop()
            return Macro(name, recv, var, pyname, body, pred)
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
            if name == "has" and not isinstance(arg, Field):
                raise Unsupported("has() needs a field selection (has(a.b))")
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
        token = t.children[0]
        try:
            return Const(literal(token.type, str(token)))
        except LiteralError as exc:
            return ErrConst(str(exc))


def build(ast: Any, quoted: dict[str, str] | None = None) -> Node:
    return Builder(quoted).build(ast)


_PLACEHOLDER = "__knflow_quoted_{}__"
#: an integer literal (decimal or hex, int or uint) followed by ``.name``
_INT_RECEIVER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]+)[uU]?(?=\.[A-Za-z_])")
_MAYBE_INT_RECEIVER = re.compile(r"(?<![\w.])(?:0[xX][0-9a-fA-F]+|[0-9]+)[uU]?\.[A-Za-z_]")
#: a raw string's prefix right before its quote (``r'..'``, ``br'..'``), not the end of a name
_RAW_PREFIX = re.compile(r"(?<![\w.])(?:[bB]?[rR]|[rR][bB])$")
_QUOTED_FIELD = re.compile(r"\.\s*`([^`\n]+)`")


def unquote_fields(expression: str) -> tuple[str, dict[str, str]]:
    """The expression as celpy's parser reads it by the specification's grammar.

    Backquoted field names (``m.`content-type```, cel-spec 2024), which celpy's parser
    predates, become placeholder identifiers; an integer literal followed by ``.name``
    (``42.split('2')``, a call on an int: no matching overload) is parenthesized, as
    celpy's float literals take ``42.`` (the specification's need a digit after the dot).
    Returns the rewritten text and placeholder -> name. String literals and ``//``
    comments are copied as they are."""
    if "`" not in expression and not _MAYBE_INT_RECEIVER.search(expression):
        return expression, {}
    out, names, pos, n = [], {}, 0, len(expression)
    while pos < n:
        c = expression[pos]
        if c in "\"'":
            # skip a string literal (raw or not, single or triple quoted)
            quote = expression[pos : pos + 3] if expression[pos : pos + 3] in ('"""', "\'\'\'") else c
            raw = _RAW_PREFIX.search(expression, max(0, pos - 2), pos) is not None
            end = pos + len(quote)
            while end < n and expression[end : end + len(quote)] != quote:
                end += 2 if (expression[end] == "\\" and not raw) else 1
            end = min(n, end + len(quote))
            out.append(expression[pos:end])
            pos = end
            continue
        if c == "/" and expression.startswith("//", pos):  # a comment, to the end of its line
            end = expression.find("\n", pos)
            end = n if end < 0 else end
            out.append(expression[pos:end])
            pos = end
            continue
        if "0" <= c <= "9" and not (pos and (expression[pos - 1].isalnum() or expression[pos - 1] in "_.")):
            m = _INT_RECEIVER.match(expression, pos)
            if m:
                out.append(f"({m.group()})")
                pos = m.end()
                continue
        if c == ".":
            m = _QUOTED_FIELD.match(expression, pos)
            if m:
                name = _PLACEHOLDER.format(len(names))
                names[name] = m.group(1)
                out.append("." + name)
                pos = m.end()
                continue
        out.append(c)
        pos += 1
    return "".join(out), names


# ---- analysis ------------------------------------------------------------------------


def is_const(node: Node) -> bool:
    return isinstance(node, (Const, ErrConst))
