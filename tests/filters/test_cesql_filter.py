"""The ``cesql`` trigger filter: Knative's cases, spec errors, requirements, pickling, edges."""
from __future__ import annotations

import pickle
import re
from datetime import datetime, timezone

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.base import EventView, FilterResult
from filters.cesql import (
    BUILTINS,
    CACHE_KEY,
    CesqlError,
    CesqlFilter,
    CesqlParseError,
    FunctionRegistry,
    compile_cesql,
    register_function,
)
from filters.cesql.like import compile_like
from filters.errors import FilterSpecError, KnflowError
from filters.materialize import materialize
from tests.conformance import CONFORMANCE, conformance_path

PASS, FAIL, NO_FILTER = FilterResult.PASS, FilterResult.FAIL, FilterResult.NO_FILTER
WANT = {"Pass": PASS, "Fail": FAIL, "NoFilter": NO_FILTER}


def event(**attributes) -> EventView:
    base = {"specversion": "1.0", "id": "1", "source": "src", "type": "dev.example"}
    base.update(attributes)
    return EventView(base)


def value_of(expression: str, view: EventView | None = None):
    return compile_cesql(expression).evaluate(view or event())


# -- Knative's unit cases (pkg/eventfilter/subscriptionsapi/cesql_filter_test.go) --------

def _knative_rows():
    path = CONFORMANCE / "knative" / "filter-cases.yaml"
    if not path.exists():
        return [pytest.param(None, None, id="knative-cases-absent")]
    section = yaml.safe_load(path.read_text())["unit_subscriptionsapi"]
    rows = [row for row in section["cesql"] if "want" in row]
    return [pytest.param(section, row, id=f"cesql-{i}: {row['cesql']}") for i, row in enumerate(rows)]


@pytest.mark.parametrize("section,row", _knative_rows())
def test_knative_cesql_cases(section, row):
    conformance_path("knative", "filter-cases.yaml")
    attributes = dict(section["base_event"])
    if "event" in row:
        attributes.update(section[row["event"]])
    node = materialize({"cesql": row["cesql"]})
    assert isinstance(node, CesqlFilter)
    assert node.filter(EventView(attributes)) is WANT[row["want"]]


def test_knative_case_count():
    conformance_path("knative", "filter-cases.yaml")
    assert len(_knative_rows()) == 9


# -- construction -----------------------------------------------------------------------

@pytest.mark.parametrize("expression,line,column", [
    ("type = ", 1, 8),
    ("type = 'a' AND", 1, 15),
    ("ABC(", 1, 5),
    ("x LIKE 123", 1, 8),
    ("type = 'a'\n  AND source ==", 2, 15),
    ("'unterminated", 1, 1),
    ("a NOT b", 1, 7),
    ("2147483648", 1, 1),
    ("type = 'x' )", 1, 12),
    ("my_attr = 1", 1, 9),
    ("a $ b", 1, 3),
])
def test_parse_errors_name_the_position(expression, line, column):
    with pytest.raises(FilterSpecError) as raised:
        materialize({"cesql": expression})
    error = raised.value
    assert error.path == "spec.filters.cesql"
    assert error.message.startswith(f"invalid CESQL expression at line {line}, column {column}: ")
    assert isinstance(error, ValueError) and isinstance(error, KnflowError)


def test_parse_error_position_counts_leading_whitespace():
    with pytest.raises(FilterSpecError, match="line 1, column 9: unexpected '\)'"):
        CesqlFilter("  a AND )", "p")


@pytest.mark.parametrize("value", [1, True, None, ["type = 'a'"], {"a": 1}])
def test_value_must_be_a_string(value):
    with pytest.raises(FilterSpecError, match="must be a CESQL expression string") as raised:
        CesqlFilter(value, "spec.filters[0].cesql")
    assert raised.value.path == "spec.filters[0].cesql"


@pytest.mark.parametrize("value", ["", "   ", "\n\t"])
def test_empty_expression_is_no_filter(value):
    node = CesqlFilter(value, "p")
    assert node.filter(event()) is NO_FILTER
    assert node.requirements() == []
    assert node.explain(event()).result is NO_FILTER


def test_error_hierarchy():
    with pytest.raises(CesqlParseError) as raised:
        compile_cesql("(")
    assert isinstance(raised.value, CesqlError) and isinstance(raised.value, KnflowError)
    assert isinstance(raised.value, ValueError)
    assert (raised.value.line, raised.value.column, raised.value.kind) == (1, 2, "parse")


# -- evaluation as a filter -------------------------------------------------------------

def test_errors_fail_and_are_counted():
    node = CesqlFilter("missingattribute < 5", "p")
    assert node.filter(event()) is FAIL
    assert node.filter(event()) is FAIL
    assert node.error_count() == 2
    assert "missingAttribute" in node.last_error
    explanation = node.explain(event())
    assert explanation.result is FAIL and "missingAttribute" in explanation.detail
    assert node.error_count() == 2  # explain() diagnoses, it does not count


