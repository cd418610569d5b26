"""The trigger index returns exactly what evaluating every trigger returns."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from filters.base import EventView
from filters.index import TriggerIndex
from filters.materialize import materialize_trigger

TYPES = ["com.live.gift", "com.live.like", "com.live.comment", "org.other", ""]
SOURCES = ["/rooms/1", "/rooms/2", "/users/9"]

values = st.sampled_from(TYPES[:-1] + ["com.", "com.live", "/rooms"])
attr = st.sampled_from(["type", "source", "subject", "ext"])
attribute_map = st.dictionaries(attr, values, min_size=1, max_size=2)
leaf = st.one_of(
    st.builds(lambda m: {"exact": m}, attribute_map),
    st.builds(lambda m: {"prefix": m}, attribute_map),
    st.builds(lambda m: {"suffix": m}, attribute_map),
    st.builds(lambda v: {"cel": f'type == "{v}" && data.n > 1'}, values),
)
node = st.recursive(leaf, lambda inner: st.one_of(
    st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda x: {"not": x}, inner),
), max_leaves=6)
trigger = st.one_of(
    st.builds(lambda fs: (None, fs), st.lists(node, max_size=3)),
    # legacy attributes: "" means "present and non-empty"; {} matches everything
    st.builds(lambda m: (m, None), st.dictionaries(attr, st.sampled_from(TYPES), max_size=2)),
)
event = st.builds(
    lambda t, s, sub, ext, n: EventView({k: v for k, v in {"type": t, "source": s, "subject": sub, "ext": ext}.items() if v is not None}, {"n": n}),
    st.sampled_from(TYPES), st.sampled_from(SOURCES), st.one_of(st.none(), values), st.one_of(st.none(), values), st.integers(0, 3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(trigger, min_size=1, max_size=12), st.lists(event, min_size=1, max_size=8))
def test_index_equals_evaluating_every_trigger(triggers, events):
    entries = [(materialize_trigger(attrs, filters), i) for i, (attrs, filters) in enumerate(triggers)]
    index = TriggerIndex(entries)
    for ev in events:
        assert index.match(ev) == index.match_all(ev)


def test_index_skips_triggers_that_cannot_match():
    entries = [(materialize_trigger(None, [{"exact": {"type": f"t{i}"}}]), i) for i in range(1000)]
    entries.append((materialize_trigger(None, [{"any": [{"exact": {"type": "a"}}, {"exact": {"type": "b"}}]}]), "ab"))
    entries.append((materialize_trigger(None, [{"prefix": {"type": "com.live."}}]), "prefix"))
    entries.append((materialize_trigger(None, [{"suffix": {"type": "x"}}]), "unindexed"))
    index = TriggerIndex(entries)
    assert index.candidates(EventView({"type": "t7"})) == [7, 1002]
    assert index.match(EventView({"type": "b"})) == ["ab"]
    assert index.match(EventView({"type": "com.live.x"})) == ["prefix", "unindexed"]
    assert index.indexed_by[1000] == ("in", "type", ("a", "b"))
    assert index.indexed_by[1002] is None
