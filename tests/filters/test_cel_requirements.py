"""CelFilter.requirements(): attribute constraints the multi-trigger index may rely on."""
from __future__ import annotations

import datetime as dt
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filters.base import EventView, FilterResult
from filters.cel import CelFilter
from filters.materialize import materialize


@pytest.mark.parametrize(
    "expression, expected",
    [
        ('type == "com.example.order"', [("exact", "type", "com.example.order")]),
        ('"com.example.order" == type', [("exact", "type", "com.example.order")]),
        ('source.startsWith("/shop/")', [("prefix", "source", "/shop/")]),
        (
            'type == "a" && source.startsWith("/s") && data.amount > 10 && myext == "x"',
            [("exact", "type", "a"), ("prefix", "source", "/s"), ("exact", "myext", "x")],
        ),
        ('(type == "a" && subject == "b") && id == "c"', [("exact", "type", "a"), ("exact", "subject", "b"), ("exact", "id", "c")]),
        ('((type == "a"))', [("exact", "type", "a")]),
        ('type == "a\\tb"', [("exact", "type", "a\tb")]),
        ("type == 'single'", [("exact", "type", "single")]),
        ('type == r"raw\\n"', [("exact", "type", "raw\\n")]),
        ('type == """triple"""', [("exact", "type", "triple")]),
        # not requirements
        ('type == "a" || source == "b"', []),
        ('(type == "a" || x) && source == "b"', [("exact", "source", "b")]),
        ('!(type == "a")', []),
        ('type != "a"', []),
        ('type == "a" ? true : false', []),
        ('data == "x"', []),
        ('data.type == "x"', []),
        ('type == b"a"', []),
        ("type == 1", []),
        ('type == "a" + "b"', []),
        ("type == source", []),
        ('type.startsWith(source)', []),
        ('type.endsWith("x")', []),
        ('type.startsWith("a", "b")', []),
        ('"abc".startsWith("a")', []),
        ('[type].exists(t, t == "a")', []),
        ('type in ["a", "b", "a"]', [("in", "type", ("a", "b"))]),
        ('type == "x" && source in ["/a"]', [("exact", "type", "x"), ("in", "source", ("/a",))]),
        ('type in ["a", 1]', []),
        ("type in []", []),
        ('type in ["a"] + ["b"]', []),
        ('data in ["a"]', []),
        ('"a" in type', []),
        ("", []),
    ],
)
def test_requirements(expression, expected):
    assert CelFilter(expression, "spec.filters[0].cel").requirements() == expected


def test_requirements_of_fallback_filters_too():
    f = CelFilter('type == "a" && [1].reduce(r, x, 0, r + x) == 1', "p")
    assert f.engine == "celpy"
    assert f.requirements() == [("exact", "type", "a")]


def test_celfilter_pickles_as_its_spec_with_requirements():
    f = materialize({"cel": 'type == "a" && source.startsWith("/x")'})
    g = pickle.loads(pickle.dumps(f))
    assert g.requirements() == f.requirements() == [("exact", "type", "a"), ("prefix", "source", "/x")]
    assert g.engine == f.engine == "compiled"


# soundness: whenever filter() does not FAIL, every requirement holds for the event

VALUES = st.one_of(
    st.sampled_from(["a", "ab", "b", "", "/x/y", "/x", "a\tb"]),
    st.integers(-2, 2),
    st.booleans(),
    st.binary(max_size=2),
    st.just(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
)
CONJUNCTS = st.sampled_from(
    ['type == "a"', '"a" == type', 'source.startsWith("/x")', 'ext in ["a", "ab"]', 'type in ["a", "b"]', 'ext == "ab"', 'ext.startsWith("a")', "data.n > 1", 'subject == ""',
     'time.startsWith("2")', 'blob == "a"', "flag == true", 'type != "b"', '(type == "a" || ext == "b")', "true", "data.missing"]
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(CONJUNCTS, min_size=1, max_size=4), st.dictionaries(st.sampled_from(["type", "source", "ext", "subject", "time", "blob", "flag"]), VALUES), st.one_of(st.none(), st.fixed_dictionaries({"n": st.integers(0, 3)})))
def test_requirements_are_sound(conjuncts, attributes, data):
    f = CelFilter(" && ".join(conjuncts), "p")
    event = EventView(attributes, data)
    if f.filter(event) is FilterResult.FAIL:
        return
    for kind, attr, literal in f.requirements():
        text = event.string(attr)
        assert text is not None
        if kind == "exact":
            assert text == literal
        elif kind == "in":
            assert text in literal
        else:
            assert text.startswith(literal)


def test_fast_gives_filter_results_and_counts_errors():
    f = CelFilter('type == "a" && data.n > 1', "p")
    fast = f.fast()
    for attrs, data in [({"type": "a"}, {"n": 2}), ({"type": "b"}, None), ({"type": "a"}, None), ({"type": "a"}, {"n": "x"})]:
        event = EventView(attrs, data)
        before = f.errors
        expected = CelFilter('type == "a" && data.n > 1', "p").filter(event)
        assert fast(event) is expected
        assert f.errors - before == (1 if attrs == {"type": "a"} and (data is None or data == {"n": "x"}) else 0)
    assert CelFilter("", "p").fast()(EventView({})) is FilterResult.NO_FILTER
    assert CelFilter("data.n", "p").fast()(EventView({}, {"n": 1})) is FilterResult.FAIL  # not a bool
