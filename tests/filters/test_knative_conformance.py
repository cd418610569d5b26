"""Knative's own filter cases (../shared/conformance/knative/filter-cases.yaml) through our dialects."""
from __future__ import annotations

import re

import pytest
import yaml

from filters.base import EventView, Explanation, Filter, FilterResult
from filters.materialize import materialize, materialize_trigger
from filters._attribute import ATTRIBUTE_NAME
from filters.errors import FilterSpecError
from tests.conformance import CONFORMANCE


def _cases():
    """The parsed cases, or None when the conformance folder is absent (tests then skip)."""
    path = CONFORMANCE / "knative" / "filter-cases.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


CASES = _cases()

WANT = {"Pass": FilterResult.PASS, "Fail": FilterResult.FAIL, "NoFilter": FilterResult.NO_FILTER}


class Constant(Filter):
    """An always-PASS / always-FAIL child, as Knative's tests use."""

    def __init__(self, result: FilterResult) -> None:
        self.result = result

    def filter(self, event: EventView) -> FilterResult:
        return self.result


def _event(section: dict, extra) -> EventView:
    attrs = dict(section["base_event"])
    if isinstance(extra, str):
        attrs.update(section[extra])
    elif isinstance(extra, dict):
        attrs.update(extra)
    return EventView(attrs)


def _rows(section_name: str, dialect: str):
    if CASES is None:
        return []
    section = CASES[section_name]
    rows = section[dialect] if dialect != "cases" else section["cases"]
    return [pytest.param(section, row, id=f"{dialect}-{i}") for i, row in enumerate(rows) if "want" in row]


@pytest.mark.parametrize("section,row", _rows("unit_subscriptionsapi", "exact") + _rows("unit_subscriptionsapi", "prefix") + _rows("unit_subscriptionsapi", "suffix"))
def test_attribute_dialects(section, row):
    dialect = next(d for d in ("exact", "prefix", "suffix") if row in section[d])
    if not all(ATTRIBUTE_NAME.match(name) for name in row["filter"]):
        # Knative's webhook rejects such names (validation_webhook); we reject them at compile time.
        with pytest.raises(FilterSpecError, match="invalid attribute name"):
            materialize({dialect: row["filter"]})
        return
    flt = materialize({dialect: row["filter"]})
    assert flt.filter(_event(section, row.get("event"))) is WANT[row["want"]]


def _parse_expr(expr: str):
    """Parse Knative's shorthand ``All(P,Any(F))`` into a tree of our composite filters."""
    from filters.all import AllFilter
    from filters.any import AnyFilter
    from filters.not_ import NotFilter

    tokens = re.findall(r"All|Any|Not|<nil>|NoFilter|P|F|\(|\)|,", expr)
    pos = 0

    def node():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok in ("P", "F"):
            return Constant(FilterResult.PASS if tok == "P" else FilterResult.FAIL)
        if tok == "NoFilter":
            return materialize({})
        if tok == "<nil>":
            return None
        assert tokens[pos] == "("
        pos += 1
        children = []
        while tokens[pos] != ")":
            if tokens[pos] == ",":
                pos += 1
                continue
            children.append(node())
        pos += 1
        if tok == "Not":
            flt = NotFilter(None, "not", lambda spec, path: spec)
            flt.child = children[0] if children else None
            return flt
        cls = AllFilter if tok == "All" else AnyFilter
        flt = cls([], tok.lower(), lambda spec, path: spec)
        flt._children = tuple(children)
        return flt

    return node()


@pytest.mark.parametrize("row", [r for k in ("all", "any", "not", "no_filter") for r in (CASES or {}).get("unit_subscriptionsapi", {}).get(k, []) if "want" in r] or [pytest.param(None, marks=pytest.mark.skip(reason="conformance data absent"))])
def test_composite_dialects(row):
    flt = _parse_expr(row["expr"])
    assert flt.filter(EventView({"type": "x"})) is WANT[row["want"]], row["expr"]
    assert flt.explain(EventView({"type": "x"})).result is WANT[row["want"]], row["expr"]


@pytest.mark.parametrize("section,row", _rows("unit_attributes_legacy", "cases"))
def test_legacy_attributes(section, row):
    flt = materialize_trigger(row["filter"], None)
    assert flt.filter(_event(section, row.get("event"))) is WANT[row["want"]]


def _e2e():
    if CASES is None:
        return []
    out = []
    for name, case in CASES["e2e_broker_rekt"].items():
        if "filters" in case:
            for i, spec in enumerate(case["filters"]):
                filters = [spec] if name != "multiple_top_level_filters_are_ANDed" else case["filters"]
                out.append(pytest.param(filters, None, case["events"], id=f"{name}-{i}"))
                if name == "multiple_top_level_filters_are_ANDed":
                    break
        elif "trigger" in case:
            trig = case["trigger"]
            out.append(pytest.param(trig.get("filters"), (trig.get("filter") or {}).get("attributes"), case["events"], id=name))
        else:
            for key in ("trigger1", "trigger2"):
                events = case[f"events_to_{key}"]
                out.append(pytest.param(case[key]["filters"], None, events, id=f"{name}-{key}"))
    return out


@pytest.mark.parametrize("filters,attributes,events", _e2e())
def test_broker_end_to_end_cases(filters, attributes, events):
    """The rekt feature cases: which events a trigger delivers (NoFilter delivers)."""
    root = materialize_trigger(attributes, filters)
    for event in events:
        attrs = {"specversion": "1.0", "id": "1", "source": event.get("source", "http://example.com/source"),
                 "type": event.get("type", "com.example.FullEvent")}
        attrs.update(event.get("extensions", {}))
        assert root.filter(EventView(attrs)).delivers is event["deliver"], (filters, event)


def test_loader_found_cases():
    if CASES is None:  # pragma: no cover

        pytest.skip("conformance data absent")
    assert len(_rows("unit_subscriptionsapi", "exact")) == 11
    assert len(_e2e()) >= 12


def test_constructor_errors_name_the_field():
    from filters.errors import FilterSpecError

    for spec, needle in [
        ({"exact": {"type": ""}}, "spec.filters.exact.type: value must not be empty"),
        ({"prefix": {"": "x"}}, "invalid attribute name ''"),
        ({"suffix": {"Type": "x"}}, "invalid attribute name 'Type'"),
        ({"exact": {"type": "a"}, "prefix": {"type": "b"}}, "multiple dialects found"),
        ({"bogus": {}}, "unknown filter dialect 'bogus'"),
        ({"any": {"exact": {}}}, "must be a list of filters"),
        ({"exact": {"type": 5}}, "value must be a string"),
        ({"cel": "type =="}, "invalid CEL expression at line 1"),
    ]:
        with pytest.raises(FilterSpecError) as info:
            materialize(spec)
        assert needle in str(info.value), (spec, str(info.value))


def test_explanation_tree_says_why():
    root = materialize_trigger(None, [{"any": [{"exact": {"type": "a"}}, {"prefix": {"source": "/x"}}]}])
    exp = root.explain(EventView({"type": "b", "source": "/y"}))
    assert exp.result is FilterResult.FAIL
    text = "\n".join(exp.lines())
    assert "type='b' does not exact-match 'a'" in text and "source='/y' does not prefix-match '/x'" in text
    assert isinstance(exp.children[0], Explanation)
