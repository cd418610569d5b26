"""Values and operations of compiled CEL code, following the CEL specification.

Representation (chosen so the hot paths are plain Python operations):

=====================  =======================================================
CEL type               compiled representation
=====================  =======================================================
``bool``               ``bool``
``int``                ``int`` (always within int64)
``uint``               :class:`Uint` (an ``int`` subclass, within uint64)
``double``             ``float``
``string``             ``str``
``bytes``              ``bytes``
``null_type``          ``None``
``list``               ``list`` (never mutated once built)
``map``                ``dict`` (:data:`CelMap`; keys bool/int/uint/string)
``timestamp``          ``datetime.datetime`` in UTC, or :class:`NanoTimestamp` when
                       it has digits below the microsecond
``duration``           ``datetime.timedelta``, or :class:`NanoDuration` when it
                       has digits below the microsecond
``type``               :class:`CelType`
=====================  =======================================================

Semantics are the specification's (``langdef.md``), as the conformance suite and the
reference implementation (cel-cpp, through ``cel-expr-python``) check them:
heterogeneous equality (``1 == 1.0``, ``[1] == [1.0]``, ``1 == "a"`` is false, never an
error), numeric ordering across int/uint/double, int64/uint64 overflow errors, IEEE
doubles, ``&&``/``||`` absorbing errors commutatively, strict map/filter bodies.

Errors: a CEL error value is a raised :class:`CelError` whose message says what went
wrong in the specification's terms (``no such key``, ``no matching overload``,
``division by zero``, ...). ``&&``, ``||``, ``all()`` and ``exists()`` catch it.
"""
from __future__ import annotations

import datetime
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import re2

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
_TWO63 = 9223372036854775808.0
_TWO64 = 18446744073709551616.0


class CelError(Exception):
    """A CEL error value, raised; the message is meant for people (``knflow match``)."""


class Uint(int):
    """A CEL ``uint``. Equal (and hashing equal) to the ``int`` of the same value, so
    map lookups by number work across int/uint as the specification asks."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value (``type(1) == int``); compared by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


BOOL_T, INT_T, UINT_T, DOUBLE_T = CelType("bool"), CelType("int"), CelType("uint"), CelType("double")
STRING_T, BYTES_T, LIST_T, MAP_T = CelType("string"), CelType("bytes"), CelType("list"), CelType("map")
NULL_T, TYPE_T = CelType("null_type"), CelType("type")
TIMESTAMP_T, DURATION_T = CelType("google.protobuf.Timestamp"), CelType("google.protobuf.Duration")

#: Identifiers that name a type when no variable of that name exists.
TYPE_IDENTS = {t.name: t for t in (BOOL_T, INT_T, UINT_T, DOUBLE_T, STRING_T, BYTES_T, LIST_T, MAP_T, NULL_T, TYPE_T)}

_DT = datetime.datetime
_TD = datetime.timedelta
_UTC = datetime.timezone.utc
_EPOCH = _DT(1970, 1, 1, tzinfo=_UTC)
_ONE_US = _TD(microseconds=1)


# --------------------------------------------------------------------------------------
# Nanoseconds
#
# CEL's timestamps and durations count nanoseconds; Python's datetime and timedelta stop
# at microseconds. A value without digits below the microsecond stays a plain datetime /
# timedelta (the generated code's fast paths test ``type(x) is datetime``); one with such
# digits is a subclass carrying them in ``nanos`` (1-999, always added: -1ns is
# timedelta(microseconds=-1) plus 999). Such a subclass is made only when ``nanos`` is not
# 0, so one instant or length has one form, and a plain value never equals a Nano one.
# Python's operators compare them exactly (equality, order, hash); arithmetic goes
# through ``add`` and ``sub`` (Python's ``+`` and ``-`` on them would drop ``nanos``).


def _nanos(x: Any) -> int:
    t = type(x)
    return x.nanos if (t is NanoTimestamp or t is NanoDuration) else 0


def _time_cmp(base: Any, a: Any, b: Any) -> int:
    """-1/0/1 comparing two timestamps (``base`` datetime) or two durations (timedelta),
    plain or Nano."""
    if base.__eq__(a, b):
        na, nb = _nanos(a), _nanos(b)
        return (na > nb) - (na < nb)
    return -1 if base.__lt__(a, b) else 1


class NanoTimestamp(_DT):
    """A CEL timestamp whose nanoseconds are not a whole microsecond: the datetime (UTC,
    to the microsecond, as its fields say) plus ``nanos`` (1-999). See above."""

    __slots__ = ("nanos",)

    def __eq__(self, other: Any) -> bool:
        return type(other) is NanoTimestamp and self.nanos == other.nanos and _DT.__eq__(self, other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    # against a plain datetime d (no nanos): self > d exactly when its microseconds >= d
    def __lt__(self, other: Any) -> Any:
        if type(other) is _DT:
            return _DT.__lt__(self, other)
        return _time_cmp(_DT, self, other) < 0 if isinstance(other, _DT) else NotImplemented

    def __le__(self, other: Any) -> Any:
        if type(other) is _DT:
            return _DT.__lt__(self, other)
        return _time_cmp(_DT, self, other) <= 0 if isinstance(other, _DT) else NotImplemented

    def __gt__(self, other: Any) -> Any:
        if type(other) is _DT:
            return _DT.__ge__(self, other)
        return _time_cmp(_DT, self, other) > 0 if isinstance(other, _DT) else NotImplemented

    def __ge__(self, other: Any) -> Any:
        if type(other) is _DT:
            return _DT.__ge__(self, other)
        return _time_cmp(_DT, self, other) >= 0 if isinstance(other, _DT) else NotImplemented

    #: equal values have equal microseconds (one that differs only in nanos collides)
    __hash__ = _DT.__hash__

    def __reduce_ex__(self, protocol: Any) -> Any:  # datetime's would drop nanos
        return _make_ts, (_plain_ts(self), self.nanos)

    def __repr__(self) -> str:
        return f"NanoTimestamp({format_timestamp(self)})"


class NanoDuration(_TD):
    """A CEL duration whose nanoseconds are not a whole microsecond: the timedelta
    (floored to the microsecond) plus ``nanos`` (1-999). See above."""

    __slots__ = ("nanos",)

    def __eq__(self, other: Any) -> bool:
        return type(other) is NanoDuration and self.nanos == other.nanos and _TD.__eq__(self, other)

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)

    def __lt__(self, other: Any) -> Any:
        return _time_cmp(_TD, self, other) < 0 if isinstance(other, _TD) else NotImplemented

    def __le__(self, other: Any) -> Any:
        return _time_cmp(_TD, self, other) <= 0 if isinstance(other, _TD) else NotImplemented

    def __gt__(self, other: Any) -> Any:
        return _time_cmp(_TD, self, other) > 0 if isinstance(other, _TD) else NotImplemented

    def __ge__(self, other: Any) -> Any:
        return _time_cmp(_TD, self, other) >= 0 if isinstance(other, _TD) else NotImplemented

    __hash__ = _TD.__hash__

    def __reduce_ex__(self, protocol: Any) -> Any:
        return _make_dur, (_TD(self.days, self.seconds, self.microseconds), self.nanos)

    def __repr__(self) -> str:
        return f"NanoDuration({format_duration(self)})"


def _make_ts(p: _DT, nanos: int) -> Any:
    """The timestamp ``p`` (a plain UTC datetime) plus ``nanos`` (0-999)."""
    if nanos == 0:
        return p
    t = NanoTimestamp(p.year, p.month, p.day, p.hour, p.minute, p.second, p.microsecond, _UTC)
    t.nanos = nanos
    return t


def _plain_ts(x: Any) -> _DT:
    """A timestamp to the microsecond (the getters read no more)."""
    if type(x) is NanoTimestamp:
        return _DT(x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond, _UTC)
    return x


def _make_dur(p: _TD, nanos: int) -> Any:
    if nanos == 0:
        return p
    d = NanoDuration(p.days, p.seconds, p.microseconds)
    d.nanos = nanos
    return d


def _ts_ns(x: Any) -> int:
    """Nanoseconds since the epoch."""
    return (x - _EPOCH) // _ONE_US * 1000 + _nanos(x)


def _dur_ns(x: Any) -> int:
    return x // _ONE_US * 1000 + _nanos(x)


#: CEL's timestamp range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z, in
#: nanoseconds since the epoch (the seconds: the range of timestamp(int))
_TS_MIN_S, _TS_MAX_S = -62135596800, 253402300799
_TS_MIN_NS, _TS_MAX_NS = _TS_MIN_S * 10**9, (_TS_MAX_S + 1) * 10**9 - 1


def _ts_from_ns(ns: int) -> Any:
    if _TS_MIN_NS <= ns <= _TS_MAX_NS:
        us, nanos = divmod(ns, 1000)
        return _make_ts(_EPOCH + _TD(microseconds=us), nanos)
    raise CelError("timestamp out of range")


def _dur_from_ns(ns: int) -> Any:
    """A duration result of arithmetic: within int64 nanoseconds, as cel-cpp's."""
    if INT64_MIN <= ns <= INT64_MAX:
        us, nanos = divmod(ns, 1000)
        return _make_dur(_TD(microseconds=us), nanos)
    raise CelError("duration out of range (integer overflow)")


