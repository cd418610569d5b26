"""CESQL text -> syntax tree (spec section 2), by precedence climbing.

Precedence follows the reference grammar (cloudevents/spec ``cesql/CESQLParser.g4``,
the grammar Knative's engine is generated from), tightest first:

1. function calls, literals, attributes, ``EXISTS name``, ``( ... )``
2. prefix ``NOT`` and ``-`` (they bind tighter than everything below: ``NOT a = b``
   is ``(NOT a) = b``)
3. ``x [NOT] LIKE 'pattern'``
4. ``x [NOT] IN (y, ...)``
5. ``*`` ``/`` ``%``, then ``+`` ``-``, then the comparisons (all left-associative)
6. ``AND`` ``OR`` ``XOR``: one level, right-associative, so ``a AND b OR c`` is
   ``a AND (b OR c)``, as in the reference engine (not standard SQL's AND-before-OR).
"""
from __future__ import annotations

from filters.cesql import nodes
from filters.cesql.errors import CesqlParseError
from filters.cesql.lexer import EOF, FUNC, INT, STRING, WORD, Token, error_at, tokenize
from filters.cesql.types import INT_MAX, INT_MIN

_LOGIC = ("AND", "OR", "XOR")
_BINARY_PRECEDENCE = {
    "AND": 1, "OR": 1, "XOR": 1,
    "=": 2, "!=": 2, "<>": 2, ">=": 2, "<=": 2, "<": 2, ">": 2,
    "+": 3, "-": 3,
    "*": 4, "/": 4, "%": 4,
}
_IN_PRECEDENCE = 5
_LIKE_PRECEDENCE = 6


#: Deepest syntax tree accepted: compiling and evaluating recurse once per level, and an
#: expression must not exhaust the interpreter's stack on an engine worker.
MAX_DEPTH = 300


def parse(source: str) -> nodes.Node:
    """Parse a whole expression; raise ``CesqlParseError`` naming line and column."""
    try:
        tree = _Parser(source).parse()
    except RecursionError:
        raise error_at(source, 0, f"the expression nests more than {MAX_DEPTH} levels deep") from None
    deepest = _deepest(tree)
    if deepest is not None:
        raise error_at(source, deepest.start, f"the expression nests more than {MAX_DEPTH} levels deep")
    return tree


def _children(node: nodes.Node) -> tuple[nodes.Node, ...]:
    if isinstance(node, nodes.Binary):
        return (node.left, node.right)
    if isinstance(node, (nodes.Unary, nodes.Like)):
        return (node.operand,)
    if isinstance(node, nodes.In):
        return (node.operand, *node.items)
    if isinstance(node, nodes.Call):
        return node.args
    return ()


