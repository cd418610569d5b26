"""The compiled CEL dialect must give exactly celpy's result, value or error.

Hypothesis generates expressions over CloudEvents attributes (type, source, subject, an
int extension, a bool extension, time) and payload fields (nested maps, lists, numbers,
strings), deliberately mixing types so that errors, celpy quirks and fallbacks occur,
and events with and without those attributes. A matrix test runs every operator over
pairs of values of every kind.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
import pickle

import celpy
import pytest
from celpy import celtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from filters.base import EventView, FilterResult
from filters.cel import _ENV, CelFilter, celpy_activation
from filters.cel_compiler import Unsupported, compile_expression
from filters.cel_compiler import runtime as rt
from filters.materialize import materialize

# --------------------------------------------------------------------------------------
# comparing outcomes


def canonical(value):
    """Exact form of a celpy value: Python types matter (celpy distinguishes them)."""
    if isinstance(value, float):
        return (type(value).__name__, "nan" if math.isnan(value) else value)
    if isinstance(value, (bool, int, str, bytes)):
        return (type(value).__name__, value)
    if value is None:
        return ("None",)
    if isinstance(value, celtypes.TimestampType):
        return ("ts", value.isoformat())
    if isinstance(value, dt.timedelta):
        return (type(value).__name__, value.days, value.seconds, value.microseconds)
    if isinstance(value, dict):
        return (type(value).__name__, tuple((canonical(k), canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canonical(v) for v in value))
    if isinstance(value, type):
        return ("type", value.__module__, value.__qualname__)
    if isinstance(value, celpy.CELEvalError):
        return ("error-value",)
    return ("other", type(value).__name__, repr(value))


def celpy_outcome(ast, event: EventView):
    try:
        result = _ENV.program(ast).evaluate(celpy_activation(event))
    except Exception as exc:  # a CEL error or celpy raising
        return ("ERROR", type(exc).__name__)
    return canonical(result)


def compiled_outcome(fn, event: EventView):
    try:
        result = fn(event)
    except Exception as exc:
        return ("ERROR", type(exc).__name__)
    return canonical(rt.to_celpy(result))


def same(a, b) -> bool:
    if a[0] == "ERROR" and b[0] == "ERROR":
        return True  # both fail (the message may differ)
    return a == b


# --------------------------------------------------------------------------------------
# events

_UTC = dt.timezone.utc

times = st.one_of(
    st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(_UTC)),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.sampled_from([dt.timezone(dt.timedelta(hours=-5)), dt.timezone(dt.timedelta(hours=9, minutes=30))])),
    st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1)),  # naive
)
small_ints = st.one_of(st.integers(-5, 300), st.sampled_from([rt.INT64_MAX, rt.INT64_MIN, 2**63, -(2**63) - 1]))
# Strings stay short: celpy folds all()/exists() over a string's characters, and each
# error it meets embeds the repr of the previous one, doubling in size per character.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    small_ints,
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.5, 100.0, 99.99, 1e300]),
    st.sampled_from(["", "vip", "gold", "a", "abc", "VIP", "é", "🙂", "100", "1.5", "true", "1h", "2024"]),
    st.text(max_size=4),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["a", "b", "level", "name", "tags", "amount", "x"]), inner, max_size=4)),
    max_leaves=12,
)
payloads = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "amount": st.one_of(st.integers(-10, 1000), st.floats(-10, 1000), st.none(), st.just("12")),
            "user": st.fixed_dictionaries({}, optional={"level": st.one_of(st.integers(0, 5), st.floats(0, 5), st.just("3")), "name": st.sampled_from(["ann", "bob", ""])}),
            "tags": st.lists(st.sampled_from(["vip", "new", "gold", 1, None, 2.5]), max_size=4),
            "items": st.lists(st.fixed_dictionaries({}, optional={"sku": st.sampled_from(["a1", "b2"]), "qty": st.integers(0, 5), "price": st.one_of(st.integers(0, 200), st.floats(0, 200))}), max_size=3),
            "region": st.sampled_from(["eu", "us", "apac"]),
            "x": json_values,
            "big": st.sampled_from([2**63, 5]),
        },
    ),
    json_values,
    st.binary(max_size=4),
    st.text(max_size=4),
)


@st.composite
def events(draw, short: bool = False):
    attrs = {"specversion": "1.0", "id": draw(st.sampled_from(["1", "abc", ""]))}
    types = ["order", "c.order", "refund", "x"] if short else ["com.example.order.created", "com.example.refund", "com.example.order", "other"]
    attrs["type"] = draw(st.sampled_from(types))
    attrs["source"] = draw(st.sampled_from(["/shop/1", "/shop/e", "/blog", "", "shop"]))
    optional = {
        "subject": st.sampled_from(["orders/1", "vip/7", ""]),
        "priority": st.one_of(st.integers(-3, 12), st.sampled_from([rt.INT64_MAX, rt.INT64_MIN])),
        "flag": st.booleans(),
        "time": times,
        "blob": st.binary(max_size=3),
        "ratio": st.floats(-2, 2),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            attrs[name] = draw(strategy)
    return EventView(attrs, draw(payloads))


# --------------------------------------------------------------------------------------
# expressions

LEAVES = [
    "type", "source", "subject", "id", "priority", "flag", "time", "blob", "ratio", "data", "nosuch", "int", "string",
    "data.amount", "data.user", "data.user.level", "data.user.name", "data.tags", "data.items", "data.region", "data.x",
    "data.x.a", "data.x.b", "data['x']", "data.tags[0]", "data.tags[-1]", "data.items[0].price", "data.big",
    "0", "1", "-1", "5", "100", "9223372036854775807", "-9223372036854775808", "2u", "0u", "1.5", "0.0", "-0.0", "100.0",
    '"vip"', '"com.example.order"', '""', '"/shop"', "'a'", 'b"x"', "true", "false", "null", "[]", "{}",
    '["vip", "gold"]', "[1, 2, 3]", '[1, "a", 2.5]', '{"a": 1, "b": "x"}', "{1: 'one', true: 'yes'}",
    'timestamp("2024-01-01T00:00:00Z")', 'duration("1h")', 'duration("90m")', "int", "double", "list", "map", "type",
]

BINARY = ["==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*", "/", "%", "&&", "||"]
CALLS1 = ["size({})", "int({})", "uint({})", "double({})", "string({})", "bool({})", "bytes({})", "type({})", "dyn({})", "has({}.a)", "has({}.level)", "!{}", "-{}", "({})", "[{}]", '{{"k": {}}}', "{}.size()", "timestamp({})", "duration({})"]
METHODS = ["{}.startsWith({})", "{}.endsWith({})", "{}.contains({})", "{}.matches({})", "{}[{}]", "{}.getHours({})", "{}.getDayOfWeek({})"]
METHODS0 = ["{}.getHours()", "{}.getFullYear()", "{}.getDayOfYear()", "{}.getMilliseconds()", "{}.getMonth()", "{}.getDate()", "{}.getDayOfMonth()", "{}.getMinutes()", "{}.getSeconds()"]
STRING_ARGS = ['"vip"', '"/shop"', '"^c.*r$"', '"[a-"', '"America/New_York"', '"+05:30"', '"UTC"', '"orders"', '"Mars/Base"']
MACROS = ["all", "exists", "exists_one", "map", "filter"]


@st.composite
def expressions(draw, depth: int = 3, scope: tuple = ()):
    leaves = LEAVES + list(scope) * 4
    if depth <= 0 or draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(leaves))
    kind = draw(st.integers(0, 9))
    sub = expressions(depth=depth - 1, scope=scope)
    if kind <= 3:
        return f"{draw(sub)} {draw(st.sampled_from(BINARY))} {draw(sub)}"
    if kind == 4:
        return draw(st.sampled_from(CALLS1)).format(draw(sub))
    if kind == 5:
        arg = draw(st.one_of(st.sampled_from(STRING_ARGS), sub))
        return draw(st.sampled_from(METHODS)).format(draw(sub), arg)
    if kind == 6:
        return draw(st.sampled_from(METHODS0)).format(draw(sub))
    if kind == 7:
        return f"{draw(sub)} ? {draw(sub)} : {draw(sub)}"
    var = draw(st.sampled_from(["v", "w", "type"]))  # "type" shadows the attribute
    body = draw(expressions(depth=depth - 1, scope=scope + (var,)))
    return f"{draw(sub)}.{draw(st.sampled_from(MACROS))}({var}, {body})"


# filters the way people write them, to check the hot paths on realistic shapes
TEMPLATES = st.sampled_from(
    [
        'type == {s} && data.amount > {n} && source.startsWith("/shop")',
        "type == {s} || subject == {s}",
        "data.tags.exists(t, t == {s})",
        "has(data.user.level) && data.user.level >= {n}",
        "priority >= {n} && type.endsWith({s})",
        "time.getHours() >= {n} && time.getHours() < 17",
        'time.getDayOfWeek("America/New_York") == {n}',
        "type in [{s}, \"com.example.refund\"] && !(source == {s})",
        "size(data.items) > {n} && data.items.all(i, i.qty > 0)",
        "data.items.filter(i, i.price > {n}).size() == 0",
        "data.amount * 2 > {n} || data.amount / 2 < {n}",
        '{s}.matches("^com\\\\.") && type.matches("order")',
        "data.region == {s} ? data.amount > {n} : false",
        'time > timestamp("2024-01-01T00:00:00Z") && data.x != {n}',
    ]
)


@st.composite
def realistic(draw):
    template = draw(TEMPLATES)
    s = draw(st.sampled_from(['"vip"', '"com.example.order"', '"com.example.order.created"', '"eu"', '"order"', "1", "null"]))
    n = draw(st.sampled_from(["0", "1", "3", "100", "9.5", "2u", '"3"']))
    return template.replace("{s}", s).replace("{n}", n)


def check(expression: str, evts: list) -> None:
    try:
        ast = _ENV.compile(expression)
    except celpy.CELParseError:
        return
    try:
        fn = compile_expression(ast, expression)
    except Unsupported:
        return
    for event in evts:
        want = celpy_outcome(ast, event)
        got = compiled_outcome(fn, event)
        assert same(want, got), f"{expression!r} on {event.attributes!r} data={event.data!r}: celpy {want} compiled {got}\n{fn.source}"


SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(expressions(), st.lists(events(short=True), min_size=1, max_size=3))
def test_random_expressions_match_celpy(expression, evts):
    check(expression, evts)


@SETTINGS
@given(realistic(), st.lists(events(), min_size=1, max_size=3))
def test_realistic_filters_match_celpy(expression, evts):
    check(expression, evts)


# --------------------------------------------------------------------------------------
# every operator over pairs of values of every kind

SAMPLES = {
    "int": celtypes.IntType(3),
    "int_min": celtypes.IntType(rt.INT64_MIN),
    "int0": celtypes.IntType(0),
    "uint": celtypes.UintType(3),
    "double": celtypes.DoubleType(3.0),
    "big_double": celtypes.DoubleType(-9223372036854775809.0),
    "nan": celtypes.DoubleType(math.nan),
    "plain_float": 3.0,
    "bool": celtypes.BoolType(True),
    "false": celtypes.BoolType(False),
    "str": celtypes.StringType("3"),
    "plain_str": "ab",
    "bytes": celtypes.BytesType(b"3"),
    "null": None,
    "list": celtypes.ListType([celtypes.IntType(3), celtypes.StringType("3")]),
    "strs": celtypes.ListType([celtypes.StringType("3"), celtypes.StringType("x")]),
    "ints": celtypes.ListType([celtypes.IntType(1), celtypes.IntType(3)]),
    "plain_list": [celtypes.IntType(3)],
    "map": celtypes.MapType({celtypes.StringType("3"): celtypes.IntType(1)}),
    "intmap": celtypes.MapType({celtypes.IntType(3): celtypes.BoolType(True)}),
    "ts": celtypes.TimestampType("2024-01-01T10:00:00Z"),
    "ts_tz": celtypes.TimestampType("2024-01-01T10:00:00+05:30"),
    "dur": celtypes.DurationType("3600s"),
    "type": celtypes.IntType,
}
OPERATORS = ["==", "!=", "<", "<=", ">", ">=", "in", "+", "-", "*", "/", "%", "[]", "&&", "||"]


def _expr(op: str) -> str:
    return "a[b]" if op == "[]" else f"a {op} b"


def _celpy_values(ast, values):
    try:
        result = _ENV.program(ast).evaluate(values)
    except Exception as exc:
        return ("ERROR", type(exc).__name__)
    return canonical(result)


def _compiled_values(fn, values):
    try:
        result = fn.evaluate_celpy_values(values)
    except Exception as exc:
        return ("ERROR", type(exc).__name__)
    return canonical(result)


@pytest.mark.parametrize("op", OPERATORS)
def test_operator_matrix(op):
    ast = _ENV.compile(_expr(op))
    fn = compile_expression(ast, _expr(op))
    bad = []
    for (na, a), (nb, b) in itertools.product(SAMPLES.items(), repeat=2):
        values = {"a": a, "b": b}
        want, got = _celpy_values(ast, values), _compiled_values(fn, values)
        if not same(want, got):
            bad.append(f"{na} {op} {nb}: celpy {want} compiled {got}")
    assert not bad, "\n".join(bad)


LITERALS = ["3", "0", "-9223372036854775808", "3u", "3.0", "0.0", '"3"', 'b"3"', "true", "null", '["3", "x"]', "[1, 3]", "[1, 2.5]"]


@pytest.mark.parametrize("op", [o for o in OPERATORS if o not in ("&&", "||")])
def test_operator_matrix_with_constants(op):
    """Constant operands take the inline fast paths of the generated code."""
    bad = []
    for lit in LITERALS:
        pair = (f"a[{lit}]", f"{lit}[a]") if op == "[]" else (f"a {op} {lit}", f"{lit} {op} a")
        for expr in pair:
            ast = _ENV.compile(expr)
            fn = compile_expression(ast, expr)
            for name, value in SAMPLES.items():
                values = {"a": value, "b": value}
                want, got = _celpy_values(ast, values), _compiled_values(fn, values)
                if not same(want, got):
                    bad.append(f"{expr} with a={name}: celpy {want} compiled {got}")
    assert not bad, "\n".join(bad)


FUNCTIONS = [
    "size(a)", "a.size()", "int(a)", "uint(a)", "double(a)", "string(a)", "bool(a)", "bytes(a)", "type(a)", "type(a) == int",
    "dyn(a)", "!a", "-a", "has(a.x)", "a.x", "a.startsWith(b)", "a.endsWith(b)", "a.contains(b)", "a.matches(b)",
    "a.getHours()", "a.getHours(b)", "getHours(a)", "a.getDayOfYear()", "a.getMilliseconds()", "a.exists(x, x == b)",
    "a.all(x, x != b)", "a.exists_one(x, x == b)", "a.map(x, x)", "a.filter(x, x == b)", "[a, b]", "{a: b}", "{'k': a}",
    "a ? b : a", "timestamp(a)", "duration(a)", "a.foo()", "foo(a)", "_in_(a, b)", "a.int()",
]


@pytest.mark.parametrize("expr", FUNCTIONS)
def test_function_matrix(expr):
    ast = _ENV.compile(expr)
    fn = compile_expression(ast, expr)
    bad = []
    for (na, a), (nb, b) in itertools.product(SAMPLES.items(), list(SAMPLES.items())[::3]):
        values = {"a": a, "b": b}
        want, got = _celpy_values(ast, values), _compiled_values(fn, values)
        if not same(want, got):
            bad.append(f"{expr} a={na} b={nb}: celpy {want} compiled {got}")
    assert not bad, "\n".join(bad)


# --------------------------------------------------------------------------------------
# CelFilter integration


def test_celfilter_uses_the_compiler_and_shares_the_conversion():
    event = EventView({"type": "com.example.order", "source": "/shop/1", "id": "1", "specversion": "1.0"}, {"amount": 150})
    a = materialize({"cel": 'type == "com.example.order" && data.amount > 100'})
    b = materialize({"cel": 'source.startsWith("/shop")'})
    assert a.engine == "compiled" and a.fallback_reason == ""
    assert a.filter(event) is FilterResult.PASS and b.filter(event) is FilterResult.PASS
    assert isinstance(event.cache[rt.CACHE_KEY], rt.Activation)
    assert a.filter(EventView({"type": "x"}, None)) is FilterResult.FAIL
    assert a.errors == 0  # false && <error> is false
    assert a.filter(EventView({"type": "com.example.order"}, None)) is FilterResult.FAIL
    assert a.errors == 1  # true && <error>: data is undeclared, an error, counted


def test_celfilter_falls_back_to_celpy_with_a_reason():
    f = materialize({"cel": "[1, 2].reduce(r, x, 0, r + x) == 3"})
    assert f.engine == "celpy" and "reduce" in f.fallback_reason
    g = materialize({"cel": "google.protobuf.Int32Value{value: 1} == 1"})
    assert g.engine == "celpy" and g.fallback_reason


def test_celfilter_pickles_as_its_spec():
    f = materialize({"cel": 'type == "a" && data.tags.exists(t, t == "vip")'})
    g = pickle.loads(pickle.dumps(f))
    assert isinstance(g, CelFilter) and g.expression == f.expression and g.engine == "compiled"
    event = EventView({"type": "a"}, {"tags": ["vip"]})
    assert g.filter(event) is FilterResult.PASS


def test_exotic_events_are_evaluated_by_celpy():
    # a dotted attribute name: celpy nests it (a.b resolves); the compiled path defers
    event = EventView({"type": "t", "a.b": "x"}, None)
    f = CelFilter("type == 't'", "p")
    g = CelFilter("a.b == 'x'", "p")
    assert f.filter(event) is FilterResult.PASS and g.filter(event) is FilterResult.PASS
    # out-of-range integers make celpy's activation fail: every filter errors
    event = EventView({"type": "t"}, {"n": 2**70})
    h = CelFilter("true", "p")
    assert h.filter(event) is FilterResult.FAIL and h.errors == 1