class NoSuchKey(CelError):
    """``m.f`` / ``m[k]`` without that key (the message is made only when shown)."""

    def __str__(self) -> str:
        return f"no such key: {_show(self.args[0])}"


class Undeclared(CelError):
    """An identifier that is neither a variable (attribute) nor a type name."""

    def __str__(self) -> str:
        return f"undeclared reference to '{self.args[0]}' (no such attribute)"


#: A CEL map is a plain ``dict``. A subclass (one whose missing keys raise
#: :class:`NoSuchKey`) costs ~10 ns per ``m.get``/``m[k]``: CPython 3.11 specialises
#: those calls for exact dicts only. Compiled code reads a map with ``.get`` and a
#: sentinel instead, so a missing key is never a ``KeyError`` (which means a missing
#: variable, see :func:`undeclared`).
CelMap = dict
#: a key's absence, where a map's value may be None (CEL's null)
ABSENT = object()


class Activation(dict):
    """Identifier -> value, as ``evaluate_values`` (tests) and constant folding give them.

    A name that is no variable but names a type (``int``, ``string``, ``type``, ...) is that
    type value; anything else is an ``undeclared reference`` error. A variable wins over
    the type of the same name: a CloudEvent always has a ``type`` attribute, so ``type``
    is that attribute; ``type(x)`` (a call) is always the built-in function.

    Events use a plain ``dict`` instead (see :func:`activate`): the compiled code reads it
    with exact-dict lookups and turns a ``KeyError`` into :class:`Undeclared`.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        t = TYPE_IDENTS.get(key)
        if t is None:
            raise Undeclared(key)
        return t


_TYPE_OF = {
    bool: BOOL_T,
    int: INT_T,
    Uint: UINT_T,
    float: DOUBLE_T,
    str: STRING_T,
    bytes: BYTES_T,
    type(None): NULL_T,
    list: LIST_T,
    CelMap: MAP_T,
    _DT: TIMESTAMP_T,
    _TD: DURATION_T,
    NanoTimestamp: TIMESTAMP_T,
    NanoDuration: DURATION_T,
    CelType: TYPE_T,
}


def kind(v: Any) -> str:
    t = _TYPE_OF.get(type(v))
    return t.name if t is not None else type(v).__name__


def _show(v: Any) -> str:
    if type(v) is str:
        return repr(v)
    return format_value(v)


def no_overload(fn: str, *args: Any) -> CelError:
    return CelError(f"no matching overload for '{fn}' applied to ({', '.join(kind(a) for a in args)})")


def raise_error(message: str) -> Any:
    raise CelError(message)


# --------------------------------------------------------------------------------------
# Events


class Invalid:
    """A value the event holds that has no CEL type: every operation on it is an error."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


#: the digits below the microsecond of an RFC 3339 text (its fraction starts at 19)
_SUB_MICRO = re.compile(r"\.[0-9]{6}([0-9]{1,3})")


