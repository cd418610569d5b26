"""What a CEL filter requires of an event's attributes, for the multi-trigger index.

``requirements(ast)`` returns ``("exact", attr, literal)`` for every top-level ``&&``
conjunct ``attr == "literal"`` (either order), ``("prefix", attr, literal)`` for
``attr.startsWith("literal")`` and ``("in", attr, (literal, ...))`` for
``attr in ["literal", ...]``, where ``attr`` is a bare identifier naming a context
attribute or extension (not ``data``, not a function or macro variable).

Why this is sound: a chain of ``&&`` is true only when every conjunct is the boolean
``true`` (the specification's ``&&`` is an error or false otherwise).
``attr == "lit"`` is true only when ``attr`` is a string attribute equal to ``lit``: a
missing attribute is an error (or, for names such as ``type``, a type value that never
equals a string), and a value of any other type compares unequal (heterogeneous
equality; celpy, where it evaluates instead, raises for some). ``attr.startsWith("lit")``
is true only for a string attribute starting with ``lit`` (other receivers: no matching
overload). ``attr in [...]`` is true only when some element
equals the attribute, and a string literal equals nothing but an equal string. A string attribute's ``EventView.string()`` is
itself, so the index may require ``event.string(attr) == lit`` / ``.startswith(lit)``
whenever the filter does not FAIL. Anything else contributes nothing ([] is always
correct).
"""
from __future__ import annotations

from typing import Any

import lark
from filters.cel_compiler.literals import LiteralError
from filters.cel_compiler.literals import literal as decode_literal


def _conjuncts(expr: Any) -> list:
    """The relation nodes of a top-level && chain (through parentheses), or []."""
    if not isinstance(expr, lark.Tree) or expr.data != "expr" or len(expr.children) != 1:
        return []
    orx = expr.children[0]
    if orx.data != "conditionalor" or len(orx.children) != 1:
        return []
    out: list = []
    stack = [orx.children[0]]
    while stack:
        node = stack.pop()
        if node.data == "conditionaland" and len(node.children) == 2:
            stack.append(node.children[1])
            stack.append(node.children[0])
            continue
        if node.data == "conditionaland":
            node = node.children[0]
        if node.data != "relation":
            continue
        inner = _paren_expr(node)
        if inner is not None:
            sub = _conjuncts(inner)
            out.extend(sub)
            continue
        out.append(node)
    return out


def _member(relation: Any) -> Any:
    """The member node of a relation without operators, or None."""
    if relation.data != "relation" or len(relation.children) != 1:
        return None
    node = relation.children[0]
    for name in ("addition", "multiplication", "unary"):
        if not isinstance(node, lark.Tree) or node.data != name or len(node.children) != 1:
            return None
        node = node.children[0]
    if not isinstance(node, lark.Tree) or node.data != "member":
        return None
    return node.children[0]


def _paren_expr(relation: Any) -> Any:
    member = _member(relation)
    if member is not None and member.data == "primary" and member.children[0].data == "paren_expr":
        return member.children[0].children[0]
    return None


def _ident(node: Any) -> str | None:
    """A bare identifier (an addition wrapping member/primary/ident, or the primary)."""
    if isinstance(node, lark.Tree) and node.data == "addition":
        node = _member(lark.Tree("relation", [node]))
    if node is None or not isinstance(node, lark.Tree):
        return None
    if node.data == "primary" and isinstance(node.children[0], lark.Tree) and node.children[0].data == "ident":
        return str(node.children[0].children[0])
    return None


def _string(node: Any) -> str | None:
    """The value of a string literal (addition wrapper or primary), or None."""
    if isinstance(node, lark.Tree) and node.data == "addition":
        node = _member(lark.Tree("relation", [node]))
    if node is None or node.data != "primary" or node.children[0].data != "literal":
        return None
    literal = node.children[0]
    token = literal.children[0]
    if token.type not in ("STRING_LIT", "MLSTRING_LIT"):
        return None
    try:
        value = decode_literal(token.type, str(token))
    except LiteralError:
        return None
    return value if type(value) is str else None


def _string_list(addition: Any) -> tuple | None:
    """The distinct values of a list literal of string literals, or None."""
    member = _member(lark.Tree("relation", [addition]))
    if member is None or member.data != "primary" or member.children[0].data != "list_lit":
        return None
    lit = member.children[0]
    if not lit.children:
        return None
    values: list[str] = []
    for expr in lit.children[0].children:
        value = None
        if expr.data == "expr" and len(expr.children) == 1:
            orx = expr.children[0]
            if len(orx.children) == 1 and len(orx.children[0].children) == 1:
                rel = orx.children[0].children[0]
                if rel.data == "relation" and len(rel.children) == 1:
                    value = _string(rel.children[0])
        if value is None:
            return None
        if value not in values:
            values.append(value)
    return tuple(values)


def _attribute(name: str | None) -> bool:
    return name is not None and name != "data"


def requirements(ast: Any) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, str]] = []
    for relation in _conjuncts(ast):
        if len(relation.children) == 2 and relation.children[0].data == "relation_eq":
            left = relation.children[0].children[0]  # a relation
            right = relation.children[1]  # an addition
            if len(left.children) != 1:
                continue
            left = left.children[0]
            for a, b in ((left, right), (right, left)):
                name, literal = _ident(a), _string(b)
                if _attribute(name) and literal is not None:
                    out.append(("exact", name, literal))
                    break
            continue
        if len(relation.children) == 2 and relation.children[0].data == "relation_in":
            left = relation.children[0].children[0]
            if len(left.children) == 1:
                values = _string_list(relation.children[1])
                name = _ident(left.children[0])
                if _attribute(name) and values:
                    out.append(("in", name, values))
            continue
        member = _member(relation)
        if member is None or member.data != "member_dot_arg" or len(member.children) != 3:
            continue
        obj, method, args = member.children
        if str(method) != "startsWith" or len(args.children) != 1:
            continue
        name = _ident(obj.children[0]) if obj.data == "member" else None
        arg = args.children[0]
        literal = None
        if arg.data == "expr" and len(arg.children) == 1:
            orx = arg.children[0]
            if len(orx.children) == 1 and len(orx.children[0].children) == 1:
                rel = orx.children[0].children[0]
                if rel.data == "relation" and len(rel.children) == 1:
                    literal = _string(rel.children[0])
        if _attribute(name) and literal is not None:
            out.append(("prefix", name, literal))
    return out
