"""CEL's strings extension in trigger filters: compiled (not celpy), on real event views,
with errors counted like any CEL error. cel-spec's string_ext conformance file covers the
functions' edge cases (tests/filters/test_cel_conformance.py); this covers filters."""
from __future__ import annotations

import pytest

from filters.base import EventView, FilterResult
from filters.cel import CelFilter

EVENT = EventView(
    {"type": "com.live.chat.message", "source": "/live/eu/room-7", "subject": "rooms/room-7/users/Ana",
     "id": "e-1", "specversion": "1.0"},
    {"user": {"name": "  VIP-Ana  ", "tags": ["gold", "eu"]}, "text": "Free COINS here"},
)


@pytest.mark.parametrize("expression", [
    'subject.split("/")[1] == "room-7"',
    'subject.split("/", 2) == ["rooms", "room-7/users/Ana"]',
    'data.user.name.trim().lowerAscii().startsWith("vip-")',
    'data.text.upperAscii().contains("FREE COINS")',
    'data.user.tags.join(",") == "gold,eu"',
    'source.substring(6, 8) == "eu" && source.indexOf("room") == 9 && source.lastIndexOf("/") == 8',
    'source.charAt(1) == "l" && source.replace("/", ".", 2) == ".live.eu/room-7"',
    'type.reverse().startsWith("egassem")',
    'strings.quote(data.text) == "\\"Free COINS here\\""',
    '"%s in %s: %.1f%% of %d".format([data.user.tags[0], subject.split("/")[1], 12.345, 3]) == "gold in room-7: 12.3% of 3"',
])
def test_extension_functions_pass_on_events(expression):
    f = CelFilter(expression, "spec.filters[0].cel")
    assert f.engine == "compiled", f.fallback_reason
    assert f.filter(EVENT) is FilterResult.PASS
    assert f.fast()(EVENT) is FilterResult.PASS
    assert f.errors == 0


@pytest.mark.parametrize("expression, message", [
    ("data.text.charAt(99) == 'x'", "index out of range: 99"),
    ("data.text.substring(5, 2) == ''", "invalid substring range. start: 5, end: 2"),
    ("data.user.tags.lowerAscii() == ''", "no matching overload for 'lowerAscii'"),
    ("data.text.split(1) == []", "no matching overload for 'split'"),
    ("[1, size(data.text)].join(',') == '1,2'", "join: invalid input"),
    ("'%d and %d'.format([size(data.text)]) == ''", "index 1 out of range"),
    ("'%d'.format([data.text]) == ''", "decimal clause can only be used on integers, was given string"),
])
def test_extension_errors_fail_the_filter_are_counted_and_explained(expression, message):
    f = CelFilter(expression, "spec.filters[0].cel")
    assert f.filter(EVENT) is FilterResult.FAIL
    assert f.errors == 1
    assert message in f.explain(EVENT).detail


@pytest.mark.parametrize("expression, message", [
    ("[1, 2].join(',') == '1,2'", "join: invalid input"),
    ("'%d and %d'.format([1]) == ''", "index 1 out of range"),
])
def test_extension_errors_of_constants_reject_the_filter_when_it_loads(expression, message):
    from filters.errors import FilterSpecError

    with pytest.raises(FilterSpecError, match="a part of it is an error for every event") as info:
        CelFilter(expression, "spec.filters[0].cel")
    assert message in str(info.value)


# --------------------------------------------------------------------------------------
# against cel-cpp's strings extension, on generated strings and indexes

cel = pytest.importorskip("cel_expr_python.cel", reason="cel-expr-python (requirements.txt) is not installed")
ext_strings = pytest.importorskip("cel_expr_python.ext.ext_strings")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from filters.cel import parse_source  # noqa: E402
from filters.cel_compiler import compile_expression  # noqa: E402
from filters.cel_compiler import runtime as rt  # noqa: E402

_VARIABLES = {"s": cel.Type.STRING, "t": cel.Type.STRING, "u": cel.Type.STRING, "i": cel.Type.INT,
              "j": cel.Type.INT, "xs": cel.Type.DYN}
