"""CEL timestamps and durations to the nanosecond (``runtime.NanoTimestamp`` /
``NanoDuration``), event times with nanoseconds included.

Expected values are cel-cpp's (checked through ``cel-expr-python`` when the test was
written; ``test_cel_differential`` compares generated cases with it continuously).
"""
from __future__ import annotations

import copy
import datetime as dt
import pickle

import pytest

from filters.base import EventView, FilterResult
from filters.cel import CelFilter, parse_source
from filters.cel_compiler import compile_expression
from filters.cel_compiler import runtime as rt
from transforms.codec import _parse_time

_UTC = dt.timezone.utc


def evaluate(expression: str, event: EventView | None = None, fold: bool = True):
    fn = compile_expression(parse_source(expression), expression, fold=fold)
    try:
        value = fn(event if event is not None else EventView({"type": "t"}, None))
    except rt.CelError as exc:
        return ("ERROR", str(exc))
    return ("ERROR", str(value)) if isinstance(value, rt.CelError) else value


def event_at(text: str) -> EventView:
    """An event whose time is decoded as the codec does (a Timestamp with ``text``)."""
    return EventView({"type": "t", "source": "/s", "time": _parse_time(text, ""), "priority": 7}, None)


NANO = event_at("2026-11-29T10:00:20.123456789Z")


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize(
    "expression, expected",
    [
        ('time == timestamp("2026-11-29T10:00:20.123456789Z")', True),
        ('time != timestamp("2026-11-29T10:00:20.123456789Z")', False),
        ('time == timestamp("2026-11-29T10:00:20.123456Z")', False),  # the microseconds alone
        ('timestamp("2026-11-29T10:00:20.123456Z") == time', False),
        ('time != timestamp("2026-11-29T10:00:20.123456Z")', True),
        ('time > timestamp("2026-11-29T10:00:20.123456788Z")', True),
        ('time < timestamp("2026-11-29T10:00:20.12345679Z")', True),
        ('time >= timestamp("2026-11-29T10:00:20.123456789Z") && time <= timestamp("2026-11-29T10:00:20.123456789Z")', True),
        # against plain constants at and next to its microsecond, both operand orders
        ('time > timestamp("2026-11-29T10:00:20.123456Z")', True),
        ('time >= timestamp("2026-11-29T10:00:20.123456Z")', True),
        ('time < timestamp("2026-11-29T10:00:20.123456Z")', False),
        ('time <= timestamp("2026-11-29T10:00:20.123456Z")', False),
        ('time < timestamp("2026-11-29T10:00:20.123457Z")', True),
        ('time <= timestamp("2026-11-29T10:00:20.123457Z")', True),
        ('time > timestamp("2026-11-29T10:00:20.123457Z")', False),
        ('timestamp("2026-11-29T10:00:20.123456Z") < time', True),
        ('timestamp("2026-11-29T10:00:20.123456Z") >= time', False),
        ('timestamp("2026-11-29T10:00:20.123457Z") > time', True),
        ('timestamp("2026-11-29T10:00:20.123457Z") <= time', False),
        ("string(time)", "2026-11-29T10:00:20.123456789Z"),
        ('time - timestamp("2026-11-29T10:00:20Z") == duration("0.123456789s")', True),
        ('string(time - timestamp("2026-11-29T10:00:20Z"))', "0.123456789s"),
        ('string(timestamp("2026-11-29T10:00:20Z") - time)', "-0.123456789s"),
        ('string(time + duration("1ns"))', "2026-11-29T10:00:20.123456790Z"),
        ('string(time - duration("789ns"))', "2026-11-29T10:00:20.123456Z"),
        ('type(time - duration("789ns")) == type(time)', True),
        ("time.getHours() == 10 && time.getMinutes() == 0 && time.getSeconds() == 20", True),
        ("time.getMilliseconds()", 123),
        ('time.getHours("+05:45") == 15 && time.getDayOfWeek("Europe/Berlin") == 0', True),
        ("int(time)", 1795946420),
        ("[time] == [timestamp('2026-11-29T10:00:20.123456789Z')]", True),
        ("[time] == [timestamp('2026-11-29T10:00:20.123456788Z')]", False),
        ("time in [timestamp('2026-11-29T10:00:20.123456789Z')]", True),
        ("time in [timestamp('2026-11-29T10:00:20.123456Z')]", False),
        ("type(time) == type(timestamp('2026-11-29T10:00:20Z'))", True),
        ('time > timestamp("2024-11-01T00:00:00Z") && priority >= 5', True),
    ],
)
def test_nanosecond_event_time(expression, expected, fold):
    assert evaluate(expression, NANO, fold) == expected