def test_error_with_a_true_value_still_fails():
    # TRUE OR ... short-circuits; here the error comes first and the value is false
    node = CesqlFilter("1 / 0 = 0 OR TRUE", "p")
    assert node.filter(event()) is FAIL
    assert node.error_count() == 1 and "math" in node.last_error


def test_non_boolean_values_fail_and_count():
    node = CesqlFilter("type", "p")
    assert node.filter(event()) is FAIL
    assert node.error_count() == 1
    assert "String 'dev.example', not a Boolean" in node.last_error
    assert node.explain(event()).detail == "String 'dev.example', not a Boolean"


def test_describe_and_explain():
    node = materialize({"cesql": "  type = 'dev.example' "})
    assert node.describe() == "cesql: type = 'dev.example'"
    assert node.explain(event()).to_dict() == {"node": "cesql: type = 'dev.example'", "result": "Pass", "detail": "true"}
    assert node.explain(event(type="x")).detail == "false"


def test_filter_never_raises_even_when_a_user_function_does():
    registry = FunctionRegistry(parent=BUILTINS)
    register_function("BOOM", (str,), lambda s: 1 / 0, returns=bool, registry=registry)
    register_function("WRONG", (), lambda: "not a bool", returns=bool, registry=registry)
    boom = CesqlFilter("BOOM(type)", "p", functions=registry)
    assert boom.filter(event()) is FAIL
    assert "functionEvaluation" in boom.last_error and "ZeroDivisionError" in boom.last_error
    wrong = CesqlFilter("WRONG()", "p", functions=registry)
    assert wrong.filter(event()) is FAIL and "functionEvaluation" in wrong.last_error
    assert compile_cesql("WRONG()", registry).evaluate(event()).value is False  # the zero value


def test_attribute_types():
    view = event(myint=10, mybool=True, big=2**40, time=datetime(2018, 4, 26, 12, 48, 9, tzinfo=timezone.utc), data=b"\x01")
    assert value_of("myint", view).value == 10
    assert value_of("mybool", view).value is True
    assert value_of("big", view).value == str(2**40)  # not a 32-bit Integer: its String form
    assert value_of("time", view).value == "2018-04-26T12:48:09Z"
    assert value_of("data", view).value == "AQ=="
    assert value_of("myint + 1 = 11 AND mybool AND myint = '10' AND '10' = myint", view).value is True


def test_attribute_values_are_cached_on_the_event_and_shared():
    view = event(myint=10)
    first, second = CesqlFilter("myint > 5", "a"), CesqlFilter("myint < 50 AND missing = 1", "b")
    assert first.filter(view) is PASS
    cached = view.cache[CACHE_KEY]
    assert cached["myint"] == 10
    assert second.filter(view) is FAIL
    assert view.cache[CACHE_KEY] is cached and "missing" in cached


def test_identifiers_and_keywords_are_case_insensitive():
    view = event(myext="v")
    assert value_of("MyExt = 'v' aNd ExIsTs TYPE and NoT FaLsE", view).value is True
    assert value_of("lower('ABC') = 'abc'").value is True


# -- semantics beyond the TCK -----------------------------------------------------------

@pytest.mark.parametrize("expression,expected", [
    # AND / OR / XOR share one right-associative level, as in the reference grammar
    ("FALSE AND FALSE OR TRUE", False),  # FALSE AND (FALSE OR TRUE)
    ("TRUE OR FALSE AND FALSE", True),  # TRUE OR (FALSE AND FALSE)
    ("(FALSE AND FALSE) OR TRUE", True),
    # prefix NOT binds tighter than comparisons
    ("NOT FALSE = FALSE", False),  # (NOT FALSE) = FALSE
    ("NOT (FALSE = FALSE)", False),
    ("1 + 2 * 3 = 7 AND 10 - 2 - 3 = 5 AND 7 % 4 * 2 = 6", True),
    ("'a' LIKE 'a' IN (TRUE)", True),
    ("1 < 2 = TRUE", True),
    # signed literals touch their digits; otherwise '-' is an operator
    ("4 -1", 3),
    ("4-1", 3),
    ("- 5", -5),
    ("-2147483648", -2147483648),
    # Integer arithmetic wraps at 32 bits, as the reference engine's int32 does
    ("2147483647 + 1", -2147483648),
    ("-2147483648 - 1", 2147483647),
    ("65536 * 65536", 0),
    ("-2147483648 / -1", -2147483648),
    ("-(-2147483648)", -2147483648),
    ("-7 / 2", -3),
    ("-7 % 2", -1),
    ("7 % -2", 1),
    # casts
    ("'+5' = 5", True),
    ("' 5' + 0", 0),  # not an integer: cast error, zero value
    ("'abc' = 'ABC'", False),
    ("TRUE = 1", True),  # TRUE cast to the right operand's type: Integer 1
    ("'x' IN ('y', 1)", False),
    ("1 IN (1, 'abc')", True),
    ("2 IN (1, 'abc')", False),
    ("CONCAT('a', 1, TRUE)", "a1true"),
    ("CONCAT_WS('-', 'a', 'b')", "a-b"),
    ("TRIM('\u00a0 x \u3000')", "x"),
    ("TRIM('\x1cx')", "\x1cx"),  # control characters are not Unicode white space
    ("LENGTH('h\u00e9')", 2),
    ("IS_INT('-12') AND NOT IS_INT('1.5') AND IS_BOOL('False') AND NOT IS_BOOL('yes')", True),
    ("RIGHT('abc', 0)", ""),
    ("'a\"b' = \"a\"\"b\"", True),  # a doubled quote is one quote
    ("'it''s'", "it's"),
])
def test_more_semantics(expression, expected):
    value = value_of(expression).value
    assert type(value) is type(expected) and value == expected


