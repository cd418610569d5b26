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
    ("[1, 2].join(',') == '1,2'", "join: invalid input"),
    ("'%d and %d'.format([1]) == ''", "index 1 out of range"),
    ("'%d'.format([data.text]) == ''", "decimal clause can only be used on integers, was given string"),
])
def test_extension_errors_fail_the_filter_are_counted_and_explained(expression, message):
    f = CelFilter(expression, "spec.filters[0].cel")
    assert f.filter(EVENT) is FilterResult.FAIL
    assert f.errors == 1
    assert message in f.explain(EVENT).detail