def test_event_time_forms():
    # an offset: the same instant, printed in UTC
    event = event_at("2026-11-29T10:00:20.123456789+05:45")
    assert evaluate("string(time)", event) == "2026-11-29T04:15:20.123456789Z"
    assert evaluate('time == timestamp("2026-11-29T04:15:20.123456789Z")', event) is True
    # 7 digits; more than 9 are dropped (as timestamp() does)
    assert evaluate("string(time)", event_at("2026-11-29T10:00:20.1234567Z")) == "2026-11-29T10:00:20.123456700Z"
    assert evaluate("string(time)", event_at("2026-11-29T10:00:20.1234567891234Z")) == "2026-11-29T10:00:20.123456789Z"
    assert evaluate("string(time)", event_at("2026-11-29t10:00:20.000000001z")) == "2026-11-29T10:00:20.000000001Z"
    # without digits below the microsecond the time stays a plain datetime (the fast form)
    for text in ("2026-11-29T10:00:20Z", "2026-11-29T10:00:20.5+01:00", "2026-11-29T10:00:20.123456000Z", "2026-11-29T10:00:20.1234560+05:45"):
        act = rt.activate(event_at(text))
        assert type(act["time"]) is dt.datetime, text
    assert type(rt.activate(NANO)["time"]) is rt.NanoTimestamp
    # a datetime without text (the SDK's, arithmetic results) is its microseconds
    assert evaluate("string(time)", EventView({"type": "t", "time": dt.datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=_UTC)}, None)) == "2026-01-01T00:00:00.000005Z"


def test_celfilter_on_nanosecond_times():
    f = CelFilter('time == timestamp("2026-11-29T10:00:20.123456789Z") && time > timestamp("2026-11-29T10:00:20.123456788Z")', "p")
    assert f.engine == "compiled"
    assert f.filter(NANO) is FilterResult.PASS
    assert f.filter(event_at("2026-11-29T10:00:20.123456788Z")) is FilterResult.FAIL
    assert f.filter(event_at("2026-11-29T10:00:20.123456Z")) is FilterResult.FAIL
    assert f.errors == 0


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize(
    "expression, expected",
    [
        ('string(timestamp("9999-12-31T23:59:59.999999999Z"))', "9999-12-31T23:59:59.999999999Z"),
        ('string(timestamp("2026-11-29T10:00:20.1Z"))', "2026-11-29T10:00:20.100Z"),
        ('string(timestamp("2026-11-29T10:00:20.12345Z"))', "2026-11-29T10:00:20.123450Z"),
        ('string(timestamp("2026-11-29T10:00:20.1234567891Z"))', "2026-11-29T10:00:20.123456789Z"),
        ('string(timestamp("2026-11-29T10:00:20.123456789-00:01"))', "2026-11-29T10:01:20.123456789Z"),
        ('string(duration("1.000000001s"))', "1.000000001s"),
        ('string(duration("1.1s"))', "1.100s"),
        ('string(duration("-1.0001s"))', "-1.000100s"),
        ('string(duration("1.0000001s"))', "1.000000100s"),
        ('string(duration("-1.5us"))', "-0.000001500s"),
        ('string(duration("-0.000000001s"))', "-0.000000001s"),
        ('string(duration("1.5ns"))', "0.000000001s"),  # truncated to whole nanoseconds
        ('string(duration("-1.0000000009s"))', "-1s"),
        ('string(duration("1h1m1.5s"))', "3661.500s"),
        ('string(duration("315576000000.999999999s"))', "315576000000.999999999s"),
        ('duration("1000000ns") == duration("1ms")', True),
        ('duration("1ms") < duration("1000001ns")', True),
        ('duration("1.000000001s") > duration("1s")', True),
        ('duration("-1ns") < duration("0s") && duration("-1ns") > duration("-1us")', True),
        ('[duration("1000000ns")] == [duration("1ms")]', True),
        ('[duration("1.000000001s")] == [duration("1s")]', False),
        ('duration("1ns") in [duration("0s"), duration("0.000000001s")]', True),
        ('string(duration("0.5us") + duration("0.5us"))', "0.000001s"),
        ('string(duration("1ns") - duration("2ns"))', "-0.000000001s"),
        ('type(duration("1ns") + duration("999ns")) == type(duration("1us"))', True),
        ('duration("-1ns").getMilliseconds()', 0),
        ('duration("-1.5009s").getMilliseconds()', -500),
        ('duration("1.0015s").getMilliseconds()', 1),
        ('duration("-1.000000001s").getSeconds()', -1),
        ('duration("-3599.999999999s").getHours()', 0),
        ('duration("-3600.000000001s").getMinutes()', -60),
        ('int(timestamp("1969-12-31T23:59:59.999999999Z"))', -1),
        ('timestamp("1969-12-31T23:59:59.999999999Z").getMilliseconds()', 999),
        ('timestamp("0001-01-01T00:00:01.000000001Z") + duration("-999999999ns") == timestamp("0001-01-01T00:00:00.000000002Z")', True),
        ('string(timestamp("0001-01-01T00:00:00.000000001Z") - duration("1ns"))', "0001-01-01T00:00:00Z"),
        ('string(timestamp("9999-12-31T23:59:59.999999998Z") + duration("1ns"))', "9999-12-31T23:59:59.999999999Z"),
        ('string(duration("1ns") + timestamp("2000-01-01T00:00:00Z"))', "2000-01-01T00:00:00.000000001Z"),
        ('string(timestamp("2262-04-11T23:47:16.854775807Z") - timestamp("1970-01-01T00:00:00Z"))', "9223372036.854775807s"),
        ('string(duration("9223372036.854775807s") + duration("0s"))', "9223372036.854775807s"),
        ('string(duration("-9223372036.854775808s") - duration("0s"))', "-9223372036.854775808s"),
        ('string(timestamp("2000-01-01T00:00:00Z") + duration("2562048h"))', "2292-04-11T00:00:00Z"),
    ],
)
def test_parse_print_arithmetic_compare(expression, expected, fold):
    assert evaluate(expression, fold=fold) == expected


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize(
    "expression",
    [
        'timestamp("9999-12-31T23:59:59.999999999Z") + duration("1ns")',
        'timestamp("0001-01-01T00:00:00Z") + duration("-1ns")',
        'timestamp("0001-01-01T00:00:00.000000001Z") - duration("2ns")',
        'timestamp("0001-01-01T00:00:00.000000001+00:01")',
        'timestamp("9999-12-31T23:59:59.999999999-00:01")',
        'duration("9223372036.854775807s") + duration("1ns")',
        'duration("-9223372036.854775808s") - duration("1ns")',
        'timestamp("2262-04-11T23:47:16.854775808Z") - timestamp("1970-01-01T00:00:00Z")',
        'timestamp("9999-12-31T23:59:59.999999999Z") - timestamp("9000-01-01T00:00:00Z")',
        'duration("315576000001s")',
        'duration("-315576000001s")',
        'int(duration("1.5s"))',
    ],
)
def test_out_of_range_is_an_error(expression, fold):
    assert evaluate(expression, fold=fold)[0] == "ERROR"


