"""Values and operations used by compiled CEL code.

Representation (chosen so the hot paths are plain Python operations):

=====================  =======================================================
CEL / celpy value      compiled representation
=====================  =======================================================
``BoolType``           ``bool``
``IntType``            ``int`` (always within int64)
``DoubleType``         ``float``
``StringType``         ``str``
``BytesType``          ``bytes``
``None``               ``None``
``ListType``           ``list`` (never mutated once built)
``MapType``            :class:`CelMap` (a ``dict`` whose keys are str/int/bool)
``UintType``,          the celpy object itself (they are not confusable with
``TimestampType``,     the natives above, whose checks are by exact type)
``DurationType``,
type values, ...
anything else          :class:`Opaque` wrapping the celpy object: the plain
                       Python ``str``/``float``/``list``/... values that celpy
                       produces for e.g. ``"a" + "b"`` or ``1.0 * 2.0`` (celpy
                       treats them differently from its own wrapper types, e.g.
                       ``type("a" + "b") != string``), maps with other keys, ...
=====================  =======================================================

Every operation first tries a fast path for the common native types, and otherwise
*delegates* that single operation to celpy's own implementation (``base_functions``),
converting the operands with :func:`to_celpy` and the result back with
:func:`from_celpy`, and mapping exceptions exactly the way celpy's ``Evaluator`` does
for that kind of node. So the rare type combinations behave like celpy by construction,
quirks included (``1.0 < 2`` is true but ``2 < 1.0`` is an error, ``true == 1`` is true
but ``1 == true`` is an error, ...).

Errors: a CEL error value is raised as :class:`CelError`; ``&&``, ``||``, ``?:``,
``has()``, ``all()`` and ``exists()`` catch it like celpy absorbs error values. Errors
that celpy *raises* instead of returning (an error inside a ``map``/``filter``/
``exists_one`` body) travel as :class:`Propagating`, which only ``all``/``exists`` bodies
catch. Situations not worth emulating raise :class:`Fallback`, and the whole expression
is then evaluated by celpy for that event.
"""
from __future__ import annotations

import datetime
import operator
import re
from typing import Any

import re2
from celpy import celtypes
from celpy.celtypes import (
    BoolType,
    BytesType,
    DoubleType,
    DurationType,
    IntType,
    ListType,
    MapType,
    StringType,
    TimestampType,
)
from celpy.evaluation import CELEvalError, base_functions

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class CelError(Exception):
    """A CEL error value (celpy's ``CELEvalError`` result), raised."""


class Propagating(Exception):
    """An error celpy raises rather than returns (inside map/filter/exists_one bodies).

    It is not absorbed by ``&&``/``||``/``?:``/``has()``; ``all``/``exists`` bodies catch it.
    """

    def __init__(self, error: CelError) -> None:
        super().__init__(*error.args)
        self.error = error


class Fallback(Exception):
    """Evaluate the whole expression with celpy for this event (rare situations)."""


class Opaque:
    """A celpy value without a native representation; every operation delegates."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __bool__(self) -> bool:
        return bool(self.value)

    def __repr__(self) -> str:
        return f"Opaque({self.value!r})"


class CelMap(dict):
    """A CEL map; a missing key is a CEL error (celpy: ``no such member``/``no such key``)."""

    __slots__ = ()

    def __missing__(self, key: Any) -> Any:
        raise CelError(f"no such member in mapping: {key!r}")


class Activation(dict):
    """Identifier -> value for one event; unknown names resolve like celpy's Activation.

    celpy resolves an identifier among the variables first, then among the functions
    (so ``type`` is the ``type`` function when the event has no ``type`` attribute),
    else it is an ``undeclared reference`` error.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        try:
            return base_functions[key]
        except KeyError:
            raise CelError(f"undeclared reference to '{key}'") from None


# --------------------------------------------------------------------------------------
# Conversions