def _deepest(tree: nodes.Node) -> nodes.Node | None:
    """The first node found below ``MAX_DEPTH`` levels, or None (an explicit stack: no recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in _children(node))
    return None


def _describe(token: Token) -> str:
    return EOF if token.kind == EOF else repr(token.text)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.pos = 0

    # -- helpers -----------------------------------------------------------------
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        if token.kind != EOF:
            self.pos += 1
        return token

    def error(self, token: Token, message: str) -> CesqlParseError:
        return error_at(self.source, token.start, message)

    def expect(self, kind: str, what: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.error(token, f"expected {what}, found {_describe(token)}")
        return self.advance()

    def integer(self, token: Token, negative: bool, start: int) -> nodes.Literal:
        value = -token.value if negative else token.value
        if not INT_MIN <= value <= INT_MAX:
            raise error_at(self.source, start, f"integer literal {self.source[start:token.end]} is out of the 32-bit range")
        return nodes.Literal(value, start)

    # -- grammar -----------------------------------------------------------------
    def parse(self) -> nodes.Node:
        if self.peek().kind == EOF:
            raise self.error(self.peek(), "empty expression")
        tree = self.expression(1)
        token = self.peek()
        if token.kind != EOF:
            raise self.error(token, f"unexpected {_describe(token)} after a complete expression")
        return tree

    def expression(self, min_precedence: int) -> nodes.Node:
        left = self.unary()
        while True:
            token = self.peek()
            kind = token.kind
            negated = False
            if kind == "NOT":
                follower = self.peek(1).kind
                if follower not in ("LIKE", "IN"):
                    raise self.error(self.peek(1), f"expected LIKE or IN after NOT, found {_describe(self.peek(1))}")
                negated, kind = True, follower
            if kind == "LIKE":
                if _LIKE_PRECEDENCE < min_precedence:
                    return left
                self.pos += 2 if negated else 1
                pattern = self.peek()
                if pattern.kind != STRING:
                    raise self.error(pattern, f"the pattern of LIKE must be a string literal, found {_describe(pattern)}")
                self.advance()
                left = nodes.Like(left, pattern.value, negated, token.start)
            elif kind == "IN":
                if _IN_PRECEDENCE < min_precedence:
                    return left
                self.pos += 2 if negated else 1
                left = nodes.In(left, self.set_items(), negated, token.start)
            else:
                precedence = _BINARY_PRECEDENCE.get(kind)
                if precedence is None or precedence < min_precedence:
                    return left
                self.advance()
                right = self.expression(precedence if kind in _LOGIC else precedence + 1)
                left = nodes.Binary(kind, left, right, token.start)

    def set_items(self) -> tuple[nodes.Node, ...]:
        self.expect("(", "'(' opening the IN set")
        if self.peek().kind == ")":
            raise self.error(self.peek(), "an IN set needs at least one value")
        items = [self.expression(1)]
        while self.peek().kind == ",":
            self.advance()
            items.append(self.expression(1))
        self.expect(")", "',' or ')' in the IN set")
        return tuple(items)

    def unary(self) -> nodes.Node:
        token = self.peek()
        if token.kind == "NOT":
            self.advance()
            return nodes.Unary("NOT", self.unary(), token.start)
        if token.kind in ("-", "+"):
            self.advance()
            number = self.peek()
            if number.kind == INT and number.start == token.end:  # a signed literal
                self.advance()
                return self.integer(number, token.kind == "-", token.start)
            if token.kind == "+":
                raise self.error(token, "unexpected '+': there is no unary plus")
            return nodes.Unary("-", self.unary(), token.start)
        return self.primary()

    def primary(self) -> nodes.Node:
        token = self.advance()
        kind = token.kind
        if kind == INT:
            return self.integer(token, False, token.start)
        if kind == STRING:
            return nodes.Literal(token.value, token.start)
        if kind in ("TRUE", "FALSE"):
            return nodes.Literal(kind == "TRUE", token.start)
        if kind == "(":
            inner = self.expression(1)
            self.expect(")", "')'")
            return inner
        if kind == "EXISTS":
            name = self.expect(WORD, "an attribute name after EXISTS")
            return nodes.Exists(name.value, token.start)
        if kind == WORD:
            if self.peek().kind == "(" and token.text.isalpha():
                return self.call(token)
            return nodes.Attribute(token.value, token.start)
        if kind == FUNC:
            if self.peek().kind != "(":
                raise self.error(self.peek(), f"expected '(' after function name {token.text}, found {_describe(self.peek())}")
            return self.call(token)
        if kind == EOF:
            raise self.error(token, "unexpected end of expression, expected a value")
        raise self.error(token, f"unexpected {_describe(token)}, expected a value")

    def call(self, name: Token) -> nodes.Call:
        self.advance()  # '('
        args: list[nodes.Node] = []
        if self.peek().kind == EOF:
            raise self.error(self.peek(), f"expected ')' closing the arguments of {name.text}, found {EOF}")
        if self.peek().kind != ")":
            args.append(self.expression(1))
            while self.peek().kind == ",":
                self.advance()
                args.append(self.expression(1))
        self.expect(")", f"',' or ')' closing the arguments of {name.text}")
        return nodes.Call(name.text.upper(), tuple(args), name.start)