def test_one_form_per_value():
    """A value without digits below the microsecond is always the plain datetime /
    timedelta, whatever made it, so equal values never differ in type."""
    assert type(rt.to_timestamp("2026-11-29T10:00:20.123456000Z")) is dt.datetime
    assert type(rt.to_duration("1.000001000s")) is dt.timedelta
    assert type(rt.add(rt.to_duration("1ns"), rt.to_duration("999ns"))) is dt.timedelta
    assert type(rt.sub(rt.to_timestamp("2026-01-01T00:00:00.000000005Z"), rt.to_duration("5ns"))) is dt.datetime
    assert type(rt.sub(rt.to_timestamp("2026-01-01T00:00:00.000000005Z"), rt.to_timestamp("2026-01-01T00:00:00.000001005Z"))) is dt.timedelta


def test_python_equality_order_and_hash():
    plain = rt.to_timestamp("2026-11-29T10:00:20.123456Z")
    nano = rt.to_timestamp("2026-11-29T10:00:20.123456001Z")
    same = rt.to_timestamp("2026-11-29T10:00:20.123456001Z")
    later = rt.to_timestamp("2026-11-29T10:00:20.123456002Z")
    assert nano == same and hash(nano) == hash(same) and nano is not same
    assert nano != plain and plain != nano and not (nano == plain) and not (plain == nano)
    assert plain < nano < later and later > nano > plain and plain <= nano <= same >= nano
    assert sorted([later, plain, nano]) == [plain, nano, later]
    assert len({nano, same, plain}) == 2
    d1, d2 = rt.to_duration("1ns"), rt.to_duration("1.000000001s")
    assert d1 == rt.to_duration("0.000000001s") and d1 != dt.timedelta(0) and dt.timedelta(0) < d1 < dt.timedelta(microseconds=1)
    assert rt.to_duration("-1ns") < dt.timedelta(0) and dt.timedelta(microseconds=-1) < rt.to_duration("-1ns")
    assert dt.timedelta(seconds=1) < d2 and len({d2, rt.to_duration("1000000001ns")}) == 1
    for v in (nano, d1, rt.to_duration("-1ns")):
        assert pickle.loads(pickle.dumps(v)) == v and copy.deepcopy(v) == v and copy.copy(v) == v
        assert rt.format_value(v) in (f'timestamp("{rt.to_string(v)}")', f'duration("{rt.to_string(v)}")')