def timestamp_value(v: Any) -> Any:
    """A datetime as a CEL timestamp: the same instant in UTC (naive means UTC). A
    decoded event time (``transforms.codec.Timestamp``) keeps the nanoseconds of the text
    it came with (``text``), which its datetime truncates to microseconds."""
    tz = v.tzinfo
    t = type(v)
    if tz is _UTC and t is _DT:
        return v
    if t is NanoTimestamp:
        return v
    if tz is _UTC or tz is None:
        u = _DT(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, _UTC)
    else:
        try:
            u = v.astimezone(_UTC)
        except OverflowError:
            return Invalid(v)
        u = _DT(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, _UTC)
    text = getattr(v, "text", None)
    if type(text) is str and len(text) > 26:  # a fraction of 7 digits or more?
        m = _SUB_MICRO.match(text, 19)
        if m is not None:
            return _make_ts(u, int(m.group(1).ljust(3, "0")))
    return u


def _json(v: Any) -> Any:
    """A JSON value as a CEL value: ``v`` itself when it already is one, as a payload that
    ``json.loads`` gave usually is (string keys, integers within int64), so the compiled
    filters share the payload's maps and lists (CEL never changes a value) instead of
    copying them: the benchmark's payloads convert ~1.45x faster (``bench/filters.py``). A
    level that needs converting (a number beyond int64 becomes a double, a key that is no
    string its text, a tuple a list) is copied, converted; every value is converted once
    (a converted child is reused, never converted again by its parent's copy)."""
    t = type(v)
    if t is dict:
        for k, x in v.items():
            tx = type(x)
            if tx is str or tx is float or tx is bool or x is None or (tx is int and INT64_MIN <= x <= INT64_MAX):
                if type(k) is str:
                    continue
                return _copy_map(v, k, x)
            y = _json(x)
            if y is not x or type(k) is not str:
                return _copy_map(v, k, y)
        return v
    if t is list:
        for x in v:
            tx = type(x)
            if tx is str or tx is float or tx is bool or x is None or (tx is int and INT64_MIN <= x <= INT64_MAX):
                continue
            y = _json(x)
            if y is not x:
                return _copy_list(v, x, y)
        return v
    if t is str or t is float or t is bool or v is None:
        return v
    if t is int:
        return v if INT64_MIN <= v <= INT64_MAX else float(v)  # a JSON number beyond int64
    return convert_value(v)


def _copy_map(v: dict, key: Any, value: Any) -> dict:
    """``v`` converted from its item ``key`` on, whose converted value is ``value`` (the
    items before it are CEL values already)."""
    out = {}
    items = iter(v.items())
    for k, x in items:
        if k is key:
            break
        out[k] = x
    out[key if type(key) is str else str(key)] = value
    for k, x in items:
        out[k if type(k) is str else str(k)] = _json(x)
    return out


def _copy_list(v: list, item: Any, value: Any) -> list:
    """``v`` converted from ``item`` on (the first element that needs converting: an
    element before it that is the same object would have needed it too)."""
    out = []
    items = iter(v)
    for x in items:
        if x is item:
            break
        out.append(x)
    out.append(value)
    out += [_json(x) for x in items]
    return out


def convert_value(v: Any) -> Any:
    """One attribute value or payload as a CEL value."""
    t = type(v)
    if t is str or t is bool or t is float or t is bytes or v is None:
        return v
    if t is int:
        return v if INT64_MIN <= v <= INT64_MAX else float(v)
    if t is dict or t is list:
        return _json(v)
    if isinstance(v, _DT):
        return timestamp_value(v)
    if isinstance(v, _TD):
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, tuple):
        return _json(list(v))
    return Invalid(v)


class Pending:
    """``data`` of an event not used yet: the event's payload is read (and decoded, when
    the view decodes on first read) and converted on first use of ``data``, so filters on
    attributes alone never pay for it."""

    __slots__ = ("event",)

    def __init__(self, event: Any) -> None:
        self.event = event


class _NoPayload:
    __slots__ = ()


#: ``data`` of an event without payload (or whose payload decodes to JSON ``null``).
NO_PAYLOAD = _NoPayload()


def activate(event: Any) -> dict:
    """The compiled filters' view of ``event``, built once per event and shared by every
    compiled trigger (``event.cel``): a plain ``dict`` (exact-dict lookups
    are the fastest) of the attributes by name as CEL values, ``data`` bound to a
    :class:`Pending` until first used (:func:`data`), and always a ``type`` (the compiled
    code reads it directly; other names of types go through :func:`ident`)."""
    attributes = event.attributes
    act = dict(attributes)
    for name, value in attributes.items():
        t = type(value)
        if t is not str and t is not bool:
            act[name] = convert_value(value)
    act["data"] = Pending(event)  # not a valid attribute name: the payload wins
    if "type" not in act:  # a CloudEvent has one; else 'type' is the type of types
        act["type"] = TYPE_T
    event.cel = act
    return act


def data(act: dict, d: Any) -> Any:
    """The value of ``data`` when ``act["data"]`` (``d``) is not a map: converted now if
    pending; an event without payload has no ``data`` (undeclared)."""
    if type(d) is Pending:
        raw = d.event.data
        if raw is None:
            raw = d.event.attributes.get("data")  # no payload: an attribute of that name
        d = act["data"] = NO_PAYLOAD if raw is None else convert_value(raw)
    if d is NO_PAYLOAD:
        raise Undeclared("data")
    return d


#: ``data`` of an event without payload where an error value is taken (see soft_data).
UNDECLARED_DATA = Undeclared("data")


def soft_data(act: dict, d: Any) -> Any:
    """:func:`data`, where the compiled code takes an error value instead of a raised
    error (``codegen.Gen.mark``): an event without payload gives :data:`UNDECLARED_DATA`.
    Such shared error values are raised, when they are, without their last traceback
    (``raise_value``)."""
    if type(d) is Pending:
        raw = d.event.data
        if raw is None:
            raw = d.event.attributes.get("data")
        d = act["data"] = NO_PAYLOAD if raw is None else convert_value(raw)
    if d is NO_PAYLOAD:
        return UNDECLARED_DATA
    return d