def test_equality_casts_the_left_operand_to_the_right_type():
    # 5 = TRUE: the right operand is a Boolean, so 5 is cast to Boolean (true): true = true
    assert value_of("5 = TRUE").value is True
    assert value_of("TRUE = 5").value is False  # TRUE cast to Integer 1
    assert value_of("'abc' = 1").error.kind == "cast"


def test_errors_are_fail_fast_and_return_the_zero_value():
    for expression, kind, value in [
        ("LENGTH(missing)", "missingAttribute", 0),
        ("UPPER(LEFT('abc', -1))", "functionEvaluation", ""),
        ("NOT ABS(-2147483648) = 1", "math", False),
        ("missing IN (1, 2)", "missingAttribute", False),
        ("1 IN (missing)", "missingAttribute", False),
        ("FOO(1)", "missingFunction", False),
        ("'abc' LIKE 'a%' AND 'x' + 1 = 1", "cast", False),
        ("SUBSTRING('abc', 1, -1)", "functionEvaluation", ""),
    ]:
        result = value_of(expression)
        assert (result.value, result.error.kind) == (value, kind), expression


def test_like_escapes_and_wildcards():
    assert value_of("'a\\b' LIKE 'a\\\\b'").value is True  # \\ in a pattern is one backslash
    assert value_of("'a\nb' LIKE 'a%'").value is True
    assert value_of("'a\nb' LIKE 'a_b'").value is True
    assert value_of("'50%' LIKE '%\\%'").value is True
    assert value_of("'50' LIKE '%\\%'").value is False