def to_celpy(v: Any) -> Any:
    """Native -> celpy value (exact inverse of :func:`from_celpy`)."""
    t = type(v)
    if t is str:
        return StringType(v)
    if t is bool:
        return BoolType(v)
    if t is int:
        return IntType(v)
    if t is float:
        return DoubleType(v)
    if v is None:
        return None
    if t is bytes:
        return BytesType(v)
    if t is list:
        return ListType([to_celpy(x) for x in v])
    if t is CelMap:
        return MapType({to_celpy(k): to_celpy(x) for k, x in v.items()})
    if t is Opaque:
        return v.value
    if t is CelError:
        raise Fallback("an error value inside a container")
    return v


_NATIVE_KEYS = (StringType, IntType, BoolType)
_PLAIN = frozenset({str, int, float, bool, bytes, list, dict, tuple, set, frozenset})


def from_celpy(v: Any) -> Any:
    """celpy value -> native (see the module docstring)."""
    t = type(v)
    if t is StringType:
        return str.__str__(v)
    if t is BoolType:
        # celpy's bool(3) is BoolType(3): "true", yet != true. Keep such values as they are.
        if v == 1:
            return True
        if v == 0:
            return False
        return v
    if t is IntType:
        return int(v)
    if t is DoubleType:
        return float(v)
    if v is None:
        return None
    if t is BytesType:
        return bytes(v)
    if t is ListType:
        out = []
        for x in v:
            if isinstance(x, CELEvalError):
                return Opaque(v)
            out.append(from_celpy(x))
        return out
    if t is MapType:
        items = []
        for k, x in v.items():
            if type(k) not in _NATIVE_KEYS or isinstance(x, CELEvalError):
                return Opaque(v)
            items.append((from_celpy(k), from_celpy(x)))
        return CelMap(items)
    if t in _PLAIN:
        return Opaque(v)
    if isinstance(v, CELEvalError):
        raise CelError(*v.args[:1])
    return v


_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*\Z").match


class _Exotic(Exception):
    """The event holds something the compiled code does not handle; use celpy."""


def _slow(value: Any) -> Any:
    """Anything not plain JSON: let celpy convert it, then take it over if simple."""
    from filters.cel import to_cel  # the reference conversion

    converted = from_celpy(to_cel(value))
    if type(converted) is TimestampType:
        if not 2 <= converted.year <= 9998:  # astimezone() could overflow: celpy raises
            raise _Exotic
        return converted
    if type(converted) is int and converted == INT64_MIN:
        raise _Exotic
    if type(converted) in (str, bool, int, float, bytes) or converted is None:
        return converted
    raise _Exotic


def _json(v: Any) -> Any:
    t = type(v)
    if t is str or t is float or t is bool or v is None:
        return v
    if t is int:
        if INT64_MIN < v <= INT64_MAX:
            return v
        if v == INT64_MIN:
            raise _Exotic  # see ir.INT64_MIN_NOTE
        return _slow(v)  # raises like celpy (int64 overflow)
    if t is dict:
        m = CelMap()
        for k, x in v.items():
            if type(k) is not str:
                raise _Exotic
            tx = type(x)
            if tx is str or tx is float or tx is bool or x is None or (tx is int and INT64_MIN < x <= INT64_MAX):
                m[k] = x
            else:
                m[k] = _json(x)
        return m
    if t is list:
        out = []
        for x in v:
            tx = type(x)
            if tx is str or tx is float or tx is bool or x is None or (tx is int and INT64_MIN < x <= INT64_MAX):
                out.append(x)
            else:
                out.append(_json(x))
        return out
    from filters.cel import to_cel

    to_cel(v)  # raises for what celpy cannot convert (e.g. bytes inside JSON)
    raise _Exotic


_DATETIME = datetime.datetime
_UTC_TZ = datetime.timezone.utc