def soft_field(obj: Any, name: str) -> Any:
    """``obj.name`` where the compiled code takes an error value: an error value passes
    on, and a missing key or a value that is no map gives one, never raised (the map of a
    payload converted on this first use of ``data`` comes here too)."""
    if type(obj) is CelMap:
        value = obj.get(name, ABSENT)
        return NoSuchKey(name) if value is ABSENT else value
    if isinstance(obj, CelError):
        return obj
    return _no_field(obj, name)


def ident(act: dict, name: str) -> Any:
    """A name that also names a type: the variable if the event has it, else the type."""
    if name in act:
        return act[name]
    return TYPE_IDENTS[name]


def undeclared(exc: KeyError) -> CelError:
    """The CEL error of a ``KeyError`` in compiled code: only a missing variable raises it
    (maps are read with ``.get`` and a sentinel, see :data:`CelMap`)."""
    if type(exc) is KeyError and len(exc.args) == 1 and type(exc.args[0]) is str:
        return Undeclared(exc.args[0])
    return CelError(f"error: {exc!r}")


# --------------------------------------------------------------------------------------
# Equality and ordering

_NUM = frozenset({int, Uint, float})
_ORDERED = frozenset({int, Uint, float, str, bytes, bool, _DT, _TD, NanoTimestamp, NanoDuration})
_TIMESTAMPS = frozenset({_DT, NanoTimestamp})
_DURATIONS = frozenset({_TD, NanoDuration})


def _cmp_double_int(d: float, i: int, unsigned: bool) -> Any:
    """-1/0/1 comparing a double with an int or uint (None for NaN), as cel-cpp/cel-go do:
    out of the integer type's range decides by sign, else the integer as a double."""
    if d != d:
        return None
    if unsigned:
        if d < 0:
            return -1
        if d > _TWO64:
            return 1
    else:
        if d < -_TWO63:
            return -1
        if d > _TWO63:
            return 1
    f = float(i)
    return (d > f) - (d < f)