def _like_reference(pattern: str) -> re.Pattern:
    """An independent reading of the LIKE rules as a regex (slow, backtracking: tests only)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_\\":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab%_\\", max_size=8), st.text(alphabet="ab%_\\\n", max_size=10))
def test_like_matches_a_reference_regex(pattern, value):
    matched = compile_like(pattern)(value)
    assert type(matched) is bool
    assert matched == bool(_like_reference(pattern).fullmatch(value))


def test_deep_expressions_are_parse_errors_not_stack_overflows():
    assert value_of(" OR ".join(["type = 'x'"] * 250) + " OR TRUE").value is True
    for expression in ["(" * 2000 + "1" + ")" * 2000, " + ".join(["1"] * 2000), "NOT " * 5000 + "TRUE"]:
        with pytest.raises(CesqlParseError, match="nests more than 300 levels"):
            compile_cesql(expression)


# -- functions registry -----------------------------------------------------------------

def test_register_function_rules():
    registry = FunctionRegistry(parent=BUILTINS)
    register_function("twice", (int,), lambda x: 2 * x, returns=int, registry=registry)
    assert compile_cesql("TWICE('21')", registry).evaluate(event()).value == 42
    with pytest.raises(CesqlError, match="already defined"):
        register_function("TWICE", (str,), lambda x: 0, returns=int, registry=registry)
    with pytest.raises(CesqlError, match="already defined"):
        register_function("LEFT", (str, int), lambda x, y: x, returns=str, registry=registry)
    with pytest.raises(CesqlError, match="variadic"):
        register_function("TWICE", (), lambda *x: 0, returns=int, variadic=int, registry=registry)
    register_function("TWICE", (int, int), lambda x, y, *rest: 2 * x * y + sum(rest), returns=int, variadic=int, registry=registry)
    assert compile_cesql("TWICE(1, 2, '3', 4)", registry).evaluate(event()).value == 11
    with pytest.raises(CesqlError, match="invalid function name"):
        register_function("BAD1", (), lambda: 1, returns=int, registry=registry)
    with pytest.raises(CesqlError, match="types"):
        register_function("FLOATY", (float,), lambda x: 1, returns=int, registry=registry)
    # the builtins are untouched
    assert compile_cesql("TWICE(1)").evaluate(event()).error.kind == "missingFunction"


# -- requirements (trigger index) -------------------------------------------------------

@pytest.mark.parametrize("expression,expected", [
    ("type = 'a'", [("exact", "type", "a")]),
    ("'a' = type", [("exact", "type", "a")]),
    ("TYPE = 'a' AND source LIKE 'http://%' AND (subject = 's' AND x = 'y')",
     [("exact", "type", "a"), ("prefix", "source", "http://"), ("exact", "subject", "s"), ("exact", "x", "y")]),
    ("type LIKE '%'", [("prefix", "type", "")]),
    ("type IN ('a', 'b')", [("in", "type", ("a", "b"))]),
    ("type = 'a' OR type = 'b'", []),
    ("NOT type = 'a'", []),
    ("type != 'a'", []),
    ("type NOT LIKE 'a%'", []),
    ("type NOT IN ('a')", []),
    ("type LIKE 'a_%'", []),
    ("type LIKE 'a%b%'", []),
    ("type LIKE 'a\\%%'", []),  # escapes: skipped, to stay on the safe side
    ("type LIKE 'abc'", []),
    ("type = 5", []),  # '05' = 5 after the cast
    ("'05' = myint", []),  # '05' cast to Integer equals 5, whose string form is '5'
    ("'5' = myint", [("exact", "myint", "5")]),
    ("'TRUE' = mybool", []),
    ("'true' = mybool", [("exact", "mybool", "true")]),
    ("myint IN ('5', '+5')", []),
    ("type = source", []),
    ("LOWER(type) = 'a'", []),
    ("FALSE AND type = 'a'", [("exact", "type", "a")]),  # never passes: any requirement holds
    ("type = 'a' XOR source = 'b'", []),
])
def test_requirements(expression, expected):
    assert CesqlFilter(expression, "p").requirements() == expected


REQUIREMENT_EXPRESSIONS = [
    "type = 'a'", "'a' = type", "type LIKE 'a%' AND source = 'b'", "'5' = myint", "'05' = myint",
    "myint = '5'", "'true' = mybool", "'TRUE' = mybool", "mybool = 'true'", "type IN ('a', 'ab', '5')",
    "myint IN ('5', '10')", "myint IN ('05', 'a')", "type = 'a' AND (source LIKE 'b%' OR myint > 3)",
    "myext LIKE '%' AND type = 'ab'", "(type = 'a' AND source = 'b') AND myint < 7",
]
_values = st.one_of(st.sampled_from(["a", "ab", "b", "5", "05", "true", "TRUE", ""]), st.integers(-2, 12), st.booleans())


@settings(max_examples=200, deadline=None)
@given(type_=st.sampled_from(["a", "ab", "b", "5"]), source=st.sampled_from(["b", "bc", "a"]),
       myint=st.one_of(st.none(), _values), mybool=st.one_of(st.none(), _values), myext=st.one_of(st.none(), _values))
def test_requirements_hold_whenever_the_filter_does_not_fail(type_, source, myint, mybool, myext):
    attributes = {"specversion": "1.0", "id": "1", "type": type_, "source": source,
                  "myint": myint, "mybool": mybool, "myext": myext}
    view = EventView({k: v for k, v in attributes.items() if v is not None})
    for expression in REQUIREMENT_EXPRESSIONS:
        node = CesqlFilter(expression, "p")
        if node.filter(view) is FAIL:
            continue
        for kind, name, value in node.requirements():
            actual = view.string(name)
            assert actual is not None, (expression, name)
            if kind == "exact":
                assert actual == value, (expression, actual, value)
            elif kind == "prefix":
                assert actual.startswith(value), (expression, actual, value)
            else:
                assert actual in value, (expression, actual, value)


# -- pickling ---------------------------------------------------------------------------

def test_pickles_as_its_spec():
    node = materialize({"cesql": "type LIKE 'dev.%' AND myint > 2"}, "spec.filters[3]")
    copy = pickle.loads(pickle.dumps(node))
    assert isinstance(copy, CesqlFilter) and copy is not node
    assert copy.describe() == node.describe()
    assert copy._origin == node._origin
    assert copy.requirements() == node.requirements() == [("prefix", "type", "dev.")]
    for view in (event(myint=3), event(myint=1), event(type="other", myint=3)):
        assert copy.filter(view) is node.filter(view)
    assert copy.filter(event(myint=3)) is PASS


def test_unmaterialized_filter_does_not_pickle():
    with pytest.raises(TypeError, match="materialize"):
        pickle.dumps(CesqlFilter("type = 'a'", "p"))