def convert_value(v: Any) -> Any:
    """One attribute value or payload as ``filters.cel.to_cel`` would see it."""
    t = type(v)
    if t is str or t is bool or t is float or t is bytes or v is None:
        return v
    if t is int:
        if INT64_MIN < v <= INT64_MAX:
            return v
        if v == INT64_MIN:
            raise _Exotic  # see ir.INT64_MIN_NOTE
        return _slow(v)
    if t is dict or t is list:
        return _json(v)
    if t is _DATETIME or t is TimestampType:
        # what TimestampType(value) builds (celpy's to_cel), without its Python __new__
        if not 2 <= v.year <= 9998:
            raise _Exotic  # astimezone() could overflow: celpy raises
        return _DATETIME.__new__(TimestampType, v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.tzinfo or _UTC_TZ)
    return _slow(v)


#: ``EventView.cache`` key of the converted event; shared by every compiled trigger.
CACHE_KEY = "cel.compiled"
#: Cached instead of an Activation when the event must be evaluated by celpy.
CELPY_ONLY = object()


_VALID_NAMES: set[str] = set()


def activate(event: Any) -> Any:
    """The :class:`Activation` of ``event`` (same names as ``filters.cel.celpy_activation``)."""
    try:
        act = Activation()
        for name, value in event.attributes.items():
            if name not in _VALID_NAMES:
                if type(name) is not str or not _IDENT(name):
                    raise _Exotic  # celpy nests dotted names or rejects the name
                if len(_VALID_NAMES) < 4096:
                    _VALID_NAMES.add(name)
            t = type(value)
            act[name] = value if t is str or t is bool else convert_value(value)
        data = event.data
        if data is not None:
            act["data"] = convert_value(data)
    except Exception:  # conversion errors and exotic values: celpy decides (and raises)
        act = CELPY_ONLY
    event.cache[CACHE_KEY] = act
    return act


def _exotic_celpy(value: Any, top: bool) -> bool:
    """The cases :func:`activate` leaves to celpy, for values that are celpy values already."""
    if type(value) is IntType:
        return value == INT64_MIN
    if type(value) is TimestampType:
        return top and not 2 <= value.year <= 9998
    if isinstance(value, DurationType):
        return top
    if isinstance(value, (list, tuple)):
        return any(_exotic_celpy(v, False) for v in value)
    if isinstance(value, dict):
        return any(_exotic_celpy(k, False) or _exotic_celpy(v, False) for k, v in value.items())
    return False


def activation_from_celpy(values: dict[str, Any]) -> Any:
    """An Activation from celpy values (used by tests and the conformance suite)."""
    act = Activation()
    for name, value in values.items():
        if not _IDENT(name) or _exotic_celpy(value, True):
            return CELPY_ONLY
        act[name] = from_celpy(value)
    return act


# --------------------------------------------------------------------------------------
# Delegation to celpy, with the exceptions each kind of Evaluator node turns into errors

REL_CATCH = (TypeError,)
ADD_CATCH = (TypeError, ValueError, OverflowError)
MUL_CATCH = (TypeError, ZeroDivisionError, ValueError, OverflowError)
UNARY_CATCH = (TypeError, ValueError)
INDEX_CATCH = (TypeError, KeyError, IndexError)
CALL_CATCH = (ValueError, TypeError, AttributeError)


def delegate(fn: Any, catch: tuple, *args: Any) -> Any:
    cargs = [to_celpy(a) for a in args]
    try:
        r = fn(*cargs)
    except catch as ex:
        raise CelError(f"{type(ex).__name__}: {ex}") from None
    if isinstance(r, CELEvalError):
        raise CelError(*r.args[:1])
    return from_celpy(r)


_F = base_functions
_PRIM = frozenset({str, int, float, bool, bytes, TimestampType, DurationType})


def raise_error(message: str) -> Any:
    raise CelError(message)


# ---- relations


def eq(a: Any, b: Any) -> Any:
    t = type(a)
    if t is type(b) and t in _PRIM:
        return a == b
    return delegate(_F["_==_"], REL_CATCH, a, b)