_REFERENCE = cel.NewEnv(variables=_VARIABLES, extensions=[ext_strings.ExtStrings()])
_CALLS = [
    "s.charAt(i)", "s.indexOf(t)", "s.indexOf(t, i)", "s.lastIndexOf(t)", "s.lastIndexOf(t, i)", "s.lowerAscii()",
    "s.upperAscii()", "s.replace(t, u)", "s.replace(t, u, i)", "s.split(t)", "s.split(t, i)", "s.substring(i)",
    "s.substring(i, j)", "s.trim()", "xs.join()", "xs.join(t)",
    '"%s|%d|%x|%X|%o|%b".format([s, i, i, s, j, i])', '"%.2f %e %s %%".format([i, j, xs])',
]
# letters of both cases, non-ASCII letters, the white space trim() knows and some it does not
_CHARS = st.sampled_from(list("aAbBzZ-/., ") + ["\u00e9", "\u00c6", "\u03b1", "\u00a9", "\u2003", "\u200b",
                                                 "\u3000", "\x1c", "\t", "\n", "\U0001f600"])
_TEXT = st.text(_CHARS, max_size=8)


def _outcome(run):
    try:
        value = run()
    except rt.CelError:
        return "ERROR"
    return value


def _reference(expression: str, values: dict):
    result = _REFERENCE.compile(expression).eval(data=values)
    if result.type().name() == "ERROR":
        return "ERROR"
    value = result.value()
    return [x.value() if hasattr(x, "value") else x for x in value] if isinstance(value, list) else value


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_CALLS), _TEXT, _TEXT, _TEXT, st.integers(-2, 10), st.integers(-2, 10),
       st.lists(_TEXT, max_size=3))
def test_extension_functions_match_cel_cpp(expression, s, t, u, i, j, xs):
    values = {"s": s, "t": t, "u": u, "i": i, "j": j, "xs": xs}
    want = _reference(expression, values)
    fn = compile_expression(parse_source(expression), expression)
    got = _outcome(lambda: fn.evaluate_values(values))
    assert got == want, f"{expression} with {values!r}: cel-cpp {want!r}, knflow {got!r}"


@pytest.mark.parametrize(
    "expression, rewritten",
    [
        ("42.split('2') == ['4']", "(42).split('2') == ['4']"),
        ("0x2A.size() == 1 || 42u.charAt(0) == ''", "(0x2A).size() == 1 || (42u).charAt(0) == ''"),
        ("42.e5 == 1", "(42).e5 == 1"),  # a field of an int (CEL's floats need a digit after the dot)
        # unchanged: floats, identifiers with digits, strings, backquoted names
        ("1.5 < data.x && 1e5 > 2.0", "1.5 < data.x && 1e5 > 2.0"),
        ("data.v1.x == 'a42.split' && a42.size() == 1", "data.v1.x == 'a42.split' && a42.size() == 1"),
    ],
)
def test_method_call_on_an_integer_literal(expression, rewritten):
    """``42.split('2')`` is a call on an int (an evaluation error, no matching overload):
    celpy's parser would read ``42.`` as a float and fail, so the literal is parenthesized
    before parsing (``ir.unquote_fields``). Being an error whatever the event, it is
    refused when the trigger loads, as CEL's own error rather than a parse error."""
    from filters.cel_compiler.ir import unquote_fields
    from filters.errors import FilterSpecError

    assert unquote_fields(expression)[0] == rewritten
    if rewritten == expression:
        assert CelFilter(expression, "p").engine == "compiled"
        return
    fn = compile_expression(parse_source(expression), expression)
    assert fn.constant_errors and all(
        "no matching overload" in m or "does not support field selection" in m for m in fn.constant_errors)
    with pytest.raises(FilterSpecError, match="a part of it is an error for every event"):
        CelFilter(expression, "p")


@pytest.mark.parametrize(
    "expression, subject",
    [
        # an apostrophe in a comment opens no string: the literal after it stays a literal
        ("// it's the subject\nsubject == '42.x'", "42.x"),
        ("// it's the subject\nsubject == '42.x' && m.`a-b` == 1", "42.x"),
        # a name ending in r before a string is no raw-string prefix: its escapes still escape
        ("[data.r,'a\\'b 1.x'][1] == subject", "a'b 1.x"),
        ("r'\\d 1.x' == subject", "\\d 1.x"),
    ],
)
def test_rewriting_leaves_comments_and_string_literals_alone(expression, subject):
    """``ir.unquote_fields`` rewrites code, never what a comment or a string literal says."""
    from filters.cel_compiler.ir import unquote_fields

    rewritten, _ = unquote_fields(expression)
    assert "'42.x'" not in expression or "'42.x'" in rewritten
    assert "(1).x" not in rewritten and "(42).x" not in rewritten
    view = EventView({"type": "t", "subject": subject, "m": {"a-b": 1}}, {"r": 1})
    assert CelFilter(expression, "p").explain(view).result is FilterResult.PASS, (expression, rewritten)