def num_cmp(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is float:
        if tb is float:
            if a != a or b != b:
                return None
            return (a > b) - (a < b)
        return _cmp_double_int(a, b, tb is Uint)
    if tb is float:
        c = _cmp_double_int(b, a, ta is Uint)
        return None if c is None else -c
    return (a > b) - (a < b)


def eq(a: Any, b: Any) -> bool:
    ta = type(a)
    if ta is type(b):
        if ta is list:
            return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
        if ta is CelMap:
            if len(a) != len(b):
                return False
            for k, v in a.items():
                found, w = map_find(b, k)
                if not found or not eq(v, w):
                    return False
            return True
        if ta is Invalid:
            return False
        return a == b
    if ta in _NUM and type(b) in _NUM:
        return num_cmp(a, b) == 0
    if (ta in _TIMESTAMPS and type(b) in _TIMESTAMPS) or (ta in _DURATIONS and type(b) in _DURATIONS):
        return a == b  # a plain and a Nano value (never equal)
    return False


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _order(fn: str, a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta in _NUM and tb in _NUM:
        return num_cmp(a, b)
    if ta in _TIMESTAMPS and tb in _TIMESTAMPS:
        return _time_cmp(_DT, a, b)
    if ta in _DURATIONS and tb in _DURATIONS:
        return _time_cmp(_TD, a, b)
    raise no_overload(fn, a, b)


def lt(a: Any, b: Any) -> bool:
    t = type(a)
    if t is type(b) and t in _ORDERED:
        return a < b
    c = _order("_<_", a, b)
    return c is not None and c < 0


def le(a: Any, b: Any) -> bool:
    t = type(a)
    if t is type(b) and t in _ORDERED:
        return a <= b
    c = _order("_<=_", a, b)
    return c is not None and c <= 0


def gt(a: Any, b: Any) -> bool:
    t = type(a)
    if t is type(b) and t in _ORDERED:
        return a > b
    c = _order("_>_", a, b)
    return c is not None and c > 0


def ge(a: Any, b: Any) -> bool:
    t = type(a)
    if t is type(b) and t in _ORDERED:
        return a >= b
    c = _order("_>=_", a, b)
    return c is not None and c >= 0


def map_find(m: dict, key: Any) -> tuple[bool, Any]:
    """(found, value) of ``m[key]`` with the specification's key equality (numbers
    compare by value across int/uint/double); an error for keys no map can hold."""
    tk = type(key)
    if tk is str:
        if key in m:
            return True, dict.__getitem__(m, key)
        return False, None
    if tk is bool:
        for k, v in m.items():
            if type(k) is bool and k == key:
                return True, v
        return False, None
    if tk in _NUM:
        for k, v in m.items():
            tk2 = type(k)
            if (tk2 is int or tk2 is Uint) and num_cmp(key, k) == 0:
                return True, v
        return False, None
    raise CelError(f"unsupported map key type: {kind(key)}")


def in_(item: Any, container: Any) -> bool:
    tc = type(container)
    if tc is list:
        if type(item) is str:
            return item in container  # a string equals nothing but an equal string
        for x in container:
            if eq(item, x):
                return True
        return False
    if tc is CelMap:
        return map_find(container, item)[0]
    raise no_overload("@in", item, container)


# --------------------------------------------------------------------------------------
# Arithmetic


def _int(r: int) -> int:
    if INT64_MIN <= r <= INT64_MAX:
        return r
    raise CelError("integer overflow")


def _uint(r: int) -> Uint:
    if 0 <= r <= UINT64_MAX:
        return Uint(r)
    raise CelError("unsigned integer overflow")


def _ts(f: Any, *args: Any) -> _DT:
    try:
        return f(*args)
    except OverflowError:
        raise CelError("timestamp out of range") from None


def _dur(d: _TD) -> _TD:
    """A duration result: within int64 nanoseconds, as cel-cpp's arithmetic."""
    if -9223372036854775 <= d // _ONE_US <= 9223372036854775:
        return d
    raise CelError("duration out of range (integer overflow)")


def add(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _int(a + b)
        if ta is float or ta is str or ta is bytes or ta is list:
            return a + b
        if ta is Uint:
            return _uint(a + b)
        if ta is _TD:
            return _dur(a + b)
    elif ta is _DT and tb is _TD:
        return _ts(_DT.__add__, a, b)
    elif ta is _TD and tb is _DT:
        return _ts(_DT.__add__, b, a)
    if tb in _DURATIONS:  # with nanoseconds
        if ta in _TIMESTAMPS:
            return _ts_from_ns(_ts_ns(a) + _dur_ns(b))
        if ta in _DURATIONS:
            return _dur_from_ns(_dur_ns(a) + _dur_ns(b))
    elif ta in _DURATIONS and tb in _TIMESTAMPS:
        return _ts_from_ns(_ts_ns(b) + _dur_ns(a))
    raise no_overload("_+_", a, b)


def sub(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is int:
            return _int(a - b)
        if ta is float:
            return a - b
        if ta is Uint:
            return _uint(a - b)
        if ta is _TD:
            return _dur(a - b)
        if ta is _DT:
            return _dur(a - b)
    elif ta is _DT and tb is _TD:
        return _ts(_DT.__sub__, a, b)
    if ta in _TIMESTAMPS:  # with nanoseconds
        if tb in _DURATIONS:
            return _ts_from_ns(_ts_ns(a) - _dur_ns(b))
        if tb in _TIMESTAMPS:
            return _dur_from_ns(_ts_ns(a) - _ts_ns(b))
    elif ta in _DURATIONS and tb in _DURATIONS:
        return _dur_from_ns(_dur_ns(a) - _dur_ns(b))
    raise no_overload("_-_", a, b)


def mul(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int:
            return _int(a * b)
        if ta is float:
            return a * b
        if ta is Uint:
            return _uint(a * b)
    raise no_overload("_*_", a, b)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return -q if (a < 0) != (b < 0) else q


def div(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b):
        if ta is int or ta is Uint:
            if b == 0:
                raise CelError("division by zero")
            r = _trunc_div(a, b)
            return _int(r) if ta is int else Uint(r)
        if ta is float:
            if b == 0.0:
                if a != a or a == 0.0:
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
    raise no_overload("_/_", a, b)


def mod(a: Any, b: Any) -> Any:
    ta = type(a)
    if ta is type(b) and (ta is int or ta is Uint):
        if b == 0:
            raise CelError("modulus by zero")
        r = abs(a) % abs(b)  # the sign of the dividend
        return (-r if a < 0 else r) if ta is int else Uint(r)
    raise no_overload("_%_", a, b)


def neg(a: Any) -> Any:
    t = type(a)
    if t is int:
        return _int(-a)
    if t is float:
        return -a
    raise no_overload("-_", a)


def not_(a: Any) -> Any:
    if type(a) is bool:
        return not a
    raise no_overload("!_", a)


# --------------------------------------------------------------------------------------
# Selection


def field(obj: Any, name: str) -> Any:
    """``obj.name``."""
    if type(obj) is CelMap:
        value = obj.get(name, ABSENT)
        if value is ABSENT:
            raise NoSuchKey(name)
        return value
    raise _no_field(obj, name)


def _no_field(obj: Any, name: str) -> CelError:
    return CelError(f"type '{kind(obj)}' does not support field selection (.{name})")


def has_field(obj: Any, name: str) -> bool:
    """``has(obj.name)`` once ``obj`` evaluated without error."""
    if type(obj) is CelMap:
        return name in obj
    raise CelError(f"type '{kind(obj)}' does not support field selection: has(.{name})")


def index(obj: Any, key: Any) -> Any:
    """``obj[key]``."""
    t = type(obj)
    if t is CelMap:
        found, v = map_find(obj, key)
        if found:
            return v
        raise NoSuchKey(key)
    if t is list:
        tk = type(key)
        if tk is int or tk is Uint:
            i = key
        elif tk is float and key == key and key in (math.floor(key),) and not math.isinf(key):
            i = int(key)
        else:
            raise no_overload("_[_]", obj, key)
        if 0 <= i < len(obj):
            return obj[i]
        raise CelError(f"index out of range: index {i}, size {len(obj)}")
    raise no_overload("_[_]", obj, key)


def qualified(act: dict, parts: tuple) -> Any:
    """``a.b.c`` where variable names may hold dots: the longest declared prefix wins."""
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in act:
            v = act[name]
            for p in parts[i:]:
                v = field(v, p)
            return v
    v = act[parts[0]]  # undeclared (or a type name)
    for p in parts[1:]:
        v = field(v, p)
    return v


# --------------------------------------------------------------------------------------
# Functions


def size(x: Any) -> Any:
    t = type(x)
    if t is str or t is list or t is CelMap or t is bytes:
        return len(x)
    raise no_overload("size", x)


def starts_with(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return s.startswith(p)
    raise no_overload("startsWith", s, p)


def ends_with(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return s.endswith(p)
    raise no_overload("endsWith", s, p)


def contains(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return p in s
    raise no_overload("contains", s, p)


class Regex:
    """``re2.search(pattern, text) is not None`` (what ``matches`` computes).

    google-re2's ``search()`` decodes every group's span back to str offsets, which
    costs about 4x the match itself; a yes/no answer only needs the raw match of the
    UTF-8 text (exactly what ``search()`` runs first). Falls back to ``search()`` if the
    binding's internals differ.
    """

    __slots__ = ("compiled", "raw", "anchor", "null")

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.raw = None
        try:
            raw = compiled._regexp.Match
            anchor = re2._Anchor.UNANCHORED
            null = re2._NULL_SPAN
            probe = b"\xe2\x82\xac"
            expect = compiled.search("\u20ac") is not None
            if (raw(anchor, probe, 0, len(probe))[0] != null) == expect:
                self.raw, self.anchor, self.null = raw, anchor, null
        except Exception:
            pass

    def search(self, text: str) -> bool:
        try:
            b = text.encode("utf-8")
        except UnicodeEncodeError:
            raise CelError("invalid UTF-8 in the string matched") from None
        if self.raw is not None:
            return self.raw(self.anchor, b, 0, len(b))[0] != self.null
        return self.compiled.search(text) is not None


_REGEX: dict[str, Any] = {}


def regex(pattern: str) -> Any:
    """A :class:`Regex` for ``pattern``, or None when it does not compile (a CEL error)."""
    try:
        return _REGEX[pattern]
    except KeyError:
        pass
    try:
        compiled = Regex(re2.compile(pattern))
    except (re2.error, UnicodeEncodeError, TypeError):
        compiled = None
    if len(_REGEX) < 4096:
        _REGEX[pattern] = compiled
    return compiled


def matches(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        compiled = regex(p)
        if compiled is None:
            raise CelError(f"invalid regular expression: {p!r}")
        return compiled.search(s)
    raise no_overload("matches", s, p)


def type_of(x: Any) -> CelType:
    try:
        return _TYPE_OF[type(x)]
    except KeyError:
        raise no_overload("type", x) from None


# ---- conversions

_INT_TEXT = re.compile(r"[+-]?[0-9]+\Z")
_UINT_TEXT = re.compile(r"[0-9]+\Z")
_DOUBLE_TEXT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z", re.IGNORECASE)


def to_int(x: Any) -> int:
    t = type(x)
    if t is int:
        return x
    if t is Uint:
        if x > INT64_MAX:
            raise CelError("uint out of int64 range")
        return int(x)
    if t is float:
        if not -_TWO63 < x < _TWO63:  # NaN too
            raise CelError("double out of int64 range")
        return int(x)
    if t is str:
        if _INT_TEXT.match(x):
            v = int(x)
            if INT64_MIN <= v <= INT64_MAX:
                return v
            raise CelError("string out of int64 range")
        raise CelError(f"cannot convert string {x!r} to int")
    if t is _DT or t is NanoTimestamp:
        return (x - _EPOCH) // _TD(seconds=1)  # floored: the nanos cannot change it
    if t is bool:
        return 1 if x else 0  # as cel-cpp
    raise no_overload("int", x)


def to_uint(x: Any) -> Uint:
    t = type(x)
    if t is Uint:
        return x
    if t is int:
        if x < 0:
            raise CelError("int out of uint64 range")
        return Uint(x)
    if t is float:
        if not 0 <= x < _TWO64:
            raise CelError("double out of uint64 range")
        return Uint(int(x))
    if t is str:
        if _UINT_TEXT.match(x):
            v = int(x)
            if v <= UINT64_MAX:
                return Uint(v)
            raise CelError("string out of uint64 range")
        raise CelError(f"cannot convert string {x!r} to uint")
    raise no_overload("uint", x)


def to_double(x: Any) -> float:
    t = type(x)
    if t is float:
        return x
    if t is int or t is Uint:
        return float(x)
    if t is str:
        if _DOUBLE_TEXT.match(x):
            return float(x)
        raise CelError(f"cannot convert string {x!r} to double")
    raise no_overload("double", x)


def format_double(d: float) -> str:
    """A double as cel-cpp/cel-go print it (the shortest round-trip digits, ``%g`` style)."""
    if d != d:
        return "NaN"
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    if d == 0:
        return "-0" if math.copysign(1.0, d) < 0 else "0"
    sign, digits, exp = Decimal(repr(d)).normalize().as_tuple()
    ds = "".join(map(str, digits))
    e10 = len(ds) + exp - 1  # the exponent of the first digit
    neg = "-" if sign else ""
    if e10 < -4 or e10 >= 6:  # Go's strconv 'g' with the shortest digits (cel-cpp agrees)
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if e10 < 0:
        return f"{neg}0.{'0' * (-e10 - 1)}{ds}"
    if len(ds) <= e10 + 1:
        return f"{neg}{ds}{'0' * (e10 + 1 - len(ds))}"
    return f"{neg}{ds[:e10 + 1]}.{ds[e10 + 1:]}"


def _frac(ns: int) -> str:
    """A fraction of a second in nanoseconds as 0, 3, 6 or 9 digits (as cel-cpp and
    protobuf's JSON print them)."""
    if ns == 0:
        return ""
    if ns % 1_000_000 == 0:
        return f".{ns // 1_000_000:03d}"
    if ns % 1000 == 0:
        return f".{ns // 1000:06d}"
    return f".{ns:09d}"


def format_timestamp(ts: Any) -> str:
    frac = _frac(ts.microsecond * 1000 + _nanos(ts))
    return f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}{frac}Z"


def format_duration(d: Any) -> str:
    ns = _dur_ns(d)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // 10**9}{_frac(ns % 10**9)}s"


def to_string(x: Any) -> str:
    t = type(x)
    if t is str:
        return x
    if t is bool:
        return "true" if x else "false"
    if t is int or t is Uint:
        return str(int(x))
    if t is float:
        return format_double(x)
    if t is bytes:
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError:
            raise CelError("invalid UTF-8 in bytes converted to string") from None
    if t is _DT or t is NanoTimestamp:
        return format_timestamp(x)
    if t is _TD or t is NanoDuration:
        return format_duration(x)
    raise no_overload("string", x)


def format_value(v: Any) -> str:
    """A value as CEL source text (for messages)."""
    t = type(v)
    if t is str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if t is bytes:
        return "b" + repr(v)[1:]
    if t is Uint:
        return f"{int(v)}u"
    if v is None:
        return "null"
    if t is bool or t is int or t is float:
        return to_string(v)
    if t is list:
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if t is CelMap:
        return "{" + ", ".join(f"{format_value(k)}: {format_value(x)}" for k, x in v.items()) + "}"
    if t is _DT or t is NanoTimestamp:
        return f'timestamp("{format_timestamp(v)}")'
    if t is _TD or t is NanoDuration:
        return f'duration("{format_duration(v)}")'
    return repr(v)


def to_bytes(x: Any) -> bytes:
    t = type(x)
    if t is bytes:
        return x
    if t is str:
        try:
            return x.encode("utf-8")
        except UnicodeEncodeError:
            raise CelError("invalid UTF-8 in string converted to bytes") from None
    raise no_overload("bytes", x)


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def to_bool(x: Any) -> bool:
    t = type(x)
    if t is bool:
        return x
    if t is str:
        if x in _TRUE:
            return True
        if x in _FALSE:
            return False
        raise CelError(f"cannot convert string {x!r} to bool")
    raise no_overload("bool", x)


_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))\Z")


def parse_timestamp(s: str) -> Any:
    """RFC 3339 text as a timestamp; digits beyond the nanosecond are dropped (as cel-cpp
    and cel-go do)."""
    m = _RFC3339.match(s)
    if m is None:
        raise CelError(f"cannot parse timestamp {s!r} (RFC 3339 expected)")
    y, mo, d, h, mi, sec, frac, z, sign, oh, om = m.groups()
    try:
        if int(sec) == 60:
            raise ValueError("leap second")
        ns = int(frac[:9].ljust(9, "0")) if frac else 0
        naive = _DT(int(y), int(mo), int(d), int(h), int(mi), int(sec), ns // 1000)
        if z:
            return _make_ts(naive.replace(tzinfo=_UTC), ns % 1000)
        offset = _TD(hours=int(oh), minutes=int(om))
        if sign == "-":
            offset = -offset
        if offset >= _TD(days=1):
            raise ValueError("offset")
        return _make_ts((naive - offset).replace(tzinfo=_UTC), ns % 1000)
    except ValueError:
        raise CelError(f"cannot parse timestamp {s!r}") from None
    except OverflowError:
        raise CelError(f"timestamp {s!r} out of range") from None


def to_timestamp(x: Any) -> Any:
    t = type(x)
    if t is _DT or t is NanoTimestamp:
        return x
    if t is str:
        return parse_timestamp(x)
    if t is int:
        if _TS_MIN_S <= x <= _TS_MAX_S:
            return _EPOCH + _TD(seconds=x)
        raise CelError("timestamp out of range")
    raise no_overload("timestamp", x)


_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
#: duration() parses up to +-315,576,000,000.999999999s (protobuf's Duration, ~10,000
#: years); arithmetic results must fit int64 nanoseconds (~292 years), as in cel-cpp
_DURATION_MAX_NS = 315576000001 * 10**9 - 1


def parse_duration(s: str) -> Any:
    text = s
    neg = False
    if text[:1] in ("+", "-"):
        neg = text[0] == "-"
        text = text[1:]
    if text == "0":
        return _TD(0)
    total = Fraction(0)
    pos = 0
    if not text:
        raise CelError(f"cannot parse duration {s!r}")
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None or m.group(1) in ("", "."):
            raise CelError(f"cannot parse duration {s!r}")
        total += Fraction(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    ns = int(total)  # truncated toward zero
    if ns > _DURATION_MAX_NS:
        raise CelError(f"duration {s!r} out of range")
    if neg:
        ns = -ns
    us, nanos = divmod(ns, 1000)
    return _make_dur(_TD(microseconds=us), nanos)


def to_duration(x: Any) -> Any:
    t = type(x)
    if t is _TD or t is NanoDuration:
        return x
    if t is str:
        return parse_duration(x)
    raise no_overload("duration", x)


# ---- timestamps and durations

_TZ: dict[str, Any] = {}
_OFFSET = re.compile(r"([+-]?)([0-9]{1,9}):([0-9]{1,9})\Z")


def zone(name: str) -> Any:
    """The time zone ``name``: a ``tzinfo`` for an IANA name (``Europe/Berlin``; ``''`` is
    UTC, as cel-go and cel-cpp read it), a ``timedelta`` for a fixed offset (``+05:45``,
    ``-3:30``: hours and minutes of any size, as cel-cpp reads them, so ``+25:00`` is a
    day and an hour ahead, which no ``datetime.timezone`` can be)."""
    try:
        return _TZ[name]
    except KeyError:
        pass
    m = _OFFSET.match(name)
    if m:
        off = _TD(hours=int(m.group(2)), minutes=int(m.group(3)))
        z = -off if m.group(1) == "-" else off
    elif not name:
        z = _UTC
    else:
        try:
            import zoneinfo

            z = zoneinfo.ZoneInfo(name)
        except Exception:
            raise CelError(f"unknown time zone {name!r}") from None
    if len(_TZ) < 1024:
        _TZ[name] = z
    return z


def _ts_part(name: str, d: _DT) -> int:
    if name == "getHours":
        return d.hour
    if name == "getMinutes":
        return d.minute
    if name == "getSeconds":
        return d.second
    if name == "getMilliseconds":
        return d.microsecond // 1000
    if name == "getFullYear":
        return d.year
    if name == "getMonth":
        return d.month - 1
    if name == "getDate":
        return d.day
    if name == "getDayOfMonth":
        return d.day - 1
    if name == "getDayOfWeek":
        return d.isoweekday() % 7
    if name == "getDayOfYear":
        return d.toordinal() - datetime.date(d.year, 1, 1).toordinal()
    raise AssertionError(name)


#: zone name -> {hour (UTC, counted from year 1) -> the zone's UTC offset throughout that
#: hour}: the zone's rules as they apply to an hour, found once by ``astimezone`` (~270 ns
#: with the zone's C implementation) and then read (~100 ns). A cache of rules, not of
#: events: a stream's events share their hours (and so do a benchmark's).
_HOUR_OFFSETS: dict[str, dict[int, _TD]] = {}
#: zone name -> {hour -> the local time's fields throughout that hour, in ``HOUR_FIELDS``
#: order}, for the hours whose offset is the same throughout and a whole number of hours
#: (then the local hour, day, month and year cannot change within the UTC hour). The
#: compiled code reads a field here (``codegen.Gen.local_field``) instead of adding the
#: offset and calling the datetime's method: ~60 ns less per read.
_HOUR_FIELDS: dict[str, dict[int, tuple[int, ...]]] = {}
#: the getters ``_HOUR_FIELDS`` answers, by their place in its tuples (in this order)
HOUR_FIELDS = {"getHours": 0, "getFullYear": 1, "getMonth": 2, "getDate": 3, "getDayOfMonth": 4, "getDayOfWeek": 5}
_HOUR = _TD(hours=1)
_LAST_US = _TD(hours=1, microseconds=-1)
_DURATION_PARTS = {"getHours": 3600 * 10**9, "getMinutes": 60 * 10**9, "getSeconds": 10**9}
_NOARG = object()


def zone_hours(tz: str) -> dict[int, _TD]:
    """``tz``'s offsets by hour (see ``_HOUR_OFFSETS``; cleared in place when full, never
    replaced): the compiled code reads it inline, as :func:`local_time` does, and calls
    :func:`local_time` for an hour not in it."""
    return _HOUR_OFFSETS.setdefault(tz, {})


def zone_hour_fields(tz: str) -> dict[int, tuple[int, ...]]:
    """``tz``'s local fields by hour (``_HOUR_FIELDS``; filled with its offsets by
    :func:`local_time`, cleared with them)."""
    return _HOUR_FIELDS.setdefault(tz, {})


def local_time(ts: _DT, tz: str) -> _DT:
    """A datetime whose fields are the wall-clock time of the timestamp ``ts`` in time zone
    ``tz`` (the getters read nothing else: its ``tzinfo`` may stay UTC)."""
    ts = _plain_ts(ts)
    hour = ts.toordinal() * 24 + ts.hour  # the compiled code's inline read uses the same key
    offsets = _HOUR_OFFSETS.get(tz)
    if offsets is not None:
        offset = offsets.get(hour)
        if offset is not None:
            return ts + offset
    return _local_time_found(ts, tz, hour)


def _local_time_found(ts: _DT, tz: str, hour: int) -> _DT:
    """:func:`local_time` by ``astimezone``, keeping the zone's offset for ``hour`` when it
    is the same at the hour's first and last microsecond (an hour with a transition
    inside, like Adelaide's at :30 UTC, is converted each time; zones never move twice
    within an hour)."""
    z = zone(tz)
    try:
        if type(z) is _TD:  # a fixed offset: nothing to keep
            return ts + z
        local = ts.astimezone(z)
    except OverflowError:
        raise CelError("timestamp out of range in that time zone") from None
    start = _DT(ts.year, ts.month, ts.day, ts.hour, tzinfo=_UTC)
    try:
        first, last = start.astimezone(z).utcoffset(), (start + _LAST_US).astimezone(z).utcoffset()
    except OverflowError:  # the first or last hour a datetime holds: not kept
        return local
    if first == last and (tz in _HOUR_OFFSETS or len(_HOUR_OFFSETS) < 1024):
        offsets, fields = zone_hours(tz), zone_hour_fields(tz)
        if len(offsets) >= 4096:
            offsets.clear()
            fields.clear()
        offsets[hour] = first
        if not first % _HOUR:
            at = start + first  # the local hour's fields, the same for every instant of it
            fields[hour] = tuple(_ts_part(getter, at) for getter in HOUR_FIELDS)
    return local


def ts_get(name: str, ts: Any, tz: Any = _NOARG) -> Any:
    """``ts.getHours()`` etc., optionally with a time zone argument."""
    t = type(ts)
    if t is NanoTimestamp:  # no getter reads below the millisecond
        ts, t = _plain_ts(ts), _DT
    if t is _DT:
        if tz is _NOARG:
            return _ts_part(name, ts)
        if type(tz) is str:
            return _ts_part(name, local_time(ts, tz))
        raise no_overload(name, ts, tz)
    if (t is _TD or t is NanoDuration) and tz is _NOARG:
        ns = _dur_ns(ts)
        if name == "getMilliseconds":
            return _trunc_div(ns, 10**6) - _trunc_div(ns, 10**9) * 1000
        unit = _DURATION_PARTS.get(name)
        if unit is not None:
            return _trunc_div(ns, unit)
    if tz is _NOARG:
        raise no_overload(name, ts)
    raise no_overload(name, ts, tz)


TIMESTAMP_METHODS = frozenset(
    {"getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear", "getFullYear", "getMonth", "getHours", "getMilliseconds", "getMinutes", "getSeconds"}
)

#: Global functions of one argument (conversions) by name.
CONVERSIONS = {
    "int": to_int,
    "uint": to_uint,
    "double": to_double,
    "string": to_string,
    "bytes": to_bytes,
    "bool": to_bool,
    "timestamp": to_timestamp,
    "duration": to_duration,
    "type": type_of,
}


def no_function(name: str, *args: Any) -> Any:
    raise CelError(f"no matching overload: unknown function '{name}' applied to ({', '.join(kind(a) for a in args)})")


# --------------------------------------------------------------------------------------
# Logic


def _rest(values: tuple, neutral: bool, op: str) -> CelError:
    """``&&`` / ``||`` over values none of which decides the result: the error among them,
    else (a non-boolean) a type error."""
    for v in values:
        if isinstance(v, CelError):
            return v
    return no_overload(op, *[v for v in values if v is not neutral])


def and_rest(*values: Any) -> Any:
    """``&&`` over values none of which is false and not all true."""
    raise _rest(values, True, "_&&_").with_traceback(None)  # may be a shared error value


def or_rest(*values: Any) -> Any:
    """``||`` over values none of which is true and not all false."""
    raise _rest(values, False, "_||_").with_traceback(None)


def and_result(*values: Any) -> CelError:
    """``and_rest`` for the whole expression's result: the error is returned, not raised
    (a compiled function returns or raises its error; raising costs ~0.5 us)."""
    return _rest(values, True, "_&&_")


def or_result(*values: Any) -> CelError:
    return _rest(values, False, "_||_")


def cond_error(c: Any) -> Any:
    raise cond_result(c).with_traceback(None)  # may be a shared error value


def cond_result(c: Any) -> CelError:
    """The error of ``c ? a : b`` when ``c`` is no bool: ``c``'s error, else a type error."""
    if isinstance(c, CelError):
        return c
    return no_overload("_?_:_", c)


def iterate(r: Any) -> Any:
    """What a macro iterates over: a list's elements or a map's keys."""
    t = type(r)
    if t is list or t is CelMap:
        return r
    raise CelError(f"no matching overload: a macro needs a list or a map, got {kind(r)}")


def bool_body(b: Any, macro: str) -> bool:
    if type(b) is bool:
        return b
    raise CelError(f"no matching overload: the {macro}() predicate returned {kind(b)}, not bool")


_KEY_TYPES = frozenset({str, int, Uint, bool})


def make_map(*pairs: Any) -> CelMap:
    """A map literal: keys bool/int/uint/string, no key twice."""
    m = {}
    for k, v in pairs:
        if type(k) not in _KEY_TYPES:
            raise CelError(f"unsupported map key type: {kind(k)}")
        if map_find(m, k)[0]:
            raise CelError(f"repeated map key: {format_value(k)}")
        if k in m:  # true and 1 are one Python dict key
            raise CelError(f"map keys {format_value(k)} and another of equal value are not supported together")
        m[k] = v
    return m