def ne(a: Any, b: Any) -> Any:
    t = type(a)
    if t is type(b) and t in _PRIM:
        return a != b
    return delegate(_F["_!=_"], REL_CATCH, a, b)


# float < int is native in celpy (``float.__lt__``), int < float an error. CPython compares
# a float with a big negative int by negating the int, and celpy's IntType.__neg__ raises
# for INT64_MIN: that case is left to celpy.


def lt(a: Any, b: Any) -> Any:
    t = type(a)
    if (t is type(b) and t in _PRIM) or (t is float and type(b) is int and b != INT64_MIN):
        return a < b
    return delegate(_F["_<_"], REL_CATCH, a, b)


def le(a: Any, b: Any) -> Any:
    t = type(a)
    if (t is type(b) and t in _PRIM) or (t is float and type(b) is int and b != INT64_MIN):
        return a <= b
    return delegate(_F["_<=_"], REL_CATCH, a, b)


def gt(a: Any, b: Any) -> Any:
    t = type(a)
    if (t is type(b) and t in _PRIM) or (t is float and type(b) is int and b != INT64_MIN):
        return a > b
    return delegate(_F["_>_"], REL_CATCH, a, b)


def ge(a: Any, b: Any) -> Any:
    t = type(a)
    if (t is type(b) and t in _PRIM) or (t is float and type(b) is int and b != INT64_MIN):
        return a >= b
    return delegate(_F["_>=_"], REL_CATCH, a, b)


def in_(item: Any, container: Any) -> Any:
    tc = type(container)
    ti = type(item)
    if tc is list:
        if ti is str:
            if item in container:
                return True
            for x in container:
                if type(x) is not str:
                    break
            else:
                return False
        elif ti is int:
            for x in container:
                if type(x) is not int:
                    break
            else:
                return item in container
    elif tc is CelMap and ti is str:
        if item in container:
            return True
        for k in container:
            if type(k) is not str:
                break
        else:
            return False
    return delegate(_F["_in_"], REL_CATCH, item, container)


# ---- arithmetic


def add(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        r = a + b
        if INT64_MIN <= r <= INT64_MAX:
            return r
        raise CelError("return error for overflow")
    return delegate(operator.add, ADD_CATCH, a, b)


def sub(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        r = a - b
        if INT64_MIN <= r <= INT64_MAX:
            return r
        raise CelError("return error for overflow")
    return delegate(operator.sub, ADD_CATCH, a, b)


def mul(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        r = a * b
        if INT64_MIN <= r <= INT64_MAX:
            return r
        raise CelError("return error for overflow")
    return delegate(operator.mul, MUL_CATCH, a, b)


def div(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise CelError("modulus or divide by zero")
        q = abs(a) // abs(b)  # Go: truncate toward zero
        r = -q if (a < 0) != (b < 0) else q
        if INT64_MIN <= r <= INT64_MAX:
            return r
        raise CelError("return error for overflow")
    return delegate(operator.truediv, MUL_CATCH, a, b)


def mod(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise CelError("modulus or divide by zero")
        r = abs(a) % abs(b)  # Go: the sign of the dividend
        return -r if a < 0 else r
    return delegate(operator.mod, MUL_CATCH, a, b)


def neg(a: Any) -> Any:
    t = type(a)
    if t is int:
        if a == INT64_MIN:
            raise CelError("return error for overflow")
        return -a
    if t is float:
        return -a
    return delegate(operator.neg, UNARY_CATCH, a)


def not_(a: Any) -> Any:
    if type(a) is bool:
        return not a
    return delegate(_F["!_"], UNARY_CATCH, a)


# ---- selection


def field(obj: Any, name: str) -> Any:
    """``obj.name`` (celpy ``member_dot``)."""
    if type(obj) is CelMap:
        return obj[name]
    v = to_celpy(obj)
    if isinstance(v, celtypes.MessageType):
        raise Fallback("protobuf message")
    if isinstance(v, MapType):
        try:
            r = v[name]
        except KeyError:
            raise CelError(f"no such member in mapping: {name!r}") from None
        return from_celpy(r)
    raise CelError(f"{type(v).__name__} does not support field selection")


def has_field(obj: Any, name: str) -> bool:
    """``has(obj.name)`` once ``obj`` evaluated without error."""
    if type(obj) is CelMap:
        return name in obj
    try:
        field(obj, name)
    except CelError:
        return False
    return True


def index(obj: Any, key: Any) -> Any:
    """``obj[key]`` (celpy ``member_index``)."""
    t = type(obj)
    if t is CelMap and type(key) is str:
        return obj[key]
    if t is list and type(key) is int:
        try:
            return obj[key]  # celpy indexes a Python list: -1 is the last element
        except IndexError:
            raise CelError("invalid_argument") from None
    return delegate(operator.getitem, INDEX_CATCH, obj, key)


# ---- functions


def call(fn: Any, *args: Any) -> Any:
    """A celpy base function (global or method form) with celpy's error mapping."""
    return delegate(fn, CALL_CATCH, *args)


def no_function(name: str, *args: Any) -> Any:
    raise CelError(f"undeclared reference to {name!r}")


def size(x: Any) -> Any:
    t = type(x)
    if t is str or t is list or t is CelMap or t is bytes:
        return len(x)
    if x is None:
        return 0
    return delegate(_F["size"], CALL_CATCH, x)


def starts_with(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return s.startswith(p)
    return delegate(_F["startsWith"], CALL_CATCH, s, p)


def ends_with(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return s.endswith(p)
    return delegate(_F["endsWith"], CALL_CATCH, s, p)


def contains(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        return p in s
    return delegate(_F["contains"], CALL_CATCH, s, p)


class Regex:
    """``re2.search(pattern, text) is not None`` (what celpy's ``matches`` computes).

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
        if self.raw is not None:
            try:
                b = text.encode("utf-8")
            except UnicodeEncodeError:
                # lone surrogates: re2 raises UnicodeEncodeError, a ValueError, which
                # celpy's method evaluation turns into an error value
                raise CelError("invalid UTF-8") from None
            return self.raw(self.anchor, b, 0, len(b))[0] != self.null
        try:
            return self.compiled.search(text) is not None
        except (ValueError, TypeError, AttributeError) as ex:  # celpy's CALL_CATCH
            raise CelError(str(ex)) from None


_REGEX: dict[str, Any] = {}


def regex(pattern: str) -> Any:
    """A :class:`Regex` for ``pattern``, or None when it does not compile (a CEL error)."""
    try:
        return _REGEX[pattern]
    except KeyError:
        pass
    try:
        compiled = Regex(re2.compile(pattern))
    except re2.error:
        compiled = None
    if len(_REGEX) < 4096:
        _REGEX[pattern] = compiled
    return compiled


def matches(s: Any, p: Any) -> Any:
    if type(s) is str and type(p) is str:
        compiled = regex(p)
        if compiled is None:
            raise CelError("match error")
        return compiled.search(s)
    return delegate(_F["matches"], CALL_CATCH, s, p)


_TYPES = {
    str: StringType,
    int: IntType,
    float: DoubleType,
    bool: BoolType,
    bytes: BytesType,
    list: ListType,
    CelMap: MapType,
    type(None): type(None),
}


def type_of(x: Any) -> Any:
    try:
        return _TYPES[type(x)]
    except KeyError:
        return delegate(_F["type"], CALL_CATCH, x)


# ---- timestamps

_TZ: dict[Any, Any] = {}
_UTC = TimestampType.tz_parse(None)  # the zone celpy uses when none is given
_NOARG = object()


def _zone(name: str) -> Any:
    try:
        return _TZ[name]
    except KeyError:
        pass
    try:
        zone = TimestampType.tz_parse(StringType(name))
    except Exception:
        return None
    if len(_TZ) < 1024:
        _TZ[name] = zone
    return zone


def _ts_part(name: str, d: datetime.datetime) -> int:
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


def _in_zone(ts: Any, key: Any, zone: Any) -> datetime.datetime:
    """``ts.astimezone(zone)`` (what celpy computes), memoized on the timestamp object."""
    memo = ts.__dict__.get("_cel_zones")
    if memo is None:
        memo = ts.__dict__["_cel_zones"] = {}
    try:
        return memo[key]
    except KeyError:
        pass
    plain = datetime.datetime(ts.year, ts.month, ts.day, ts.hour, ts.minute, ts.second, ts.microsecond, ts.tzinfo, fold=ts.fold)
    d = memo[key] = plain.astimezone(zone)
    return d


def ts_get(name: str, ts: Any, tz: Any = _NOARG) -> Any:
    """``ts.getHours()`` etc., optionally with a time zone argument."""
    if type(ts) is TimestampType:
        if tz is _NOARG:
            return _ts_part(name, _in_zone(ts, None, _UTC))
        if type(tz) is str:
            zone = _zone(tz)
            if zone is not None:
                return _ts_part(name, _in_zone(ts, tz, zone))
    if tz is _NOARG:
        return delegate(_F[name], CALL_CATCH, ts)
    return delegate(_F[name], CALL_CATCH, ts, tz)


TIMESTAMP_METHODS = frozenset(
    {
        "getDate",
        "getDayOfMonth",
        "getDayOfWeek",
        "getDayOfYear",
        "getFullYear",
        "getMonth",
        "getHours",
        "getMilliseconds",
        "getMinutes",
        "getSeconds",
    }
)


# ---- logic


def _odd_bools(values: tuple) -> None:
    for v in values:
        if type(v) is BoolType:  # e.g. bool(3): celpy combines it as a number
            raise Fallback("boolean with a numeric value")


def _rest(values: tuple, neutral: bool, op: str) -> Any:
    """``&&`` / ``||`` over values none of which decides the result (celpy's left fold):
    the single value that is not ``neutral`` is the result; more than one is an error."""
    _odd_bools(values)
    others = [v for v in values if v is not neutral]
    if len(others) == 1:
        if type(others[0]) is CelError:
            raise others[0]
        return others[0]
    raise CelError(f"no matching overload for _{op}_")


def and_rest(*values: Any) -> Any:
    """``&&`` over values none of which is false and not all true."""
    return _rest(values, True, "&&")


def or_rest(*values: Any) -> Any:
    """``||`` over values none of which is true and not all false."""
    return _rest(values, False, "||")


def cond_error(c: Any) -> Any:
    _odd_bools((c,))
    if type(c) is CelError:
        raise c
    raise CelError(f"found no matching overload for _?_:_ applied to {type(c).__name__}")


def iterate(r: Any) -> list:
    """What celpy's macros iterate over, for a receiver that is not a list or map."""
    if type(r) is Opaque:
        src = r.value
    elif type(r) is str or type(r) is bytes:
        src = to_celpy(r)  # celpy iterates characters / byte values
    else:
        raise Fallback("macro over a value that is not iterable")
    try:
        return [from_celpy(x) for x in src]
    except TypeError:
        raise Fallback("macro over a value that is not iterable") from None


def make_map(*pairs: Any) -> Any:
    """A map literal with arbitrary keys (celpy ``mapinits`` semantics)."""
    m = MapType()
    try:
        for k, v in pairs:
            k = to_celpy(k)
            if k in m:
                raise ValueError(f"Duplicate key {k!r}")
            m[k] = to_celpy(v)
    except (ValueError, TypeError) as ex:
        raise CelError(str(ex)) from None
    return from_celpy(m)


def check_error(*values: Any) -> None:
    for v in values:
        if type(v) is CelError:
            raise v


def to_result(v: Any) -> Any:
    """A compiled result as the celpy value it stands for (for comparisons in tests)."""
    return to_celpy(v)
